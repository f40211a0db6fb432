"""`CaseMemoryAgent`: read, plan, execute, judge, write on scripted models and a scripted
executor; the parametric mode learning which case to use; budgets; then the real SmolLM2 with a
real `ToolAgent` writing a case that the next task retrieves."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from agentic.agents import ToolAgent
from agentic.agents.tools import calculator
from agentic.core import (
    Budget,
    ConfigError,
    Context,
    Event,
    GenerateRequest,
    Generation,
    Message,
    Outcome,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    Task,
    Tracer,
    Usage,
)
from backends.base import BaseBackend, Capabilities
from backends.testing import ScriptedBackend
from controllers import CaseMemoryAgent, Direct
from memory import Case, CaseBank, HashingEmbedder
from memory.case_policy import CasePolicy


class Planner(BaseBackend):
    """Writes `reply(user message)` as the plan, and scores "Yes" with log-probability
    log(p_yes) (and "No" with log(1 - p_yes)); records every request."""

    def __init__(self, reply: Callable[[str], str], p_yes: float = 0.5) -> None:
        self.reply, self.p_yes, self.name = reply, p_yes, "planner"
        self.capabilities = Capabilities(score=True)
        self.requests: list[GenerateRequest] = []

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.requests += requests
        texts = [self.reply(r.messages[-1].content) for r in requests if r.messages]
        return [
            [Generation(text=t, usage=Usage(completion_tokens=5, model_calls=1))] for t in texts
        ]

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        p = [self.p_yes if r.continuation == "Yes" else 1 - self.p_yes for r in requests]
        return [ScoreResult(token_ids=(1,), token_logprobs=(math.log(x),)) for x in p]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return 0


class Executor:
    """Answers with `solve(task input)`; records the inputs it saw."""

    def __init__(self, solve: Callable[[str], str]) -> None:
        self.solve, self.inputs = solve, list[str]()

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        self.inputs.append(task.input)
        return Outcome(task_id=task.id, output=self.solve(task.input), info={"tool_calls": []})


async def exact(task: Task, output: str) -> float:
    return float(output.strip() == task.answer)


def first_worked_plan(prompt: str) -> str:
    """A planner that copies the first plan that worked before, else says so."""
    m = re.search(r"worked on similar tasks:\n- Task: .*\n  Plan: (.*)", prompt)
    return m.group(1) if m else "no plan"


def bank_at(tmp_path: Path, dim: int = 256) -> CaseBank:
    return CaseBank.open(tmp_path / "m.db", HashingEmbedder(dim=dim))


async def test_reads_plans_executes_judges_and_writes(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    good = await bank.add(
        Case(task="Add 12 and 30", plan="use the calculator on 12 + 30", reward=1, label=True)
    )
    bad = await bank.add(Case(task="Add 12 and 31", plan="guess the sum", reward=0, label=False))
    await bank.add(Case(task="Write a poem about the sea", plan="rhyme", reward=1, label=True))
    planner = Planner(lambda prompt: "1. use the calculator")
    executor = Executor(lambda text: "43")
    agent = CaseMemoryAgent(planner, executor, bank, checker=exact, k=1)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        out = await agent(Task(id="t1", input="Add 12 and 31", answer="43"))
    # the planner saw the similar success as "worked" and the failure as "avoid"
    [request] = planner.requests
    assert request.messages is not None
    prompt = request.messages[-1].content
    assert prompt.index("use the calculator on 12 + 30") < prompt.index("avoid them")
    assert prompt.index("avoid them") < prompt.index("guess the sum")
    assert "poem" not in prompt  # k=1: only the nearest of each label
    assert out.info["retrieved"] == {"positive": [good.id], "negative": [bad.id]}
    # the executor got the task with the plan appended
    assert executor.inputs == ["Add 12 and 31\n\nPlan:\n1. use the calculator"]
    assert out.output == "43" and out.info["reward"] == 1.0 and out.info["label"] is True
    written = await bank.get(out.info["case_id"])
    assert written is not None and written.label and written.plan == "1. use the calculator"
    assert written.trajectory == "answer: 43" and written.metadata["task_id"] == "t1"
    types = [e.type for e in events if e.type.startswith("case_memory")]
    assert types == [
        "case_memory",
        "case_memory.retrieve",
        "case_memory.plan",
        "case_memory.execute",
        "case_memory.judge",
        "case_memory.write",
    ]
    assert out.usage.model_calls == 1
    bank.close()


async def test_the_next_similar_task_retrieves_the_written_case(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    planner = Planner(first_worked_plan)
    agent = CaseMemoryAgent(planner, Executor(lambda text: "7"), bank, checker=exact)
    first = await agent(Task(id="a", input="What is 3 + 4?", answer="7"))
    second = await agent(Task(id="b", input="What is 3 + 4 exactly?", answer="7"))
    assert second.info["retrieved"]["positive"] == [first.info["case_id"]]
    wrong = await agent(Task(id="c", input="What is 3 + 5?", answer="8"))
    assert wrong.info["label"] is False
    third = await agent(Task(id="d", input="What is 3 + 5 now?", answer="8"))
    assert wrong.info["case_id"] in third.info["retrieved"]["negative"]
    assert await bank.count() == 4 and await bank.count(label=False) == 2
    bank.close()


async def test_llm_judge_scores_when_there_is_no_checker(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    for p_yes, label in ((0.8, True), (0.3, False)):
        planner = Planner(lambda prompt: "plan", p_yes=p_yes)
        agent = CaseMemoryAgent(planner, Executor(lambda text: "x"), bank)
        out = await agent(Task(id="t", input="Name a colour"))
        assert out.info["reward"] == pytest.approx(p_yes) and out.info["label"] is label
    bank.close()


async def test_q_selection_learns_which_case_to_use(tmp_path: Path) -> None:
    # four past successes look alike; only one's plan actually works on these tasks
    bank = bank_at(tmp_path, dim=64)
    plans = ["GOOD: carry the tens", "BAD: add digits", "BAD: subtract", "BAD: round first"]
    for i, plan in enumerate(plans):
        await bank.add(
            Case(id=f"c{i}", task=f"add two numbers, variant {i}", plan=plan, reward=1, label=True)
        )
    policy = CasePolicy(64, alpha=0.2, seed=0, lr=1e-2)
    executor = Executor(lambda text: "ok" if "GOOD" in text else "wrong")
    agent = CaseMemoryAgent(
        Planner(first_worked_plan),
        executor,
        bank,
        checker=lambda t, o: _ok(o),
        selection="q",
        policy=policy,
        k=1,
        candidates=4,
        write=False,
    )
    outs = [await agent(Task(id=f"t{i}", input=f"add two numbers, case {i}")) for i in range(40)]
    assert policy.updates == 40
    query = await bank.embed_query("add two numbers, case 99")
    vecs = await bank.vectors([f"c{i}" for i in range(4)])
    qs = policy.q(query, vecs)
    assert int(np.argmax(qs)) == 0 and qs[0] > qs[1:].max() + 0.2
    assert policy.probabilities(query, vecs)[0] > 0.9  # μ now draws the good case
    early = sum(o.info["label"] for o in outs[:10])
    late = sum(o.info["label"] for o in outs[-10:])
    assert late > early + 2
    # the policy was saved beside the bank: a new agent picks it up
    again = CaseMemoryAgent(
        Planner(first_worked_plan), executor, bank, checker=exact, selection="q", write=False
    )
    loaded = await again._get_policy()
    assert loaded is not None and loaded.updates == 40
    bank.close()


async def _ok(output: str) -> float:
    return float(output == "ok")


async def test_a_used_up_budget_returns_without_writing(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    executor = Direct(ScriptedBackend(lambda prefix, j: ("5", True)))
    agent = CaseMemoryAgent(Planner(lambda p: "plan"), executor, bank, checker=exact)
    task = Task(id="t", input="What is 2 + 3?", answer="5")
    with Budget(max_model_calls=1):  # the plan takes it; the executor is cut off
        out = await agent(task)
    assert out.error is not None and "model_calls" in out.error and out.output == ""
    with Budget(max_model_calls=0):  # not even a plan
        out = await agent(task)
    assert out.error is not None and out.info == {}
    assert await bank.count() == 0
    with Budget(max_model_calls=2):  # enough for both: the checker needs no model call
        out = await agent(task)
    assert out.error is None and out.info["label"] is True and await bank.count() == 1
    bank.close()


async def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    bank = bank_at(tmp_path)
    planner, executor = Planner(lambda p: "plan"), Executor(lambda t: "")
    with pytest.raises(ConfigError, match="selection"):
        CaseMemoryAgent(planner, executor, bank, selection="best")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k <= candidates"):
        CaseMemoryAgent(planner, executor, bank, k=5, candidates=2)
    with pytest.raises(ConfigError, match="execute_template"):
        CaseMemoryAgent(planner, executor, bank, execute_template="{task} only")
    with pytest.raises(ConfigError, match="policy dim"):
        CaseMemoryAgent(planner, executor, bank, policy=CasePolicy(8))
    bare = CaseBank.open(tmp_path / "other.db", None)
    with pytest.raises(ConfigError, match="needs an embedder"):
        CaseMemoryAgent(planner, executor, bare)
    bank.close()
    bare.close()


@pytest.mark.slow
async def test_real_tool_agent_writes_a_case_the_next_task_retrieves(
    smollm2: BaseBackend, tmp_path: Path
) -> None:
    bank = bank_at(tmp_path)
    executor = ToolAgent(smollm2, [calculator], max_steps=3, tool_choice="required")
    # no checker: SmolLM2 itself judges, through Backend.score
    plan = SamplingParams(temperature=0.0, max_tokens=48)
    agent = CaseMemoryAgent(smollm2, executor, bank, plan_params=plan)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        first = await agent(Task(id="q1", input="What is 48 * 12?"))
        second = await agent(Task(id="q2", input="What is 48 * 13?"))
    assert first.info["plan"] and 0.0 < first.info["reward"] < 1.0
    stored = await bank.get(first.info["case_id"])
    assert stored is not None and stored.task == "What is 48 * 12?"
    assert stored.plan == first.info["plan"] and stored.trajectory.startswith("answer: ")
    retrieved = second.info["retrieved"]
    assert first.info["case_id"] in retrieved["positive"] + retrieved["negative"]
    # the second plan was written with the first case in view
    [plan2] = [e for e in events if e.type == "case_memory.plan"][1:]
    assert plan2.payload["plan"] == second.info["plan"]
    assert await bank.count() == 2
    bank.close()
