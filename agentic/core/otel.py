"""OpenTelemetry export of a run's events: `OTelSink`, spans with the GenAI semantic conventions.

    sink = OTelSink("http://127.0.0.1:6006")   # Phoenix, or any OTLP/HTTP endpoint
    with Tracer([sink]).activate():
        result = await run_suite(suite, controller)
    sink.close()                                # ends what is open, sends every span

The mapping (docs/observability.md has the table):
- `run.start` / `run.resume` opens the root span `run`, `run.end` ends it; every span without a
  parent (each `task`) is its child.
- `backend.generate` / `backend.score` (one event per request, sent when the call returns)
  become model-call spans named `{operation} {model}` with `gen_ai.*` attributes (provider,
  model, request parameters, token usage, finish reasons), from `ts - usage.seconds` to `ts`.
- `search.node` and `search.score`, a search's many small steps, are span events on their
  search span rather than spans of their own; `reward.result` becomes attributes of its
  `reward` span (its scores and seconds).
- Every other event becomes a span with its payload as `agentic.*` attributes, and the current
  budget's spent and remaining as `agentic.budget.*`. Whether an event opens a span (`task`,
  `search`, `reward`, a plugin's own) is not marked on it, so each stays open until
  `Tracer.end_span` ends it or its parent ends; one that had no children, a decision such as
  `search.round`, then ends at its own start.

Never exported: keys (every string goes through `redact_uri`, URIs, names and errors alike),
and text (prompts, completions, answers, steps) unless `capture_text` (or the standard
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`) asks for it.

The SDK (`agentic[otel]`) is imported only when an export is opened (`agentic.core._otlp`);
the attributes are made in `agentic.core.otel_attributes`.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agentic.core.errors import ConfigError
from agentic.core.events import Event
from agentic.core.otel_attributes import (
    KINDS,
    MAX_STRING,
    REMOTE_SCHEMES,
    budget_attributes,
    event_ids,
    model_attributes,
    payload_attributes,
)
from agentic.core.redact import redact_uri

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from agentic.core._otlp import Pipeline

MODEL_CALLS = ("backend.generate", "backend.score")
# high-volume steps of a search: span events on their parent, not a span each
ON_PARENT = frozenset({"search.node", "search.score"})
CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for `endpoint`: a base URL (`http://127.0.0.1:6006`) gets
    `/v1/traces` appended; a URL whose path already ends in `/v1/traces` is used as it is."""
    url = endpoint.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"OpenTelemetry endpoint {redact_uri(url)!r} is not an http(s) URL "
            "(e.g. http://127.0.0.1:6006 or http://collector:4318/v1/traces)"
        )
    url = url.rstrip("/")
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


def otel_endpoint(explicit: str | None = None) -> str | None:
    """Where to export: `explicit`, else the standard variables:
    `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is, as the specification says), then
    `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL).
    None when neither is set, or when `OTEL_SDK_DISABLED=true` turns the variables off."""
    if explicit:
        return traces_url(explicit)
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if url := os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        traces_url(url)  # checked, not rewritten
        return url
    if url := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return traces_url(url)
    return None


class OTelExport:
    """One OTLP export (a tracer provider, a batch processor, the exporter) that many sinks
    share: the gateway opens one and gives each request a sink of its own. `endpoint`: see
    `otel_endpoint` (None reads the standard variables); `exporter` replaces the OTLP one (the
    SDK's `InMemorySpanExporter` in tests)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        exporter: SpanExporter | None = None,
        service_name: str = "agentic",
    ) -> None:
        url = None
        if exporter is None:
            url = otel_endpoint(endpoint)
            if url is None:
                raise ConfigError(
                    "no OpenTelemetry endpoint: give one (--otel URL) or set "
                    "OTEL_EXPORTER_OTLP_ENDPOINT"
                )
        try:
            from agentic.core._otlp import Pipeline
        except ImportError as e:
            raise ConfigError(
                f"OpenTelemetry export needs the otel extra ({e.name} is missing): "
                "pip install 'agentic[otel]'"
            ) from None
        self.url = redact_uri(url) if url else "a custom exporter"
        self.pipeline: Pipeline = Pipeline(url, self.url, exporter, service_name)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send the finished spans now; False if they did not all leave within `timeout_s`."""
        return self.pipeline.flush(timeout_s)

    def close(self) -> None:
        """Flush and stop. Spans ended after this are dropped."""
        self.pipeline.close()


@dataclass
class _Open:
    span: Span
    start_ns: int
    parent: str | None
    end_ns: int = 0  # the latest end among its children
    children: list[str] = field(default_factory=list)


