"""`agentic serve`: the OpenAI-compatible gateway (`agentic.server`) on uvicorn.

agentic serve --backend embedded:smollm2 --port 8000
agentic serve --config gateway.yaml --record-dir traces
agentic serve --backend replay:traces/day.jsonl      # recorded answers, no model
agentic serve --otel http://127.0.0.1:6006           # spans of every request to Phoenix
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from agentic.core import ConfigError


def serve(
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            "-b",
            help="The model served when the config lists no `models:` (any backend URI; "
            "replay:FILE serves a recording).",
        ),
    ] = "embedded:smollm2",
    config: Annotated[
        Path | None,
        typer.Option(
            help="Gateway config (YAML/JSON): models, presets, prices, "
            "keys, budget, limits, recording."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    record_dir: Annotated[
        Path | None, typer.Option(help="Record each request's events (JSONL) in this folder.")
    ] = None,
    record_per: Annotated[
        str,
        typer.Option(
            help="request (a file per request, replayable with `agentic replay`) "
            "or day (a file per day)."
        ),
    ] = "request",
    max_concurrency: Annotated[
        int | None, typer.Option(help="Requests solved at once (config: max_concurrency).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    otel: Annotated[
        str | None,
        typer.Option(
            "--otel",
            help="Export every request's spans (OpenTelemetry, GenAI conventions) to this "
            "OTLP/HTTP endpoint (config: otel.endpoint; default: OTEL_EXPORTER_OTLP_ENDPOINT "
            "when it is set).",
        ),
    ] = None,
) -> None:
    """Serve any backend through an OpenAI-compatible API where each request picks its own
    controller, budget and verifier (`model: "pf-8@smollm2"`, `extra_body={"agentic": ...}`)."""
    try:
        import uvicorn

        from agentic.server import create_app
    except ImportError as e:
        raise ConfigError(
            f"agentic serve needs the server extra ({e.name} is missing): "
            "pip install 'agentic[server]'"
        ) from None
    from agentic.cli.common import load_quietly
    from agentic.server.config import GatewayConfig, OTelConfig, RecordConfig
    from agentic.server.service import Gateway

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    if record_per not in ("request", "day"):
        raise ConfigError(f"--record-per must be request or day, got {record_per!r}")
    per: Literal["request", "day"] = "day" if record_per == "day" else "request"
    record = RecordConfig(dir=record_dir, per=per) if record_dir is not None else None
    cfg = GatewayConfig.load(config, record=record, max_concurrency=max_concurrency)
    if otel is not None:  # the flag names the endpoint; the file may still say capture_text
        kept = cfg.otel or OTelConfig()
        cfg = cfg.model_copy(update={"otel": OTelConfig(**{**kept.model_dump(), "endpoint": otel})})
    # the config's keys and presets are checked before the (slow) model load
    for key in cfg.keys:
        key.secret()
    app = create_app(lambda: Gateway.start(cfg, backend, load_quietly))
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
