"""Calling the async API from plain code: scripts, notebooks, a REPL.

`run(awaitable)` waits for any awaitable; `run(controller, task)` solves one task. With no event
loop running they use `asyncio.run`. Inside a running loop (Jupyter, an async test, a web
handler) `asyncio.run` is not allowed, so the awaitable runs in a fresh loop on a worker thread
while the caller waits; the current `Budget` and `Tracer` go with it. Pass a coroutine there,
not a task or future of the running loop, and no object bound to that loop.
`BaseBackend.generate_sync` is `run(backend.generate(requests))`.

`otel=` exports what the call does as OpenTelemetry spans (`agentic.core.otel`): an endpoint URL,
True for the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, or an `OTelSink` of yours (left open). The
spans go out before `run` returns. The variable alone does not turn export on here, as it does
for `agentic run` and `agentic serve`: `run` is also how every `generate_sync` call waits, and a
library call should not start exporting behind a script's back.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, overload

from agentic.core.events import Tracer
from agentic.core.otel import OTelSink
from agentic.core.tasks import Context, Controller, Outcome, Task

T = TypeVar("T")


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _complete(awaitable: Awaitable[T]) -> T:
    return asyncio.run(_wait(awaitable))


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


OTel = str | bool | OTelSink | None


@overload
def run(awaitable: Awaitable[T], /, *, otel: OTel = None) -> T: ...


@overload
def run(
    controller: Controller, task: Task | str, /, ctx: Context | None = None, *, otel: OTel = None
) -> Outcome: ...


def run(
    what: Any,
    task: Task | str | None = None,
    /,
    ctx: Context | None = None,
    *,
    otel: OTel = None,
) -> Any:
    """Run `what` to completion from synchronous code and return its result.

    `run(awaitable)` returns what the awaitable (a coroutine) gives, for example
    `run(backend.generate([request]))`. `run(controller, task, ctx=None)` solves one task
    (a `Task`, or a text that becomes `Task(id="task", input=text)`) and returns its `Outcome`.
    Works with or without an event loop running in this thread (see the module docstring).
    `otel`: export the call's spans to this endpoint (True: `OTEL_EXPORTER_OTLP_ENDPOINT`), or
    to this `OTelSink`, beside the current tracer's sinks.
    """
    if task is None:
        if not inspect.isawaitable(what):
            raise TypeError(
                f"run() takes an awaitable, or a controller and a task; got {type(what).__name__}"
            )
    elif inspect.isawaitable(what) or not callable(what):
        raise TypeError(f"run(controller, task): {type(what).__name__} is not a controller")
    try:
        sink = _sink(otel)
    except Exception:
        if inspect.iscoroutine(what):
            what.close()  # not to be awaited now: no "never awaited" warning on top of the error
        raise
    if task is None:
        awaitable: Awaitable[Any] = what
    else:
        if isinstance(task, str):
            task = Task(id="task", input=task)
        awaitable = what(task, ctx or Context())
    if sink is None:
        return _wait_for(awaitable)
    current = Tracer.current()
    try:
        with Tracer([*(current.sinks if current else []), sink]).activate():
            return _wait_for(awaitable)
    finally:
        if sink is otel:
            sink.flush()
        else:
            sink.close()


def _sink(otel: OTel) -> OTelSink | None:
    if otel is None or otel is False:
        return None
    return otel if isinstance(otel, OTelSink) else OTelSink(None if otel is True else otel)


def _wait_for(awaitable: Awaitable[T]) -> T:
    if not _in_running_loop():
        return _complete(awaitable)
    context = contextvars.copy_context()  # the caller's budget and tracer
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentic-run") as pool:
        return pool.submit(context.run, _complete, awaitable).result()
