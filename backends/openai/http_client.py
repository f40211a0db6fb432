"""A JSON-over-HTTP client that survives the faults real inference servers produce.

`RetryingClient.post(path, body)` sends one request to an OpenAI-compatible server and returns its
parsed JSON. Transient failures are retried with exponential backoff and jitter (tenacity):
HTTP 429 and 5xx (honouring `Retry-After`), connection errors and resets, timeouts, bodies that
are not the complete JSON object a server promised (truncated or malformed), and bodies that parse
but do not have the shape the caller needs (`parse=` raising `MalformedBody`: a 200 with no
`choices`). Every retry is an event (`backend.retry`), so a recording shows what the network did.
Other 4xx answers are the caller's mistake and raise `RequestRejected` at once; a request that
keeps failing raises `BackendUnavailable` naming the URL and the last failure, said in words (a
reset reads "the connection was reset ...", not `ReadError ()`).

Two clocks bound an attempt: `read_timeout` is the longest silence between two reads, and
`attempt_timeout` (default: connect plus read timeout) the longest an attempt may take in all, so a
server that trickles its answer a byte at a time cannot hold a request past it. The synchronous
calls (`request_sync`: the `GET /models` probe, token counting) get the same retries and clocks.

The API key goes into the `Authorization` header only; it is never part of an event, an error
message or `repr`. Credentials in the base URL itself (`http://user:KEY@host/v1`, `?api_key=KEY`)
are sent as the server expects (basic auth, query parameters) and masked (`redact_uri`) wherever
the URL is shown.
"""

from __future__ import annotations

# Over 400 lines on purpose: what counts as transient, the backoff with Retry-After, the
# per-attempt deadline and the failure wording form one retry policy that post, stream and
# request_sync all share; a reader checking how a fault is handled finds it in one place.
import asyncio
import contextvars
import email.utils
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from agentic.core import BackendUnavailable, ConfigError, RequestRejected, emit, redact_uri
from agentic.core.redact import SECRET_PARAMS


class MalformedBody(Exception):
    """Raised by a `parse=` function: the body is JSON but not what the endpoint answers (the
    message says what is wrong). Retried like a truncated body: servers under load send these."""


