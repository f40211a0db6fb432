"""How the gateway streams: progress chunks from a search's events, the chosen answer in
word-sized pieces, pass-through tokens as they are decoded, and cancellation when the client
goes away (polled every `DISCONNECT_POLL_S`, streaming or not).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import Request

from agentic.core import AgenticError, Event, GenerateRequest, Message, Outcome, Usage
from agentic.server.metrics import Metrics
from agentic.server.protocol import Chunker, error_body
from agentic.server.service import Caller, Gateway, Plan, RequestError

DISCONNECT_POLL_S = 0.1
# search events a progress stream forwards; `search.score` is folded into the next of these
PROGRESS_EVENTS = {"search.round", "search.anneal", "search.expand", "search.result"}
_T = TypeVar("_T")


def finish_reason(outcome: Outcome) -> str:
    """ "length" for an answer cut short (a budget ran out, or the controller failed), as
    OpenAI reports a generation that hit max_tokens."""
    return "length" if outcome.error or outcome.info.get("stopped") else "stop"


def agentic_field(plan: Plan, outcome: Outcome) -> dict[str, Any]:
    spec = plan.spec.model_dump(mode="json") if plan.spec is not None else None
    return {
        "controller": spec,
        "info": outcome.info,
        "error": outcome.error or outcome.info.get("stopped"),
        "trace_id": outcome.trace_id,
    }


class Progress:
    """A tracer sink that turns a search's events into progress items on `queue`."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue
        self.scores: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    def __call__(self, event: Event) -> None:
        payload = event.model_dump(mode="json")["payload"]
        if event.type == "search.score":
            self.scores.append(payload)
            if self.best is None or payload["score"] > self.best["score"]:
                self.best = payload
        elif event.type in PROGRESS_EVENTS:
            item = {"event": event.type, **payload, "scores": self.scores, "best": self.best}
            self.scores = []
            self.queue.put_nowait(item)


def pieces(text: str) -> list[str]:
    """A chosen answer cut into word-sized stream chunks."""
    return [p for p in re.findall(r"\s*\S+\s*|\s+", text)] or [""]


async def watch(request: Request, task: asyncio.Future[Any]) -> bool:
    """Wait for `task`, cancelling it if the client disconnects first; True if it did."""
    while not task.done():
        if await request.is_disconnected():
            task.cancel()
            return True
        await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
    return False


async def until_done_or_gone(request: Request, task: asyncio.Future[_T]) -> _T:
    """`task`'s result; a 499 (nginx's "client closed request") if the client left first."""
    if await watch(request, task):
        raise RequestError("the client closed the request", status=499, code="client_closed")
    return await task


async def stream_controller(
    gw: Gateway,
    rid: str,
    plan: Plan,
    chat: list[Message],
    caller: Caller,
    progress: bool,
    chunker: Chunker,
    include_usage: bool,
    request: Request,
    metrics: Metrics,
    status: list[str],
) -> AsyncIterator[str]:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    end = object()
    listeners = [Progress(queue)] if progress else []
    task = asyncio.ensure_future(gw.solve(rid, plan, chat, caller, listeners))
    task.add_done_callback(lambda _: queue.put_nowait(end))
    watcher = asyncio.ensure_future(watch(request, task))
    completed = False
    try:
        yield chunker.start()
        while (item := await queue.get()) is not end:
            yield chunker.progress(item)
        if task.cancelled():
            return
        outcome = task.result()
        metrics.spent(outcome.usage)
        for piece in pieces(outcome.output):
            yield chunker.text(piece)
        yield chunker.finish(finish_reason(outcome), agentic_field(plan, outcome))
        if include_usage:
            yield chunker.usage(outcome.usage)
        yield chunker.done()
        completed = True
    finally:
        if not completed and status[0] == "200":
            status[0] = "499"  # the client went away (our watcher or the server noticed)
        task.cancel()
        watcher.cancel()


async def stream_direct(
    gw: Gateway,
    rid: str,
    plan: Plan,
    request_: GenerateRequest,
    caller: Caller,
    chunker: Chunker,
    include_usage: bool,
    request: Request,
    metrics: Metrics,
    status: list[str],
) -> AsyncIterator[str]:
    n = request_.params.n
    one = request_.model_copy(update={"params": request_.params.model_copy(update={"n": 1})})
    queue: asyncio.Queue[tuple[int, str | None, str | None]] = asyncio.Queue()
    usages: list[Usage] = []

    async def produce(i: int) -> None:
        usage: list[Usage] = []
        finish: list[str] = []
        async for piece in gw.stream(
            rid if n == 1 else f"{rid}-{i}", plan, one, caller, usage, finish
        ):
            queue.put_nowait((i, piece, None))
        usages.extend(usage)
        queue.put_nowait((i, None, finish[0] if finish else "stop"))

    async def all_choices() -> None:
        await asyncio.gather(*(produce(i) for i in range(n)))

    task = asyncio.ensure_future(all_choices())
    failed: list[BaseException] = []

    def ended(t: asyncio.Future[None]) -> None:
        if not t.cancelled() and (e := t.exception()) is not None:
            failed.append(e)
        queue.put_nowait((-1, None, None))

    task.add_done_callback(ended)
    watcher = asyncio.ensure_future(watch(request, task))
    completed = False
    try:
        yield chunker.start()
        while (item := await queue.get())[0] >= 0:
            i, piece, finish = item
            if piece is not None:
                yield chunker._wrap([chunker._choice(piece, None, index=i)])
            else:
                yield chunker._wrap(
                    [chunker._choice(None if chunker.chat else "", finish, index=i)]
                )
        if task.cancelled():
            return
        if failed:
            status[0] = "500"
            e = failed[0]
            message = f"{type(e).__name__}: {e}" if isinstance(e, AgenticError) else "server error"
            yield f"data: {json.dumps(error_body(message, type='server_error'))}\n\n"
            return
        usage = Usage.total(usages)
        metrics.spent(usage)
        if include_usage:
            yield chunker.usage(usage)
        yield chunker.done()
        completed = True
    finally:
        if not completed and status[0] == "200":
            status[0] = "499"  # the client went away (our watcher or the server noticed)
        task.cancel()
        watcher.cancel()
