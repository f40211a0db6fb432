"""Program-aided verification (`search.program_reward`): programs written once per task, run in
the real sandbox, candidates scored by agreement with what the programs print."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentic.agents.verifiers import program_reward, sandbox_runner
from agentic.core import Budget, ConfigError, GenerateRequest, Task
from agentic.runtime.suites import load_suite
from backends import Backend
from backends.base import Capabilities
from backends.testing import ScriptedBackend
from search.program_reward import ProgramReward, extract_program, same_answer

TASK = Task(id="add", input="What is 3 + 4?", answer="7")


def program(code: str) -> ScriptedBackend:
    """A policy that always writes `code`, closing the block the reward opened for it."""
    return ScriptedBackend(lambda prefix, j: (f"{code}\n```\nThat prints the answer.", True))


async def test_candidates_agreeing_with_the_program_score_one_and_programs_are_cached() -> None:
    backend = program("print(3 + 4)")
    reward = program_reward(backend, timeout=5.0)
    assert reward.kind == "outcome"
    assert await reward.score(TASK, ["3 + 4 = 7", "3 + 4 = 9"]) == [1.0, 0.0]
    assert await reward.score(TASK, ["<answer>7.0</answer>", "The answer is 8."]) == [1.0, 0.0]
    # one program generation for the task, however many candidates and score() calls
    assert len(backend.requests) == 1
    request = backend.requests[0]
    assert request.messages is not None and "What is 3 + 4?" in request.messages[0].content
    assert request.prefix == "```python\n" and request.params.n == 1
    [run] = await reward.runs(TASK)
    assert (run.code, run.output, run.answer) == ("print(3 + 4)", "7\n", "7")
    await reward.score(Task(id="other", input="What is 2 + 2?"), ["4"])
    assert len(backend.requests) == 2


async def test_a_backend_without_prefix_gets_the_block_out_of_its_whole_reply() -> None:
    backend = ScriptedBackend(
        lambda prefix, j: ("Sure:\n```python\nx = 3 + 4\nprint(x)\n```\nIt prints 7.", True)
    )
    backend.capabilities = Capabilities(prefix=False)
    reward = program_reward(backend, timeout=5.0)
    assert await reward.score(TASK, ["7", "9"]) == [1.0, 0.0]
    assert backend.requests[0].prefix == "" and backend.requests[0].params.stop == ()


async def test_the_score_is_the_fraction_of_successful_programs_that_agree() -> None:
    outputs = {"print(7)": "7\n", "print(9)": "9\n", "boom()": None}
    codes = ["print(7)", "print(7)", "print(9)", "boom()"]
    backend = ScriptedBackend(lambda prefix, j: (codes[j], True))
    ran: list[str] = []

    async def run(code: str) -> str | None:
        ran.append(code)
        return outputs[code]

    reward = ProgramReward(backend, run, k=4)
    assert backend.requests == []
    scores = await reward.score(TASK, ["7", "9", "5"])
    # the failed program is left out: 2 of the 3 that ran print 7
    assert scores == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert sorted(ran) == sorted(codes)
    assert backend.requests[0].params.n == 4 and backend.requests[0].params.temperature > 0


async def test_concurrent_calls_for_one_task_write_its_programs_once() -> None:
    backend = program("print(7)")

    async def slow(code: str) -> str | None:
        await asyncio.sleep(0.05)
        return "7"

    reward = ProgramReward(backend, slow)
    results = await asyncio.gather(*(reward.score(TASK, ["7"]) for _ in range(5)))
    assert results == [[1.0]] * 5
    assert len(backend.requests) == 1


@pytest.mark.parametrize(
    "code",
    ["raise ValueError('no answer')", "while True:\n    pass", "x = 7", "print(7"],
    ids=["raises", "hangs", "prints-nothing", "syntax-error"],
)
async def test_a_program_that_gives_no_answer_leaves_every_candidate_neutral(code: str) -> None:
    reward = program_reward(program(code), timeout=1.0, neutral=0.25)
    start = time.perf_counter()
    # wait_for: a runner that ignored its time limit fails here instead of hanging the suite
    scores = await asyncio.wait_for(reward.score(TASK, ["7", "9", ""]), timeout=30)
    elapsed = time.perf_counter() - start
    assert scores == [0.25, 0.25, 0.25]
    [run] = await reward.runs(TASK)
    assert run.code == code and run.output is None and run.answer is None
    # the 1 s wall clock plus sandbox startup on a loaded machine, far from the 30 s backstop
    assert elapsed < 8.0


async def test_a_reply_without_code_is_not_run_and_is_neutral() -> None:
    ran: list[str] = []

    async def run(code: str) -> str | None:
        ran.append(code)
        return "7"

    backend = ScriptedBackend(lambda prefix, j: ("I cannot write code.", True))
    backend.capabilities = Capabilities(prefix=False)
    reward = ProgramReward(backend, run)
    assert await reward.score(TASK, ["7"]) == [0.5]
    assert ran == []


async def test_each_scored_candidate_is_one_reward_call_and_programs_are_model_calls() -> None:
    reward = ProgramReward(program("print(7)"), sandbox_runner(timeout=5.0))
    with Budget() as budget:
        await reward.score(TASK, ["7", "8", "9"])
        assert budget.spent.reward_calls == 3
        assert budget.spent.model_calls == 1
        await reward.score(TASK, ["7", "8"])
        assert budget.spent.reward_calls == 5
        # the cached programs cost nothing more
        assert budget.spent.model_calls == 1
        assert budget.spent.completion_tokens == len("print(7)\n")


def test_answers_compare_by_value_and_blocks_are_extracted() -> None:
    assert same_answer("7.0", "7") and same_answer(" 7. ", "7") and same_answer("-3", "-3.00")
    assert same_answer("1,000", "1000") and same_answer("0.30000000000000004", "0.3")
    assert same_answer("1/2", "0.5") and same_answer("Paris!", "paris")
    assert not same_answer("7", "9") and not same_answer("7", "") and not same_answer("7", "7a")
    assert not same_answer("10" * 200, "10" * 199 + "11")
    assert extract_program("a\n```py\nprint(1)\n```\nb ```python\nprint(2)\n```") == "print(1)"
    assert extract_program("```python\nprint(1)\nprint(") == "print(1)\nprint("
    assert extract_program("print(1)") is None and extract_program("```python\n\n```") is None


def test_bad_settings_are_refused() -> None:
    backend, run = program("print(7)"), sandbox_runner()
    with pytest.raises(ConfigError, match="k must be"):
        ProgramReward(backend, run, k=0)
    with pytest.raises(ConfigError, match="temperature 0"):
        ProgramReward(backend, run, k=2, temperature=0.0)
    with pytest.raises(ConfigError, match="neutral"):
        ProgramReward(backend, run, neutral=1.5)
    with pytest.raises(ConfigError, match="question"):
        ProgramReward(backend, run, prompt="Write a program.")


@pytest.mark.slow
async def test_real_model_writes_programs_that_run(smollm2: Backend) -> None:
    suite = load_suite("basic_arithmetic", n=3)
    sandbox = sandbox_runner(timeout=5.0)
    ran: list[str] = []

    async def run(code: str) -> str | None:
        ran.append(code)
        return await sandbox(code)

    reward = ProgramReward(smollm2, run, max_tokens=96)
    for task in suite.tasks:
        request = GenerateRequest.chat(task.input, max_tokens=24, temperature=0.7, n=3, seed=0)
        [generations] = await smollm2.generate([request])
        candidates = [g.text for g in generations] + [task.answer or "0"]
        with Budget() as budget:
            scores = await reward.score(task, candidates)
        assert len(scores) == len(candidates) == budget.spent.reward_calls
        assert all(0.0 <= s <= 1.0 for s in scores)
        runs = await reward.runs(task)
        assert len(runs) == 1
        assert budget.spent.model_calls == 1 and budget.spent.completion_tokens > 0
    written = [r.code for t in suite.tasks for r in await reward.runs(t) if r.code is not None]
    # every program the model wrote went through the sandbox, and it wrote some
    assert written and sorted(ran) == sorted(written)
