"""Best-of-N with optional weighted majority voting.

Sample N complete answers, score each with a reward model, keep the best-scored fraction `keep`
(DeepConf's confidence filter, Fu et al. 2025: η = `keep`; 1.0 keeps all), and answer with
- `select="best"`: the highest-scored answer (rejection sampling / best-of-N), or
- `select="weighted_majority"`: group the answers by their final answer, sum the scores in each
  group, and answer with the best-scored member of the heaviest group (weighted self-consistency:
  Wang et al. 2023 with reward weights, as in Li et al. 2023 "Making Large Language Models Better
  Reasoners with Step-Aware Verifier").

Symbols: N = `n`, R(y) = `reward.score` (an ORM, or a PRM folded by `aggregation`),
a(y) = `answer_of(task, y)` (the final answer a text gives: pass the suite's `extract`, so the
vote's answer is the graded one).
The tree is the root with N finished children.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

from agentic.core import (
    AnswerReader,
    Budget,
    ConfigError,
    Context,
    SamplingParams,
    Task,
    read_answer,
)
from search.base import SearchController, SearchTree, StepGenerator
from search.rewards import Aggregation, OutcomeReward, ProcessReward, aggregate, rate


class BestOfN(SearchController):
    def __init__(
        self,
        steps: StepGenerator,
        reward: OutcomeReward | ProcessReward,
        *,
        n: int = 8,
        select: Literal["best", "weighted_majority"] = "best",
        keep: float = 1.0,
        aggregation: Aggregation = "last",
        answer_of: AnswerReader = read_answer,
        seed: int | None = 0,
        budget: Budget | None = None,
    ) -> None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if select not in ("best", "weighted_majority"):
            raise ConfigError(f"select must be 'best' or 'weighted_majority', got {select!r}")
        if not 0.0 < keep <= 1.0:
            raise ConfigError(f"keep must be in (0, 1], got {keep}")
        aggregate([], aggregation)  # validates the name
        super().__init__(steps, budget=budget)
        self.reward, self.n, self.select, self.keep = reward, n, select, keep
        self.aggregation, self.answer_of, self.seed = aggregation, answer_of, seed

    async def _search(
        self, task: Task, ctx: Context | None, tree: SearchTree
    ) -> tuple[str, float | None, list[tuple[str, float | None]]]:
        s = self.steps
        request = s.request(task, ctx, "", self.n, self.seed)
        # one call for N whole answers: the step delimiter does not stop them
        params = SamplingParams(
            max_tokens=s.tokens_per_step * s.max_steps,
            temperature=s.temperature,
            top_p=s.top_p,
            min_p=s.min_p,
            n=self.n,
            seed=self.seed,
            # a reward that reads the samples' own logprobs (confidence) says how many it needs
            logprobs=getattr(self.reward, "top_logprobs", None),
        )
        [samples] = await s.backend.generate([request.model_copy(update={"params": params})])
        root = tree.root()
        kids = [tree.add(root, g.text, True, g.usage) for g in samples]
        by_generation = getattr(self.reward, "score_generations", None)
        if by_generation is not None:
            scores = await by_generation(task, samples)
        else:
            split = [tuple(split_steps(g.text, s.delimiter)) for g in samples]
            scores = await rate(self.reward, task, split, self.aggregation)
        for k, sc in zip(kids, scores, strict=True):
            tree.score(k, sc)
        scored = [(k.text, sc) for k, sc in zip(kids, scores, strict=True)]
        finished: list[tuple[str, float | None]] = list(scored)
        if self.keep < 1.0:
            kept = max(1, math.ceil(self.keep * len(scored)))
            # stable: ties keep sampling order, so the same seed gives the same answer
            scored = sorted(scored, key=lambda f: -f[1])[:kept]
        if self.select == "best":
            text, score = max(scored, key=lambda f: f[1])
            return text, score, finished
        votes: dict[str, float] = defaultdict(float)
        for text, sc in scored:
            votes[self.answer_of(task, text)] += sc
        winner = max(votes, key=lambda a: votes[a])
        members = [f for f in scored if self.answer_of(task, f[0]) == winner]
        text, score = max(members, key=lambda f: f[1])
        return text, score, finished


def split_steps(text: str, delimiter: str) -> list[str]:
    """Steps of a whole answer, each keeping its delimiter, so they join back to the text."""
    parts = text.split(delimiter)
    return [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
