"""A chat request as a one-task suite, so a controller serves it exactly as it solves a suite.

The gateway turns each request into a `ChatSuite`: its system message is the suite's system
prompt, its last user message the task's input, and the turns between them ride in
`Task.metadata["messages"]` (`agentic.core.task_messages` puts them back in order). Solving it
with `run_suite` gives the gateway the same budget, usage, tracing and recording as `agentic run`,
and a recording of it replays with `agentic replay` (the suite's config carries its tasks).

A chat has no reference answer: `check` scores every output 0.0, and answer extraction is the
default rule (`agentic.core.read_answer`), so a vote compares first lines (or `<answer>` tags).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentic.core import ConfigError, Message, Task, TaskSuite
from agentic.core.types import HISTORY


class ChatSuite(TaskSuite):
    name = "chat"

    def __init__(self, tasks: Sequence[Task], system_prompt: str | None = None) -> None:
        self._tasks = list(tasks)
        self.system_prompt = system_prompt

    @classmethod
    def from_messages(cls, task_id: str, messages: Sequence[Message]) -> ChatSuite:
        """The suite of one chat: leading system messages joined as its system prompt, the last
        message (a user turn) as the task, the turns between as the task's history."""
        msgs = list(messages)
        if not msgs or msgs[-1].role != "user":
            raise ConfigError("messages: a controller answers a chat that ends with a user turn")
        system = [m.content for m in msgs if m.role == "system"]
        if any(m.role == "system" for m in msgs[len(system) :]):
            raise ConfigError("messages: system messages must come first")
        history = [m.model_dump(exclude_none=True) for m in msgs[len(system) : -1]]
        task = Task(
            id=task_id,
            input=msgs[-1].content,
            metadata={HISTORY: history} if history else {},
        )
        return cls([task], "\n\n".join(system) or None)

    @property
    def tasks(self) -> Sequence[Task]:
        return self._tasks

    async def check(self, task: Task, output: str) -> float:
        return 0.0

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "system_prompt": self.system_prompt,
            "tasks": [t.model_dump(mode="json") for t in self._tasks],
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ChatSuite:
        return cls([Task.model_validate(t) for t in cfg.get("tasks", ())], cfg.get("system_prompt"))
