"""Best-of-N with optional weighted majority voting.

Sample N complete answers, score each with a reward model, and answer with
- `select="best"`: the highest-scored answer (rejection sampling / best-of-N), or
- `select="weighted_majority"`: group the answers by their final answer, sum the scores in each
  group, and answer with the best-scored member of the heaviest group (weighted self-consistency:
  Wang et al. 2023 with reward weights, as in Li et al. 2023 "Making Large Language Models Better
  Reasoners with Step-Aware Verifier").

Symbols: N = `n`, R(y) = `reward.score` (an ORM, or a PRM folded by `aggregation`),
a(y) = `answer_of(y)` (the final answer a text gives).
The tree is the root with N finished children.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Literal

from agentic.core import Budget, ConfigError, Context, SamplingParams, Task
from search.base import SearchController, SearchTree, StepGenerator
from search.rewards import Aggregation, OutcomeReward, ProcessReward, aggregate, rate

_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def final_answer(text: str) -> str:
    """What an answer says in the end: an <answer> tag, else its last number, else its last
    non-empty line."""
    if tag := _TAG.search(text):
        return tag.group(1).strip()
    if numbers := _NUMBER.findall(text):
        return str(numbers[-1])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class BestOfN(SearchController):
    def __init__(
        self,
        steps: StepGenerator,
        reward: OutcomeReward | ProcessReward,
        *,
        n: int = 8,
        select: Literal["best", "weighted_majority"] = "best",
        aggregation: Aggregation = "last",
        answer_of: Callable[[str], str] = final_answer,
        seed: int | None = 0,
        budget: Budget | None = None,
    ) -> None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if select not in ("best", "weighted_majority"):
            raise ConfigError(f"select must be 'best' or 'weighted_majority', got {select!r}")
        aggregate([], aggregation)  # validates the name
        super().__init__(steps, budget=budget)
        self.reward, self.n, self.select = reward, n, select
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
            n=self.n,
            seed=self.seed,
        )
        [samples] = await s.backend.generate([request.model_copy(update={"params": params})])
        root = tree.root()
        kids = [tree.add(root, g.text, True, g.usage) for g in samples]
        split = [tuple(split_steps(g.text, s.delimiter)) for g in samples]
        scores = await rate(self.reward, task, split, self.aggregation)
        for k, sc in zip(kids, scores, strict=True):
            tree.score(k, sc)
        scored = [(k.text, sc) for k, sc in zip(kids, scores, strict=True)]
        finished: list[tuple[str, float | None]] = list(scored)
        if self.select == "best":
            text, score = max(scored, key=lambda f: f[1])
            return text, score, finished
        votes: dict[str, float] = defaultdict(float)
        for text, sc in scored:
            votes[self.answer_of(text)] += sc
        winner = max(votes, key=lambda a: votes[a])
        members = [f for f in scored if self.answer_of(f[0]) == winner]
        text, score = max(members, key=lambda f: f[1])
        return text, score, finished


def split_steps(text: str, delimiter: str) -> list[str]:
    """Steps of a whole answer, each keeping its delimiter, so they join back to the text."""
    parts = text.split(delimiter)
    return [p + delimiter for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
