"""A test double for the reward side: `ScriptedReward`, an outcome or process reward from a
plain function of the text. With `backends.testing.ScriptedBackend` it tests the mechanics of a
search with no model; each algorithm also runs on a real model and verifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from agentic.core import Task, Usage, charge_budget


class ScriptedReward:
    """Scores with `fn(text)`. As an outcome reward (`kind="outcome"`) it scores each whole
    text; as a process reward (`"process"`) each step k of a solution gets `fn` of the steps up
    to k joined. Charges one `reward_calls` per item scored and counts them in `calls`."""

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
