"""Events and the tracer that routes them to sinks.

Every backend call, reward call and controller decision is an `Event`. The current `Tracer`
lives in a context variable, so nested code emits without being handed one, and spans nest
through a second context variable (`parent_id` is the enclosing span). Sinks: `JSONLSink`
(append, one event per line, flushed per line so a killed run keeps every finished line),
`ConsoleSink` (rich), and any callable taking an `Event`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentic.core.errors import TraceFormatError


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    ts: float = Field(default_factory=time.time)
    span_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16])
    parent_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class Sink(Protocol):
    def __call__(self, event: Event) -> None: ...


class JSONLSink:
    """Appends events to a file, one JSON object per line, flushed after each line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] | None = self.path.open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        if self._fh is None:
            raise ValueError(f"JSONLSink({self.path}) is closed")
        self._fh.write(event.model_dump_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ConsoleSink:
    """Prints one line per event with rich; `types` limits which event types are shown."""

    def __init__(self, types: set[str] | None = None) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.types = types

    def __call__(self, event: Event) -> None:
        if self.types is None or event.type in self.types:
            brief = json.dumps(event.payload, default=str)[:160]
            self.console.print(f"[dim]{event.span_id}[/] [bold]{event.type}[/] {brief}")


_tracer: ContextVar[Tracer | None] = ContextVar("agentic_tracer", default=None)
_span: ContextVar[str | None] = ContextVar("agentic_span", default=None)


class Tracer:
    def __init__(self, sinks: list[Sink | Callable[[Event], None]] | None = None) -> None:
        self.sinks = list(sinks or [])

    @staticmethod
    def current() -> Tracer | None:
        return _tracer.get()

    @contextmanager
    def activate(self) -> Iterator[Tracer]:
        token = _tracer.set(self)
        try:
            yield self
        finally:
            _tracer.reset(token)

    def emit(self, type: str, **payload: Any) -> Event:
        event = Event(type=type, parent_id=_span.get(), payload=payload)
        for sink in self.sinks:
            sink(event)
        return event

    def end_span(self, span_id: str) -> None:
        """Tell the sinks that care (those with an `end_span` method, as the OpenTelemetry
        export) that a span closed. Recordings hold no end event: a span's events say enough to
        draw it, and recordings stay as they were."""
        for sink in self.sinks:
            end = getattr(sink, "end_span", None)
            if end is not None:
                end(span_id)


def emit(type: str, **payload: Any) -> Event | None:
    """Emit on the current tracer; a no-op (returns None) when no tracer is active."""
    tracer = _tracer.get()
    return tracer.emit(type, **payload) if tracer is not None else None


def forward(event: Event) -> None:
    """Hand an event recorded elsewhere (in a worker process) to the current tracer's sinks as
    it was, under the current span where it had no parent there."""
    tracer = _tracer.get()
    if tracer is None:
        return
    if event.parent_id is None:
        event = event.model_copy(update={"parent_id": _span.get()})
    for sink in tracer.sinks:
        sink(event)


@contextmanager
def span(type: str, **payload: Any) -> Iterator[str]:
    """Open a span: emits `type` and makes its id the parent of events emitted inside."""
    tracer = _tracer.get()
    event = tracer.emit(type, **payload) if tracer is not None else None
    span_id = event.span_id if event is not None else uuid.uuid4().hex[:16]
    token = _span.set(span_id)
    try:
        yield span_id
    finally:
        _span.reset(token)
        if tracer is not None:
            tracer.end_span(span_id)


def read_events(path: str | Path) -> Iterator[Event]:
    """Events of a JSONL trace, in order. A malformed line (bad UTF-8, bad JSON, not an event)
    raises `TraceFormatError` naming the file and line number; a truncated final line (a run
    killed mid-write, even inside a multibyte character) is ignored."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"trace file not found: {p}")
    if p.is_dir():
        raise TraceFormatError(f"{p} is a directory, not a trace file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise TraceFormatError(f"cannot read trace file {p}: {e.strerror or e}") from None
    return _parse_lines(p, data)


def _parse_lines(p: Path, data: bytes) -> Iterator[Event]:
    # split the bytes, not decoded text: a kill inside a multibyte character must tear only the
    # last line; and on b"\n" only, since JSON strings may hold U+2028, which splitlines() cuts
    lines = data.split(b"\n")
    for i, raw in enumerate(lines, start=1):
        torn = i == len(lines)  # no newline after it: the write was cut off by a kill
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if torn:
                return
            raise TraceFormatError(
                f"{p}:{i}: not a valid event: not UTF-8 (byte {e.start + 1} of the line)"
            ) from None
        if not line.strip():
            continue
        try:
            yield Event.model_validate_json(line)
        except ValidationError as e:
            if torn:
                return
            raise TraceFormatError(f"{p}:{i}: not a valid event: {_first_error(e)}") from None


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(x) for x in err.get("loc", ())) or "line"
    return f"{where}: {err.get('msg', 'invalid')}"
