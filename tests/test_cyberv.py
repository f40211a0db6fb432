"""CyberVLoop and SelfConsistency: the sensor's signals, the vote threshold, the corrective
round, on a scripted backend; then both end to end on the real embedded model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from agentic.core import (
    Budget,
    ConfigError,
    Event,
    GenerateRequest,
    Generation,
    Message,
    Task,
    Tracer,
    Usage,
)
from backends.base import BaseBackend, Capabilities
from controllers.cyberv import CyberVLoop, repetition
from controllers.self_consistency import SelfConsistency

# (user text, sample index j, greedy?) -> (answer text, logprob per token)
Script = Callable[[str, int, bool], tuple[str, float]]


class VotingBackend(BaseBackend):
    """One character per token; every token of a sample gets the logprob the script gives."""

    def __init__(self, script: Script) -> None:
        self.script, self.name = script, "voting"
        self.capabilities = Capabilities(logprobs=True, top_logprobs=5)
        self.requests: list[GenerateRequest] = []

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.requests += requests
        out = []
        for r in requests:
            assert r.messages is not None
            user = r.messages[-1].content
            greedy = r.params.temperature == 0.0
            gens = []
            for j in range(r.params.n):
                text, lp = self.script(user, j, greedy)
                gens.append(
                    Generation(
                        text=text,
                        token_ids=tuple(ord(c) for c in text),
                        token_logprobs=(lp,) * len(text),
                        entropies=(0.5,) * len(text),
                        usage=Usage(completion_tokens=len(text), model_calls=int(j == 0)),
                    )
                )
            out.append(gens)
        return out

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return len(text_or_messages) if isinstance(text_or_messages, str) else 0


TASK = Task(id="t", input="What is 2 + 3?", answer="5")


async def test_agreement_is_one_round_without_feedback() -> None:
    backend = VotingBackend(lambda user, j, greedy: ("The answer is 5", -0.01))
    outcome = await CyberVLoop(backend, n=4, theta=0.5)(TASK)
    assert outcome.output == "The answer is 5"
    assert outcome.info["rounds"] == 1 and outcome.info["weak"] is False
    assert len(backend.requests) == 2  # greedy + one request for the n samples
    assert outcome.usage.completion_tokens == 5 * len("The answer is 5")


async def test_weak_vote_runs_one_corrective_round_with_feedback() -> None:
    def script(user: str, j: int, greedy: bool) -> tuple[str, float]:
        if "disagreed" in user:  # the corrective round: everyone says 5, confidently
            return "so 5", -0.01
        return ("so 6", -0.1) if greedy else (f"so {j}", -2.0)

    backend = VotingBackend(script)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        outcome = await CyberVLoop(backend, n=4, theta=0.5)(TASK)
    assert outcome.info["weak"] is True and outcome.info["rounds"] == 2
    assert outcome.info["answer"] == "5" and outcome.output == "so 5"
    feedback_turn = backend.requests[-1].messages[-1].content  # type: ignore[index]
    assert feedback_turn.startswith(TASK.input) and "answer '6': 1 of 5" in feedback_turn
    assert all(r.params.temperature > 0 for r in backend.requests[2:])  # no second greedy
    kinds = [e.type for e in events]
    assert kinds.count("cyberv.signals") == 9 and kinds.count("cyberv.decision") == 2
    assert kinds.count("cyberv.feedback") == 1
    first = next(e for e in events if e.type == "cyberv.signals")
    assert first.payload["greedy"] is True and first.payload["attention_drift"] is None


async def test_sensor_reads_the_answer_span_and_the_threshold_decides() -> None:
    # the greedy answer is confident; samples disagree at low confidence
    def script(user: str, j: int, greedy: bool) -> tuple[str, float]:
        return ("x = 7", -0.05) if greedy else (f"x = {j % 2 + 7}", -1.0)

    loop = CyberVLoop(VotingBackend(script), n=4, theta=0.5)
    gens = await loop._round(loop._messages(TASK, None, None), True, 0)
    signals = loop.sense(TASK, gens, "7")
    assert [s.answer for s in signals] == ["7", "7", "8", "7", "8"]
    assert signals[0].confidence == pytest.approx(0.951, abs=1e-3)
    assert signals[1].entropy == pytest.approx(0.5)
    assert [s.agrees_with_greedy for s in signals] == [True, True, False, True, False]
    answer, weight, weak = loop.vote(signals)
    assert answer == "7" and weight == pytest.approx(0.951 + 2 * 0.368, abs=1e-3)
    assert weak  # below 0.5 * 5 candidates
    assert not CyberVLoop(VotingBackend(script), n=4, theta=0.3).vote(signals)[2]


def test_repetition_signal() -> None:
    assert repetition([1, 2, 3, 4, 5, 6]) == 0.0
    assert repetition([1, 2, 3, 4] * 5) > 0.7
    assert repetition([1, 2]) == 0.0


def test_bad_settings_are_named() -> None:
    backend = VotingBackend(lambda u, j, g: ("1", 0.0))
    with pytest.raises(ConfigError, match="theta"):
        CyberVLoop(backend, theta=1.5)
    with pytest.raises(ConfigError, match="n must be"):
        CyberVLoop(backend, n=0)
    with pytest.raises(ConfigError, match="n must be"):
        SelfConsistency(backend, n=0)


async def test_budget_exhausted_returns_an_error_not_a_traceback() -> None:
    backend = VotingBackend(lambda u, j, g: ("1", 0.0))
    with Budget(max_model_calls=0):
        outcome = await CyberVLoop(backend)(TASK)
    assert outcome.error and "budget" in outcome.error and outcome.output == ""


async def test_self_consistency_majority() -> None:
    backend = VotingBackend(lambda u, j, g: (f"= {5 if j % 3 else 4}", -0.1))
    outcome = await SelfConsistency(backend, n=6)(TASK)
    assert outcome.info == {"answer": "5", "votes": 4, "n": 6}


@pytest.mark.slow
async def test_cyberv_on_the_embedded_model(smollm2) -> None:
    events: list[Event] = []
    tasks = [Task(id=f"t{i}", input=f"What is {a} + {b}? Give only the final answer.")
             for i, (a, b) in enumerate([(3, 4), (27, 58)])]  # fmt: skip
    loop = CyberVLoop(smollm2, n=3, theta=0.9)  # a high bar: most tasks get the corrective round
    with Tracer([events.append]).activate():
        outcomes = [await loop(t) for t in tasks]
    signals = [e.payload for e in events if e.type == "cyberv.signals"]
    assert len(signals) >= 2 * 4
    # the real backend gives exact logprobs and entropies: the sensor reads them
    assert all(0.0 < s["confidence"] <= 1.0 and s["entropy"] >= 0.0 for s in signals)
    for o in outcomes:
        assert o.output and o.usage.completion_tokens > 0 and o.info["rounds"] in (1, 2)
    assert any(o.info["rounds"] == 2 for o in outcomes)
