"""A*-decoding: best-first search over partial solutions guided by a process reward model.

After Chatziveroglou (2025), "A*-Decoding: Token-Efficient Inference Scaling" (arXiv 2505.13672):
decoding is a search in the space of partial solutions; a priority queue holds the frontier,
ordered by f = g + h computed from PRM signals; expanding a state samples k one-step
continuations; the first finished state popped from the queue is the answer. The paper does not
pin g and h to the formulas below: they are this module's definitions, offered as an ablation.

Symbols: s = a `Partial`, d = its depth (steps), r_1..r_d = its per-step PRM scores from
`ProcessReward.score`, clipped to [1e-6, 1]; L = `steps.max_steps` (the horizon: no solution is
longer); f = `priority(...)`; k = `k` samples per expansion, in one batched `steps.extend`;
the queue = a `heapq` of (f, seq, s), seq breaking ties first-in-first-out; at most
`max_expansions` states are expanded.

| cost       | g(s)            | h(s)                 | f(s)           | favours        | admiss. |
|------------|-----------------|----------------------|----------------|----------------|---------|
| "neglog"   | sum_i -log r_i  | 0                    | -log prod r_i  | short, breadth | yes     |
| "mean_gap" | sum_i (1 - r_i) | (1 - mean r)·(L - d) | L·(1 - mean r) | depth (dives)  | no      |

- "neglog": g is the path cost when r_i reads as the probability that step i is correct
  (the PRM's "prod" aggregation, in log space). h = 0 is admissible because step costs are >= 0,
  so the first goal popped has the highest prod r_i of any goal the sampled tree could still
  produce. The price: a long solution pays for each step, so mediocre scores make the search
  revisit shallow siblings before going deeper (more expansions, tokens and PRM calls).
- "mean_gap": g counts each step's gap to certainty, and h assumes the remaining L - d steps
  continue at the path's mean gap; f then reduces to L·(1 - mean r), the PRM's "mean"
  aggregation, which does not grow with depth, so the search follows a consistently good branch
  to its end (the paper's token-efficiency aim). h also applies at goals (a finished state is
  ranked by its mean, as live states are): with h = 0 there, a short finished answer would beat
  live states with a better mean whenever d·(1 - its mean) < L·(1 - theirs). h over-estimates
  when a solution ends before L, so it is not admissible: the first goal popped need not be the
  best in the tree.

Each node's tree score is exp(-f) (prod r_i for "neglog"), so `best_so_far` (used when the budget,
`max_expansions` or the queue runs out) ranks states by priority, finished ones first. Budgets in
tokens, model calls and PRM calls come from the `Budget` through `SearchController`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Literal, get_args

from agentic.core import Budget, ConfigError, Context, Task, check_budget, emit
from search.base import Partial, SearchController, SearchTree, StepGenerator, best_so_far
from search.rewards import OutcomeReward, ProcessReward, score_steps

Cost = Literal["neglog", "mean_gap"]
EPS = 1e-6  # keeps -log r finite when the PRM is certain a step is wrong


def priority(step_scores: Sequence[float], depth: int, cost: Cost, *, horizon: int) -> float:
    """f = g + h of a state with these per-step PRM scores at this depth (lower pops first);
    `horizon` is L, the most steps a solution can have. The root (no steps) has f = 0."""
    clipped = [min(max(float(r), EPS), 1.0) for r in step_scores]
    if cost == "neglog":
        return sum(-math.log(r) for r in clipped)  # h = 0
    if cost == "mean_gap":
        gaps = [1.0 - r for r in clipped]
        if not gaps:
            return 0.0
        g = sum(gaps)
        h = (g / len(gaps)) * max(horizon - depth, 0)
        return g + h
    raise ConfigError(f"cost must be one of {get_args(Cost)}, got {cost!r}")


class AStarDecoding(SearchController):
    def __init__(
        self,
        steps: StepGenerator,
        reward: ProcessReward | OutcomeReward,
        *,
        k: int = 4,
        cost: Cost = "neglog",
        max_expansions: int = 32,
        seed: int = 0,
        budget: Budget | None = None,
    ) -> None:
        if getattr(reward, "kind", None) != "process":
            # f needs a score per step; an ORM only scores whole answers
            raise ConfigError(
                f"reward must be a process reward (kind='process'), "
                f"got kind={getattr(reward, 'kind', None)!r}"
            )
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if cost not in get_args(Cost):
            raise ConfigError(f"cost must be one of {get_args(Cost)}, got {cost!r}")
        if max_expansions < 1:
            raise ConfigError(f"max_expansions must be >= 1, got {max_expansions}")
        super().__init__(steps, budget=budget)
        self.reward: ProcessReward = reward  # type: ignore[assignment]
        self.k, self.cost, self.max_expansions, self.seed = k, cost, max_expansions, seed

    async def _search(
        self, task: Task, ctx: Context | None, tree: SearchTree
    ) -> tuple[str, float | None, list[tuple[str, float | None]]]:
        queue: list[tuple[float, int, Partial]] = [(0.0, 0, tree.root())]
        seq, expansions = 1, 0
        while queue:
            f, _, state = heapq.heappop(queue)
            if state.done:  # the first goal popped is the answer
                return state.text, math.exp(-f), best_so_far(tree)[2]
            if expansions >= self.max_expansions:
                break  # checked after the goal test, so a goal at the head is still taken
            emit("search.expand", node=state.node, f=f, depth=len(state.steps))
            # a distinct seed per expansion, so similar prefixes do not replay the same samples
            [kids] = await self.steps.extend(
                task, ctx, tree, [state], n=self.k, seed=self.seed + expansions
            )
            expansions += 1
            # the backend checks the budget only before generating: once this generation went
            # over a limit, stop before paying for PRM calls too
            check_budget()
            per_step = await score_steps(self.reward, task, [kid.steps for kid in kids])
            for kid, scores in zip(kids, per_step, strict=True):
                fk = priority(scores, len(kid.steps), self.cost, horizon=self.steps.max_steps)
                tree.score(kid, math.exp(-fk))
                heapq.heappush(queue, (fk, seq, kid))
                seq += 1
        # cap reached or queue empty: answer as a budget stop does (best finished, else best
        # partial; tree scores are exp(-f), so "best" means lowest f)
        return best_so_far(tree)
