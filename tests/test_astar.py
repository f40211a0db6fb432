"""A*-decoding: the priority function, the search mechanics on scripted parts, and one run on
the real model."""

from __future__ import annotations

import math
import random
from typing import cast

import pytest

from agentic.core import Budget, ConfigError, Event, Task, Tracer
from backends import Backend
from backends.testing import ScriptedBackend
from search.astar import AStarDecoding, Cost, priority
from search.base import StepGenerator
from search.rewards import JudgeReward, OutcomeReward, ProcessReward
from search.testing import ScriptedReward

TASK = Task(id="t", input="What is 2+2?")


def prm(reward: ScriptedReward) -> ProcessReward:
    # ScriptedReward's `kind` is typed as either literal, so it matches neither protocol for mypy
    return cast(ProcessReward, reward)


def test_priority_neglog_is_the_negative_log_product() -> None:
    assert priority([], 0, "neglog", horizon=4) == 0.0
    # -log 0.5 - log 0.25 = 3 log 2; h = 0 whatever the horizon
    assert priority([0.5, 0.25], 2, "neglog", horizon=4) == pytest.approx(3 * math.log(2))
    assert priority([0.5, 0.25], 2, "neglog", horizon=99) == pytest.approx(3 * math.log(2))
    # scores are clipped to [1e-6, 1]: a certain "wrong" stays finite, > 1 costs nothing
    assert priority([0.0], 1, "neglog", horizon=4) == pytest.approx(-math.log(1e-6))
    assert priority([1.5], 1, "neglog", horizon=4) == 0.0


def test_priority_mean_gap_projects_the_mean_gap_to_the_horizon() -> None:
    assert priority([], 0, "mean_gap", horizon=4) == 0.0
    # g = 0.5 + 0.75 = 1.25; h = mean gap 0.625 * (4 - 2) = 1.25; f = 4 * (1 - 0.375)
    assert priority([0.5, 0.25], 2, "mean_gap", horizon=4) == pytest.approx(2.5)
    assert priority([0.5, 0.25], 2, "mean_gap", horizon=2) == pytest.approx(1.25)  # h = 0
    # depth-neutral: a deeper state with the same mean has the same f
    assert priority([0.8] * 3, 3, "mean_gap", horizon=8) == pytest.approx(
        priority([0.8], 1, "mean_gap", horizon=8)
    )
    with pytest.raises(ConfigError, match="cost"):
        priority([0.5], 1, "sum", horizon=4)  # type: ignore[arg-type]


def good_or_bad(prefix: str, j: int) -> tuple[str, bool]:
    """Two steps, sample 0 good ("g"), sample 1 bad ("b"), then an answer."""
    depth = prefix.count("\n\n")
    if depth < 2:
        return f"{'g' if j % 1000 == 0 else 'b'}{depth}\n\n", False
    return "answer", True


def no_bad_steps(text: str) -> float:
    return 0.1 if "b" in text else 0.9


async def test_follows_the_high_reward_branch_and_stops_at_the_first_goal() -> None:
    backend = ScriptedBackend(good_or_bad)
    reward = ScriptedReward(no_bad_steps)
    algo = AStarDecoding(StepGenerator(backend), prm(reward), k=2)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        result = await algo.search(TASK)
    assert result.answer == "g0\n\ng1\n\nanswer"
    assert result.score == pytest.approx(0.9**3)  # exp(-f) = prod r_i under "neglog"
    assert result.stopped is None
    # three expansions, one batched call each; the exhaustive tree would need 1 + 2 + 4 = 7
    assert len(backend.requests) == 3 and result.usage.model_calls == 3
    assert reward.calls == 6 and result.usage.reward_calls == 6
    expands = [e.payload for e in events if e.type == "search.expand"]
    assert [p["depth"] for p in expands] == [0, 1, 2]
    assert expands[0] == {"node": 0, "f": 0.0, "depth": 0}
    # tree: root -> 2 -> 2 -> 2, each expanded state with k children, all others leaves
    g = result.tree.graph
    assert g.number_of_nodes() == 7
    assert all(g.in_degree(n) == 1 for n in g if n != 0)
    expanded = sorted(n for n in g if g.out_degree(n) > 0)
    assert [g.nodes[n]["text"] for n in expanded] == ["", "g0\n\n", "g0\n\ng1\n\n"]
    assert all(g.out_degree(n) == 2 for n in expanded)
    assert all(g.nodes[n]["score"] is not None for n in g if n != 0)
    assert len(result.finished) == 2


async def test_never_extends_finished_states() -> None:
    def quit_or_go(prefix: str, j: int) -> tuple[str, bool]:
        depth = prefix.count("\n\n")
        if j % 1000 == 1:
            return "quit", True  # a finished state on every level, scored low
        return (f"go{depth}\n\n", False) if depth < 3 else ("done", True)

    backend = ScriptedBackend(quit_or_go)
    reward = ScriptedReward(lambda t: 0.2 if "quit" in t else 0.95)
    result = await AStarDecoding(StepGenerator(backend), prm(reward), k=2).search(TASK)
    assert result.answer == "go0\n\ngo1\n\ngo2\n\ndone"
    finished = {d["text"] for _, d in result.tree.graph.nodes(data=True) if d["done"]}
    assert finished and all(r.prefix not in finished for r in backend.requests)
    done_nodes = [n for n, d in result.tree.graph.nodes(data=True) if d["done"]]
    assert all(result.tree.graph.out_degree(n) == 0 for n in done_nodes)


