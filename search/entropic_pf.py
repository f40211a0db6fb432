"""Entropic particle filtering (this project's ePF): particle filtering with entropic annealing
and look-ahead modulation.

Plain particle filtering (`search.particle_filter`, after Puri et al. 2025) resamples in
proportion to the PRM's current scores. Early in a search those scores are noisy, and one lucky
prefix can take over the whole population after a single resampling, after which every particle
explores the same branch. Entropic particle filtering adds two mechanisms against this, each
switchable on its own for ablation:

(a) Entropic annealing (`annealing=True`). When the population has collapsed early
    (ESS/N < 0.5), resample not from w but from the tempered, flatter distribution

        q_i ∝ w_i^(1/τ),   τ = max(1, (N / ESS) · (1 − t/T))

    so the more the weights have collapsed (N/ESS large) and the earlier the round (t/T small),
    the more entropy the resampling keeps; τ falls to 1 (plain resampling) as t → T, when the
    scores are more trustworthy and the search should commit. Symbols: N = the number of
    unfinished particles being resampled (`len(w)`; finished ones are absorbing, see
    `ParticleFilter`), ESS = 1/Σw_i² of their weights, t = the round (1-based), T =
    `steps.max_steps`; `annealing_temperature(ess, n, t, T)` computes τ. Since
    w_i ∝ exp(logit(r_i)/temperature), q is the same weighting at temperature·τ.

(b) Look-ahead modulation (`lookahead=True`). A PRM often cannot tell yet whether a prefix leads
    anywhere; one step more often can. Each round, every distinct unfinished particle is
    extended by one more step (sampled at `lookahead_temperature`, greedy by default), and the
    PRM score of that look-ahead text, not of the particle itself, weighs the particle. The
    look-ahead step is not kept as the particle's state (the particle grows by its own sample
    next round) but it stays in the tree as a child with the node attribute `lookahead=True`,
    scored, so a recording shows what the weights were based on. Finished particles are
    weighed by their own score.

Each annealed resampling is also a `search.anneal` event (round, ess, live, tau).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

from agentic.core import AnswerReader, Budget, ConfigError, Context, Task, emit, read_answer
from search.base import Partial, SearchTree, StepGenerator
from search.particle_filter import ParticleFilter
from search.rewards import Aggregation, OutcomeReward, ProcessReward, rate

COLLAPSE = 0.5  # ESS/N below this counts as a collapsed population


def annealing_temperature(ess: float, n: int, t: int, T: int) -> float:
    """τ = max(1, (N/ESS)(1 − t/T)) when ESS/N < 0.5, else 1 (no annealing)."""
    if ess / n >= COLLAPSE:
        return 1.0
    return max(1.0, (n / ess) * (1.0 - t / T))


def temper(w: Sequence[float], tau: float) -> list[float]:
    """w_i^(1/τ), renormalised."""
    q = [x ** (1.0 / tau) for x in w]
    total = sum(q)
    return [x / total for x in q]


class EntropicParticleFilter(ParticleFilter):
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
        annealing: bool = True,
        lookahead: bool = True,
        lookahead_temperature: float = 0.0,
        budget: Budget | None = None,
    ) -> None:
        if lookahead_temperature < 0:
            raise ConfigError(f"lookahead_temperature must be >= 0, got {lookahead_temperature}")
        super().__init__(
            steps,
            reward,
            n=n,
            temperature=temperature,
            ess_threshold=ess_threshold,
            aggregation=aggregation,
            seed=seed,
            select=select,
            answer_of=answer_of,
            budget=budget,
        )
        self.annealing, self.lookahead = annealing, lookahead
        # the same generator but for its sampling temperature, so look-ahead steps are
        # comparable in length and delimiter to the particles' own steps
        self.ahead = copy.copy(steps)
        self.ahead.temperature = lookahead_temperature

    def _resample_weights(self, w: list[float], ess: float, t: int, T: int) -> list[float]:
        if not self.annealing:
            return w
        tau = annealing_temperature(ess, len(w), t, T)
        if tau == 1.0:
            return w
        emit("search.anneal", round=t, ess=ess, live=len(w), tau=tau)
        return temper(w, tau)

    async def _particle_scores(
        self, task: Task, ctx: Context | None, tree: SearchTree, particles: Sequence[Partial]
    ) -> list[float]:
        own = await super()._particle_scores(task, ctx, tree, particles)
        # one look-ahead per distinct node: resampled copies share a prefix, and a greedy
        # continuation of the same prefix would only repeat itself
        live = list({p.node: p for p in particles if not p.done}.values())
        if not self.lookahead or not live:
            return own
        # seeds apart from the particles' own (seed + (t-1)·N + i) and new each round, which
        # matters only when lookahead_temperature > 0
        seed = self.seed + 1_000_000 + max(tree.graph)
        ahead = await self.ahead.extend(task, ctx, tree, live, n=1, seed=seed)
        looks = [kids[0] for kids in ahead]
        for a in looks:
            tree.graph.nodes[a.node]["lookahead"] = True
            emit("search.lookahead", node=a.node)
        scores = await rate(self.reward, task, [a.steps for a in looks], self.aggregation)
        by_node = {}
        for p, a, s in zip(live, looks, scores, strict=True):
            tree.score(a, s)
            by_node[p.node] = s
        return [by_node.get(p.node, o) for p, o in zip(particles, own, strict=True)]
