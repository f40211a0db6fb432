"""Confidence from the policy's own logprobs (`search.confidence`), weighted combinations of
rewards (`search.rewards.WeightedReward`), and confidence-weighted voting in best-of-N."""

from __future__ import annotations

import math

import pytest

from agentic.core import (
    Budget,
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    SamplingParams,
    Task,
    TopLogprob,
)
from backends import Backend
from backends.testing import ScriptedBackend
from search.base import StepGenerator
from search.best_of_n import BestOfN
from search.confidence import (
    ConfidenceReward,
    generation_confidences,
    token_confidence,
    trace_confidence,
)
from search.rewards import WeightedReward
from search.testing import ScriptedReward

TASK = Task(id="t", input="What is 3 + 4?", answer="7")


def top(*logprobs: float) -> tuple[TopLogprob, ...]:
    return tuple(TopLogprob(token_id=i, token=str(i), logprob=lp) for i, lp in enumerate(logprobs))


def test_token_confidence_is_the_negative_mean_top_k_logprob() -> None:
    assert token_confidence(top(-0.1, -3.0, -5.0), -0.1) == pytest.approx(8.1 / 3)
    # a peaked distribution (the top token near 1, the rest far below) is more confident
    assert token_confidence(top(-0.01, -9.0), -0.01) > token_confidence(top(-0.7, -0.7), -0.7)
    assert token_confidence(None, -0.25) == 0.25


def test_trace_statistics_read_the_weakest_window_and_the_tail() -> None:
    c = [5.0, 5.0, 1.0, 1.0, 5.0, 5.0, 5.0, 3.0]
    assert trace_confidence(c, "mean") == pytest.approx(30 / 8)
    assert trace_confidence(c, "lowest_group", window=2) == pytest.approx(1.0)
    assert trace_confidence(c, "lowest_group", window=3) == pytest.approx(7 / 3)
    assert trace_confidence(c, "tail", tail=2) == pytest.approx(4.0)
    assert trace_confidence(c[:2], "lowest_group", window=8) == pytest.approx(5.0)
    assert trace_confidence([], "tail") == 0.0


async def test_score_generations_calibrates_and_charges_reward_calls() -> None:
    g = Generation(
        text="7",
        token_ids=(1, 2),
        token_logprobs=(-0.1, -0.2),
        top_logprobs=(top(-0.1, -4.1), top(-0.2, -2.2)),
    )
    reward = ConfidenceReward(ScriptedBackend(lambda p, j: ("", True)), statistic="mean",
                              top_k=2, center=2.0, scale=0.5)  # fmt: skip
    raw = (4.2 / 2 + 2.4 / 2) / 2  # C_1 = 2.1, C_2 = 1.2
    assert generation_confidences(g) == pytest.approx([2.1, 1.2])
    with Budget() as meter:
        [score] = await reward.score_generations(TASK, [g])
    assert score == pytest.approx(1 / (1 + math.exp(-(raw - 2.0) / 0.5)))
    assert meter.spent.reward_calls == 1
    with pytest.raises(ConfigError, match="logprobs"):
        await reward.score_generations(TASK, [Generation(text="7")])


def test_bad_settings_name_the_field() -> None:
    b = ScriptedBackend(lambda p, j: ("", True))
    with pytest.raises(ConfigError, match="statistic"):
        ConfidenceReward(b, statistic="median")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scale"):
        ConfidenceReward(b, scale=0.0)
    with pytest.raises(ConfigError, match="weights"):
        WeightedReward([(-1.0, ScriptedReward(lambda t: 0.5))])
    with pytest.raises(ConfigError, match="at least one"):
        WeightedReward([])


async def test_weighted_reward_combines_parts_by_normalised_weights() -> None:
    a = ScriptedReward(lambda t: 1.0 if "7" in t else 0.0)
    b = ScriptedReward(lambda t: 0.2)
    both_process = WeightedReward([(3.0, a), (1.0, b)])
    assert both_process.kind == "process"
    scores = await both_process.score(TASK, [["x = ", "7"], ["9"]])
    assert scores == [[pytest.approx(0.05), pytest.approx(0.8)], [pytest.approx(0.05)]]
    mixed = WeightedReward([(1.0, a), (1.0, ScriptedReward(lambda t: 0.4, kind="outcome"))])
    assert mixed.kind == "outcome"
    with Budget() as meter:
        assert await mixed.score(TASK, ["so 7", "9"]) == [pytest.approx(0.7), pytest.approx(0.2)]
    assert meter.spent.reward_calls == 4  # each part charges its own


async def test_best_of_n_reads_confidence_from_the_samples_without_a_model_call() -> None:
    class Confident(ScriptedBackend):
        """Samples whose answer 7 is written confidently and 9 hesitantly."""

        def _one(self, req: GenerateRequest, j: int) -> Generation:
            g = super()._one(req, j)
            sure = "7" in g.text
            # peaked (the runner-up far below) against flat (two near-equal candidates)
            lp, dist = (-0.05, top(-0.05, -6.0)) if sure else (-0.9, top(-0.9, -0.9))
            n = len(g.token_ids)
            assert req.params.logprobs == 5  # asked for by the reward
            return g.model_copy(update={"token_logprobs": (lp,) * n, "top_logprobs": (dist,) * n})

    backend = Confident(lambda p, j: (["9", "9", "9", "7", "7"][j % 5], True))
    reward = ConfidenceReward(backend)
    steps = StepGenerator(backend)
    best = await BestOfN(steps, reward, n=5, select="weighted_majority", keep=0.4).search(TASK)
    # three hesitant 9s lose to two confident 7s once filtered; the scripted backend cannot
    # score, so the confidences came from the samples themselves
    assert best.answer == "7"


@pytest.mark.slow
async def test_both_ways_to_the_logprobs_agree_on_the_real_model(smollm2: Backend) -> None:
    msgs = (Message(role="user", content="What is 3 + 4? Give only the final answer."),)
    params = SamplingParams(max_tokens=16, temperature=0.7, n=3, seed=0, logprobs=5)
    [gens] = await smollm2.generate([GenerateRequest(messages=msgs, params=params)])
    reward = ConfidenceReward(smollm2, statistic="mean", messages=lambda task: msgs)
    from_samples = await reward.score_generations(TASK, gens)
    fresh = ConfidenceReward(smollm2, statistic="mean", messages=lambda task: msgs)
    rescored = await fresh.score(TASK, [[g.text] for g in gens])
    for a, [b] in zip(from_samples, rescored, strict=True):
        assert 0.0 < a < 1.0
        # a forward over the text gives the same logprobs as sampling it, up to re-tokenisation
        assert b == pytest.approx(a, abs=0.05)
