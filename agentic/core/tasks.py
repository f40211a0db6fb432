"""Tasks, outcomes and task suites (tasks plus an async checker)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agentic.core.answers import read_answer
from agentic.core.types import Usage


class Task(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    input: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    answer: str | None = None


class Outcome(BaseModel):
    """What a controller produced for one task. `error` is set when the task could not finish
    (for example the budget ran out); `output` then holds the best found so far, maybe empty."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str
    output: str
    score: float | None = None
    usage: Usage = Field(default_factory=Usage)
    trace_id: str | None = None
    error: str | None = None
    info: dict[str, Any] = Field(
        default_factory=dict,
        description="what the controller wants reported beside the output (JSON values): the "
        "mode a router chose, the share of tokens from a large model, a vote's margin",
    )


class TaskSuite(ABC):
    """A named, seeded set of tasks and the checker that scores an output in [0, 1]."""

    name: str
    system_prompt: str | None = None

    @property
    @abstractmethod
    def tasks(self) -> Sequence[Task]: ...

    def extract(self, task: Task, output: str) -> str:
        """The answer `output` gives, exactly as `check` grades it. Selectors (votes, best-of-N,
        search) compare answers through this, so the answer they choose is the one graded."""
        return read_answer(task, output)

    @abstractmethod
    async def check(self, task: Task, output: str) -> float:
        """Score in [0, 1] of `output`; grade `self.extract(task, output)`, not the raw text."""

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this suite (stored with a recorded run)."""
        return {"name": self.name}


class Context(BaseModel):
    """What a controller gets besides the task: the suite's instructions and free-form extras."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system_prompt: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Controller(Protocol):
    """`await controller(task, ctx) -> Outcome`. Calls models only through `Backend`."""

    async def __call__(self, task: Task, ctx: Context) -> Outcome: ...
