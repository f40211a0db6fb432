"""The gateway's HTTP face (FastAPI): OpenAI's chat and text completions, models, health and
Prometheus metrics, with per-request controllers, budgets and verifiers (`agentic.server.service`).

Streams are OpenAI server-sent events. A pass-through request streams token by token; a
controller's answer streams as soon as it is chosen, preceded by progress chunks when the
request asks for them. A client that goes away (closed stream or abandoned plain request) is
noticed within `DISCONNECT_POLL_S`, and its search is cancelled: a local backend stops decoding
its rows at the next step.

Admission: at most `max_concurrency` requests solve at once and `max_queue` wait; beyond that a
429 with `Retry-After`. Every refusal is an OpenAI error body naming the field at fault.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError

from agentic.core import AgenticError, GenerateRequest, Message, Usage
from agentic.server.metrics import Metrics
from agentic.server.protocol import (
    AgenticOptions,
    ChatRequest,
    Chunker,
    CompletionRequest,
    error_body,
    new_id,
    usage_body,
)
from agentic.server.service import Caller, Gateway, Plan, RequestError
from agentic.server.streams import (
    agentic_field,
    finish_reason,
    stream_controller,
    stream_direct,
    until_done_or_gone,
)

log = logging.getLogger("agentic.server")

_T = TypeVar("_T")


class Admission:
    """At most `limit` requests solving, `queue` more waiting, the rest refused."""

    def __init__(self, limit: int, queue: int, retry_after: int, metrics: Metrics) -> None:
        self.limit, self.queue, self.retry_after, self.metrics = limit, queue, retry_after, metrics
        self.slots = asyncio.Semaphore(limit)
        self.waiting = self.running = 0

    async def enter(self) -> None:
        if self.running >= self.limit and self.waiting >= self.queue:
            raise RequestError(
                f"the server is full ({self.running} solving, {self.waiting} waiting); retry",
                status=429,
                type="rate_limit_error",
                code="server_busy",
                headers={"Retry-After": str(self.retry_after)},
            )
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
            self.metrics.queue_depth.set(self.waiting)
        self.running += 1
        self.metrics.in_flight.set(self.running)

    def leave(self) -> None:
        self.running -= 1
        self.metrics.in_flight.set(self.running)
        self.slots.release()


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        item = e.errors()[0]
        loc = ".".join(str(x) for x in item["loc"])
        raise RequestError(f"{loc}: {item['msg']}", param=loc) from None


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"the body is not JSON: {e}") from None


def create_app(start: Callable[[], Gateway]) -> FastAPI:
    """The gateway app; `start` builds the `Gateway` (loads its backends) when the app starts."""
    metrics = Metrics()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = state["gw"] = start()
        c = gw.config
        state["admission"] = Admission(c.max_concurrency, c.max_queue, c.retry_after_s, metrics)
        try:
            yield
        finally:
            await gw.aclose()

    app = FastAPI(title="agentic gateway", lifespan=lifespan)

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError) -> JSONResponse:
        return JSONResponse(
            error_body(str(e), type=e.type, param=e.param, code=e.code),
            status_code=e.status,
            headers=e.headers,
        )

    def rows() -> int:
        return sum(getattr(b, "rows_in_flight", 0) for b in state["gw"].backends.values())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(state["gw"].backends)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(rows), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        ids = state["gw"].model_ids()
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": 0, "owned_by": "agentic"} for i in ids
            ],
        }

    async def serve(request: Request, chat: bool) -> Response:
        gw: Gateway = state["gw"]
        endpoint = "chat" if chat else "completions"
        started = time.monotonic()
        body = await _body(request)
        req: ChatRequest | CompletionRequest = _parse(
            ChatRequest if chat else CompletionRequest, body
        )
        caller = gw.authenticate(request.headers.get("authorization"))
        opts = req.agentic or AgenticOptions()
        plan = gw.plan(req.model, opts.controller, opts.verifier, opts.budget)
        if isinstance(req, ChatRequest):
            try:
                chats = [req.chat()]
            except ValueError as e:
                raise RequestError(f"messages: {e}", param="messages") from None
        else:
            chats = [[Message(role="user", content=p)] for p in req.prompts]
        if plan.spec is not None and (req.n != 1 or len(chats) != 1):
            raise RequestError(
                "a controller returns one answer: n must be 1 and prompt a single string",
                param="n" if req.n != 1 else "prompt",
            )
        if req.stream and len(chats) != 1:
            raise RequestError("stream takes a single prompt", param="prompt")
        admission: Admission = state["admission"]
        await admission.enter()
        rid = new_id("chatcmpl" if chat else "cmpl")
        status = ["200"]

        def done() -> None:
            admission.leave()
            metrics.requests.labels(endpoint, plan.label, status[0]).inc()
            metrics.latency.labels(endpoint, str(req.stream).lower()).observe(
                time.monotonic() - started
            )

        if req.stream:
            chunker = Chunker(rid, plan.label, chat)
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            if plan.spec is not None:
                gen = stream_controller(
                    gw,
                    rid,
                    plan,
                    chats[0],
                    caller,
                    opts.progress,
                    chunker,
                    include_usage,
                    request,
                    metrics,
                    status,
                )
            else:
                gen = stream_direct(
                    gw,
                    rid,
                    plan,
                    _request(req, chats[0]),
                    caller,
                    chunker,
                    include_usage,
                    request,
                    metrics,
                    status,
                )
            return StreamingResponse(_finally(gen, done), media_type="text/event-stream")
        try:
            return JSONResponse(
                await _answer(gw, rid, plan, req, chats, caller, chat, request, metrics)
            )
        except RequestError as e:
            status[0] = str(e.status)
            raise
        finally:
            done()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, chat=False)

    return app


def _request(req: ChatRequest | CompletionRequest, chat: list[Message]) -> GenerateRequest:
    params = req.params()
    if isinstance(req, CompletionRequest):
        return GenerateRequest(prompt=chat[0].content, params=params)
    return GenerateRequest(messages=tuple(chat), params=params)


async def _finally(gen: AsyncIterator[str], done: Callable[[], None]) -> AsyncIterator[str]:
    try:
        async for item in gen:
            yield item
    finally:
        done()


async def _guard(coro: Coroutine[Any, Any, _T]) -> _T:
    """Backend and budget refusals of a request as 400s naming what went wrong."""
    try:
        return await coro
    except AgenticError as e:
        raise RequestError(f"{type(e).__name__}: {e}") from None


async def _answer(
    gw: Gateway,
    rid: str,
    plan: Plan,
    req: ChatRequest | CompletionRequest,
    chats: list[list[Message]],
    caller: Caller,
    chat: bool,
    request: Request,
    metrics: Metrics,
) -> dict[str, Any]:
    choices: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if plan.spec is not None:
        outcome = await until_done_or_gone(
            request, asyncio.ensure_future(gw.solve(rid, plan, chats[0], caller))
        )
        usage = outcome.usage
        texts = [(outcome.output, finish_reason(outcome))]
        extra["agentic"] = agentic_field(plan, outcome)
    else:
        jobs = [_guard(gw.generate(rid, plan, _request(req, c), caller)) for c in chats]
        results = await until_done_or_gone(request, asyncio.gather(*jobs))
        usage = Usage.total(u for _, u in results)
        texts = [(g.text, g.finish_reason) for gens, _ in results for g in gens]
    metrics.spent(usage)
    for i, (text, finish) in enumerate(texts):
        if chat:
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            )
        else:
            prompt = chats[i // req.n][0].content if getattr(req, "echo", False) else ""
            choices.append(
                {"index": i, "text": prompt + text, "finish_reason": finish, "logprobs": None}
            )
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": plan.label,
        "choices": choices,
        "usage": usage_body(usage),
        **extra,
    }
