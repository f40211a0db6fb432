"""Confidence without training: a trace's reward from the policy's own token logprobs.

DeepConf (Fu, Wang, Tian, Zhao 2025, "Deep Think with Confidence"), Section 3:
- token confidence C_i = -(1/k) Σ_{j=1..k} log P_i(j), over the k most likely tokens at position i
  (`token_confidence`); high when the distribution is peaked;
- group confidence C_G = the mean of C_i over a sliding window of n tokens (`window`);
- lowest group confidence = min over the windows (`statistic="lowest_group"`), the trace's
  weakest stretch; tail confidence = the mean of C_i over the last `tail` tokens
  (`statistic="tail"`), where the final answer is written;
- average trace confidence = the mean of C_i over all tokens (`statistic="mean"`): with the
  whole vocabulary in place of the top k this is self-certainty, the KL divergence of the token
  distribution from uniform (Kang, Zhao, Song 2025, "Scalable Best-of-N Selection for Large
  Language Models via Self-Certainty"); here it is its top-k estimate, as backends report top-k.
DeepConf uses these to filter traces (keep the top η% by confidence) and to weight votes
(`BestOfN(select="weighted_majority", keep=η)`).

The raw statistics are unbounded nats; search weighs rewards as probabilities (PF: w ∝
exp(logit(r)/T)), so a reward is r = σ((C - `center`) / `scale`), a logistic calibration whose two
numbers are fitted on train families (`benchmarks/ttc_matrix.py` fits and reports them). The
ordering of traces, all that filtering and voting use, does not depend on them.

Two ways to the logprobs, the same numbers: `score_generations` reads them from the sampled
`Generation`s (free: best-of-N samples with `logprobs=top_k` when the reward asks for it), and
`score` asks `Backend.score` for the logprobs of a given text (one batched forward, no decoding),
for texts whose generation is not at hand (a search's partial solutions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from agentic.core import (
    ConfigError,
    Generation,
    Message,
    ScoreRequest,
    Task,
    TopLogprob,
    Usage,
    charge_budget,
)
from backends import Backend

Statistic = Literal["lowest_group", "tail", "mean"]
STATISTICS: tuple[Statistic, ...] = ("lowest_group", "tail", "mean")

# (center, scale) of r = σ((C - center) / scale) per statistic: the logistic fit of "solved" on C
# over the train families' samples of SmolLM2-135M at the chosen sampling (temperature 1.0,
# min_p 0.1; top-5 logprobs, window 8, tail 16), from
# `benchmarks/ttc_matrix.py --summarize` (benchmarks/results/ttc/calibration.*.json). Another
# model has other numbers: pass center= and scale=, or fit them the same way.
CALIBRATION: dict[Statistic, tuple[float, float]] = {
    "lowest_group": (4.54, 0.786),
    "tail": (6.42, 1.451),
    "mean": (5.24, 0.858),
}


def token_confidence(top: Sequence[TopLogprob] | None, chosen: float) -> float:
    """C_i from one position's top-k logprobs (the chosen token's own logprob when none)."""
    if not top:
        return -chosen
    return -sum(t.logprob for t in top) / len(top)


def generation_confidences(g: Generation) -> list[float]:
    """C_1..C_n of a sampled answer, from the logprobs it was sampled with."""
    if g.token_logprobs is None:
        raise ConfigError(
            "confidence needs token logprobs: sample with SamplingParams(logprobs=k), k >= 1"
        )
    tops = g.top_logprobs or [None] * len(g.token_logprobs)
    return [token_confidence(t, lp) for t, lp in zip(tops, g.token_logprobs, strict=True)]


def trace_confidence(
    confidences: Sequence[float], statistic: Statistic, *, window: int = 8, tail: int = 16
) -> float:
    """One number for a trace from its token confidences C_1..C_n."""
    c = list(confidences)
    if not c:
        return 0.0
    if statistic == "mean":
        return sum(c) / len(c)
    if statistic == "tail":
        last = c[-tail:]
        return sum(last) / len(last)
    if len(c) <= window:
        return sum(c) / len(c)
    run = sum(c[:window])
    lowest = run
    for i in range(window, len(c)):
        run += c[i] - c[i - window]
        lowest = min(lowest, run)
    return lowest / window


class ConfidenceReward:
    """A process reward from token confidences: a prefix's score is the calibrated statistic of
    its tokens. `prefix_only`: a step's score depends only on the text up to it."""

    kind: Literal["process"] = "process"
    prefix_only = True

    def __init__(
        self,
        backend: Backend,
        *,
        statistic: Statistic = "mean",
        top_k: int = 5,
        window: int = 8,
        tail: int = 16,
        center: float | None = None,
        scale: float | None = None,
        messages: Callable[[Task], Sequence[Message]] | None = None,
    ) -> None:
        if statistic not in STATISTICS:
            raise ConfigError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        if not 1 <= top_k <= 20:
            raise ConfigError(f"top_k must be in [1, 20], got {top_k}")
        if window < 1 or tail < 1:
            raise ConfigError(f"window and tail must be >= 1, got {window} and {tail}")
        fit_center, fit_scale = CALIBRATION.get(statistic, (0.0, 1.0))
        center = fit_center if center is None else center
        scale = fit_scale if scale is None else scale
        if scale <= 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        self.backend, self.statistic, self.top_k = backend, statistic, top_k
        self.window, self.tail, self.center, self.scale = window, tail, center, scale
        self._messages = messages or (lambda task: (Message(role="user", content=task.input),))
        self._cache: dict[tuple[str, str], list[float]] = {}

    @property
    def top_logprobs(self) -> int:
        """What a sampler should request so that `score_generations` has its numbers."""
        return self.top_k

    def raw(self, confidences: Sequence[float]) -> float:
        return trace_confidence(confidences, self.statistic, window=self.window, tail=self.tail)

    def calibrate(self, raw: float) -> float:
        z = (raw - self.center) / self.scale
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    async def score_generations(self, task: Task, gens: Sequence[Generation]) -> list[float]:
        """Scores of sampled answers from their own logprobs: no model call."""
        out = []
        for g in gens:
            c = generation_confidences(g)
            self._cache[(task.id, g.text)] = c
            out.append(self.calibrate(self.raw(c)))
        charge_budget(Usage(reward_calls=len(gens)))
        return out

    async def _token_confidences(self, task: Task, texts: Sequence[str]) -> list[list[float]]:
        todo = sorted({t for t in texts if t and (task.id, t) not in self._cache})
        if todo:
            msgs = tuple(self._messages(task))
            reqs = [
                ScoreRequest(messages=msgs, continuation=t, top_logprobs=self.top_k) for t in todo
            ]
            for t, r in zip(todo, await self.backend.score(reqs), strict=True):
                tops = r.top_logprobs or [None] * len(r.token_logprobs)
                self._cache[(task.id, t)] = [
                    token_confidence(top, lp)
                    for top, lp in zip(tops, r.token_logprobs, strict=True)
                ]
        return [self._cache.get((task.id, t), []) for t in texts]

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        prefixes = [["".join(s[: k + 1]) for k in range(len(s))] for s in solutions]
        flat = [p for ps in prefixes for p in ps]
        confs = await self._token_confidences(task, flat)
        charge_budget(Usage(reward_calls=len(solutions)))
        scores = iter([self.calibrate(self.raw(c)) for c in confs])
        return [[next(scores) for _ in ps] for ps in prefixes]
