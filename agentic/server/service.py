"""What the gateway does for one request, apart from HTTP: pick the model and controller, set
the budget, solve or pass through, and record.

A request names a served model, a preset, or both (`"pf-8@smollm2"`); `agentic.controller`
in the body overrides the preset with any spec the registry parses. With no controller the
request passes straight through to the backend with its own sampling parameters. With one, the
chat becomes a one-task `ChatSuite` solved by `run_suite`, so budgets, usage, tracing and
recordings work as in `agentic run`. Built controllers are cached per (model, spec): a search
that loads a verifier (the value model) loads it once, and concurrent requests share the
backend's scheduler, so their sequences decode in one batch.

With OpenTelemetry export on (`otel` in the config, `--otel`, or `OTEL_EXPORTER_OTLP_ENDPOINT`),
one export serves the process and each request gets a sink of its own, closed with the request:
a controller's request is a `run` trace like `agentic run`'s, a pass-through one a model-call
span. Spans leave in batches on a background thread, and the rest when the gateway stops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentic.core import (
    Budget,
    ConfigError,
    Event,
    GenerateRequest,
    Generation,
    JSONLSink,
    Message,
    OTelExport,
    OTelSink,
    Outcome,
    Tracer,
    Usage,
    redact_uri,
)
from agentic.core.otel import otel_endpoint
from agentic.runtime.chat import ChatSuite
from agentic.runtime.runner import run_suite
from agentic.server.config import BudgetLimits, GatewayConfig, KeyConfig
from agentic.specs.registry import BuildContext, Spec, parse_controller_spec
from backends import Backend

# at most this many built controllers are kept; the least recently used is closed first
CONTROLLER_CACHE = 32

log = logging.getLogger("agentic.server")


class RequestError(Exception):
    """A request the gateway refuses: HTTP `status`, OpenAI error `type`, the field at fault."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.param, self.status, self.type, self.code = param, status, type, code
        self.headers = headers or {}


def served_name(uri: str) -> str:
    """The name a backend URI is served under by default: `embedded:smollm2` -> `smollm2`,
    `hf:/models/x` -> `x`, `openai:URL#m` -> `m`, `replay:t.jsonl` -> `t`."""
    scheme, _, rest = uri.partition(":")
    if "#" in rest:
        return rest.rsplit("#", 1)[1]
    tail = Path(rest.rstrip("/")).name or scheme
    return Path(tail).stem if scheme == "replay" else tail


@dataclass
class Caller:
    """Who sent a request: the key's name (never the key) and its running budget."""

    name: str = "anonymous"
    budget: Budget | None = None


@dataclass
class Plan:
    """What a request resolved to: the served model and, unless it passes through, a spec."""

    model: str
    spec: Spec | None
    limits: BudgetLimits
    label: str  # how responses and metrics name it: "pf-8@smollm2", a spec's type, or the model


@dataclass
class _Built:
    controller: Any
    context: BuildContext


