"""A loopback HTTP/1.1 reverse proxy that injects faults, for testing HTTP clients.

The OpenAI-compatible client has to survive what real inference servers and the
networks in front of them do under load: overload answers with ``Retry-After``
(503, 429), dropped connections, requests that hang, bodies cut short and bodies
that are not JSON at all. ``FaultProxy`` sits between the client under test and
a real (or fake) upstream server and, for each request independently, either
forwards it untouched or injects one of those faults, with a seeded random draw
so that a failing run can be replayed.

Typical use::

    proxy = FaultProxy("http://127.0.0.1:8080", rate=0.3, seed=1)
    async with proxy as url:
        ...  # point the client at `url`
    proxy.counts  # Counter({"forwarded": 70, "503": 6, "reset": 5, ...})

Deliberately small: one request at a time per connection (keep-alive, no
pipelining), ``Content-Length`` request bodies only, and the upstream response
is buffered whole and re-sent with a ``Content-Length`` (a streamed upstream
response therefore reaches the client in one piece).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType

import httpx

FAULT_KINDS = ("503", "429", "reset", "stall", "truncated", "malformed")

log = logging.getLogger(__name__)

# Headers that describe this hop rather than the message; httpx sets its own
# Host, Content-Length and connection management towards upstream.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

# Starts like a chat completion so a client cannot tell it apart by the first bytes.
_MALFORMED_BODY = b'{"choices": [{"index": 0, "message": <<fault-injected garbage>> ]'


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool


class FaultProxy:
    """Reverse proxy to ``upstream`` that injects a fault into a ``rate`` share of requests.

    ``counts`` holds ``"forwarded"`` for requests answered normally by upstream,
    one key per fault kind injected, and ``"upstream_error"`` when upstream
    itself could not be reached (answered with 502). ``requests`` is the number
    of requests received. ``rate`` may be changed between requests.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: Sequence[str] = FAULT_KINDS,
        retry_after: float = 0.05,
        stall_seconds: float = 30.0,
        seed: int = 0,
    ) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {FAULT_KINDS}, got {kinds!r}")
        self.upstream = upstream.rstrip("/")
        self.rate = rate
        self.kinds = tuple(kinds)
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.url = ""
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def start(self) -> str:
        # trust_env=False: an HTTP(S)_PROXY in the environment must not divert loopback traffic.
        self._client = httpx.AsyncClient(timeout=600.0, trust_env=False)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        server, client = self._server, self._client
        if server is None or client is None:
            return
        self._server = self._client = None
        server.close()
        # A connection accepted just before close() has a handler task that has not
        # run yet; let it register so it is closed below rather than leaked.
        await asyncio.sleep(0)
        tasks = list(self._connections)
        for task, writer in self._connections.items():
            writer.close()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        await client.aclose()

    async def __aenter__(self) -> str:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _draw(self) -> str | None:
        # Always consume the same number of draws per request so that a given seed
        # yields the same fault sequence whatever the rate.
        hit = self._rng.random() < self.rate
        kind = self._rng.choice(self.kinds)
        return kind if hit else None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._serve_one(reader, writer):
                pass
        except asyncio.CancelledError:
            # stop() cancels handlers. Ending normally matters on Python 3.11, whose
            # start_server done-callback calls task.exception() and would log a
            # spurious CancelledError for a cancelled handler.
            pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client hung up mid-message; there is no one left to answer.
        except Exception:
            log.exception("fault proxy: connection handler failed; closing that connection")
        finally:
            del self._connections[task]
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; return whether the connection stays open for another."""
        request = await _read_request(reader)
        if request is None:
            return False
        self.requests += 1
        fault = self._draw()
        if fault in ("503", "429", "reset", "stall", "malformed"):
            self.counts[fault] += 1
        if fault == "reset":
            # Linger 0 makes close() send RST instead of FIN, so the client sees a
            # connection reset rather than an orderly end of stream.
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
            return False
        if fault in ("503", "429"):
            error = {"error": {"message": f"injected {fault}", "type": "fault_injection"}}
            await _respond(
                writer,
                int(fault),
                json.dumps(error).encode(),
                "application/json",
                request.keep_alive,
                [("Retry-After", f"{self.retry_after:g}")],
            )
            return request.keep_alive
        if fault == "malformed":
            await _respond(writer, 200, _MALFORMED_BODY, "application/json", request.keep_alive)
            return request.keep_alive

        assert self._client is not None
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        try:
            upstream = await self._client.request(
                request.method,
                self.upstream + request.target,
                headers=headers,
                content=request.body,
            )
        except httpx.HTTPError as exc:
            self.counts["upstream_error"] += 1
            error = {"error": {"message": f"upstream failed: {exc!r}", "type": "bad_gateway"}}
            await _respond(
                writer, 502, json.dumps(error).encode(), "application/json", request.keep_alive
            )
            return request.keep_alive
        content_type = upstream.headers.get("content-type")
        if fault == "truncated":
            self.counts["truncated"] += 1
            body = upstream.content[: len(upstream.content) // 2]
            await _respond(writer, 200, body, content_type, request.keep_alive)
        else:
            self.counts["forwarded"] += 1
            await _respond(
                writer, upstream.status_code, upstream.content, content_type, request.keep_alive
            )
        return request.keep_alive


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """Read one request, or return None if the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ", 2)
    headers = []
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    fields = {name.lower(): value for name, value in headers}
    length = int(fields.get("content-length", "0"))
    body = await reader.readexactly(length)
    connection = fields.get("connection", "").lower()
    keep_alive = version == "HTTP/1.1" and "close" not in connection
    return _Request(method, target, headers, body, keep_alive)


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str | None,
    keep_alive: bool,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> None:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""  # An upstream may use a status code Python does not name.
    lines = [f"HTTP/1.1 {status} {reason}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    lines.extend(f"{name}: {value}" for name, value in extra_headers)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()
