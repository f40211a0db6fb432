"""Reward models that guide search: outcome rewards (ORM) score a whole answer, process rewards
(PRM) score every step of a partial one.

- `OutcomeReward.score(task, texts) -> list[float]`: one score per answer, batched.
- `ProcessReward.score(task, solutions) -> list[list[float]]`: for each solution (a sequence of
  steps), one score per step prefix, batched; `aggregate` folds them into one number
  (`last`, `min`, `prod`, `mean`).

Implementations: `CheckerReward` (the task suite's own checker: an oracle ORM, the upper bound),
`JudgeReward` (an LLM judge: the probability of "Yes" against "No" after a question about the
partial solution, read from `Backend.score`; a PRM when asked about each step prefix, an ORM
about the whole answer), `WeightedReward` (a weighted combination of rewards, itself a reward).
More verifiers live beside this file: `confidence.py` (the policy's own token confidence),
`head_reward.py` (a trained head), `program_reward.py` (agreement with a program's output).
Each scored item is one reward call, charged to the current `Budget`. Each batch a search asks
for is traced as a `reward` span (reward name, kind, items) closed by a `reward.result` event
(the scores and the seconds it took), so a recording and the OTel export both show it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from agentic.core import (
    ConfigError,
    Message,
    ScoreRequest,
    Task,
    TaskSuite,
    Usage,
    charge_budget,
    emit,
    span,
)
from backends import Backend

Aggregation = Literal["last", "min", "prod", "mean"]


def aggregate(scores: Sequence[float], how: Aggregation = "last") -> float:
    """One number from a solution's per-step scores."""
    if how not in get_args(Aggregation):
        raise ConfigError(f"aggregation must be one of {get_args(Aggregation)}, got {how!r}")
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    if how == "prod":
        return float(math.prod(scores))
    return float(sum(scores) / len(scores))


@runtime_checkable
class OutcomeReward(Protocol):
    kind: Literal["outcome"]

    async def score(self, task: Task, texts: Sequence[str]) -> list[float]: ...


@runtime_checkable
class ProcessReward(Protocol):
    kind: Literal["process"]

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]: ...


async def rate(
    reward: OutcomeReward | ProcessReward,
    task: Task,
    solutions: Sequence[Sequence[str]],
    aggregation: Aggregation = "last",
) -> list[float]:
    """One score per solution (a sequence of steps) from either kind of reward model: an ORM
    scores the joined text, a PRM's per-step scores are folded by `aggregation`. A PRM that says
    `prefix_only = True` (its score of a step depends only on the text up to it, as
    `JudgeReward`'s and `HeadReward`'s do) is asked only about whole texts under "last"."""
    with span("reward", reward=type(reward).__name__, kind=reward.kind, items=len(solutions)):
        started = time.monotonic()
        if reward.kind == "outcome":
            scores = await reward.score(task, ["".join(s) for s in solutions])
        else:
            if aggregation == "last" and getattr(reward, "prefix_only", False):
                # the last step's score is the score of the whole text: earlier prefixes need none
                per_step = await reward.score(task, [["".join(s)] for s in solutions])
            else:
                per_step = await reward.score(task, solutions)
            scores = [aggregate(s, aggregation) for s in per_step]
        emit("reward.result", scores=scores, seconds=time.monotonic() - started)
    return scores


async def score_steps(
    reward: ProcessReward, task: Task, solutions: Sequence[Sequence[str]]
) -> list[list[float]]:
    """A PRM's per-step scores for each solution, traced as one reward call like `rate`'s (for
    searches that read every step's score, as A* does)."""
    with span("reward", reward=type(reward).__name__, kind=reward.kind, items=len(solutions)):
        started = time.monotonic()
        per_step = await reward.score(task, solutions)
        emit(
            "reward.result",
            scores=[s[-1] if s else None for s in per_step],
            seconds=time.monotonic() - started,
        )
    return per_step


class CheckerReward:
    """The suite's checker as an outcome reward (1.0 correct, 0.0 wrong): an oracle that knows
    the answer, so it bounds what any learned reward can reach."""

    kind: Literal["outcome"] = "outcome"

    def __init__(self, suite: TaskSuite) -> None:
        self.suite = suite

    async def score(self, task: Task, texts: Sequence[str]) -> list[float]:
        scores = await asyncio.gather(*(self.suite.check(task, t) for t in texts))
        charge_budget(Usage(reward_calls=len(texts)))
        return [float(s) for s in scores]


