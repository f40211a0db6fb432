"""Step-level beam search guided by a process reward model.

As in Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than
Scaling Model Parameters" (section on search against a PRM, after BFS-V):

1. sample N first steps from the empty solution;
2. score every candidate with the PRM;
3. keep the N/M best candidates (the beams);
4. extend each beam by M proposals for its next step, N/M x M = N candidates again;
5. repeat 2-4 until every solution is finished or the step limit is reached.

Symbols: N = `n` (candidates per round); N/M = `width` (beams kept); M = `n // width`
(proposals per beam; the paper calls M the "beam width", this module calls the number of beams
kept the width, so `n % width == 0` is required); the PRM score of a partial solution =
`rate(reward, ...)`: its per-step scores folded by `aggregation` ("last" is the paper's
reward-to-go reading; an ORM scores the joined text).

Finished candidates (EOS, or `steps.max_steps` steps) are absorbing: scored once, set aside and
never extended again, so they do not take a beam's place; a round whose candidates mostly
finished carries on with fewer than `width` beams. The answer is the best-scored finished
candidate (ties go to the one created first). The tree: the root has N children, every other
extended node M.
"""

from __future__ import annotations

from agentic.core import Budget, ConfigError, Context, Task, emit
from search.base import Partial, SearchController, SearchTree, StepGenerator
from search.rewards import Aggregation, OutcomeReward, ProcessReward, aggregate, rate


class BeamSearch(SearchController):
    def __init__(
        self,
        steps: StepGenerator,
        reward: OutcomeReward | ProcessReward,
        *,
        n: int = 8,
        width: int = 2,
        aggregation: Aggregation = "last",
        seed: int | None = 0,
        budget: Budget | None = None,
    ) -> None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if not 1 <= width <= n:
            raise ConfigError(f"width must be between 1 and n={n}, got {width}")
        if n % width:
            raise ConfigError(f"n={n} must be a multiple of width={width}")
        aggregate([], aggregation)  # validates the name
        super().__init__(steps, budget=budget)
        self.reward, self.n, self.width = reward, n, width
        self.aggregation, self.seed = aggregation, seed

    async def _search(
        self, task: Task, ctx: Context | None, tree: SearchTree
    ) -> tuple[str, float | None, list[tuple[str, float | None]]]:
        beams: list[Partial] = [tree.root()]
        finished: list[tuple[Partial, float]] = []
        best_live: tuple[Partial, float] | None = None
        for r in range(self.steps.max_steps):
            if not beams:
                break
            # the root is one parent but the paper samples all N first steps from it
            per_beam = self.n if r == 0 else self.n // self.width
            # a stride of n keeps the per-request seeds (seed + round stride + beam index)
            # distinct across rounds, so a round never replays an earlier one's samples
            seed = None if self.seed is None else self.seed + r * self.n
            kids = await self.steps.extend(task, ctx, tree, beams, n=per_beam, seed=seed)
            cands = [c for ks in kids for c in ks]
            scores = await rate(self.reward, task, [c.steps for c in cands], self.aggregation)
            scored = list(zip(cands, scores, strict=True))
            for c, s in scored:
                tree.score(c, s)
            finished += [(c, s) for c, s in scored if c.done]
            # node ids grow in creation order, so they break score ties deterministically
            live = sorted(
                ((c, s) for c, s in scored if not c.done), key=lambda cs: (-cs[1], cs[0].node)
            )
            if live:
                best_live = live[0]
            beams = [c for c, _ in live[: self.width]]
            emit(
                "search.round",
                round=r + 1,
                kept=[c.node for c in beams],
                pruned=[c.node for c, _ in live[self.width :]],
                finished=[c.node for c, s in scored if c.done],
            )
        pool = finished or ([best_live] if best_live else [])
        out: list[tuple[str, float | None]] = [(c.text, s) for c, s in finished]
        if not pool:
            return "", None, out
        best, score = min(pool, key=lambda cs: (-cs[1], cs[0].node))
        return best.text, score, out
