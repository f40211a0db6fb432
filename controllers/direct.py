"""`Direct`: answer each task with one model call (greedy by default). The baseline every
test-time-compute controller is measured against."""

from __future__ import annotations

from agentic.core import (
    BudgetExceeded,
    Context,
    GenerateRequest,
    Outcome,
    SamplingParams,
    Task,
    task_messages,
)
from backends import Backend


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
        # its own system prompt, else the suite's
        messages = task_messages(task, self.system_prompt or (ctx.system_prompt if ctx else None))
        request = GenerateRequest(messages=messages, params=self.params)
        try:
            [[generation, *_]] = await self.backend.generate([request])
        except BudgetExceeded as e:
            return Outcome(task_id=task.id, output="", error=str(e))
        return Outcome(task_id=task.id, output=generation.text, usage=generation.usage)