async def test_max_expansions_caps_the_search() -> None:
    backend = ScriptedBackend(lambda p, j: (f"s{j % 1000}\n\n", False))  # never ends
    reward = ScriptedReward(lambda t: 0.5 + len(t) / 1000)
    steps = StepGenerator(backend, max_steps=50)
    result = await AStarDecoding(steps, prm(reward), k=2, max_expansions=3).search(TASK)
    assert len(backend.requests) == 3 and result.tree.graph.number_of_nodes() == 7
    assert result.stopped is None and result.finished == []
    assert result.answer  # the best partial solution by priority

    # a goal at the head of the queue after the last allowed expansion is still taken
    backend = ScriptedBackend(good_or_bad)
    algo = AStarDecoding(StepGenerator(backend), prm(ScriptedReward(no_bad_steps)), k=2)
    algo.max_expansions = 3
    assert (await algo.search(TASK)).answer == "g0\n\ng1\n\nanswer"
    # one fewer: no goal yet, so the best partial by priority (lowest f: the shallow good step)
    algo.max_expansions = 2
    capped = await algo.search(TASK)
    assert capped.answer == "g0\n\n" and capped.score == pytest.approx(0.9)


async def test_cost_choices_expand_in_different_orders() -> None:
    """Root -> A (0.9), B (0.8); A's children score 0.85. "neglog" charges the extra step
    (0.105 + 0.163 > 0.223) and widens to B; "mean_gap" ranks by the mean (0.875 > 0.8) and
    dives under A."""

    def branches(prefix: str, j: int) -> tuple[str, bool]:
        if not prefix:
            return ("A\n\n" if j % 1000 == 0 else "B\n\n"), False
        return f"{prefix[0]}{prefix.count(chr(10))}.{j % 1000}\n\n", False

    scores = {"A\n\n": 0.9, "B\n\n": 0.8}

    async def order(cost: Cost) -> list[str]:
        backend = ScriptedBackend(branches)
        reward = ScriptedReward(lambda t: scores.get(t, 0.85))
        steps = StepGenerator(backend, max_steps=4)
        algo = AStarDecoding(steps, prm(reward), k=2, cost=cost, max_expansions=3)
        await algo.search(TASK)
        return [r.prefix for r in backend.requests]

    assert await order("neglog") == ["", "A\n\n", "B\n\n"]
    assert await order("mean_gap") == ["", "A\n\n", "A\n\nA2.0\n\n"]


async def test_budget_stops_with_the_best_so_far() -> None:
    backend = ScriptedBackend(good_or_bad)
    reward = ScriptedReward(no_bad_steps)
    algo = AStarDecoding(StepGenerator(backend), prm(reward), k=2, budget=Budget(max_model_calls=2))
    result = await algo.search(TASK)
    assert result.stopped and "model_calls" in result.stopped
    assert result.usage.model_calls == 2 and len(backend.requests) == 2
    assert result.answer == "g0\n\n" and result.finished == []

    # once a generation goes over a limit, the search stops before paying for its PRM calls
    backend, reward = ScriptedBackend(good_or_bad), ScriptedReward(no_bad_steps)
    algo = AStarDecoding(StepGenerator(backend), prm(reward), k=2, budget=Budget(max_tokens=1))
    result = await algo.search(TASK)
    assert result.stopped and "tokens" in result.stopped
    assert reward.calls == 0 and result.usage.model_calls == 1
    assert result.tree.graph.number_of_nodes() == 3 and result.answer  # unscored children


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"k": 0}, "k must"),
        ({"cost": "greedy"}, "cost must"),
        ({"max_expansions": 0}, "max_expansions must"),
    ],
)
def test_bad_input(kwargs: dict[str, object], field: str) -> None:
    steps = StepGenerator(ScriptedBackend(good_or_bad))
    with pytest.raises(ConfigError, match=field):
        AStarDecoding(steps, prm(ScriptedReward(no_bad_steps)), **kwargs)  # type: ignore[arg-type]


def test_an_outcome_reward_is_refused() -> None:
    steps = StepGenerator(ScriptedBackend(good_or_bad))
    with pytest.raises(ConfigError, match="reward must be a process reward"):
        AStarDecoding(steps, cast(OutcomeReward, ScriptedReward(no_bad_steps, kind="outcome")))


@pytest.mark.slow
async def test_real_model_end_to_end(smollm2: Backend) -> None:
    steps = StepGenerator(smollm2, tokens_per_step=24, max_steps=3, temperature=0.7)
    algo = AStarDecoding(steps, JudgeReward(smollm2), k=3, max_expansions=6)
    task = Task(id="add", input="What is 3 + 4? Answer with a number.")
    result = await algo.search(task)
    assert result.answer.strip()
    assert result.usage.model_calls > 0 and result.usage.reward_calls > 0
    assert result.tree.graph.number_of_nodes() > 1


async def test_the_same_seed_gives_the_same_answer_and_tree() -> None:
    def noisy(prefix: str, j: int) -> tuple[str, bool]:
        d, v = prefix.count("\n\n"), random.Random(f"{prefix}|{j}").randrange(10)
        return (f"answer {v}", True) if d >= 2 else (f"{d}.{v}\n\n", False)

    def run(seed: int) -> AStarDecoding:
        reward = ScriptedReward(lambda t: random.Random(t).random())
        return AStarDecoding(StepGenerator(ScriptedBackend(noisy)), prm(reward), k=3, seed=seed)

    async def summary(seed: int) -> tuple[object, ...]:
        result = await run(seed).search(TASK)
        g = result.tree.graph
        return result.answer, result.score, tuple(g.nodes[v]["text"] for v in sorted(g))

    runs = {await summary(7) for _ in range(5)}
    assert len(runs) == 1
    assert await summary(8) not in runs  # the seed reaches the backend
