"""The specs of `direct` and the test-time searches (`bon`, `beam`, `pf`, `epf`, `astar`), and
the rewards they search by.

They live on the top floor, not in `search/`, because a spec builds its controller through
`agentic.specs.registry` (and `reward=program` through `agentic.agents.verifiers`), which
`search/` may not import. A search spec's `reward` names a verifier or a weighted sum of them
(`parse_reward`).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from agentic.core import ConfigError, Controller, SamplingParams
from agentic.specs.registry import BuildContext, Spec

# the `agentic run` options every search takes, by field
_SEARCH_FLAGS = (
    "tokens_per_step",
    "max_steps",
    "temperature",
    "min_p",
    "reward",
    "head",
    "confidence",
)


def _flags(*names: str) -> dict[str, str]:
    return {name: name for name in (*_SEARCH_FLAGS, *names)}


class DirectSpec(Spec):
    """One greedy answer (`controllers.Direct`)."""

    type: Literal["direct"] = "direct"
    max_tokens: int = Field(default=64, ge=1, description="tokens per answer")

    cli_flags: ClassVar[dict[str, str]] = {"max_tokens": "max_tokens"}

    def build(self, ctx: BuildContext) -> Controller:
        from controllers import Direct

        params = SamplingParams(max_tokens=self.max_tokens, temperature=0.0)
        return Direct(ctx.backend, params=params)


class SearchSpec(Spec):
    """What every search shares: how it steps, how it samples, and the reward it searches by.
    Not a controller type itself; `bon`, `beam`, `pf`, `epf` and `astar` extend it."""

    # Search defaults chosen on the train families of benchmarks/ttc_matrix.py (docs/search.md),
    # never on the eval families: sampling by majority vote at N=8; 2 steps of 32 tokens by PF-8
    # accuracy on the train families (21.9% against 14.6% for 16x4 and 12.5% for 8x8, 8 tasks per
    # family, by a rule written before the sweep ran); and the reward by ROC AUC on held-out
    # train-family prefixes (benchmarks/train_value.py, results/ttc/value_model.json "held_train",
    # 219 prefixes): value 0.762, confidence.mean 0.760, head 0.670, confidence.mean+program 0.665,
    # judge 0.619, program 0.607. value won by the rule fixed before any eval number, though
    # confidence.mean is within noise of it (0.002), and on finished answers alone
    # confidence.mean+program is a hair ahead (0.902 against 0.897). On the eval families the value
    # model does not transfer (0.591 pooled there, 0.492 on the matrix's final answers); eval
    # numbers report, they never pick a default. It loads a second SmolLM2 (LoRA merged).
    tokens_per_step: int = Field(default=32, ge=1)
    max_steps: int = Field(default=2, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, description="sampling temperature")
    min_p: float = Field(default=0.1, ge=0.0, le=1.0, description="min-p sampling; 0 is off")
    reward: str = Field(
        default="value",
        description="a verifier (judge, head, value, confidence, program, checker) or a weighted "
        "sum of them, e.g. '0.7*confidence+0.3*program'; default: value, the trained value model "
        "(the best ROC AUC on held-out train-family prefixes)",
    )
    confidence: Literal["lowest_group", "tail", "mean"] = Field(
        default="mean", description="reward=confidence: the DeepConf statistic"
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
    seed: int = 0

    @field_validator("reward")
    @classmethod
    def _known_rewards(cls, v: str) -> str:
        parse_reward(v)
        return v

    def _parts(self, ctx: BuildContext) -> tuple[Any, Any]:
        """The step generator and the reward, on `ctx.backend`."""
        from search.base import StepGenerator

        steps = StepGenerator(
            ctx.backend,
            tokens_per_step=self.tokens_per_step,
            max_steps=self.max_steps,
            temperature=self.temperature,
            min_p=self.min_p,
            system_prompt=ctx.suite.system_prompt,
        )
        return steps, build_reward(self, ctx, steps)


class BestOfNSpec(SearchSpec):
    """N samples, the best-scored one or a reward-weighted vote (`search.BestOfN`)."""

    type: Literal["bon"] = "bon"
    samples: int = Field(default=8, ge=1, description="N")
    select: Literal["best", "weighted_majority"] = Field(
        default="best", description="the best-scored answer, or the reward-weighted vote"
    )
    keep: float = Field(
        default=1.0, gt=0.0, le=1.0, description="vote over the best-scored fraction only"
    )

    cli_flags: ClassVar[dict[str, str]] = _flags("samples", "select", "keep")

    def build(self, ctx: BuildContext) -> Controller:
        from search.best_of_n import BestOfN

        steps, reward = self._parts(ctx)
        return BestOfN(
            steps,
            reward,
            n=self.samples,
            select=self.select,
            keep=self.keep,
            aggregation=self.aggregation,
            answer_of=ctx.suite.extract,
            seed=self.seed,
        )


class BeamSpec(SearchSpec):
    """Step-level beam search (`search.BeamSearch`)."""

    type: Literal["beam"] = "beam"
    samples: int = Field(default=8, ge=1, description="N: candidates per step")
    width: int = Field(default=2, ge=1, description="beams kept")

    cli_flags: ClassVar[dict[str, str]] = _flags("samples", "width")

    def build(self, ctx: BuildContext) -> Controller:
        from search.beam import BeamSearch

        steps, reward = self._parts(ctx)
        return BeamSearch(
            steps,
            reward,
            n=self.samples,
            width=self.width,
            aggregation=self.aggregation,
            seed=self.seed,
        )


class _ParticleSpec(SearchSpec):
    samples: int = Field(default=8, ge=1, description="N: particles")
    select: Literal["best", "weighted_majority"] = Field(
        default="best", description="the best-scored answer, or the reward-weighted vote"
    )
    weight_temperature: float = Field(
        default=1.0, gt=0.0, description="T in w ∝ exp(logit(r)/T); lower is sharper"
    )

    cli_flags: ClassVar[dict[str, str]] = _flags("samples", "select")

    def _filter(self, ctx: BuildContext, cls: Any, **extra: Any) -> Controller:
        steps, reward = self._parts(ctx)
        built: Controller = cls(
            steps,
            reward,
            n=self.samples,
            aggregation=self.aggregation,
            seed=self.seed,
            temperature=self.weight_temperature,
            select=self.select,
            answer_of=ctx.suite.extract,
            **extra,
        )
        return built


class ParticleFilterSpec(_ParticleSpec):
    """Particle filtering over partial answers (`search.ParticleFilter`)."""

    type: Literal["pf"] = "pf"

    def build(self, ctx: BuildContext) -> Controller:
        from search.particle_filter import ParticleFilter

        return self._filter(ctx, ParticleFilter)


class EntropicParticleFilterSpec(_ParticleSpec):
    """The particle filter plus annealing and look-ahead (`search.EntropicParticleFilter`)."""

    type: Literal["epf"] = "epf"
    lookahead: bool = Field(default=True, description="weigh by a one-step look-ahead")

    def build(self, ctx: BuildContext) -> Controller:
        from search.entropic_pf import EntropicParticleFilter

        return self._filter(ctx, EntropicParticleFilter, lookahead=self.lookahead)


class AStarSpec(SearchSpec):
    """Best-first search over steps (`search.AStarDecoding`)."""

    type: Literal["astar"] = "astar"
    # A* orders its queue by per-step scores, so its reward must be a process reward; its default
    # is every search's (value, chosen above), restated with A*'s own description
    reward: str = Field(
        default="value", description="a process reward (or a weighted sum of process rewards)"
    )
    k: int = Field(default=4, ge=1, description="continuations per expansion")
    cost: Literal["neglog", "mean_gap"] = Field(
        default="neglog", description="the g and h ordering the queue"
    )

    cli_flags: ClassVar[dict[str, str]] = _flags("k", "cost")

    def build(self, ctx: BuildContext) -> Controller:
        from search.astar import AStarDecoding

        steps, reward = self._parts(ctx)
        return AStarDecoding(steps, reward, k=self.k, cost=self.cost, seed=self.seed)


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


def build_reward(spec: SearchSpec, ctx: BuildContext, steps: Any) -> Any:
    """The verifier `spec.reward` names, on `ctx.backend` (judge, or a trained head on its hidden
    states) or the suite's checker (an oracle, for upper bounds); a weighted sum of several is
    a `WeightedReward`."""
    from search.rewards import WeightedReward

    terms = parse_reward(spec.reward)
    parts = [(w, _one_reward(name, spec, ctx, steps)) for w, name in terms]
    if len(parts) == 1 and terms[0][0] == 1.0:
        return parts[0][1]
    return WeightedReward(parts, aggregation=spec.aggregation)


def _one_reward(name: str, spec: SearchSpec, ctx: BuildContext, steps: Any) -> Any:
    backend, suite = ctx.backend, ctx.suite
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
        from agentic.agents.verifiers import program_reward

        return program_reward(backend, answer_of=suite.extract)
    if name == "value":
        from search.value_model import DEFAULT_PATH, ValueReward

        return ValueReward.load(spec.value_model or DEFAULT_PATH, messages=steps.messages)
    return _head_reward(spec, ctx, steps)


def _head_reward(spec: SearchSpec, ctx: BuildContext, steps: Any) -> Any:
    from backends.hf.backend import TransformersBackend
    from search.head_reward import HeadReward

    backend = ctx.backend
    if spec.head is None:
        raise ConfigError("reward 'head' needs head= (the path of a saved head, e.g. --head X.pt)")
    if not isinstance(backend, TransformersBackend):
        raise ConfigError(
            f"reward 'head' reads hidden states, which only a local transformers backend "
            f"(hf:, embedded:) has; {backend.name!r} is a {type(backend).__name__}"
        )
    return HeadReward.load(backend, spec.head, messages=steps.messages)
