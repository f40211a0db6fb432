"""The gateway's settings: what it serves, what things cost, who may call, how much at once.

A YAML or JSON file (`agentic serve --config gateway.yaml`), every field optional:

```yaml
models:                 # served name -> backend URI (default: --backend, named after it)
  smollm2: embedded:smollm2
presets:                # controller presets: `model: "pf-8@smollm2"` or `model: "pf-8"`
  pf-8: {type: pf, samples: 8}
prices:                 # USD per 1M tokens, by served name (or backend name)
  smollm2: {prompt: 0.02, completion: 0.04}
keys:                   # bearer keys; none listed: no auth
  - {name: alice, env: AGENTIC_KEY_ALICE, budget: {tokens: 100000}}
budget: {seconds: 120}  # every request's default limits (a request may lower them)
max_concurrency: 32     # requests solved at once
max_queue: 256          # requests waiting beyond those; more get 429 + Retry-After
record: {dir: traces, per: request}   # JSONL per request or per day
otel: {endpoint: "http://127.0.0.1:6006", capture_text: false}
                        # OpenTelemetry spans of every request (docs/observability.md)
```

OpenTelemetry export is on when `otel` is given (its `endpoint` defaults to the standard
`OTEL_EXPORTER_OTLP_ENDPOINT`), with `agentic serve --otel URL`, or when that variable is set;
`capture_text` also exports prompts and completions (never keys).

Presets are parsed through the controller registry when the file loads, so a bad one fails
the start with a line naming it, not a request later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentic.core import Budget, ConfigError, PriceTable
from agentic.core.otel import traces_url

# what `model: "NAME"` resolves to with no config: one preset per search, N = 8
DEFAULT_PRESETS: dict[str, dict[str, Any]] = {
    "sc-8": {"type": "sc", "n": 8},
    "bon-8": {"type": "bon", "samples": 8},
    "beam-8": {"type": "beam", "samples": 8},
    "pf-8": {"type": "pf", "samples": 8},
    "epf-8": {"type": "epf", "samples": 8},
    "astar": {"type": "astar"},
}


class BudgetLimits(BaseModel):
    """Limits in every unit a `Budget` knows; None is unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: int | None = Field(default=None, ge=0)
    model_calls: int | None = Field(default=None, ge=0)
    reward_calls: int | None = Field(default=None, ge=0)
    seconds: float | None = Field(default=None, ge=0)
    cost_usd: float | None = Field(default=None, ge=0)

    def budget(self, within: Budget | None = None) -> Budget:
        return Budget(
            max_tokens=self.tokens,
            max_model_calls=self.model_calls,
            max_reward_calls=self.reward_calls,
            max_seconds=self.seconds,
            max_cost_usd=self.cost_usd,
            within=within,
        )

    def tighter(self, other: BudgetLimits | None) -> BudgetLimits:
        """Each limit the smaller of the two (a request cannot lift the server's)."""
        if other is None:
            return self
        merged = {}
        for name in type(self).model_fields:
            a, b = getattr(self, name), getattr(other, name)
            merged[name] = b if a is None else a if b is None else min(a, b)
        return BudgetLimits(**merged)


class KeyConfig(BaseModel):
    """One API key: its name (what metrics and logs show), the secret, and its own budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    env: str | None = Field(default=None, description="environment variable holding the key")
    key: str | None = Field(default=None, description="the key itself (prefer env)")
    budget: BudgetLimits | None = None

    def secret(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"keys.{self.name}: environment variable {self.env} is not set")
            return value
        if not self.key:
            raise ConfigError(f"keys.{self.name}: give env (a variable holding the key) or key")
        return self.key


class RecordConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path
    per: Literal["request", "day"] = "request"


class OTelConfig(BaseModel):
    """Where the gateway exports its spans, and whether text goes with them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint (base URL or .../v1/traces); "
        "none: OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    capture_text: bool = Field(default=False, description="export prompts and completions too")

    @field_validator("endpoint")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                traces_url(v)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, str] = Field(default_factory=dict)
    presets: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_PRESETS))
    prices: PriceTable = Field(default_factory=lambda: PriceTable({}))
    keys: list[KeyConfig] = Field(default_factory=list)
    budget: BudgetLimits = Field(default_factory=BudgetLimits)
    max_concurrency: int = Field(default=32, ge=1)
    max_queue: int = Field(default=256, ge=0)
    retry_after_s: int = Field(default=1, ge=0)
    record: RecordConfig | None = None
    otel: OTelConfig | None = None

    @field_validator("presets")
    @classmethod
    def _presets_parse(cls, v: dict[str, Any]) -> dict[str, Any]:
        from agentic.specs.registry import parse_controller_spec

        for name, spec in v.items():
            if "@" in name:
                raise ValueError(f"preset {name!r}: '@' separates a preset from a model")
            try:
                parse_controller_spec(spec, files=False)
            except ConfigError as e:
                raise ValueError(f"preset {name!r}: {e}") from None
        return v

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> GatewayConfig:
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                text = p.read_text()
            except OSError as e:
                raise ConfigError(f"gateway config {p}: {e.strerror or e}") from None
            import yaml

            try:
                data = yaml.safe_load(text) or {}  # YAML reads JSON too
            except yaml.YAMLError as e:
                raise ConfigError(f"gateway config {p}: not YAML/JSON ({e})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"gateway config {p}: expected a mapping at the top")
            if "presets" in data:  # a file's presets add to the defaults
                data["presets"] = {**DEFAULT_PRESETS, **(data["presets"] or {})}
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            item = e.errors()[0]
            loc = ".".join(str(x) for x in item["loc"])
            where = f"gateway config {path}" if path else "gateway config"
            raise ConfigError(f"{where}: {loc}: {item['msg']}") from None
