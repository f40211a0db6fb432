"""Beam search: mechanics on scripted parts, budget stops, bad input, and the real model."""

from __future__ import annotations

import random

import pytest

from agentic.core import Budget, ConfigError, GenerateRequest, Generation, Task
from backends.testing import Rule, ScriptedBackend
from search.base import SearchResult, StepGenerator, best_so_far
from search.beam import BeamSearch
from search.rewards import JudgeReward
from search.testing import ScriptedReward

TASK = Task(id="t", input="What is 2+2?")


class BatchRecorder(ScriptedBackend):
    """Also records each `generate` call's requests, one list per call (= per round)."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        self.batches: list[list[GenerateRequest]] = []

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.batches.append(list(requests))
        return await super()._generate(requests)


def mechanics_rule(prefix: str, j: int) -> tuple[str, bool]:
    """Sample k of a step: `s{depth}.{k}`; at depth 1 every child of s0.3 and sample 0 of the
    others end the answer, at depth 2 everything does."""
    k, d = j % 1000, prefix.count("\n\n")
    if d >= 2 or (d == 1 and (prefix.startswith("s0.3") or k == 0)):
        return f"end{d}.{k}", True
    return f"s{d}.{k}\n\n", False


def mechanics_score(text: str) -> float:
    last = text.rstrip("\n").split("\n\n")[-1]
    bonus = 0.3 if last.startswith("end1") else 0.0
    return 0.1 * int(last[-1]) + bonus + (0.01 if text.startswith("s0.3") else 0.0)


async def test_rounds_keep_width_beams_and_absorb_finished_candidates() -> None:
    backend = BatchRecorder(mechanics_rule)
    algo = BeamSearch(StepGenerator(backend), ScriptedReward(mechanics_score), n=4, width=2)
    result = await algo.search(TASK)
    g = result.tree.graph

    # round 0: the root alone; round 1: the two best of s0.0..s0.3; round 2: the one beam
    # left, since every child of s0.3 and one of s0.2 finished
    assert [[r.prefix for r in b] for b in backend.batches] == [
        [""],
        ["s0.3\n\n", "s0.2\n\n"],
        ["s0.2\n\ns1.1\n\n"],
    ]
    assert [r.params.n for b in backend.batches for r in b] == [4, 2, 2, 2]

    done = {g.nodes[v]["text"] for v in g if g.nodes[v]["done"]}
    assert done == {t for t, _ in result.finished}
    prefixes = {r.prefix for b in backend.batches for r in b}
    assert not done & prefixes  # finished candidates were never extended
    assert all(g.out_degree(v) == 0 for v in g if g.nodes[v]["done"])

    assert result.answer == "s0.3\n\nend1.1"  # finished in round 1, still the best
    assert result.score == pytest.approx(0.41)
    assert result.score == max(s for _, s in result.finished if s is not None)
    assert len(result.finished) == 5 and result.stopped is None

    assert g.number_of_nodes() == 1 + 4 + 4 + 2
    assert all(g.in_degree(v) == 1 for v in g if v != 0)
    assert g.out_degree(0) == 4  # the paper's N first steps
    assert all(g.out_degree(v) == 4 // 2 for v in g if v != 0 and g.out_degree(v))
    assert all(g.nodes[v]["score"] is not None for v in g if v != 0)
    assert result.usage.model_calls == 4 and result.usage.reward_calls == 10


TABLE = {"a": 0.6, "b": 0.5, "aa": 0.1, "ab": 0.2, "ba": 0.9, "bb": 0.3}


def branch_rule(prefix: str, j: int) -> tuple[str, bool]:
    if prefix.count("\n\n") < 2:
        return "ab"[j % 2] + "\n\n", False
    return "done", True


def branch_score(text: str) -> float:
    return TABLE[text.replace("\n\n", "").removesuffix("done")]


async def test_a_wider_beam_finds_the_branch_greedy_search_misses() -> None:
    steps = StepGenerator(ScriptedBackend(branch_rule))
    reward = ScriptedReward(branch_score)
    beam = await BeamSearch(steps, reward, n=2, width=2).search(TASK)
    greedy = await BeamSearch(steps, reward, n=2, width=1).search(TASK)
    first_sample = "a\n\na\n\ndone"  # sample 0 at every step
    assert beam.answer == "b\n\na\n\ndone" and beam.score == 0.9
    assert greedy.answer == "a\n\nb\n\ndone" and greedy.score == 0.2
    assert first_sample not in (beam.answer, greedy.answer)


async def test_ties_break_by_creation_order() -> None:
    steps = StepGenerator(ScriptedBackend(branch_rule))
    result = await BeamSearch(steps, ScriptedReward(lambda t: 0.5), n=2, width=1).search(TASK)
    assert result.answer == "a\n\na\n\ndone"


async def test_budget_stops_with_the_best_so_far() -> None:
    backend = BatchRecorder(lambda p, j: (f"m{j % 1000}\n\n", False))
    reward = ScriptedReward(lambda t: t.count("m3") + t.count("m1") / 10)
    algo = BeamSearch(
        StepGenerator(backend, max_steps=5), reward, n=4, width=2, budget=Budget(max_model_calls=2)
    )
    result = await algo.search(TASK)
    assert result.stopped and "model_calls" in result.stopped
    assert len(backend.batches) == 2 and result.usage.model_calls == 3
    assert result.finished == []
    assert result.answer == "m3\n\nm1\n\n" and result.score == pytest.approx(1.1)
    assert (result.answer, result.score) == best_so_far(result.tree)[:2]


async def test_per_request_seeds_stride_by_n_each_round() -> None:
    # round r's request for beam i has seed + r·N + i: distinct within and across rounds
    backend = BatchRecorder(lambda p, j: (f"m{j % 1000}\n\n", False))
    reward = ScriptedReward(lambda t: t.count("m3") + t.count("m1") / 10)
    algo = BeamSearch(StepGenerator(backend, max_steps=3), reward, n=4, width=2, seed=5)
    await algo.search(TASK)
    assert [[r.params.seed for r in b] for b in backend.batches] == [[5], [9, 10], [13, 14]]
    assert [[r.params.n for r in b] for b in backend.batches] == [[4], [2, 2], [2, 2]]


def noisy(prefix: str, j: int) -> tuple[str, bool]:
    """A step that depends on the prefix and the request's seed (as a sampled one does)."""
    d, v = prefix.count("\n\n"), random.Random(f"{prefix}|{j}").randrange(10)
    return (f"answer {v}", True) if d >= 2 else (f"{d}.{v}\n\n", False)


