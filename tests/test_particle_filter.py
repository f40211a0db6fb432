"""Particle filtering and entropic particle filtering: the pure parts, the mechanics on scripted
parts, and one end-to-end run each on the real model."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from agentic.core import Budget, ConfigError, Event, Task, Tracer
from backends.testing import ScriptedBackend
from search.base import SearchResult, StepGenerator
from search.entropic_pf import EntropicParticleFilter, annealing_temperature, temper
from search.particle_filter import ParticleFilter, systematic_resample, weights
from search.rewards import JudgeReward
from search.testing import ScriptedReward

TASK = Task(id="t", input="What is 2+2?")
N = 8


def slot(j: int) -> int:
    """The particle a scripted request is for: with one sample per request the rule sees
    seed·1000, and round t's seeds are (t-1)·N + i."""
    return (j // 1000) % N


def depth(prefix: str) -> int:
    return prefix.count("\n\n")


def branches(rule_first: Callable[[int], str]) -> Callable[[str, int], tuple[str, bool]]:
    """First step from `rule_first(slot)`, then "s\\n\\n" steps until max_steps ends it."""

    def rule(prefix: str, j: int) -> tuple[str, bool]:
        return (rule_first(slot(j)), False) if depth(prefix) == 0 else ("s\n\n", False)

    return rule


async def traced(algo: ParticleFilter, task: Task = TASK) -> tuple[SearchResult, list[Event]]:
    events: list[Event] = []
    with Tracer([events.append]).activate():
        result = await algo.search(task)
    return result, events


def rounds(events: list[Event]) -> list[dict[str, Any]]:
    return [e.payload for e in events if e.type == "search.round"]


def texts(result: SearchResult, nodes: list[int]) -> list[str]:
    return [result.tree.graph.nodes[v]["text"] for v in nodes]


# ---- pure functions ---------------------------------------------------------------------------


def test_weights() -> None:
    w = weights([0.1, 0.5, 0.9, 0.0, 1.0])
    assert sum(w) == pytest.approx(1.0)
    assert w[3] < w[0] < w[1] < w[2] < w[4]  # higher score, higher weight; 0 and 1 stay finite
    cold, hot = weights([0.2, 0.8], 0.5), weights([0.2, 0.8], 4.0)
    assert max(hot) < max(weights([0.2, 0.8])) < max(cold)  # temperature flattens
    assert weights([0.3, 0.3, 0.3]) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ConfigError, match="temperature"):
        weights([0.5], 0.0)


def test_systematic_resample_counts_are_within_one_of_n_w() -> None:
    rng = random.Random(1)
    for _ in range(200):
        n = rng.randint(1, 12)
        raw = [rng.random() ** 3 for _ in range(n)]
        w = [x / sum(raw) for x in raw]
        picks = systematic_resample(w, rng.random())
        assert len(picks) == n
        for i in range(n):
            assert abs(picks.count(i) - n * w[i]) < 1.0
    assert systematic_resample([0.0, 0.0, 1.0, 0.0], 0.0) == [2, 2, 2, 2]
    assert systematic_resample([0.0, 0.0, 1.0, 0.0], 0.999) == [2, 2, 2, 2]
    assert systematic_resample([0.5, 0.5], 0.3) == [0, 1]
    with pytest.raises(ConfigError, match="u must"):
        systematic_resample([1.0], 1.0)


def test_annealing_temperature() -> None:
    # collapsed early: τ = (N/ESS)(1 − t/T)
    assert annealing_temperature(1.0, 8, 1, 4) == pytest.approx(6.0)
    assert annealing_temperature(2.0, 8, 1, 3) == pytest.approx(4 * 2 / 3)
    # late in the search, or not collapsed: τ = 1
    assert annealing_temperature(1.0, 8, 4, 4) == 1.0
    assert annealing_temperature(2.0, 8, 3, 4) == 1.0  # 4 · 1/4 = 1
    assert annealing_temperature(4.0, 8, 1, 4) == 1.0  # ESS/N = 0.5 is not a collapse
    w = [0.9, 0.05, 0.05]
    assert temper(w, 1.0) == pytest.approx(w)
    assert max(temper(w, 3.0)) < 0.9 and sum(temper(w, 3.0)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n": 0}, "n"),
        ({"temperature": 0.0}, "temperature"),
        ({"ess_threshold": 0.0}, "ess_threshold"),
        ({"ess_threshold": 1.5}, "ess_threshold"),
        ({"aggregation": "sum"}, "aggregation"),
    ],
)
@pytest.mark.parametrize("cls", [ParticleFilter, EntropicParticleFilter])
def test_bad_input(cls: type[ParticleFilter], kwargs: dict[str, Any], field: str) -> None:
    steps = StepGenerator(ScriptedBackend(lambda p, j: ("x", True)))
    with pytest.raises(ConfigError, match=field):
        cls(steps, ScriptedReward(lambda t: 0.5), **kwargs)