class OTelSink:
    """A `Tracer` sink that exports events as OpenTelemetry spans (see the module docstring).

    `endpoint` is a URL (see `otel_endpoint`; None reads `OTEL_EXPORTER_OTLP_ENDPOINT`) or an
    `OTelExport` to share; `exporter` replaces the OTLP exporter. `capture_text`: also export
    prompts, completions and other text (None: the standard variable decides). One sink follows
    one run at a time; `close()` ends what is still open and, unless the export was shared,
    flushes it and stops."""

    def __init__(
        self,
        endpoint: str | OTelExport | None = None,
        *,
        exporter: SpanExporter | None = None,
        capture_text: bool | None = None,
        service_name: str = "agentic",
    ) -> None:
        self._owned = not isinstance(endpoint, OTelExport)
        self.export = (
            endpoint
            if isinstance(endpoint, OTelExport)
            else OTelExport(endpoint, exporter=exporter, service_name=service_name)
        )
        self._pipe = self.export.pipeline
        if capture_text is None:
            capture_text = os.environ.get(CAPTURE_ENV, "").strip().lower() == "true"
        self.capture_text = capture_text
        self._open: dict[str, _Open] = {}
        self._runs: list[str] = []  # open run spans, innermost last
        self._closed = False
        # events arrive from the event loop, and from a worker thread under `agentic.run`
        self._lock = threading.Lock()

    # ---- the sink protocol ------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            if not self._closed:
                self._take(event)

    def end_span(self, span_id: str) -> None:
        with self._lock:
            self._end(span_id, time.time_ns())

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Send the spans ended so far (open ones stay open)."""
        return self.export.flush(timeout_s)

    def close(self) -> None:
        """End every span still open (a run cut short, a sink closed mid-run), then flush and
        stop the export if this sink opened it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for sid in [s for s, node in self._open.items() if node.parent not in self._open]:
                self._end(sid)
            self._runs.clear()
        if self._owned:
            self.export.close()

    # ---- spans ------------------------------------------------------------------------------

    def _take(self, event: Event) -> None:
        kind = event.type
        if kind in ("run.start", "run.resume"):
            self._open_span(event, name="run")
            self._runs.append(event.span_id)
        elif kind == "run.end":
            self._end_run(event)
        elif kind in MODEL_CALLS:
            self._model_call(event)
        elif kind in ON_PARENT and self._on_parent(event):
            return
        elif kind == "reward.result" and self._fold_reward(event):
            return
        else:
            self._open_span(event, name=kind)
            if kind == "task.outcome":
                self._task_error(event)

    def _parent(self, parent_id: str | None) -> str | None:
        """The open span an event hangs under: its own parent, else the innermost run (tasks
        have no parent; so do events emitted after their parent ended, as a background
        learner's)."""
        if parent_id is not None and parent_id in self._open:
            return parent_id
        return self._runs[-1] if self._runs else None

    def _open_span(self, event: Event, name: str) -> None:
        pid = self._parent(event.parent_id)
        attrs = payload_attributes(event.payload, self.capture_text)
        attrs.update(budget_attributes())
        attrs.update(event_ids(event))
        attrs["openinference.span.kind"] = KINDS.get(event.type, "CHAIN")
        start = _ns(event.ts)
        span = self._pipe.start(name, self._span(pid), False, attrs, start)
        self._open[event.span_id] = _Open(span, start, pid)
        if pid is not None:
            self._open[pid].children.append(event.span_id)

    def _span(self, sid: str | None) -> Span | None:
        return self._open[sid].span if sid is not None else None

    def _end(self, sid: str, at_ns: int | None = None) -> None:
        """End `sid` and, first, its children still open, each at its own end: the latest end
        among its children, or its start if it had none (a decision is a point in time)."""
        node = self._open.get(sid)
        if node is None:
            return
        for child in node.children:
            self._end(child)  # while `sid` is open, so that its end follows theirs
        del self._open[sid]
        end = max(node.start_ns, node.end_ns if at_ns is None else at_ns)
        node.span.end(end_time=end)
        self._ended(node.parent, end)

    def _ended(self, parent: str | None, end_ns: int) -> None:
        if parent is not None and parent in self._open:
            node = self._open[parent]
            node.end_ns = max(node.end_ns, end_ns)

    def _end_run(self, event: Event) -> None:
        if not self._runs:  # a run.end with no run.start seen (the sink joined late)
            self._open_span(event, name=event.type)
            return
        run = self._runs.pop()
        self._open[run].span.set_attributes(payload_attributes(event.payload, self.capture_text))
        self._end(run, _ns(event.ts))

    def _model_call(self, event: Event) -> None:
        pid = self._parent(event.parent_id)
        attrs = model_attributes(event, self.capture_text)
        attrs.update(event_ids(event))
        # the event is sent when the call returns, and says how long the call took
        end = _ns(event.ts)
        start = end - int(attrs["agentic.usage.seconds"] * 1e9)
        name = f"{attrs['gen_ai.operation.name']} {attrs['gen_ai.request.model']}"
        client = str(attrs["gen_ai.provider.name"]) in REMOTE_SCHEMES
        self._pipe.start(name, self._span(pid), client, attrs, start).end(end_time=end)
        self._ended(pid, end)

    def _on_parent(self, event: Event) -> bool:
        node = self._open.get(event.parent_id or "")
        if node is None:
            return False  # its search already ended: a span of its own instead
        node.span.add_event(
            event.type,
            payload_attributes(event.payload, self.capture_text),
            timestamp=_ns(event.ts),
        )
        return True

    def _fold_reward(self, event: Event) -> bool:
        node = self._open.get(event.parent_id or "")
        if node is None:
            return False
        node.span.set_attributes(
            payload_attributes(event.payload, self.capture_text, "agentic.result.")
        )
        return True

    def _task_error(self, event: Event) -> None:
        outcome = event.payload.get("outcome") or {}
        node = self._open.get(event.parent_id or "")
        if node is not None and outcome.get("error"):
            self._pipe.failed(node.span, redact_uri(str(outcome["error"]))[:MAX_STRING])


def _ns(ts: float) -> int:
    return int(ts * 1e9)
