"""Particle filtering over partial solutions guided by a process reward model.

After Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time Scaling of LLMs
using Particle-Based Monte Carlo Methods" (its_hub). A population of N partial solutions (the
particles) grows one step per round; the PRM score of each new partial solution weighs it, and
when the weights degenerate the population is resampled in proportion to them, so compute
follows the promising prefixes without committing to the single best one (as beam search does).

Each round t = 1..T (T = `steps.max_steps`):
1. extend every unfinished particle by one step: one batched `steps.extend`, one sample per
   particle, seeds `seed + (t-1)·N + i`;
2. score the new partial solutions with the PRM (`rate`, one batched call; `_particle_scores`,
   a hook the entropic variant uses for look-ahead);
3. w_i ∝ exp(logit(r_i) / temperature), r_i clipped to [1e-6, 1-1e-6] (`weights`);
   ESS = 1 / Σ w_i²;
4. if ESS/N < `ess_threshold`, resample with systematic resampling (`systematic_resample`, u from
   `random.Random(seed)`) from the distribution `_resample_weights(w, ...)` (w itself here; the
   hook the entropic variant overrides).

Finished particles (EOS, or T steps) are absorbing: they keep their slot, are never extended,
and never take part in resampling. Weights, ESS and N in steps 3-4 are over the unfinished
particles only, and resampling redistributes only their slots; so a finished answer is never
resampled away, nor copied into a slot that would then have nothing to do. The search stops
when every particle has finished (at the latest after T rounds). The answer is the finished
particle with the highest score (ties: the highest final weight, then the first slot); with
`select="weighted_majority"` it is the best-scored member of the answer group (`answer_of`, the
suite's extraction) whose slots' scores sum highest: the final population is a weighted sample,
so a vote over it uses every particle (the "weighted best-of-N" final aggregation of Beeching,
Tunstall and Rush 2024, "Scaling test-time compute with open models").

Symbols: N = `n`, r_i = the PRM score of particle i (per-step scores folded by `aggregation`;
an ORM scores the joined text), temperature = `temperature` (of the weights, not of sampling).
Each round is a `search.round` event (round, ess, live, resampled, finished, particles).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from agentic.core import AnswerReader, Budget, ConfigError, Context, Task, emit, read_answer
from search.base import Partial, SearchController, SearchTree, StepGenerator, best_so_far
from search.rewards import Aggregation, OutcomeReward, ProcessReward, aggregate, rate

_EPS = 1e-6


def weights(scores: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Normalised particle weights w_i ∝ exp(logit(r_i) / temperature), r_i clipped to
    [1e-6, 1-1e-6] so a score of exactly 0 or 1 stays finite."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if not scores:
        return []
    clipped = [min(max(r, _EPS), 1 - _EPS) for r in scores]
    logits = [math.log(r / (1 - r)) / temperature for r in clipped]
    top = max(logits)  # subtracted before exp, so no overflow at small temperatures
    e = [math.exp(x - top) for x in logits]
    total = sum(e)
    return [x / total for x in e]


def ess(w: Sequence[float]) -> float:
    """Effective sample size 1 / Σ w_i² of normalised weights: N when uniform, 1 when one
    particle holds all the weight."""
    return 1.0 / sum(x * x for x in w)


def systematic_resample(w: Sequence[float], u: float) -> list[int]:
    """N indices drawn by systematic resampling: the points (u + k)/N, k = 0..N-1, read off the
    cumulative distribution of `w` (normalised here). Particle i is drawn ⌊N·w_i⌋ or ⌈N·w_i⌉
    times, which is why it is preferred to multinomial draws (lower variance)."""
    if not 0.0 <= u < 1.0:
        raise ConfigError(f"u must be in [0, 1), got {u}")
    n, total = len(w), float(sum(w))
    if n == 0 or total <= 0:
        raise ConfigError("weights must be non-empty with a positive sum")
    out, i, cum = [], 0, w[0] / total
    for k in range(n):
        pos = (u + k) / n
        # the last index takes any rounding left over at the top of the cumulative sum
        while pos >= cum and i < n - 1:
            i += 1
            cum += w[i] / total
        out.append(i)
    return out


class ParticleFilter(SearchController):
    def __init__(
        self,
        steps: StepGenerator,
        reward: OutcomeReward | ProcessReward,
        *,
        n: int = 8,
        temperature: float = 1.0,
        ess_threshold: float = 0.5,
        aggregation: Aggregation = "last",
        seed: int = 0,
        select: Literal["best", "weighted_majority"] = "best",
        answer_of: AnswerReader = read_answer,
        budget: Budget | None = None,
    ) -> None:
        if select not in ("best", "weighted_majority"):
            raise ConfigError(f"select must be 'best' or 'weighted_majority', got {select!r}")
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0 < ess_threshold <= 1:
            raise ConfigError(f"ess_threshold must be in (0, 1], got {ess_threshold}")
        aggregate([], aggregation)  # validates the name
        super().__init__(steps, budget=budget)
        self.reward, self.n, self.temperature = reward, n, temperature
        self.ess_threshold, self.aggregation, self.seed = ess_threshold, aggregation, seed
        self.select, self.answer_of = select, answer_of

    def _resample_weights(self, w: list[float], ess: float, t: int, T: int) -> list[float]:
        """The distribution resampling draws from in round t of T (rounds count from 1)."""
        return w

    async def _particle_scores(
        self, task: Task, ctx: Context | None, tree: SearchTree, particles: Sequence[Partial]
    ) -> list[float]:
        """The score each particle's weight comes from: its PRM score. Only nodes not scored
        yet are rated (one batched call), so absorbed finished particles cost nothing."""
        todo = list({p.node: p for p in particles if _score(tree, p) is None}.values())
        if todo:
            scores = await rate(self.reward, task, [p.steps for p in todo], self.aggregation)
            for p, s in zip(todo, scores, strict=True):
                tree.score(p, s)
        return [_score(tree, p) or 0.0 for p in particles]

    async def _search(
        self, task: Task, ctx: Context | None, tree: SearchTree
    ) -> tuple[str, float | None, list[tuple[str, float | None]]]:
        T = self.steps.max_steps
        rng = random.Random(self.seed)
        particles = [tree.root()] * self.n
        by_node: dict[int, float] = {}  # the latest weight score of each particle's node
        for t in range(1, T + 1):
            live = [i for i, p in enumerate(particles) if not p.done]
            if not live:
                break
            seed = self.seed + (t - 1) * self.n
            grown = await self.steps.extend(
                task, ctx, tree, [particles[i] for i in live], n=1, seed=seed
            )
            for i, [c] in zip(live, grown, strict=True):
                particles[i] = c
            scores = await self._particle_scores(task, ctx, tree, particles)
            by_node.update((p.node, s) for p, s in zip(particles, scores, strict=True))
            live = [i for i, p in enumerate(particles) if not p.done]
            e, resampled = float(len(live)), False
            if live:
                w = weights([scores[i] for i in live], self.temperature)
                e = ess(w)
                if e / len(live) < self.ess_threshold:
                    q = self._resample_weights(w, e, t, T)
                    picks = systematic_resample(q, rng.random())
                    chosen = [particles[live[k]] for k in picks]
                    for i, c in zip(live, chosen, strict=True):
                        particles[i] = c
                    resampled = True
            emit(
                "search.round",
                round=t,
                ess=e,
                live=len(live),
                resampled=resampled,
                finished=self.n - len(live),
                particles=[p.node for p in particles],
            )
        final_w = weights([by_node.get(p.node, 0.0) for p in particles], self.temperature)
        done = {p.node: (p, final_w[i]) for i, p in enumerate(particles) if p.done}
        if not done:
            return best_so_far(tree)
        finished = [(p.text, _score(tree, p)) for p, _ in done.values()]
        pool = list(done.values())
        if self.select == "weighted_majority":
            votes: dict[str, float] = defaultdict(float)
            for p in particles:  # by slot: a particle resampled k times votes k times
                if p.done:
                    votes[self.answer_of(task, p.text)] += _score(tree, p) or 0.0
            winner = max(votes, key=lambda a: votes[a])
            pool = [pw for pw in pool if self.answer_of(task, pw[0].text) == winner]
        best, _ = max(pool, key=lambda pw: (_score(tree, pw[0]) or 0.0, pw[1]))
        return best.text, _score(tree, best), finished


def _score(tree: SearchTree, p: Partial) -> float | None:
    s: float | None = tree.graph.nodes[p.node]["score"]
    return s