def test_bad_lookahead_temperature() -> None:
    steps = StepGenerator(ScriptedBackend(lambda p, j: ("x", True)))
    with pytest.raises(ConfigError, match="lookahead_temperature"):
        EntropicParticleFilter(steps, ScriptedReward(lambda t: 0.5), lookahead_temperature=-1)


# ---- particle filter mechanics ----------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.3, 0.5, 1.0])
async def test_resamples_only_when_ess_falls_below_the_threshold(threshold: float) -> None:
    steps = StepGenerator(ScriptedBackend(branches(lambda i: f"b{i}\n\n")), max_steps=3)
    flat = ParticleFilter(steps, ScriptedReward(lambda t: 0.5), n=N, ess_threshold=threshold)
    _, events = await traced(flat)
    assert [r["resampled"] for r in rounds(events)] == [False, False, False]
    assert [r["ess"] for r in rounds(events)] == pytest.approx([N, N, 0])  # none live at the end

    # round 1 scores one branch far above the others; later rounds score all alike
    def peaked(t: str) -> float:
        return 0.5 if depth(t) >= 2 else (0.99 if t.startswith("b0") else 0.2)

    algo = ParticleFilter(steps, ScriptedReward(peaked), n=N, ess_threshold=threshold)
    result, events = await traced(algo)
    rs = rounds(events)
    assert [r["round"] for r in rs] == [1, 2, 3]
    for r in rs:
        assert r["resampled"] == (r["live"] > 0 and r["ess"] / r["live"] < threshold)
    assert rs[0]["ess"] / N < 0.3 and rs[0]["resampled"]
    assert not rs[1]["resampled"]  # the population is on one branch, with equal weights
    assert result.answer.startswith("b0") and result.stopped is None


