"""Step-wise generation, the search tree, rewards and best-of-N on scripted parts."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agentic.core import Budget, ConfigError, Task, Tracer
from backends.testing import ScriptedBackend
from search.base import StepGenerator, best_so_far
from search.best_of_n import BestOfN
from search.rewards import aggregate
from search.testing import ScriptedReward

TASK = Task(id="t", input="What is 2+2?")


def two_steps_then_answer(prefix: str, j: int) -> tuple[str, bool]:
    depth = prefix.count("\n\n")
    if depth < 2:
        return f"step{depth}.{j % 3}\n\n", False
    return f"answer {j % 3}", True


async def test_extend_batches_live_parents_and_never_extends_finished_ones() -> None:
    backend = ScriptedBackend(two_steps_then_answer)
    steps = StepGenerator(backend, max_steps=8)
    from search.base import SearchTree

    tree = SearchTree()
    [kids] = await steps.extend(TASK, None, tree, [tree.root()], n=3)
    assert [k.steps for k in kids] == [("step0.0\n\n",), ("step0.1\n\n",), ("step0.2\n\n",)]
    assert len(backend.requests) == 1  # one batched call
    grand = await steps.extend(TASK, None, tree, kids, n=1)
    assert len(backend.requests) == 4  # one request per live parent, in one generate call
    finals = await steps.extend(TASK, None, tree, [g for [g] in grand], n=1)
    assert all(f.done for [f] in finals)
    assert finals[0][0].text == "step0.0\n\nstep1.0\n\nanswer 0"
    before = len(backend.requests)
    again = await steps.extend(TASK, None, tree, [f for [f] in finals], n=2)
    assert again == [[], [], []] and len(backend.requests) == before
    assert tree.graph.number_of_nodes() == 1 + 3 + 3 + 3
    assert all(tree.graph.in_degree(n) == 1 for n in tree.graph if n != 0)


async def test_max_steps_finishes_a_solution() -> None:
    steps = StepGenerator(ScriptedBackend(lambda p, j: ("more\n\n", False)), max_steps=2)
    from search.base import SearchTree

    tree = SearchTree()
    [[a]] = await steps.extend(TASK, None, tree, [tree.root()])
    [[b]] = await steps.extend(TASK, None, tree, [a])
    assert not a.done and b.done


def test_aggregations() -> None:
    s = [0.5, 0.25, 1.0]
    assert aggregate(s, "last") == 1.0
    assert aggregate(s, "min") == 0.25
    assert aggregate(s, "prod") == 0.125
    assert aggregate(s, "mean") == pytest.approx(0.5833333)
    with pytest.raises(ConfigError, match="aggregation"):
        aggregate(s, "max")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"n": 0}, "n"), ({"select": "vote"}, "select"), ({"aggregation": "sum"}, "aggregation")],
)
def test_best_of_n_bad_input(kwargs: dict[str, object], field: str) -> None:
    steps = StepGenerator(ScriptedBackend(two_steps_then_answer))
    with pytest.raises(ConfigError, match=field):
        BestOfN(steps, ScriptedReward(lambda t: 0.0), **kwargs)  # type: ignore[arg-type]


async def test_best_of_n_picks_the_best_and_majority_can_differ() -> None:
    answers = {0: "answer 7", 1: "answer 7", 2: "answer 9"}
    backend = ScriptedBackend(lambda p, j: (answers[j % 3], True))
    score = {"answer 7": 0.4, "answer 9": 0.7}
    reward = ScriptedReward(lambda t: score[t], kind="outcome")
    steps = StepGenerator(backend)
    best = await BestOfN(steps, reward, n=3, seed=0).search(TASK)
    assert best.answer == "answer 9" and best.score == 0.7
    vote = await BestOfN(steps, reward, n=3, seed=0, select="weighted_majority").search(TASK)
    assert vote.answer == "answer 7"  # 0.4 + 0.4 outweighs 0.7
    assert best.usage.reward_calls == 3 and best.usage.model_calls == 1
    assert best.tree.graph.number_of_nodes() == 4


async def test_budget_stops_the_search_with_best_so_far_and_events() -> None:
    backend = ScriptedBackend(two_steps_then_answer)
    reward = ScriptedReward(lambda t: len(t) / 100)
    algo = BestOfN(StepGenerator(backend), reward, n=4, budget=Budget(max_model_calls=0))
    events: list[object] = []
    with Tracer([events.append]).activate():
        result = await algo.search(TASK)
    assert result.stopped and "model_calls" in result.stopped
    assert result.answer == "" and result.usage.model_calls == 0
    assert [e.type for e in events] == ["search", "search.result"]  # type: ignore[attr-defined]
    outcome = await algo(TASK)
    assert outcome.task_id == "t" and outcome.output == ""


async def test_weighted_majority_answers_with_the_best_scored_member_of_the_heaviest_group() -> (
    None
):
    texts = ["x = 7", "so 7", "answer 9"]

    def rule(prefix: str, j: int) -> tuple[str, bool]:
        return texts[j % 3], True

    score = {"x = 7": 0.3, "so 7": 0.35, "answer 9": 0.6}
    reward = ScriptedReward(lambda t: score[t], kind="outcome")
    task = Task(id="t", input="What is 3+4?", answer="7")
    vote = BestOfN(StepGenerator(ScriptedBackend(rule)), reward, n=3, select="weighted_majority")
    result = await vote.search(task)
    assert result.answer == "so 7"  # group "7" (0.65) beats "9"; its best member is the second


async def test_keep_votes_over_the_best_scored_fraction_only() -> None:
    texts = ["7", "7", "9", "9", "9"]

    def rule(prefix: str, j: int) -> tuple[str, bool]:
        return texts[j % 5] + " " * (j % 5), True

    reward = ScriptedReward(lambda t: 0.9 if t.startswith("7") else 0.2, kind="outcome")
    steps = StepGenerator(ScriptedBackend(rule))
    task = Task(id="t", input="?", answer="7")
    # with equal weights the vote goes to 9 (three against two) ...
    everyone = BestOfN(
        steps, ScriptedReward(lambda t: 1.0, "outcome"), n=5, select="weighted_majority"
    )
    assert (await everyone.search(task)).answer.strip() == "9"
    # ... while keeping the best 40% by reward leaves only the two confident 7s
    kept = BestOfN(steps, reward, n=5, select="weighted_majority", keep=0.4)
    assert (await kept.search(task)).answer.strip() == "7"
    with pytest.raises(ConfigError, match="keep"):
        BestOfN(steps, reward, keep=0.0)


@pytest.mark.parametrize("select", ["best", "weighted_majority"])
async def test_best_of_n_same_seed_same_answer_and_tree(select: str) -> None:
    def noisy(prefix: str, j: int) -> tuple[str, bool]:
        return f"answer {random.Random(j).randrange(5)}", True

    def run(seed: int) -> BestOfN:
        reward = ScriptedReward(lambda t: random.Random(t).random(), kind="outcome")
        steps = StepGenerator(ScriptedBackend(noisy))
        return BestOfN(steps, reward, n=6, seed=seed, select=select)  # type: ignore[arg-type]

    async def summary(seed: int) -> tuple[object, ...]:
        result = await run(seed).search(TASK)
        g = result.tree.graph
        return result.answer, result.score, tuple(g.nodes[v]["text"] for v in sorted(g))

    runs = {await summary(7) for _ in range(5)}
    assert len(runs) == 1
    assert await summary(8) not in runs  # the seed reaches the backend


def test_best_so_far_prefers_finished_then_score() -> None:
    from agentic.core import Usage
    from search.base import SearchTree

    tree = SearchTree()
    a = tree.add(tree.root(), "partial\n\n", False, Usage())
    b = tree.add(tree.root(), "done", True, Usage())
    tree.score(a, 0.9)
    tree.score(b, 0.1)
    assert best_so_far(tree)[:2] == ("done", 0.1)


async def test_trace_show_tree_draws_each_search(tmp_path: object) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from agentic.cli import app
    from agentic.core import JSONLSink, span

    path = Path(str(tmp_path)) / "trace.jsonl"
    sink = JSONLSink(path)
    steps = StepGenerator(ScriptedBackend(two_steps_then_answer))
    reward = ScriptedReward(lambda t: 0.5)
    with Tracer([sink]).activate():
        for task_id in ("a", "b"):
            with span("task", task_id=task_id):
                await BestOfN(steps, reward, n=2).search(TASK)
    sink.close()
    res = CliRunner().invoke(app, ["trace", "show", str(path), "--tree"])
    assert res.exit_code == 0, res.output
    assert res.output.count("search ") == 2
    assert res.output.count("(2 nodes)") == 2
    assert "0.500" in res.output and "done" in res.output
    empty = tmp_path / "empty.jsonl"  # type: ignore[operator]
    empty.write_text("")
    res = CliRunner().invoke(app, ["trace", "show", str(empty), "--tree"])
    assert res.exit_code != 0


def test_a_head_reward_needs_a_path_and_a_local_model() -> None:
    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext
    from agentic.specs.searches import ParticleFilterSpec

    suite = load_suite("basic_arithmetic", n=1, seed=0)
    ctx = BuildContext(ScriptedBackend(lambda prefix, j: ("1", True)), suite)
    with pytest.raises(ConfigError, match="needs head="):
        ctx.build(ParticleFilterSpec(reward="head"))
    with pytest.raises(ConfigError, match=r"local transformers backend.*ScriptedBackend"):
        ctx.build(ParticleFilterSpec(reward="head", head="h.pt"))


def test_the_weight_temperature_reaches_both_particle_filters() -> None:
    from pydantic import ValidationError

    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext
    from agentic.specs.searches import ParticleFilterSpec

    suite = load_suite("basic_arithmetic", n=1, seed=0)
    ctx = BuildContext(ScriptedBackend(lambda prefix, j: ("1", True)), suite)
    for kind in ("pf", "epf"):
        # a cheap reward named: the default one, the value model, loads a second model
        plain = {"type": kind, "reward": "confidence"}
        built = ctx.build({**plain, "weight_temperature": 0.2})
        assert built.temperature == 0.2  # type: ignore[attr-defined]
        assert ctx.build(plain).temperature == 1.0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="controller 'pf': weight_temperature: Input should"):
        ctx.build({"type": "pf", "weight_temperature": 0.0})
    with pytest.raises(ValidationError, match="weight_temperature"):
        ParticleFilterSpec(weight_temperature=0.0)


async def test_rate_asks_a_prefix_only_prm_about_whole_texts_under_last() -> None:
    from search.rewards import rate

    solutions = [("12 + 3", " = 15\n\n", "so 15"), ("1", "2")]
    plain = ScriptedReward(lambda t: len(t) / 100)
    prefix_only = ScriptedReward(lambda t: len(t) / 100)
    prefix_only.prefix_only = True  # type: ignore[attr-defined]
    seen: list[Any] = []
    score = prefix_only.score

    async def spy(task: Task, items: Any) -> Any:
        seen.extend(items)
        return await score(task, items)

    prefix_only.score = spy  # type: ignore[method-assign]
    for how in ("last", "min", "mean"):
        assert await rate(prefix_only, TASK, solutions, how) == await rate(
            plain, TASK, solutions, how
        )
    # "last": one whole text per solution; the others need every step
    assert seen[:2] == [["12 + 3 = 15\n\nso 15"], ["12"]]
    assert seen[2:4] == solutions
