"""The shipped test doubles (backends/testing.py, search/testing.py) and the sync surface
(`agentic.run`, `BaseBackend.generate_sync`), with no event loop running and inside one."""

from __future__ import annotations

import asyncio
import threading

import pytest

import agentic
from agentic.core import (
    Budget,
    ConfigError,
    Event,
    GenerateRequest,
    Generation,
    Task,
    Tracer,
    Usage,
)
from backends import Backend, FunctionBackend, ScriptedBackend
from controllers import Direct
from search.testing import ScriptedReward


def ask(text: str, **params: object) -> GenerateRequest:
    return GenerateRequest.chat(text, **params)  # type: ignore[arg-type]


def arithmetic(request: GenerateRequest) -> str:
    assert request.messages is not None
    return "4" if "2 + 2" in request.messages[-1].content else "I don't know"


# ---- the doubles ---------------------------------------------------------------------------


async def test_scripted_outputs_replay_in_order_then_run_out() -> None:
    backend = ScriptedBackend(["a", "b"])
    assert isinstance(backend, Backend)
    [[first]] = await backend.generate([ask("x")])
    [[second]] = await backend.generate([ask("y")])
    assert (first.text, second.text) == ("a", "b") and first.finish_reason == "stop"
    assert [r.messages[-1].content for r in backend.requests] == ["x", "y"]  # type: ignore[index]
    with pytest.raises(RuntimeError, match="2 scripted outputs are used up"):
        await backend.generate([ask("z")])
    with pytest.raises(ConfigError, match="not one string"):
        ScriptedBackend("ab")


async def test_a_scripted_rule_continues_the_prefix_and_honours_stop_and_max_tokens() -> None:
    backend = ScriptedBackend(lambda prefix, j: (f"{prefix}|{j}\n\nmore", False))
    req = GenerateRequest.chat("q", stop=["\n\n"], n=2, seed=1).model_copy(update={"prefix": "p"})
    [gens] = await backend.generate([req])
    assert [g.text for g in gens] == ["p|1000", "p|1001"]  # j: the sample plus 1000 x seed
    assert gens[0].stop_reason == "\n\n" and gens[0].finish_reason == "stop"
    assert gens[0].usage.model_calls == 1 and gens[1].usage.model_calls == 0
    [[cut]] = await backend.generate([ask("q", max_tokens=3)])
    assert cut.text == "|0\n" and cut.finish_reason == "length" and len(cut.token_ids) == 3


async def test_a_function_backend_answers_goes_through_budgets_and_events() -> None:
    backend = FunctionBackend(arithmetic)
    events: list[Event] = []
    with Budget() as meter, Tracer([events.append]).activate():
        gens = await backend.generate([ask("What is 2 + 2?"), ask("Why?", n=3)])
    assert [[g.text for g in row] for row in gens] == [["4"], ["I don't know"] * 3]
    assert meter.spent.model_calls == 2  # one per request, however many samples
    assert meter.spent.completion_tokens == 1 + 3 * len("I don't know")
    assert meter.spent.prompt_tokens == len("What is 2 + 2?") + len("Why?")
    assert [e.type for e in events] == ["backend.generate"] * 2
    assert events[0].payload["results"][0]["text"] == "4"
    with Budget(max_model_calls=0), pytest.raises(agentic.BudgetExceeded):
        await backend.generate([ask("What is 2 + 2?")])


async def test_a_function_backend_takes_generations_and_async_functions() -> None:
    made = Generation(text="exact", token_logprobs=(-0.5,), usage=Usage(model_calls=1))

    async def later(request: GenerateRequest) -> Generation:
        await asyncio.sleep(0)
        return made

    [[g]] = await FunctionBackend(later).generate([ask("q")])
    assert g == made
    with pytest.raises(TypeError, match="returned int"):
        await FunctionBackend(lambda r: 7).generate([ask("q")])  # type: ignore[arg-type,return-value]


async def test_a_scripted_reward_scores_outcomes_and_steps() -> None:
    task = Task(id="t", input="q")
    with Budget() as meter:
        assert await ScriptedReward(len, kind="outcome").score(task, ["ab", "c"]) == [2, 1]
        assert await ScriptedReward(len).score(task, [["ab", "c"]]) == [[2, 3]]
    assert meter.spent.reward_calls == 3


# ---- the sync surface ----------------------------------------------------------------------


def test_sync_calls_without_an_event_loop() -> None:
    threads: list[str] = []

    def answer(request: GenerateRequest) -> str:
        threads.append(threading.current_thread().name)
        return arithmetic(request)

    backend = FunctionBackend(answer)
    [[g]] = backend.generate_sync([ask("What is 2 + 2?")])
    assert g.text == "4" and threads == [threading.main_thread().name]  # asyncio.run, no thread
    outcome = agentic.run(Direct(backend), "What is 2 + 2?")
    assert outcome.output == "4" and outcome.task_id == "task"
    assert agentic.run(backend.generate([ask("Hi")]))[0][0].text == "I don't know"
    with pytest.raises(TypeError, match="awaitable"):
        agentic.run(backend)  # type: ignore[call-overload]


async def test_sync_calls_inside_a_running_loop_use_a_worker_thread() -> None:
    asyncio.get_running_loop()  # as in Jupyter: asyncio.run() would refuse here
    threads: list[str] = []

    def answer(request: GenerateRequest) -> str:
        threads.append(threading.current_thread().name)
        return arithmetic(request)

    backend = FunctionBackend(answer)
    events: list[Event] = []
    with Budget(max_model_calls=2) as meter, Tracer([events.append]).activate():
        [[g]] = backend.generate_sync([ask("What is 2 + 2?")])
        task = Task(id="sum", input="What is 2 + 2?")
        outcome = agentic.run(Direct(backend), task)
        with pytest.raises(agentic.BudgetExceeded):  # the caller's budget holds in the thread
            backend.generate_sync([ask("again")])
    assert g.text == "4" and outcome.output == "4" and outcome.task_id == "sum"
    assert all(name.startswith("agentic-run") for name in threads) and len(threads) == 2
    assert meter.spent.model_calls == 2 and len(events) == 2
