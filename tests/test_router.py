"""A2FMRouter and its policies: the routing decision, the cost-regularised fit, the self tag."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from agentic.core import (
    ConfigError,
    Context,
    Event,
    GenerateRequest,
    Generation,
    Message,
    Outcome,
    ScoreRequest,
    ScoreResult,
    Task,
    Tracer,
    Usage,
)
from backends.base import BaseBackend, Capabilities
from controllers.direct import Direct
from controllers.router import (
    MODES,
    A2FMRouter,
    LearnedPolicy,
    RouteDecision,
    RouteRecord,
    SelfTagPolicy,
)


class Fixed:
    def __init__(self, mode: str) -> None:
        self.mode = mode

    async def route(self, task: Task, ctx: Context | None = None) -> RouteDecision:
        return RouteDecision(
            mode=self.mode,  # type: ignore[arg-type]
            scores={},
            policy="fixed",
            usage=Usage(prompt_tokens=7, model_calls=1),
        )


class Answer:
    """A stand-in mode: answers with its name and a known usage."""

    def __init__(self, name: str, tokens: int) -> None:
        self.name, self.tokens, self.calls = name, tokens, 0

    async def __call__(self, task: Task, ctx: Context) -> Outcome:
        self.calls += 1
        return Outcome(
            task_id=task.id, output=self.name, usage=Usage(completion_tokens=self.tokens)
        )


TASK = Task(id="t", input="What is 2 + 2?")


async def test_router_runs_the_chosen_mode_and_adds_the_routing_cost() -> None:
    modes = {m: Answer(m, 10 * (i + 1)) for i, m in enumerate(MODES)}
    events: list[Event] = []
    with Tracer([events.append]).activate():
        out = await A2FMRouter(**modes, policy=Fixed("agentic"))(TASK)  # type: ignore[arg-type]
    assert out.output == "agentic" and out.info["mode"] == "agentic"
    assert [modes[m].calls for m in MODES] == [0, 0, 1]
    assert out.usage.completion_tokens == 30 and out.usage.prompt_tokens == 7
    assert [e.payload["mode"] for e in events if e.type == "router.decision"] == ["agentic"]


def _records(lam_costs: dict[str, float]) -> list[RouteRecord]:
    """Trivial questions: every mode right. Big products: only agentic. Sums of many terms:
    reasoning and agentic right."""
    out = []
    for i in range(12):
        kinds = {
            f"Capital of country {i}?": {"instant": 1, "reasoning": 1, "agentic": 1},
            f"What is {1000 + 37 * i} * {4000 + 91 * i}?": {
                "instant": 0,
                "reasoning": 0,
                "agentic": 1,
            },
            f"What is {i % 9} + {(i + 3) % 9} - {i % 5} + {i % 7}?": {
                "instant": 0,
                "reasoning": 1,
                "agentic": 1,
            },
        }
        for text, right in kinds.items():
            for m in MODES:
                out.append(RouteRecord(input=text, mode=m, score=right[m], tokens=lam_costs[m]))
    return out


COSTS = {"instant": 20.0, "reasoning": 150.0, "agentic": 400.0}


async def test_learned_policy_picks_the_cheapest_mode_that_is_right() -> None:
    policy = LearnedPolicy(lam=0.3)
    stats = await policy.fit(_records(COSTS), epochs=600)
    assert stats["train_utility"] == pytest.approx(stats["oracle_utility"], abs=0.05)
    held_out = {
        "Capital of country 99?": "instant",
        "What is 5310 * 8172?": "agentic",
        "What is 4 + 2 - 1 + 6?": "reasoning",
    }
    for text, want in held_out.items():
        assert (await policy.route(Task(id="x", input=text))).mode == want, text


async def test_a_large_cost_weight_routes_everything_to_the_cheapest_mode() -> None:
    policy = LearnedPolicy(lam=50.0)
    await policy.fit(_records(COSTS), epochs=300)
    modes = {(await policy.route(Task(id="x", input=r.input))).mode for r in _records(COSTS)}
    assert modes == {"instant"}


async def test_learned_policy_errors_and_round_trip(tmp_path) -> None:
    policy = LearnedPolicy()
    with pytest.raises(ConfigError, match="not trained"):
        await policy.route(TASK)
    with pytest.raises(ConfigError, match="every mode"):
        await policy.fit([RouteRecord(input="a", mode="instant", score=1, tokens=1)])
    with pytest.raises(ConfigError, match="lam"):
        LearnedPolicy(lam=-1)
    await policy.fit(_records(COSTS), epochs=50)
    policy.save(tmp_path / "router.json")
    again = LearnedPolicy.load(tmp_path / "router.json")
    assert policy.weight is not None and again.weight is not None
    np.testing.assert_allclose(again.weight, policy.weight)
    assert (await again.route(TASK)).scores == (await policy.route(TASK)).scores

    class Named:
        name = "some-embedder"

        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            return np.zeros((len(texts), 3), dtype=np.float32)

    with pytest.raises(ConfigError, match="embedder"):
        LearnedPolicy.load(tmp_path / "router.json", embedder=Named())
    with pytest.raises(ConfigError, match="not found"):
        LearnedPolicy.load(tmp_path / "missing.json")


class TagScorer(BaseBackend):
    """Scores the tag continuations with fixed logprobs, or (no score) generates a word."""

    def __init__(self, logprobs: dict[str, float], can_score: bool = True) -> None:
        self.logprobs, self.name = logprobs, "tags"
        self.capabilities = Capabilities(score=can_score, structured_output=True)
        self.seen: list[GenerateRequest] = []

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return [
            ScoreResult(
                token_ids=(1,),
                token_logprobs=(self.logprobs[str(r.continuation)],),
                usage=Usage(prompt_tokens=5),
            )
            for r in requests
        ]

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.seen += requests
        return [[Generation(text="agentic")] for _ in requests]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return 1


async def test_self_tag_takes_the_most_likely_tag() -> None:
    backend = TagScorer({"instant": -3.0, "reasoning": -0.5, "agentic": -2.0})
    decision = await SelfTagPolicy(backend).route(TASK)
    assert decision.mode == "reasoning" and decision.usage.prompt_tokens == 15
    # without `score`, the tag is generated under a regex of the three words
    generated = await SelfTagPolicy(TagScorer({}, can_score=False)).route(TASK)
    assert generated.mode == "agentic"
    with pytest.raises(ConfigError, match="question"):
        SelfTagPolicy(backend, prompt="no placeholder")


@pytest.mark.slow
async def test_router_on_the_embedded_model(smollm2) -> None:
    events: list[Event] = []
    policy = SelfTagPolicy(smollm2)
    router = A2FMRouter(
        instant=Direct(smollm2),
        reasoning=Direct(smollm2),
        agentic=Direct(smollm2),
        policy=policy,
    )
    with Tracer([events.append]).activate():
        out = await router(Task(id="q", input="What is the capital of France?"))
    [decision] = [e.payload for e in events if e.type == "router.decision"]
    assert decision["mode"] in MODES and set(decision["scores"]) == set(MODES)
    assert all(s < 0 for s in decision["scores"].values())  # real logprobs of the three tags
    assert out.info["mode"] == decision["mode"] and out.output
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