class _Transient(Exception):
    """An answer worth retrying: 429, 5xx, or a body that is not valid or not well-formed."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.retry_after = retry_after


class _Deadline(Exception):
    """An attempt that outlived `attempt_timeout`: retried like a timeout."""


_RETRYABLE = (_Transient, _Deadline, httpx.TransportError)

# what each transport failure means, for an error a user reads; httpx's own messages are often
# empty (a reset is `ReadError('')`), the most specific class listed first
_TRANSPORT_WORDS: tuple[tuple[type[httpx.TransportError], str], ...] = (
    (httpx.ConnectTimeout, "no connection within the connect timeout"),
    (httpx.ReadTimeout, "no data within the read timeout"),
    (httpx.WriteTimeout, "could not send the request within the timeout"),
    (httpx.PoolTimeout, "no free connection within the timeout"),
    (httpx.ConnectError, "cannot connect to the server"),
    (httpx.ReadError, "the connection was reset or broken while waiting for the answer"),
    (httpx.WriteError, "the connection was reset or broken while sending the request"),
    (httpx.RemoteProtocolError, "the server closed the connection without a complete answer"),
)


def describe_failure(e: BaseException) -> str:
    """One line saying what went wrong: for a transport failure the exception's name, what it
    means in words, and its detail (the OS error under httpx's, often empty, own message)."""
    if isinstance(e, _Transient | _Deadline):
        return str(e)  # already reads "HTTP 503: ..." or "no complete answer within ..."
    detail = str(e).strip()
    cause = e.__cause__ or e.__context__
    while not detail and cause is not None:  # httpx wraps httpcore wraps the OSError
        detail = str(cause).strip()
        cause = cause.__cause__ or cause.__context__
    words = next((w for cls, w in _TRANSPORT_WORDS if isinstance(e, cls)), "")
    if words:
        return f"{type(e).__name__}: {words}" + (f" ({detail})" if detail else "")
    return f"{type(e).__name__}: {detail}" if detail else type(e).__name__


_T = TypeVar("_T")

# turns a parsed JSON body into the caller's result, or raises MalformedBody saying what is wrong
Parse = Callable[[Any], Any]


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RetryingClient:
    """One `httpx.AsyncClient` per event loop, a concurrency gate, and the retry policy."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        attempt_timeout: float | None = None,
        max_retries: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        name: str = "openai",
    ) -> None:
        if attempt_timeout is None:
            attempt_timeout = connect_timeout + read_timeout
        for field, value in (
            ("max_concurrency", max_concurrency),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("attempt_timeout", attempt_timeout),
        ):
            if value <= 0:
                raise ConfigError(f"{field} must be > 0, got {value}")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0 or backoff_max < 0:
            raise ConfigError(f"backoff must be >= 0, got {backoff} / {backoff_max}")
        try:
            parsed = httpx.URL(base_url)
        except httpx.InvalidURL as e:
            shown = redact_uri(base_url)
            raise ConfigError(
                f"base_url {shown!r} is not a valid URL: {redact_uri(str(e))}"
            ) from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(
                f"base_url must be http(s)://HOST[:PORT]/PATH, got {redact_uri(base_url)!r}"
            )
        # a query in the base URL (`?api_key=`, Azure's `?api-version=`) goes with every request,
        # not in the middle of the paths appended to it
        self._params = dict(parsed.params.multi_items())
        self.base_url = str(parsed.copy_with(query=None)).rstrip("/")
        secrets = [api_key, parsed.password]
        secrets += [v for k, v in self._params.items() if k.lower() in SECRET_PARAMS]
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.attempt_timeout = attempt_timeout
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.name = name
        self._api_key = api_key
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=None
        )
        self._client: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        shown = redact_uri(self.base_url)
        return f"RetryingClient({shown!r}, api_key={'***' if self._api_key else None})"

    def url(self, path: str) -> str:
        """`path` under the base URL; an absolute URL passes through (vLLM's /tokenize sits
        beside /v1, not under it)."""
        return (
            path
            if path.startswith(("http://", "https://"))
            else f"{self.base_url}/{path.lstrip('/')}"
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def redact(self, text: str) -> str:
        """`text` (an error, an answer, a URL) with the API key and URL credentials masked."""
        # a server may echo a secret in its error body, where no `key=` or `user:` marks it
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact_uri(text)

    def _bound(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        # a client's connection pool belongs to the loop that opened it
        loop = asyncio.get_running_loop()
        if self._client is None or self._gate is None or self._loop is not loop:
            limits = httpx.Limits(
                max_connections=self.max_concurrency,
                max_keepalive_connections=self.max_concurrency,
            )
            self._client = httpx.AsyncClient(
                timeout=self._timeout, limits=limits, headers=self.headers()
            )
            self._gate = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._client, self._gate

    def _check(self, resp: httpx.Response, url: str) -> None:
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Transient(
                resp.status_code,
                self.redact(resp.text)[:200],
                _retry_after(resp.headers.get("retry-after")),
            )
        if resp.status_code >= 400:
            raise RequestRejected(
                f"{self.redact(url)} refused the request: HTTP {resp.status_code}: "
                f"{self.redact(resp.text)[:500]}"
            )

    def _parsed(self, resp: httpx.Response, parse: Parse | None) -> Any:
        try:
            data = resp.json()
        # ValueError covers a bad encoding and an over-long integer; RecursionError deep nesting
        except (ValueError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            raise _Transient(resp.status_code, f"body is not valid JSON ({why})") from None
        if parse is None:
            return data
        try:
            return parse(data)
        except MalformedBody as e:
            raise _Transient(resp.status_code, f"malformed body: {self.redact(str(e))}") from None

    async def _deadline(self, send: Callable[[], Awaitable[_T]]) -> _T:
        """`await send()` within `attempt_timeout`: httpx's timeouts are per read, so a server
        sending a byte now and then would otherwise hold the attempt for ever."""
        try:
            async with asyncio.timeout(self.attempt_timeout):
                return await send()
        except TimeoutError:
            raise _Deadline(
                f"no complete answer within attempt_timeout={self.attempt_timeout:g} s"
            ) from None

    async def _once(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | None,
        parse: Parse | None,
        client: httpx.AsyncClient | None = None,
    ) -> Any:
        """One attempt, on the shared client behind the concurrency gate, or on `client` (a
        private one, for `request_sync`) without it."""
        if client is not None:
            resp = await self._deadline(
                lambda: client.request(method, url, json=body, params=self._params)
            )
        else:
            shared, gate = self._bound()
            # the gate covers the request only: a request waiting out its backoff holds no slot,
            # and waiting for a slot is not part of the attempt's deadline
            async with gate:
                resp = await self._deadline(
                    lambda: shared.request(method, url, json=body, params=self._params)
                )
        self._check(resp, url)
        return self._parsed(resp, parse)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self.backoff_max)
        # exponential backoff plus up to one `backoff` of jitter, so retries do not march in step
        exp = self.backoff * 2 ** (state.attempt_number - 1)
        return min(exp + random.uniform(0, self.backoff), self.backoff_max)

    def _before_sleep(self, url: str) -> Any:
        def note(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            # a transport failure's description starts with its name; an HTTP answer's does not
            what = describe_failure(exc) if exc else None
            if isinstance(exc, _Transient | _Deadline):
                what = f"{type(exc).__name__}: {what}"
            emit(
                "backend.retry",
                backend=self.name,
                url=self.redact(url),
                attempt=state.attempt_number,
                status=getattr(exc, "status", None),
                error=self.redact(what) if what else None,
                wait=state.upcoming_sleep,
            )

        return note

    def _retrying(self, url: str) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=self._before_sleep(url),
            reraise=True,
        )

    def _unavailable(self, url: str, e: Exception) -> BackendUnavailable:
        # a _Transient already reads "HTTP 200: malformed body: ..."
        return BackendUnavailable(
            f"{self.redact(url)}: no answer after {self.max_retries + 1} attempts; "
            f"last: {self.redact(describe_failure(e))[:300]}"
        )

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        parse: Parse | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> Any:
        """The server's answer to one request: its JSON, or what `parse` makes of it. `parse`
        raising `MalformedBody` counts as a failed attempt, retried like a garbled body."""
        url = self.url(path)
        try:
            async for attempt in self._retrying(url):
                with attempt:
                    return await self._once(method, url, body, parse, client)
        except _RETRYABLE as e:
            raise self._unavailable(url, e) from None
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _open_stream(
        self, url: str, body: dict[str, Any]
    ) -> tuple[httpx.Response, asyncio.Semaphore]:
        client, gate = self._bound()
        await gate.acquire()  # held until the stream is closed
        try:
            req = client.build_request("POST", url, json=body, params=self._params)
            resp = await client.send(req, stream=True)
            if resp.status_code >= 400:
                await resp.aread()
                await resp.aclose()
                self._check(resp, url)
        except BaseException:
            gate.release()
            raise
        return resp, gate

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The JSON events of a server-sent-events response. Opening the stream is retried like
        `request`; once events flow, a broken stream raises `BackendUnavailable` (what was
        already yielded stays with the caller)."""
        url = self.url(path)
        try:
            async for attempt in self._retrying(url):
                with attempt:
                    # the deadline covers opening only: events may then flow for as long as the
                    # answer takes, each read bounded by read_timeout
                    resp, gate = await self._deadline(lambda: self._open_stream(url, body))
        except _RETRYABLE as e:
            raise self._unavailable(url, e) from None
        try:
            async for line in resp.aiter_lines():
                data = line.removeprefix("data:").strip()
                if not line.startswith("data:") or not data:
                    continue
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise BackendUnavailable(
                        f"{self.redact(url)}: the stream broke: an event is not a JSON object: "
                        f"{self.redact(data)[:100]}"
                    )
                yield event
            shown = self.redact(url)
            raise BackendUnavailable(f"{shown}: the stream broke: it ended before [DONE]")
        except (httpx.TransportError, ValueError, RecursionError) as e:
            raise BackendUnavailable(
                f"{self.redact(url)}: the stream broke: {self.redact(describe_failure(e))[:200]}"
            ) from None
        finally:
            await resp.aclose()
            gate.release()

    async def ping(self, path: str = "models", within: float = 2.0) -> bool:
        """One unretried `GET path` within `within` seconds: does the server answer 200 now?
        (a replica pool's health check, which must neither wait behind the request gate nor
        spend a minute of retries on a dead server)."""
        client, _ = self._bound()
        try:
            resp = await client.get(self.url(path), params=self._params, timeout=within)
        except (httpx.HTTPError, OSError):
            return False
        return resp.status_code == 200

    async def post(self, path: str, body: dict[str, Any], parse: Parse | None = None) -> Any:
        return await self.request("POST", path, body, parse)

    def request_sync(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        parse: Parse | None = None,
    ) -> Any:
        """For the few calls made outside an event loop (probing the server, counting tokens):
        the same retries, deadline and errors as `request`. It runs on a private client and loop
        in a worker thread, so it also works from code inside a running loop (a backend built in
        async code), and its retry events reach the caller's tracer (the context is copied)."""

        async def private() -> Any:
            headers = self.headers()
            async with httpx.AsyncClient(timeout=self._timeout, headers=headers) as client:
                return await self.request(method, path, body, parse, client=client)

        context = contextvars.copy_context()
        outcome: list[Any] = []

        def work() -> None:
            try:
                outcome.append((True, context.run(asyncio.run, private())))
            except BaseException as e:  # handed to the caller's thread below
                outcome.append((False, e))

        # a daemon thread: a Ctrl-C in the caller must not wait for the retries to run out
        worker = threading.Thread(target=work, name="agentic-http-sync", daemon=True)
        worker.start()
        worker.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
