"""Deterministic model and reward stand-ins for testing search mechanics (never as the only
evidence for a feature: each algorithm also runs on the real model).

`ScriptedBackend` continues a prefix with a step chosen by a rule of the caller's: given the
prefix and the sample index j it returns the step text and whether it ends the answer. It counts
every call, honours `n`, `stop` (the step delimiter) and `max_tokens` (one token per character),
and goes through `BaseBackend`, so budgets and events work as with a real model.
`ScriptedReward` is a PRM (or ORM) from a plain function of the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from agentic.core import GenerateRequest, Generation, Message, Task, Usage, charge_budget
from backends.base import BaseBackend, Capabilities

Rule = Callable[[str, int], tuple[str, bool]]  # (prefix, sample j) -> (step text, ends answer)


class ScriptedBackend(BaseBackend):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = "scripted"
        self.capabilities = Capabilities(prefix=True)
        self.requests: list[GenerateRequest] = []

    def _one(self, req: GenerateRequest, j: int) -> Generation:
        p = req.params
        text, ends = self.rule(req.prefix, (p.seed or 0) * 1000 + j)
        stop_reason = None
        finish: Literal["stop", "length"] = "stop" if ends else "length"
        for s in p.stop:
            if s in text:
                text, stop_reason, finish = text[: text.index(s)], s, "stop"
                break
        if len(text) > p.max_tokens:
            text, stop_reason, finish = text[: p.max_tokens], None, "length"
        return Generation(
            text=text,
            token_ids=tuple(range(len(text))),
            finish_reason=finish,
            stop_reason=stop_reason,
            usage=Usage(
                prompt_tokens=len(req.prefix) + 10 if j == 0 else 0,
                completion_tokens=len(text),
                model_calls=1 if j == 0 else 0,
            ),
        )

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.requests += requests
        return [[self._one(r, j) for j in range(r.params.n)] for r in requests]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return len(text_or_messages) if isinstance(text_or_messages, str) else 0


class ScriptedReward:
    def __init__(
        self, fn: Callable[[str], float], kind: Literal["outcome", "process"] = "process"
    ) -> None:
        self.fn, self.kind = fn, kind
        self.calls = 0

    async def score(self, task: Task, items: Sequence[Any]) -> list[Any]:
        self.calls += len(items)
        charge_budget(Usage(reward_calls=len(items)))
        if self.kind == "outcome":
            return [self.fn(t) for t in items]
        return [[self.fn("".join(s[: k + 1])) for k in range(len(s))] for s in items]
