"""A JSON-over-HTTP client that survives the faults real inference servers produce.

`RetryingClient.post(path, body)` sends one request to an OpenAI-compatible server and returns its
parsed JSON. Transient failures are retried with exponential backoff and jitter (tenacity):
HTTP 429 and 5xx (honouring `Retry-After`), connection errors and resets, timeouts, bodies that
are not the complete JSON object a server promised (truncated or malformed), and bodies that parse
but do not have the shape the caller needs (`parse=` raising `MalformedBody`: a 200 with no
`choices`). Every retry is an event (`backend.retry`), so a recording shows what the network did.
Other 4xx answers are the caller's mistake and raise `RequestRejected` at once; a request that
keeps failing raises `BackendUnavailable` naming the URL and the last failure.

The API key goes into the `Authorization` header only; it is never part of an event, an error
message or `repr`. Credentials in the base URL itself (`http://user:KEY@host/v1`, `?api_key=KEY`)
are sent as the server expects (basic auth, query parameters) and masked (`redact_uri`) wherever
the URL is shown.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

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


_RETRYABLE = (_Transient, httpx.TransportError)

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
        max_retries: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        name: str = "openai",
    ) -> None:
        for field, value in (
            ("max_concurrency", max_concurrency),
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
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

    async def _once(
        self, method: str, url: str, body: dict[str, Any] | None, parse: Parse | None
    ) -> Any:
        client, gate = self._bound()
        # the gate covers the request only: a request waiting out its backoff holds no slot
        async with gate:
            resp = await client.request(method, url, json=body, params=self._params)
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
            emit(
                "backend.retry",
                backend=self.name,
                url=self.redact(url),
                attempt=state.attempt_number,
                status=getattr(exc, "status", None),
                error=self.redact(f"{type(exc).__name__}: {exc}"),
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
        last = str(e) if isinstance(e, _Transient) else f"{type(e).__name__} ({e})"
        return BackendUnavailable(
            f"{self.redact(url)}: no answer after {self.max_retries + 1} attempts; "
            f"last: {self.redact(last)[:300]}"
        )

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        parse: Parse | None = None,
    ) -> Any:
        """The server's answer to one request: its JSON, or what `parse` makes of it. `parse`
        raising `MalformedBody` counts as a failed attempt, retried like a garbled body."""
        url = self.url(path)
        try:
            async for attempt in self._retrying(url):
                with attempt:
                    return await self._once(method, url, body, parse)
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
                    resp, gate = await self._open_stream(url, body)
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
                f"{self.redact(url)}: the stream broke: {type(e).__name__}: "
                f"{self.redact(str(e))[:200]}"
            ) from None
        finally:
            await resp.aclose()
            gate.release()

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
        no retries, the same errors."""
        url = self.url(path)
        shown = self.redact(url)
        try:
            resp = httpx.request(
                method,
                url,
                json=body,
                params=self._params,
                headers=self.headers(),
                timeout=self._timeout,
            )
        except httpx.TransportError as e:
            raise BackendUnavailable(
                f"cannot reach {shown}: {type(e).__name__}: {self.redact(str(e))}"
            ) from None
        detail = f"{shown}: HTTP {resp.status_code}: {self.redact(resp.text)[:200]}"
        if resp.status_code == 429 or resp.status_code >= 500:
            raise BackendUnavailable(detail)
        if resp.status_code >= 400:
            raise RequestRejected(detail)
        try:
            return self._parsed(resp, parse)
        except _Transient as e:
            raise BackendUnavailable(f"{shown}: {self.redact(str(e))[:300]}") from None

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
