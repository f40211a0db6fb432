"""What every `agentic` command module shares: the stderr console, loading a backend by URI
(quietly, with its key redacted from the status line) and the OpenTelemetry export. A module of
its own so that the command modules (`commands`, `route`, `steer`) import it and never each
other."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape

from agentic.core import ConfigError, OTelSink, redact_uri
from agentic.core.otel import otel_endpoint

err = Console(stderr=True, soft_wrap=True)


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_quietly(uri: str) -> Any:
    from backends import load_backend

    shown = redact_uri(uri)
    with err.status(f"loading {shown} (the first use of an embedded model converts it, ~20 s)"):
        # only local models load transformers; remote and plugin backends should not pay for it
        if uri.startswith(("hf:", "embedded:", "vllm:")):
            _quiet_transformers()
        return load_backend(uri)


def otel_sink(endpoint: str | None) -> OTelSink | None:
    """The export `--otel URL` asks for, else the one the standard `OTEL_EXPORTER_OTLP_ENDPOINT`
    asks for; None when neither does. Asked for with --otel, a missing `otel` extra is an error;
    asked for only by the variable (set for other programs, perhaps), it is one warning line and
    the command goes on without export."""
    if otel_endpoint(endpoint) is None:
        return None
    try:
        sink = OTelSink(endpoint)
    except ConfigError as e:
        if endpoint is not None:
            raise
        err.print(f"[yellow]warning:[/] {escape(str(e))}; going on without OpenTelemetry export")
        return None
    err.print(f"exporting OpenTelemetry spans to {escape(sink.export.url)}")
    return sink
