"""Calling the async API from plain code: scripts, notebooks, a REPL.

`run(awaitable)` waits for any awaitable; `run(controller, task)` solves one task. With no event
loop running they use `asyncio.run`. Inside a running loop (Jupyter, an async test, a web
handler) `asyncio.run` is not allowed, so the awaitable runs in a fresh loop on a worker thread
while the caller waits; the current `Budget` and `Tracer` go with it. Pass a coroutine there,
not a task or future of the running loop, and no object bound to that loop.
`BaseBackend.generate_sync` is `run(backend.generate(requests))`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, overload

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


@overload
def run(awaitable: Awaitable[T], /) -> T: ...


@overload
def run(controller: Controller, task: Task | str, /, ctx: Context | None = None) -> Outcome: ...


def run(what: Any, task: Task | str | None = None, /, ctx: Context | None = None) -> Any:
    """Run `what` to completion from synchronous code and return its result.

    `run(awaitable)` returns what the awaitable (a coroutine) gives, for example
    `run(backend.generate([request]))`. `run(controller, task, ctx=None)` solves one task
    (a `Task`, or a text that becomes `Task(id="task", input=text)`) and returns its `Outcome`.
    Works with or without an event loop running in this thread (see the module docstring).
    """
    if task is None:
        if not inspect.isawaitable(what):
            raise TypeError(
                f"run() takes an awaitable, or a controller and a task; got {type(what).__name__}"
            )
        awaitable: Awaitable[Any] = what
    else:
        if inspect.isawaitable(what) or not callable(what):
            raise TypeError(f"run(controller, task): {type(what).__name__} is not a controller")
        if isinstance(task, str):
            task = Task(id="task", input=task)
        awaitable = what(task, ctx or Context())
    if not _in_running_loop():
        return _complete(awaitable)
    context = contextvars.copy_context()  # the caller's budget and tracer
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentic-run") as pool:
        return pool.submit(context.run, _complete, awaitable).result()
