"""Run a controller over a task suite: concurrently, under a budget, traced and recorded.

Tasks run concurrently (bounded by `concurrency`), so a local backend batches their model calls.
Each task runs inside its own span and its own unlimited `Budget` (a meter nested in the run's
budget), so `Outcome.usage` is exactly what that task spent, whatever the controller did.
When the run's budget is used up, tasks not yet started are not started (`RunResult.not_run`),
and outcomes already finished are kept: the run returns its best-so-far.
The trace (`run.start`, every backend call, `task.outcome`, `run.end`) is the recording that
`agentic replay` serves back. A run resumed from a recording (`done=`) skips the tasks that
already have an outcome, counts them once in its result, and marks itself with `run.resume`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field

from agentic.core import (
    AgenticError,
    Budget,
    Context,
    Controller,
    Outcome,
    Task,
    TaskSuite,
    Usage,
    affinity,
    emit,
    span,
)


class Executor(Protocol):
    """Somewhere else to solve a run's tasks (`agentic.runtime.on_ray.RayExecutor`): it builds
    the controller from its spec where the tasks will run and returns a controller that sends
    them there; `run_suite` closes it (`aclose`) when the run ends."""

    async def controller(self, spec: Any, suite: TaskSuite) -> Controller: ...


class RunResult(BaseModel):
    """What a run produced. `usage.seconds` is the sum of request latencies (concurrent requests
    overlap); `seconds` (also dumped as `wall_seconds`) is this call's wall clock. Checkers may
    give partial credit (reasoning-gym gives 0.5 or 0.01 for near misses), so `accuracy` and
    `mean_score` are the same mean score, and `solved` counts only the outcomes with score 1.0."""

    model_config = ConfigDict(frozen=True)

    suite: str
    outcomes: list[Outcome]
    not_run: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    seconds: float = 0.0
    stopped: str | None = Field(default=None, description="why the run stopped early")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_score(self) -> float:
        """Mean checker score over the scored outcomes, partial credit included."""
        scored = [o.score for o in self.outcomes if o.score is not None]
        return sum(scored) / len(scored) if scored else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accuracy(self) -> float:
        """The mean score, under the name `agentic run` has always reported it by."""
        return self.mean_score

    @computed_field  # type: ignore[prop-decorator]
    @property
    def solved(self) -> int:
        """Outcomes with full credit (score 1.0)."""
        return sum(1 for o in self.outcomes if o.score is not None and o.score >= 1.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def wall_seconds(self) -> float:
        """Wall clock of this run (of this invocation, for a resumed run)."""
        return self.seconds

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.error)


async def _run_task(suite: TaskSuite, controller: Controller, task: Task, ctx: Context) -> Outcome:
    with span("task", task_id=task.id) as span_id, Budget() as meter, affinity(task.id):
        try:
            outcome = await controller(task, ctx)
        except AgenticError as e:  # budget, replay miss, backend down: recorded, run goes on
            outcome = Outcome(task_id=task.id, output="", error=f"{type(e).__name__}: {e}")
        score, error = 0.0, outcome.error
        if not error:
            try:
                score = await suite.check(task, outcome.output)
            except Exception as e:  # third-party checkers: one bad check must not end the run
                error = f"checker failed: {type(e).__name__}: {e}"
        outcome = outcome.model_copy(
            update={"score": score, "usage": meter.spent, "trace_id": span_id, "error": error}
        )
        emit("task.outcome", outcome=outcome.model_dump(mode="json"))
        return outcome


async def run_suite(
    suite: TaskSuite,
    controller: Controller,
    *,
    concurrency: int = 16,
    budget: Budget | None = None,
    tasks: Sequence[Task] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    config: dict[str, Any] | None = None,
    done: Sequence[Outcome] | None = None,
    executor: Executor | None = None,
) -> RunResult:
    """Solve `tasks` (default: all of the suite's) with `controller`; `config` is recorded in
    the `run.start` event so the run can be rebuilt (see `agentic replay`). Tasks with an
    outcome in `done` (from an interrupted run) are not solved again; passing `done`, even
    empty, marks the run as resumed (`run.resume` instead of a second `run.start`). With an
    `executor` (a Ray cluster), `controller` is a spec and the tasks are solved there."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if executor is not None:
        remote = await executor.controller(controller, suite)
        try:
            return await run_suite(
                suite,
                remote,
                concurrency=concurrency,
                budget=budget,
                tasks=tasks,
                on_outcome=on_outcome,
                config=config,
                done=done,
            )
        finally:
            close = getattr(remote, "aclose", None)
            if close is not None:
                await close()
    todo = list(suite.tasks if tasks is None else tasks)
    outcomes: dict[str, Outcome] = {}
    for o in done or ():
        outcomes.setdefault(o.task_id, o)
    ctx = Context(system_prompt=suite.system_prompt)
    gate = asyncio.Semaphore(concurrency)
    run_budget = budget or Budget()
    not_run: list[str] = []
    stopped: list[str] = []
    started = time.monotonic()

    async def one(task: Task) -> None:
        async with gate:
            if (err := run_budget.exceeded()) is not None:
                stopped.append(str(err))
                not_run.append(task.id)
                return
            outcome = await _run_task(suite, controller, task, ctx)
            outcomes[task.id] = outcome
            if on_outcome is not None:
                on_outcome(outcome)

    if done is not None:
        emit("run.resume", tasks=len(todo), done=sum(t.id in outcomes for t in todo))
    else:
        emit("run.start", suite=suite.config(), tasks=len(todo), config=config or {})
    with run_budget:
        await asyncio.gather(*(one(t) for t in todo if t.id not in outcomes))
    ordered = [outcomes[t.id] for t in todo if t.id in outcomes]
    result = RunResult(
        suite=suite.name,
        outcomes=ordered,
        not_run=not_run,
        usage=Usage.total(o.usage for o in ordered),
        seconds=time.monotonic() - started,
        stopped=stopped[0] if stopped else None,
    )
    emit(
        "run.end",
        accuracy=result.accuracy,
        usage=result.usage.model_dump(),
        not_run=len(not_run),
        stopped=result.stopped,
    )
    return result
