"""The OpenTelemetry SDK side of `agentic.core.otel`, imported only when an export is opened, so
`import agentic` never loads the SDK (it is an optional extra: `pip install 'agentic[otel]'`).

A `Pipeline` is a private `TracerProvider` (the process-global one, if the user set one up, is
left alone), a `BatchSpanProcessor` (spans leave on a background thread, never on the event
loop) and the OTLP/HTTP exporter behind `QuietExporter`, which turns a failing endpoint into a
single warning line instead of the SDK's log line per retry of every batch.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

log = logging.getLogger("agentic.otel")

# an export to an endpoint that does not answer gives up after this long unless the standard
# variables say otherwise: the SDK's 10 s would hold the end of every short run that long
DEFAULT_TIMEOUT_S = 5.0

# the loggers through which the SDK reports export failures (one line per retry, per batch)
_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk.trace.export",
)


class _Exporting(threading.local):
    active = False
    first: str | None = None  # the first message the SDK logged during this export


_exporting = _Exporting()


class _WhileExporting(logging.Filter):
    """Holds back what the SDK logs while a `QuietExporter` exports (on the processor's thread
    only: other exporters in the process still log as before), keeping the first message as the
    reason for the one warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _exporting.active:
            return True
        if _exporting.first is None:
            args = record.args if isinstance(record.args, tuple) else ()
            error = next((a for a in args if isinstance(a, BaseException)), None)
            _exporting.first = _root_cause(error) if error else record.getMessage()
        return False


def _root_cause(error: BaseException) -> str:
    """The innermost of the exceptions an HTTP library wraps one in ("ConnectionRefusedError:
    [Errno 111] Connection refused", not three pool messages around it)."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return f"{type(error).__name__}: {error}"


_FILTER = _WhileExporting()
for _name in _SDK_LOGGERS:
    logging.getLogger(_name).addFilter(_FILTER)


class QuietExporter(SpanExporter):
    """`inner`, with failures reported once: the first failed export logs one warning naming the
    endpoint and the reason; later ones are silent until an export succeeds again. Once closing,
    batches for an endpoint that is failing are dropped at once, so the end of a run does not
    wait out the retries of a collector that is down."""

    def __init__(self, inner: SpanExporter, where: str) -> None:
        self.inner, self.where = inner, where
        self.failing = self.warned = self.closing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.closing and self.failing:
            return SpanExportResult.FAILURE
        _exporting.active, _exporting.first = True, None
        try:
            result = self.inner.export(spans)
            reason = _exporting.first
        except Exception as e:  # an exporter bug must not reach the processor's thread
            result, reason = SpanExportResult.FAILURE, f"{type(e).__name__}: {e}"
        finally:
            _exporting.active = False
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                log.warning("OpenTelemetry export to %s works again", self.where)
            self.failing = False
            return result
        self.failing = True
        if not self.warned:
            self.warned = True
            why = (reason or "no reason given")[:300]
            log.warning(
                "OpenTelemetry export to %s failed (%s); spans are dropped until it answers",
                self.where,
                why,
            )
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def _timeout() -> float | None:
    """None lets the SDK read its own variables; otherwise our shorter default."""
    named = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    return None if any(os.environ.get(v) for v in named) else DEFAULT_TIMEOUT_S


class Pipeline:
    """A tracer provider exporting to `url` (OTLP/HTTP, protobuf), or to `exporter` if given
    (tests pass the SDK's in-memory one). `shown` is the redacted url, for messages."""

    def __init__(
        self,
        url: str | None,
        shown: str,
        exporter: SpanExporter | None,
        service_name: str,
    ) -> None:
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (e.g. openinference.project.name for
        # Phoenix) are read here; our name only fills in when the user named no service
        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": service_name}))
        self.provider = TracerProvider(resource=resource)
        self.quiet: QuietExporter | None = None
        if exporter is None:
            self.quiet = exporter = QuietExporter(
                OTLPSpanExporter(endpoint=url, timeout=_timeout()), shown
            )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("agentic")

    def start(
        self,
        name: str,
        parent: Span | None,
        client: bool,
        attributes: Mapping[str, AttributeValue],
        start_ns: int,
    ) -> Span:
        # no parent: the current OpenTelemetry context, so a run inside a span of the user's own
        # tracing joins that trace
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=context,
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start_ns,
        )

    @staticmethod
    def failed(span: Span, message: str) -> None:
        span.set_status(Status(StatusCode.ERROR, message))

    def flush(self, timeout_s: float) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        if self.quiet is not None:
            self.quiet.closing = True
        self.provider.shutdown()