async def test_the_same_seed_gives_the_same_answer_and_tree() -> None:
    def spread(text: str) -> float:
        return random.Random(text).random()

    def run(seed: int) -> BeamSearch:
        return BeamSearch(StepGenerator(ScriptedBackend(noisy)), ScriptedReward(spread), seed=seed)

    def summary(result: SearchResult) -> tuple[object, ...]:
        g = result.tree.graph
        return result.answer, result.score, tuple(g.nodes[v]["text"] for v in sorted(g))

    runs = {summary(await run(7).search(TASK)) for _ in range(5)}
    assert len(runs) == 1
    assert summary(await run(8).search(TASK)) not in runs  # the seed reaches the backend


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "^n must be >= 1"),
        ({"width": 0}, "^width must be"),
        ({"n": 2, "width": 3}, "^width must be"),
        ({"n": 6, "width": 4}, "^n=6 must be a multiple of width=4"),
        ({"aggregation": "sum"}, "aggregation"),
    ],
)
def test_bad_input(kwargs: dict[str, object], message: str) -> None:
    steps = StepGenerator(ScriptedBackend(branch_rule))
    with pytest.raises(ConfigError, match=message):
        BeamSearch(steps, ScriptedReward(lambda t: 0.0), **kwargs)  # type: ignore[arg-type]


def _path_text(result: SearchResult, node: int) -> str:
    g = result.tree.graph
    steps = []
    while node != 0:
        steps.append(g.nodes[node]["step"])
        [node] = g.predecessors(node)
    return "".join(reversed(steps))


@pytest.mark.slow
async def test_real_model_end_to_end(smollm2: object) -> None:
    steps = StepGenerator(smollm2, tokens_per_step=24, max_steps=3, temperature=0.7)  # type: ignore[arg-type]
    algo = BeamSearch(steps, JudgeReward(smollm2), n=4, width=2)  # type: ignore[arg-type]
    task = Task(id="a", input="What is 3 + 4? Give the answer as a number.")
    result = await algo.search(task)
    g = result.tree.graph
    assert result.answer.strip() and result.stopped is None
    assert result.usage.model_calls > 0 and result.usage.reward_calls > 0
    assert g.number_of_nodes() > 4
    done = [v for v in g if g.nodes[v]["done"]]
    assert sorted(g.nodes[v]["text"] for v in done) == sorted(t for t, _ in result.finished)
    assert all(_path_text(result, v) == g.nodes[v]["text"] for v in g if v != 0)
    assert result.answer in {t for t, _ in result.finished}


async def test_a_recording_holds_what_the_viewer_draws() -> None:
    """Rounds with kept and pruned beams, the chosen node, reward calls as spans closed by their
    scores, and each generate call's requests under one batch id."""
    from agentic.core import Tracer

    events: list[object] = []
    backend = BatchRecorder(mechanics_rule)
    algo = BeamSearch(StepGenerator(backend), ScriptedReward(mechanics_score), n=4, width=2)
    with Tracer([events.append]).activate():
        result = await algo.search(TASK)
    by_type: dict[str, list[object]] = {}
    for e in events:
        by_type.setdefault(e.type, []).append(e)  # type: ignore[attr-defined]

    rounds = [e.payload for e in by_type["search.round"]]  # type: ignore[attr-defined]
    assert rounds[0]["kept"] and rounds[0]["pruned"], rounds[0]
    kept = {n for r in rounds for n in r["kept"]}
    assert not kept & {n for r in rounds for n in r["pruned"]}

    [res] = [e.payload for e in by_type["search.result"]]  # type: ignore[attr-defined]
    assert res["chosen"] == result.chosen
    assert result.tree.graph.nodes[res["chosen"]]["text"] == result.answer

    spans = {e.span_id: e for e in by_type["reward"]}  # type: ignore[attr-defined]
    closes = by_type["reward.result"]
    assert len(spans) == len(closes) == len(backend.batches)
    for c in closes:
        assert c.parent_id in spans  # type: ignore[attr-defined]
        assert len(c.payload["scores"]) == spans[c.parent_id].payload["items"]  # type: ignore[attr-defined]

    gens = by_type["backend.generate"]
    batches = {e.payload["batch"] for e in gens}  # type: ignore[attr-defined]
    assert len(batches) == len(backend.batches)
    assert all(
        e.payload["batch_size"]
        == len([g for g in gens if g.payload["batch"] == e.payload["batch"]])
        for e in gens
    )  # type: ignore[attr-defined]
