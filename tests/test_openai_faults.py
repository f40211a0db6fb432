"""`OpenAIBackend` against a real llama.cpp server behind a fault-injecting proxy.

Every request goes client -> `FaultProxy` -> llama.cpp's OpenAI server (SmolLM2-135M as
`smollm2`). The proxy answers a share of requests with 503/429 (with `Retry-After`), resets,
stalls, truncated or malformed bodies; the client must retry each fault exactly once, finish
every request exactly once, name the URL and the last failure when it gives up, refuse to
retry the caller's own mistakes (4xx), and never leak the API key.

`server="llama.cpp"` and a model name are always given, so no probe request goes through the
proxy and the proxy's counters see only the requests under test.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FAULT_KINDS, FaultProxy

from agentic.core import (
    BackendUnavailable,
    Event,
    GenerateRequest,
    JSONLSink,
    RequestRejected,
    Tracer,
    read_events,
)
from backends.openai.backend import OpenAIBackend

pytestmark = pytest.mark.slow

MODEL = "smollm2"
TRANSPORT_ERRORS = ("ReadError", "RemoteProtocolError", "ConnectError")


def _request(i: int) -> GenerateRequest:
    return GenerateRequest(prompt=f"Request {i}: 1+1=", params={"max_tokens": 1, "temperature": 0})


@asynccontextmanager
async def _proxied(
    server: Any, proxy_kw: dict[str, Any], **backend_kw: Any
) -> AsyncIterator[tuple[FaultProxy, OpenAIBackend]]:
    """A proxy in front of `server` and a backend pointed at the proxy; both closed after."""
    proxy = FaultProxy(server.url.removesuffix("/v1"), **proxy_kw)
    await proxy.start()
    backend: OpenAIBackend | None = None
    try:
        backend = OpenAIBackend(proxy.url + "/v1", MODEL, server="llama.cpp", **backend_kw)
        yield proxy, backend
    finally:
        if backend is not None:
            await backend.aclose()
        await proxy.stop()


@contextmanager
def _recording(path: Path) -> Iterator[Path]:
    sink = JSONLSink(path)
    try:
        with Tracer([sink]).activate():
            yield path
    finally:
        sink.close()


def _events(path: Path, type: str) -> list[Event]:
    return [e for e in read_events(path) if e.type == type]


def _faults(proxy: FaultProxy) -> int:
    return sum(n for kind, n in proxy.counts.items() if kind != "forwarded")


async def test_500_requests_through_faults_all_complete_once(
    llamacpp_server: Any, tmp_path: Path
) -> None:
    # warm the server up directly (not through the proxy): a cold first request must not time out
    direct = OpenAIBackend(llamacpp_server.url, MODEL, server="llama.cpp")
    try:
        await direct.generate([_request(-1)])
    finally:
        await direct.aclose()
    proxy_kw = dict(rate=0.25, kinds=FAULT_KINDS, retry_after=0.05, stall_seconds=30, seed=1)
    # read_timeout: each stall costs one timeout, so it sets the run's tail (~45 s in all at
    # 10 s). A genuine answer must never time out, or a retry would happen without a fault
    # and the exact count below breaks: llama.cpp serves one request at a time (~50-100 ms
    # each, up to 16 queued, < 1 s seen), but at 3 s a busy 2-core machine produced dozens
    # of spurious timeouts
    async with _proxied(
        llamacpp_server,
        proxy_kw,
        read_timeout=10.0,
        connect_timeout=2,
        max_retries=12,
        backoff=0.02,
        backoff_max=0.3,
        max_concurrency=16,
    ) as (proxy, backend):
        requests = [_request(i) for i in range(500)]
        gate = asyncio.Semaphore(16)

        async def one(req: GenerateRequest) -> list[Any]:
            async with gate:
                return (await backend.generate([req]))[0]

        with _recording(tmp_path / "run.jsonl") as path:
            results = await asyncio.gather(*(one(r) for r in requests))

    assert all(len(gens) == 1 for gens in results)

    generated = _events(path, "backend.generate")
    keys = [e.payload["key"] for e in generated]
    assert len(generated) == 500
    assert len(set(keys)) == 500
    assert set(keys) == {r.key() for r in requests}

    faults = _faults(proxy)
    retries = _events(path, "backend.retry")
    assert set(FAULT_KINDS) <= set(proxy.counts), proxy.counts
    # every fault costs exactly one retry, and nothing else does
    assert len(retries) == faults, proxy.counts
    assert faults > 50
    # each request reached upstream and came back whole exactly once
    assert proxy.counts["forwarded"] == 500, proxy.counts
    assert proxy.requests == 500 + faults
    for e in retries:
        assert e.payload["url"] == f"{proxy.url}/v1/completions"
        assert e.payload["attempt"] >= 1
        assert e.payload["backend"] == backend.name
        assert e.payload["wait"] >= 0


async def _exhaust(
    server: Any, path: Path, kind: str, max_retries: int
) -> tuple[FaultProxy, str, list[Event], list[Event]]:
    """One request through a proxy that always injects `kind`: the proxy, the error message,
    the recorded retries and the recorded generations."""
    async with _proxied(
        server,
        dict(rate=1.0, kinds=(kind,), retry_after=0.001),
        max_retries=max_retries,
        backoff=0.001,
        backoff_max=0.01,
    ) as (proxy, backend):
        with _recording(path):
            with pytest.raises(BackendUnavailable) as info:
                await backend.generate([_request(0)])
    return proxy, str(info.value), _events(path, "backend.retry"), _events(path, "backend.generate")


async def test_all_faults_exhaust_retries_with_a_clear_error(
    llamacpp_server: Any, tmp_path: Path
) -> None:
    proxy, message, retries, generated = await _exhaust(
        llamacpp_server, tmp_path / "run.jsonl", "503", max_retries=3
    )
    assert f"{proxy.url}/v1/completions" in message
    assert "HTTP 503" in message
    assert "4 attempts" in message
    assert proxy.requests == 4
    assert proxy.counts == {"503": 4}
    assert [e.payload["attempt"] for e in retries] == [1, 2, 3]
    assert all(e.payload["status"] == 503 for e in retries)
    assert generated == []


async def test_resets_exhaust_with_transport_error_named(
    llamacpp_server: Any, tmp_path: Path
) -> None:
    proxy, message, retries, _ = await _exhaust(
        llamacpp_server, tmp_path / "run.jsonl", "reset", max_retries=2
    )
    assert f"{proxy.url}/v1/completions" in message
    assert "3 attempts" in message
    assert any(name in message for name in TRANSPORT_ERRORS), message
    assert proxy.requests == 3
    assert len(retries) == 2
    assert all(e.payload["status"] is None for e in retries)
    assert all(e.payload["error"].startswith(TRANSPORT_ERRORS) for e in retries)


class _OneFault(FaultProxy):
    """Faults the first request (at the configured rate), then forwards everything."""

    def _draw(self) -> str | None:
        kind = super()._draw()
        self.rate = 0.0
        return kind


async def test_retry_after_is_honoured(llamacpp_server: Any, tmp_path: Path) -> None:
    proxy = _OneFault(
        llamacpp_server.url.removesuffix("/v1"), rate=1.0, kinds=("429",), retry_after=0.4
    )
    await proxy.start()
    # backoff alone would wait ~0.01 s; Retry-After (0.4 s, under backoff_max) must win
    backend = OpenAIBackend(
        proxy.url + "/v1", MODEL, server="llama.cpp", max_retries=5, backoff=0.01, backoff_max=5
    )
    try:
        with _recording(tmp_path / "run.jsonl") as path:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            results = await backend.generate([_request(0)])
            elapsed = loop.time() - t0
    finally:
        await backend.aclose()
        await proxy.stop()

    assert len(results[0]) == 1
    assert proxy.counts == {"429": 1, "forwarded": 1}
    (retry,) = _events(path, "backend.retry")
    assert retry.payload["status"] == 429
    assert retry.payload["attempt"] == 1
    assert retry.payload["wait"] == pytest.approx(0.4, abs=1e-6)
    assert elapsed >= 0.39


async def test_client_errors_are_not_retried(llamacpp_server: Any, tmp_path: Path) -> None:
    async with _proxied(llamacpp_server, dict(rate=0.0), max_retries=5) as (proxy, backend):
        with _recording(tmp_path / "run.jsonl") as path:
            with pytest.raises(RequestRejected) as info:
                await backend.http.post("no-such-endpoint", {})

    # llama.cpp's server (FastAPI) answers an unknown path with 404 {"detail": "Not Found"}
    message = str(info.value)
    assert "HTTP 404" in message
    assert f"{proxy.url}/v1/no-such-endpoint" in message
    assert proxy.requests == 1
    assert proxy.counts == {"forwarded": 1}
    assert _events(path, "backend.retry") == []


async def test_4xx_from_a_prompt_over_the_context_window(
    llamacpp_server: Any, tmp_path: Path
) -> None:
    # the server runs with n_ctx 2048; llama.cpp answers 400 context_length_exceeded, which is
    # the caller's mistake: raised at once through generate(), not retried
    long = GenerateRequest(prompt="word " * 3000, params={"max_tokens": 2})
    async with _proxied(llamacpp_server, dict(rate=0.0), max_retries=5) as (proxy, backend):
        with _recording(tmp_path / "run.jsonl") as path:
            with pytest.raises(RequestRejected) as info:
                await backend.generate([long])

    message = str(info.value)
    assert "HTTP 400" in message
    assert "context" in message
    assert f"{proxy.url}/v1/completions" in message
    assert proxy.requests == 1
    assert _events(path, "backend.retry") == []
    assert _events(path, "backend.generate") == []


async def test_api_key_never_reaches_traces_or_errors(
    llamacpp_server: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    trace = tmp_path / "run.jsonl"
    async with _proxied(
        llamacpp_server,
        dict(rate=1.0, kinds=("503",), retry_after=0.001),
        api_key="sk-test-SECRET-123",
        max_retries=1,
        backoff=0.001,
        backoff_max=0.01,
    ) as (proxy, backend):
        assert backend.http.headers()["Authorization"] == "Bearer sk-test-SECRET-123"
        with _recording(trace):
            with pytest.raises(BackendUnavailable) as info:
                await backend.generate([_request(0)])
        texts = {
            "error": str(info.value),
            "repr(backend)": repr(backend),
            "repr(backend.http)": repr(backend.http),
            "name": backend.name,
        }

    assert proxy.requests == 2
    assert len(_events(trace, "backend.retry")) == 1
    texts["trace"] = trace.read_text()
    texts["logs"] = caplog.text
    assert "HTTP Request: POST" in caplog.text  # the logs were captured: the check means something
    for where, text in texts.items():
        assert "SECRET" not in text, where

    # the key does travel, in the Authorization header of the request upstream sees
    seen: list[str | None] = []
    async with _proxied(llamacpp_server, dict(rate=0.0), api_key="sk-test-SECRET-123") as (
        proxy,
        backend,
    ):
        forward = proxy._client.request  # type: ignore[union-attr]

        async def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(dict(kwargs["headers"]).get("Authorization"))
            return await forward(*args, **kwargs)

        proxy._client.request = spy  # type: ignore[union-attr,method-assign]
        await backend.generate([_request(0)])
    assert seen == ["Bearer sk-test-SECRET-123"]

    # without api_key= the key comes from the environment
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-KEY")
    from_env = OpenAIBackend(proxy.url + "/v1", MODEL, server="llama.cpp")
    try:
        assert from_env.http.headers()["Authorization"] == "Bearer sk-env-KEY"
        assert "sk-env-KEY" not in repr(from_env) + repr(from_env.http)
    finally:
        await from_env.aclose()


@pytest.mark.parametrize("kind", ["503", "reset"])
async def test_stream_retries_until_it_opens(llamacpp_server: Any, kind: str) -> None:
    proxy = _OneFault(llamacpp_server.url.removesuffix("/v1"), rate=1.0, kinds=(kind,))
    await proxy.start()
    backend = OpenAIBackend(
        proxy.url + "/v1", MODEL, server="llama.cpp", max_retries=3, backoff=0.01
    )
    events: list[Event] = []
    try:
        with Tracer([events.append]).activate():
            pieces = [p async for p in backend.stream(_request(1))]
    finally:
        await backend.aclose()
        await proxy.stop()
    assert proxy.counts == {kind: 1, "forwarded": 1}
    assert "".join(pieces)
    assert [e.type for e in events] == ["backend.retry", "backend.generate"]


async def test_a_stream_cut_mid_way_is_a_clear_error(llamacpp_server: Any) -> None:
    # a truncated body ends the event stream inside a JSON object
    async with _proxied(llamacpp_server, dict(rate=1.0, kinds=("truncated",)), max_retries=0) as (
        _,
        backend,
    ):
        req = GenerateRequest(prompt="Count: 1, 2,", params={"max_tokens": 24, "temperature": 0})
        with pytest.raises(BackendUnavailable, match="the stream broke"):
            async for _ in backend.stream(req):
                pass