@dataclass
class Gateway:
    config: GatewayConfig
    backends: dict[str, Backend]
    uris: dict[str, str]
    presets: dict[str, Spec] = field(default_factory=dict)
    _built: OrderedDict[tuple[str, str], _Built] = field(default_factory=OrderedDict)
    _keys: list[tuple[str, KeyConfig, Budget]] = field(default_factory=list)
    _closing: set[asyncio.Future[None]] = field(default_factory=set)
    otel: OTelExport | None = None

    @classmethod
    def start(
        cls, config: GatewayConfig, default_uri: str, load: Callable[[str], Backend]
    ) -> Gateway:
        uris = dict(config.models) or {served_name(default_uri): default_uri}
        backends = {name: load(uri) for name, uri in uris.items()}
        for name, b in backends.items():
            price = config.prices.price_for([name, b.name, uris[name]])
            if price is not None:
                b.price = price  # type: ignore[attr-defined]
        gw = cls(config, backends, uris)
        gw.presets = {n: parse_controller_spec(s, files=False) for n, s in config.presets.items()}
        gw._keys = [(k.secret(), k, (k.budget or BudgetLimits()).budget()) for k in config.keys]
        gw.otel = open_otel(config)
        return gw

    # ---- who and what ---------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Caller:
        if not self._keys:
            return Caller()
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token:
            for secret, key, budget in self._keys:
                if hmac.compare_digest(secret.encode(), token.strip().encode()):
                    if (spent := budget.exceeded()) is not None:
                        raise RequestError(
                            f"key {key.name!r}: {spent}",
                            status=429,
                            type="insufficient_quota",
                            code="insufficient_quota",
                        )
                    return Caller(key.name, budget)
        raise RequestError(
            "missing or unknown API key (Authorization: Bearer KEY)",
            status=401,
            type="authentication_error",
            code="invalid_api_key",
        )

    def model_ids(self) -> list[str]:
        ids = list(self.backends)
        for p in self.presets:
            ids += [p] if len(self.backends) == 1 else []
            ids += [f"{p}@{m}" for m in self.backends]
        return ids

    def plan(
        self,
        model: str,
        controller: dict[str, Any] | str | None,
        verifier: str | None,
        budget: BudgetLimits | None,
    ) -> Plan:
        preset, sep, name = model.rpartition("@")
        if not sep:
            preset, name = (model, "") if model not in self.backends else ("", model)
        if not name:
            if len(self.backends) != 1:
                raise RequestError(
                    f"model {model!r}: name a served model too ({', '.join(self.backends)}), "
                    f"e.g. {model}@{next(iter(self.backends))}",
                    param="model",
                    status=404,
                    code="model_not_found",
                )
            name = next(iter(self.backends))
        if name not in self.backends:
            raise RequestError(
                f"model {name!r} is not served here; served: {', '.join(self.backends)}",
                param="model",
                status=404,
                code="model_not_found",
            )
        if preset and preset not in self.presets:
            raise RequestError(
                f"model {model!r}: no preset {preset!r}; presets: {', '.join(self.presets)}",
                param="model",
                status=404,
                code="model_not_found",
            )
        spec: Spec | None = self.presets[preset] if preset else None
        if isinstance(controller, str):
            if controller not in self.presets:
                raise RequestError(
                    f"no preset {controller!r}; presets: {', '.join(self.presets)}",
                    param="agentic.controller",
                )
            spec, preset = self.presets[controller], controller
        elif controller is not None:
            try:
                spec = parse_controller_spec(controller, files=False)
            except ConfigError as e:
                raise RequestError(str(e), param="agentic.controller") from None
            preset = spec.type
        if verifier is not None:
            if spec is None or "reward" not in type(spec).model_fields:
                what = f"controller {spec.type!r}" if spec else "a request with no controller"
                raise RequestError(f"{what} takes no verifier", param="agentic.verifier")
            try:
                spec = parse_controller_spec(
                    {**spec.model_dump(mode="json"), "reward": verifier}, files=False
                )
            except ConfigError as e:
                raise RequestError(str(e), param="agentic.verifier") from None
        label = f"{preset}@{name}" if spec is not None else name
        return Plan(name, spec, self.config.budget.tighter(budget), label)

    # ---- solving --------------------------------------------------------------------------

    def controller(self, model: str, spec: Spec) -> Any:
        key = (model, spec.model_dump_json())
        if key in self._built:
            self._built.move_to_end(key)
            return self._built[key].controller
        context = BuildContext(self.backends[model], ChatSuite([]))
        try:
            built = _Built(context.build(spec), context)
        except ConfigError as e:
            raise RequestError(str(e), param="agentic.controller") from None
        self._built[key] = built
        while len(self._built) > CONTROLLER_CACHE:
            _, old = self._built.popitem(last=False)
            closing = asyncio.ensure_future(old.context.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        return built.controller

    @contextmanager
    def _tracing(self, rid: str, extra: Sequence[Callable[[Event], None]]) -> Iterator[None]:
        """A tracer for one request: `extra` listeners, its recording, its OpenTelemetry sink."""
        sinks: list[Any] = list(extra)
        closing: list[Any] = []
        rec = self.config.record
        if rec is not None:
            rec.dir.mkdir(parents=True, exist_ok=True)
            name = rid if rec.per == "request" else dt.date.today().isoformat()
            closing.append(JSONLSink(rec.dir / f"{name}.jsonl"))
        if self.otel is not None:
            capture = self.config.otel.capture_text if self.config.otel else False
            closing.append(OTelSink(self.otel, capture_text=capture))
        sinks += closing
        try:
            with Tracer(sinks).activate():
                yield
        finally:
            for sink in closing:
                sink.close()

    def _budget(self, plan: Plan, caller: Caller) -> Budget:
        return plan.limits.budget(within=caller.budget)

    async def solve(
        self,
        rid: str,
        plan: Plan,
        messages: Sequence[Message],
        caller: Caller,
        listeners: Sequence[Callable[[Event], None]] = (),
    ) -> Outcome:
        assert plan.spec is not None
        suite = ChatSuite.from_messages(rid, messages)
        controller = self.controller(plan.model, plan.spec)
        context = self._built[(plan.model, plan.spec.model_dump_json())].context
        config = {
            "backend": redact_uri(self.uris[plan.model]),
            "backend_name": self.backends[plan.model].name,
            "controller": plan.spec.model_dump(mode="json"),
            "concurrency": 1,
            "backends": {redact_uri(u): b.name for u, b in context.backends.items()},
            "gateway": {"request": rid, "caller": caller.name, "model": plan.label},
        }
        with self._tracing(rid, listeners):
            result = await run_suite(
                suite,
                controller,
                concurrency=1,
                budget=self._budget(plan, caller),
                config=config,
            )
        if result.outcomes:
            return result.outcomes[0]
        return Outcome(task_id=rid, output="", error=result.stopped or "not run")

    async def generate(
        self,
        rid: str,
        plan: Plan,
        request: GenerateRequest,
        caller: Caller,
        listeners: Sequence[Callable[[Event], None]] = (),
    ) -> tuple[list[Generation], Usage]:
        with self._tracing(rid, listeners), self._budget(plan, caller) as meter:
            gens = (await self.backends[plan.model].generate([request]))[0]
        return gens, meter.spent

    async def stream(
        self,
        rid: str,
        plan: Plan,
        request: GenerateRequest,
        caller: Caller,
        usage: list[Usage],
        finish: list[str],
    ) -> AsyncIterator[str]:
        """Text pieces as the backend produces them; on return, `usage` and `finish` hold the
        request's usage and finish reason."""
        events: list[Event] = []
        with self._tracing(rid, [events.append]), self._budget(plan, caller) as meter:
            async for piece in self.backends[plan.model].stream(request):  # type: ignore[attr-defined]
                yield piece
        usage.append(meter.spent)
        done = [e for e in events if e.type == "backend.generate"]
        results = done[-1].payload["results"] if done else []
        finish.append(results[0].get("finish_reason") or "stop" if results else "stop")

    async def aclose(self) -> None:
        while self._built:
            _, built = self._built.popitem()
            await built.context.aclose()
        for backend in self.backends.values():
            await backend.aclose()
        if self.otel is not None:
            await asyncio.to_thread(self.otel.close)  # sends what is left: a blocking export


def open_otel(config: GatewayConfig) -> OTelExport | None:
    """The gateway's OpenTelemetry export: on when the config has `otel` (its endpoint, else
    `OTEL_EXPORTER_OTLP_ENDPOINT`), or when only that variable is set. Asked for in the config, a
    missing endpoint or `otel` extra stops the start; asked for only by the variable, it is one
    warning and the gateway serves without export."""
    explicit = config.otel.endpoint if config.otel else None
    if otel_endpoint(explicit) is None:
        if config.otel is not None:
            raise ConfigError(
                "otel: no endpoint: give otel.endpoint (or --otel URL) or set "
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            )
        return None
    try:
        export = OTelExport(explicit, service_name="agentic-gateway")
    except ConfigError as e:
        if config.otel is not None:
            raise
        log.warning("%s; serving without OpenTelemetry export", e)
        return None
    log.info("exporting OpenTelemetry spans to %s", export.url)
    return export
