"""`Direct`: answer each task with one model call (greedy by default). The baseline every
test-time-compute controller is measured against."""

from __future__ import annotations

from agentic.core import (
    BudgetExceeded,
    Context,
    GenerateRequest,
    Message,
    Outcome,
    SamplingParams,
    Task,
)
from backends import Backend


def task_messages(
    task: Task, ctx: Context | None, system_prompt: str | None = None
) -> tuple[Message, ...]:
    """The chat a controller starts from: its own system prompt (else the suite's), the task."""
    system = system_prompt or (ctx.system_prompt if ctx else None)
    head = (Message(role="system", content=system),) if system else ()
    return (*head, Message(role="user", content=task.input))


class Direct:
    def __init__(
        self,
        backend: Backend,
        *,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.backend = backend
        self.params = params or SamplingParams(temperature=0.0, max_tokens=64)
        self.system_prompt = system_prompt

    def __repr__(self) -> str:
        return f"Direct({self.backend.name}, {self.params!r})"

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        messages = task_messages(task, ctx, self.system_prompt)
        request = GenerateRequest(messages=messages, params=self.params)
        try:
            [[generation, *_]] = await self.backend.generate([request])
        except BudgetExceeded as e:
            return Outcome(task_id=task.id, output="", error=str(e))
        return Outcome(task_id=task.id, output=generation.text, usage=generation.usage)