async def test_finished_particles_are_absorbing() -> None:
    # even slots finish at once; odd ones go on, and the reward prefers them strongly
    def rule(prefix: str, j: int) -> tuple[str, bool]:
        if not prefix:
            i = slot(j)
            return (f"answer {i}", True) if i % 2 == 0 else (f"b{i}\n\n", False)
        return "s\n\n", False

    backend = ScriptedBackend(rule)
    reward = ScriptedReward(lambda t: 0.1 if t.startswith("answer") else 0.9)
    algo = ParticleFilter(StepGenerator(backend, max_steps=3), reward, n=N, ess_threshold=1.0)
    result, events = await traced(algo)
    g = result.tree.graph
    done = {g.nodes[v]["text"] for v in g if v != 0 and g.nodes[v]["done"]}
    assert {f"answer {i}" for i in range(0, N, 2)} <= done
    assert not any(r.prefix in done for r in backend.requests)  # never extended again
    assert len(backend.requests) == N + N // 2 + N // 2  # only the live half after round 1
    assert {f"answer {i}" for i in range(0, N, 2)} <= {t for t, _ in result.finished}
    final = texts(result, rounds(events)[-1]["particles"])
    assert sum(t.startswith("answer") for t in final) == N // 2  # they kept their slots
    assert [r["live"] for r in rounds(events)] == [N // 2, N // 2, 0]
    assert result.answer.startswith("b") and result.score == 0.9


@pytest.mark.parametrize("cls", [ParticleFilter, EntropicParticleFilter])
async def test_weighted_majority_answers_from_the_heaviest_answer_group(
    cls: type[ParticleFilter],
) -> None:
    # five slots answer 7 at 0.5, three answer 9 at 0.8: the best single particle says 9, the
    # population's weight (2.5 against 2.4) says 7, and the 7 picked is its best-scored member
    def rule(prefix: str, j: int) -> tuple[str, bool]:
        i = slot(j)
        return (f"it is 7{' ' * i}", True) if i < 5 else (f"it is 9{' ' * i}", True)

    def score(t: str) -> float:
        return 0.8 if "9" in t else 0.5 + (0.01 if t == "it is 7    " else 0.0)

    steps = StepGenerator(ScriptedBackend(rule), max_steps=2)
    task = Task(id="t", input="What is 3+4?", answer="7")
    best = await cls(steps, ScriptedReward(score), n=N).search(task)
    assert best.answer.startswith("it is 9")
    vote = await cls(steps, ScriptedReward(score), n=N, select="weighted_majority").search(task)
    assert vote.answer == "it is 7    "
    with pytest.raises(ConfigError, match="select"):
        cls(steps, ScriptedReward(score), select="vote")  # type: ignore[arg-type]


async def test_a_favoured_branch_takes_over_the_population() -> None:
    steps = StepGenerator(
        ScriptedBackend(branches(lambda i: "good\n\n" if i % 4 == 0 else f"bad{i}\n\n")),
        max_steps=3,
    )
    reward = ScriptedReward(lambda t: 0.9 if t.startswith("good") else 0.2)
    result, events = await traced(ParticleFilter(steps, reward, n=N))
    first, last = rounds(events)[0], rounds(events)[-1]
    assert first["resampled"]
    # 2 of 8 first steps were good, each with weight 36/78 after round 1, so systematic
    # resampling gives each at least ⌊8·36/78⌋ = 3 slots; later rounds keep the population
    assert sum(t.startswith("good") for t in texts(result, first["particles"])) >= 6
    assert sum(t.startswith("good") for t in texts(result, last["particles"])) >= 6
    assert result.answer == "good\n\ns\n\ns\n\n" and result.score == 0.9


async def test_budget_stops_with_the_best_so_far() -> None:
    steps = StepGenerator(ScriptedBackend(branches(lambda i: f"b{i}\n\n")), max_steps=3)
    reward = ScriptedReward(lambda t: 0.1 + 0.1 * int(t[1]))
    algo = ParticleFilter(steps, reward, n=4, budget=Budget(max_model_calls=2))
    result = await algo.search(TASK)
    assert result.stopped and "model_calls" in result.stopped
    assert result.usage.model_calls == 4  # round 1 ran (one call per particle), round 2 did not
    assert result.answer == "b3\n\n" and result.score == pytest.approx(0.4)


def noisy(prefix: str, j: int) -> tuple[str, bool]:
    """A step that depends on the prefix and the request's seed (as a sampled one does): one of
    ten per depth; the third step ends the answer."""
    d, v = depth(prefix), random.Random(f"{prefix}|{j}").randrange(10)
    return (f"answer {v}", True) if d >= 2 else (f"{d}.{v}\n\n", False)


def spread(text: str) -> float:
    """A score in (0, 1) that differs from text to text, so weights are uneven."""
    return 0.05 + 0.9 * random.Random(text).random()


def tree_texts(result: SearchResult) -> list[str]:
    g = result.tree.graph
    return [g.nodes[v]["text"] for v in sorted(g)]


@pytest.mark.parametrize("cls", [ParticleFilter, EntropicParticleFilter])
async def test_the_same_seed_gives_the_same_answer_and_tree(cls: type[ParticleFilter]) -> None:
    # ess_threshold=1: every round with uneven weights resamples, so the resampling draws (from
    # the seeded rng, never the global `random`) decide which prefixes go on
    runs = set()
    for _ in range(10):
        steps = StepGenerator(ScriptedBackend(noisy), max_steps=3)
        algo = cls(steps, ScriptedReward(spread), n=N, ess_threshold=1.0, seed=3)
        result, events = await traced(algo)
        assert any(r["resampled"] for r in rounds(events))
        runs.add((result.answer, result.score, tuple(tree_texts(result))))
    assert len(runs) == 1
    other = await cls(
        StepGenerator(ScriptedBackend(noisy), max_steps=3), ScriptedReward(spread), seed=4
    ).search(TASK)
    assert tuple(tree_texts(other)) not in {r[2] for r in runs}  # the seed reaches the search


# ---- entropic particle filter -----------------------------------------------------------------


async def test_annealing_keeps_more_branches_after_an_early_collapse() -> None:
    def peaked(t: str) -> float:
        return 0.5 if depth(t) >= 2 else (0.99 if t.startswith("b0") else 0.01)

    steps = StepGenerator(ScriptedBackend(branches(lambda i: f"b{i}\n\n")), max_steps=3)
    survivors = {}
    for annealing in (False, True):
        algo = EntropicParticleFilter(
            steps, ScriptedReward(peaked), n=N, annealing=annealing, lookahead=False
        )
        result, events = await traced(algo)
        final = texts(result, rounds(events)[-1]["particles"])
        survivors[annealing] = len({t.split("\n\n")[0] for t in final})
        anneal = [e.payload for e in events if e.type == "search.anneal"]
        if annealing:
            [a] = anneal  # only round 1 collapsed
            assert a["round"] == 1
            assert a["tau"] == pytest.approx(annealing_temperature(a["ess"], N, 1, 3))
            assert a["tau"] > 4
        else:
            assert anneal == []
    assert survivors[False] == 1 and survivors[True] >= 3


async def test_annealing_counts_only_the_live_particles() -> None:
    # even slots finish in round 1; of the four live ones slot 1 takes nearly all the weight,
    # so the live population has collapsed: τ uses N = 4 live particles, not all 8
    def rule(prefix: str, j: int) -> tuple[str, bool]:
        if not prefix:
            i = slot(j)
            return (f"answer {i}", True) if i % 2 == 0 else (f"b{i}\n\n", False)
        return "s\n\n", False

    def score(t: str) -> float:
        return 0.5 if t.startswith("answer") else 0.99 if t.startswith("b1") else 0.01

    steps = StepGenerator(ScriptedBackend(rule), max_steps=3)
    algo = EntropicParticleFilter(steps, ScriptedReward(score), n=N, lookahead=False)
    _, events = await traced(algo)
    [a] = [e.payload for e in events if e.type == "search.anneal"]
    assert a["round"] == 1 and a["live"] == N // 2
    assert a["tau"] == pytest.approx(annealing_temperature(a["ess"], N // 2, 1, 3))
    assert a["tau"] != pytest.approx(annealing_temperature(a["ess"], N, 1, 3))


async def test_lookahead_weighs_particles_by_their_next_step() -> None:
    # "a" looks good now but leads to a trap; "b" looks bad now but leads to gold
    def rule(prefix: str, j: int) -> tuple[str, bool]:
        if not prefix:
            return ("a\n\n" if slot(j) % 2 == 0 else "b\n\n"), False
        if depth(prefix) == 1:
            return ("trap\n\n" if prefix.startswith("a") else "gold\n\n"), False
        return "end", True

    def score(t: str) -> float:
        return 0.99 if "gold" in t else 0.01 if "trap" in t else 0.9 if t[0] == "a" else 0.1

    firsts, calls = {}, {}
    for lookahead in (False, True):
        backend, reward = ScriptedBackend(rule), ScriptedReward(score)
        algo = EntropicParticleFilter(
            StepGenerator(backend, max_steps=3),
            reward,
            n=N,
            ess_threshold=1.0,
            annealing=False,
            lookahead=lookahead,
        )
        result, events = await traced(algo)
        firsts[lookahead] = {t[0] for t in texts(result, rounds(events)[0]["particles"])}
        calls[lookahead] = (len(backend.requests), reward.calls)
        g = result.tree.graph
        looks = [v for v in g if g.nodes[v].get("lookahead")]
        if lookahead:
            assert looks and all(g.nodes[v]["score"] == score(g.nodes[v]["text"]) for v in looks)
            assert {g.nodes[v]["text"] for v in looks} >= {"a\n\ntrap\n\n", "b\n\ngold\n\n"}
            assert result.answer == "b\n\ngold\n\nend"
        else:
            assert looks == []
            assert result.answer.startswith("a")
    assert firsts == {False: {"a"}, True: {"b"}}  # resampled onto the branch the look-ahead saw
    assert calls[True][0] > calls[False][0] and calls[True][1] > calls[False][1]


# ---- the real model ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("cls", [ParticleFilter, EntropicParticleFilter])
async def test_real_model_end_to_end(smollm2: object, cls: type[ParticleFilter]) -> None:
    steps = StepGenerator(smollm2, tokens_per_step=24, max_steps=3, temperature=0.7)  # type: ignore[arg-type]
    algo = cls(steps, JudgeReward(smollm2), n=4)  # type: ignore[arg-type]
    task = Task(id="a", input="What is 3 + 4? Give the answer as a number.")
    result, events = await traced(algo, task)
    assert result.answer.strip() and result.stopped is None
    assert result.usage.model_calls > 0 and result.usage.reward_calls > 0
    assert result.tree.graph.number_of_nodes() > 4
    assert result.answer in {t for t, _ in result.finished}
    assert rounds(events) and rounds(events)[-1]["live"] == 0