JUDGE_PROMPT = (
    "Question: {question}\n\nPartial answer:\n{answer}\n\n"
    "Is every step of this partial answer correct? Answer Yes or No."
)


class JudgeReward:
    """P(Yes) from an LLM judge, via `Backend.score` of the two answers "Yes" and "No".

    The probability is normalised over the two: p = e^lp(Yes) / (e^lp(Yes) + e^lp(No)).
    Scores are cached per (task, prefix), so a PRM asked again about a solution that grew by
    one step pays only for the new step.
    """

    kind: Literal["process"] = "process"
    prefix_only = True  # a step's score is the judge's verdict on the text up to it

    def __init__(
        self,
        backend: Backend,
        *,
        prompt: str = JUDGE_PROMPT,
        yes: str = "Yes",
        no: str = "No",
    ) -> None:
        if "{question}" not in prompt or "{answer}" not in prompt:
            raise ConfigError("prompt must contain {question} and {answer}")
        self.backend = backend
        self.prompt = prompt
        self.yes, self.no = yes, no
        self._cache: dict[tuple[str, str], float] = {}

    def _requests(self, task: Task, answer: str) -> list[ScoreRequest]:
        content = self.prompt.format(question=task.input, answer=answer)
        msgs = (Message(role="user", content=content),)
        return [ScoreRequest(messages=msgs, continuation=c) for c in (self.yes, self.no)]

    async def judge(self, task: Task, answers: Sequence[str]) -> list[float]:
        todo = sorted({a for a in answers if (task.id, a) not in self._cache})
        if todo:
            reqs = [r for a in todo for r in self._requests(task, a)]
            results = await self.backend.score(reqs)
            charge_budget(Usage(reward_calls=len(todo)))
            for i, a in enumerate(todo):
                yes, no = results[2 * i].logprob, results[2 * i + 1].logprob
                self._cache[(task.id, a)] = 1.0 / (1.0 + math.exp(no - yes))
        return [self._cache[(task.id, a)] for a in answers]

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        prefixes = [["".join(s[: k + 1]) for k in range(len(s))] for s in solutions]
        flat = await self.judge(task, [p for ps in prefixes for p in ps])
        out, i = [], 0
        for ps in prefixes:
            out.append(flat[i : i + len(ps)])
            i += len(ps)
        return out


class WeightedReward:
    """A weighted combination of rewards, itself a reward: r(y) = Σ_i w_i r_i(y) / Σ_i w_i.

    A process reward (per-step scores combined step by step) when every part is one, else an
    outcome reward that scores whole texts (process parts folded by `aggregation`). Each part
    charges its own reward calls.
    """

    def __init__(
        self,
        parts: Sequence[tuple[float, OutcomeReward | ProcessReward]],
        *,
        aggregation: Aggregation = "last",
    ) -> None:
        if not parts:
            raise ConfigError("WeightedReward needs at least one (weight, reward) part")
        for w, r in parts:
            if w < 0 or not math.isfinite(w):
                raise ConfigError(f"reward weights must be finite and >= 0, got {w}")
            if getattr(r, "kind", None) not in ("outcome", "process"):
                raise ConfigError(f"{r!r} is not a reward (its kind must be outcome or process)")
        total = sum(w for w, _ in parts)
        if total <= 0:
            raise ConfigError("reward weights must not all be 0")
        aggregate([], aggregation)
        self.parts = [(w / total, r) for w, r in parts]
        self.aggregation = aggregation
        process = all(r.kind == "process" for _, r in parts)
        self.kind: Literal["outcome", "process"] = "process" if process else "outcome"
        self.prefix_only = all(getattr(r, "prefix_only", False) for _, r in parts)

    async def score(self, task: Task, items: Sequence[Any]) -> list[Any]:
        if self.kind == "process":
            per_part: list[Any] = await asyncio.gather(
                *(r.score(task, items) for _, r in self.parts)
            )
            return [
                [sum(w * p[i][k] for (w, _), p in zip(self.parts, per_part, strict=True))
                 for k in range(len(items[i]))]
                for i in range(len(items))
            ]  # fmt: skip
        solutions = [[t] for t in items]
        rated = await asyncio.gather(
            *(rate(r, task, solutions, self.aggregation) for _, r in self.parts)
        )
        return [
            sum(w * s[i] for (w, _), s in zip(self.parts, rated, strict=True))
            for i in range(len(items))
        ]
