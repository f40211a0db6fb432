"""The fault-injection proxy's own mechanics, against a tiny in-process upstream."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from faultproxy import FaultProxy


@dataclass
class Upstream:
    url: str
    hits: int = 0


def _echo(path: str, body: bytes) -> bytes:
    """What the upstream answers; the filler makes truncation visible mid-body."""
    parsed = json.loads(body) if body else None
    return json.dumps({"path": path, "body": parsed, "filler": "x" * 200}).encode()


async def _read_message(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return first, headers, body


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request_line, _, body = await _read_message(reader)
                except asyncio.IncompleteReadError:
                    return
                state.hits += 1
                payload = _echo(request_line.split(" ")[1], body)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(payload) + payload
                )
                await writer.drain()
        except ConnectionError:
            pass  # The proxy's pool closed the connection at shutdown.
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield state
    server.close()
    await server.wait_closed()


def _client(read_timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(5.0, read=read_timeout),
        limits=httpx.Limits(max_connections=16),
        trust_env=False,
    )


async def _post(client: httpx.AsyncClient, url: str, i: int = 0) -> httpx.Response:
    return await client.post(f"{url}/v1/chat/completions?i={i}", json={"i": i})


async def test_forwards_concurrent_requests(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url)
    async with proxy as url, _client() as client:
        responses = await asyncio.gather(*(_post(client, url, i) for i in range(50)))
    for i, response in enumerate(responses):
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == _echo(f"/v1/chat/completions?i={i}", b'{"i":%d}' % i)
    assert proxy.counts == Counter(forwarded=50)
    assert proxy.requests == 50
    assert upstream.hits == 50


async def test_keep_alive_serves_several_requests_on_one_connection(upstream: Upstream) -> None:
    async with FaultProxy(upstream.url) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        try:
            for i in range(3):
                body = b'{"i": %d}' % i
                writer.write(
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
                    + body
                )
                status, headers, answer = await _read_message(reader)
                assert status == "HTTP/1.1 200 OK"
                assert headers["connection"] == "keep-alive"
                assert json.loads(answer)["body"] == {"i": i}
        finally:
            writer.close()


@pytest.mark.parametrize("kind", ["503", "429"])
async def test_retry_status_faults(upstream: Upstream, kind: str) -> None:
    proxy = FaultProxy(upstream.url, rate=1.0, kinds=[kind], retry_after=0.05)
    async with proxy as url, _client() as client:
        response = await _post(client, url)
    assert response.status_code == int(kind)
    assert response.headers["retry-after"] == "0.05"
    assert response.json()["error"]["type"] == "fault_injection"
    assert proxy.counts == Counter({kind: 1})
    assert upstream.hits == 0


async def test_reset_fault(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url, rate=1.0, kinds=["reset"])
    async with proxy as url, _client() as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
            await _post(client, url)
    assert proxy.counts == Counter(reset=1)
    assert upstream.hits == 0


async def test_stall_fault_times_out_client_and_stop_cancels_it(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url, rate=1.0, kinds=["stall"], stall_seconds=5.0)
    url = await proxy.start()
    try:
        async with _client(read_timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await _post(client, url)
    finally:
        started = time.perf_counter()
        await proxy.stop()
    assert time.perf_counter() - started < 0.5
    assert proxy.counts == Counter(stall=1)
    assert upstream.hits == 0


async def test_truncated_fault(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url, rate=1.0, kinds=["truncated"])
    async with proxy as url, _client() as client:
        response = await _post(client, url, 3)
    full = _echo("/v1/chat/completions?i=3", b'{"i":3}')
    assert response.status_code == 200
    assert full.startswith(response.content)
    assert len(response.content) == len(full) // 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert proxy.counts == Counter(truncated=1)
    assert upstream.hits == 1


async def test_malformed_fault(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url, rate=1.0, kinds=["malformed"])
    async with proxy as url, _client() as client:
        response = await _post(client, url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text.startswith('{"choices": [')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert proxy.counts == Counter(malformed=1)
    assert upstream.hits == 0


async def _mixed_run(upstream: Upstream, n: int) -> tuple[FaultProxy, Counter[str]]:
    """Send n concurrent requests through a seeded rate=0.5 proxy; tally what the client saw."""
    proxy = FaultProxy(upstream.url, rate=0.5, seed=7, stall_seconds=5.0)
    seen: Counter[str] = Counter()

    async def one(client: httpx.AsyncClient, url: str, i: int) -> None:
        try:
            response = await _post(client, url, i)
        except httpx.ReadTimeout:
            seen["stall"] += 1
            return
        except httpx.TransportError:
            seen["reset"] += 1
            return
        if response.status_code != 200:
            seen[str(response.status_code)] += 1
        elif response.content == _echo(f"/v1/chat/completions?i={i}", b'{"i":%d}' % i):
            seen["forwarded"] += 1
        elif response.text.startswith('{"choices": ['):
            seen["malformed"] += 1
        else:
            seen["truncated"] += 1

    async with proxy as url, _client(read_timeout=0.5) as client:
        await asyncio.gather(*(one(client, url, i) for i in range(n)))
    return proxy, seen


async def test_mixed_faults_add_up_and_replay_with_seed(upstream: Upstream) -> None:
    proxy, seen = await _mixed_run(upstream, 60)
    assert proxy.requests == 60
    assert proxy.counts.total() == 60
    assert seen == proxy.counts
    assert 10 < proxy.counts["forwarded"] < 50
    assert len(set(proxy.counts) - {"forwarded"}) >= 3

    replay, _ = await _mixed_run(upstream, 60)
    assert replay.counts == proxy.counts


async def test_rate_can_change_between_requests(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url, rate=1.0, kinds=["503"])
    async with proxy as url, _client() as client:
        assert (await _post(client, url)).status_code == 503
        proxy.rate = 0.0
        assert (await _post(client, url)).status_code == 200
    assert proxy.counts == Counter({"503": 1, "forwarded": 1})


async def test_unreachable_upstream_answers_502() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    proxy = FaultProxy(dead)
    async with proxy as url, _client() as client:
        response = await _post(client, url)
    assert response.status_code == 502
    assert proxy.counts == Counter(upstream_error=1)


async def test_broken_request_closes_only_its_connection(upstream: Upstream) -> None:
    async with FaultProxy(upstream.url) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(b"NONSENSE\r\n\r\n")
        assert await reader.read() == b""
        writer.close()
        async with _client() as client:
            assert (await _post(client, url)).status_code == 200


def test_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError):
        FaultProxy("http://127.0.0.1:1", kinds=["teapot"])
