"""Controllers by name, for the CLI and for rebuilding a recorded run.

`ControllerSpec` is everything needed to rebuild a controller; `agentic run` records it in the
run's `run.start` event, so `agentic replay` and `agentic run --resume` rebuild the very same one.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentic.core import ConfigError, Controller, SamplingParams, TaskSuite
from backends import Backend

ControllerName = Literal["direct", "bon", "beam", "pf", "epf", "astar"]


class ControllerSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ControllerName = "direct"
    max_tokens: int = Field(default=64, ge=1, description="direct: tokens per answer")
    samples: int = Field(default=8, ge=1, description="bon/beam/pf/epf: N")
    width: int = Field(default=2, ge=1, description="beam: beams kept")
    k: int = Field(default=4, ge=1, description="astar: continuations per expansion")
    cost: Literal["neglog", "mean_gap"] = Field(
        default="neglog", description="astar: the g and h ordering the queue"
    )
    # Search defaults chosen on the train families of benchmarks/ttc_matrix.py (docs/search.md):
    # sampling by majority vote at N=8, the reward by ROC AUC, steps of 16 tokens so a typical
    # answer spans about two steps; never on the eval families.
    tokens_per_step: int = Field(default=16, ge=1)
    max_steps: int = Field(default=4, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, description="sampling temperature")
    min_p: float = Field(default=0.1, ge=0.0, le=1.0, description="min-p sampling; 0 is off")
    reward: str = Field(
        default="confidence+program",
        description="a verifier (judge, head, value, confidence, program, checker) or a weighted "
        "sum of "
        "them, e.g. '0.7*confidence+0.3*program'",
    )
    confidence: Literal["lowest_group", "tail", "mean"] = Field(
        default="mean", description="reward=confidence: the DeepConf statistic"
    )
    select: Literal["best", "weighted_majority"] = Field(
        default="best",
        description="bon, pf, epf: the best-scored answer, or the reward-weighted vote",
    )
    keep: float = Field(
        default=1.0, gt=0.0, le=1.0, description="bon: vote over the best-scored fraction only"
    )
    head: str | None = Field(
        default=None, description="reward=head: a head saved by HeadReward.save (the .pt file)"
    )
    value_model: str | None = Field(
        default=None,
        description="reward=value: a folder saved by benchmarks/train_value.py; default: the "
        "shipped one (search/artifacts/value_smollm2)",
    )
    aggregation: Literal["last", "min", "prod", "mean"] = "last"
    lookahead: bool = Field(default=True, description="epf: weigh by a one-step look-ahead")
    weight_temperature: float = Field(
        default=1.0, gt=0.0, description="pf/epf: T in w ∝ exp(logit(r)/T); lower is sharper"
    )
    seed: int = 0

    @field_validator("reward")
    @classmethod
    def _known_rewards(cls, v: str) -> str:
        parse_reward(v)
        return v


REWARD_NAMES = ("judge", "head", "value", "confidence", "program", "checker")
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([a-z_]+)\s*$")


def parse_reward(text: str) -> list[tuple[float, str]]:
    """'0.7*confidence+0.3*program' -> [(0.7, 'confidence'), (0.3, 'program')]."""
    terms = []
    for term in text.split("+"):
        m = _TERM.match(term)
        if m is None or m.group(2) not in REWARD_NAMES:
            raise ValueError(
                f"reward {text!r}: {term.strip()!r} is not a verifier ({', '.join(REWARD_NAMES)}) "
                "or WEIGHT*NAME"
            )
        terms.append((float(m.group(1)) if m.group(1) else 1.0, m.group(2)))
    return terms


def build_controller(spec: ControllerSpec, backend: Backend, suite: TaskSuite) -> Controller:
    """The controller `spec` names, on `backend`; rewards use the same backend (judge, or a
    trained head on its hidden states) or the suite's checker (an oracle, for upper bounds)."""
    from controllers import Direct

    if spec.type == "direct":
        return Direct(backend, params=SamplingParams(max_tokens=spec.max_tokens, temperature=0.0))
    from search.astar import AStarDecoding
    from search.base import StepGenerator
    from search.beam import BeamSearch
    from search.best_of_n import BestOfN
    from search.entropic_pf import EntropicParticleFilter
    from search.particle_filter import ParticleFilter

    steps = StepGenerator(
        backend,
        tokens_per_step=spec.tokens_per_step,
        max_steps=spec.max_steps,
        temperature=spec.temperature,
        min_p=spec.min_p,
        system_prompt=suite.system_prompt,
    )
    reward = build_reward(spec, backend, suite, steps)
    agg, seed, weight_t = spec.aggregation, spec.seed, spec.weight_temperature
    if spec.type == "bon":
        return BestOfN(
            steps,
            reward,
            n=spec.samples,
            select=spec.select,
            keep=spec.keep,
            aggregation=agg,
            answer_of=suite.extract,
            seed=seed,
        )
    if spec.type == "beam":
        return BeamSearch(
            steps, reward, n=spec.samples, width=spec.width, aggregation=agg, seed=seed
        )
    if spec.type in ("pf", "epf"):
        # the entropic filter is the plain one plus annealing and look-ahead
        extra: dict[str, Any]
        cls, extra = (
            (EntropicParticleFilter, {"lookahead": spec.lookahead})
            if spec.type == "epf"
            else (ParticleFilter, {})
        )
        return cls(
            steps,
            reward,
            n=spec.samples,
            aggregation=agg,
            seed=seed,
            temperature=weight_t,
            select=spec.select,
            answer_of=suite.extract,
            **extra,
        )
    return AStarDecoding(steps, reward, k=spec.k, cost=spec.cost, seed=seed)


def build_reward(spec: ControllerSpec, backend: Backend, suite: TaskSuite, steps: Any) -> Any:
    """The verifier `spec.reward` names; a weighted sum of several is a `WeightedReward`."""
    from search.rewards import WeightedReward

    terms = parse_reward(spec.reward)
    parts = [(w, _one_reward(name, spec, backend, suite, steps)) for w, name in terms]
    if len(parts) == 1 and terms[0][0] == 1.0:
        return parts[0][1]
    return WeightedReward(parts, aggregation=spec.aggregation)


def _one_reward(
    name: str, spec: ControllerSpec, backend: Backend, suite: TaskSuite, steps: Any
) -> Any:
    if name == "checker":
        from search.rewards import CheckerReward

        return CheckerReward(suite)
    if name == "judge":
        from search.rewards import JudgeReward

        return JudgeReward(backend)
    if name == "confidence":
        from search.confidence import ConfidenceReward

        return ConfidenceReward(backend, statistic=spec.confidence, messages=steps.messages)
    if name == "program":
        from agentic.verifiers import program_reward

        return program_reward(backend, answer_of=suite.extract)
    if name == "value":
        from search.value_model import DEFAULT_PATH, ValueReward

        return ValueReward.load(spec.value_model or DEFAULT_PATH, messages=steps.messages)
    return _head_reward(spec, backend, steps)


def _head_reward(spec: ControllerSpec, backend: Backend, steps: Any) -> Any:
    from backends.transformers_backend import TransformersBackend
    from search.head_reward import HeadReward

    if spec.head is None:
        raise ConfigError("reward 'head' needs head= (the path of a saved head, e.g. --head X.pt)")
    if not isinstance(backend, TransformersBackend):
        raise ConfigError(
            f"reward 'head' reads hidden states, which only a local transformers backend "
            f"(hf:, embedded:) has; {backend.name!r} is a {type(backend).__name__}"
        )
    return HeadReward.load(backend, spec.head, messages=steps.messages)
