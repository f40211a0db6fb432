"""What tokens cost: a per-model price table that turns usage into dollars.

No backend knows what its tokens cost (a local model costs electricity, a hosted one whatever
its provider charges), so `Usage.cost_usd` is 0 until a price is attached: `backend.price =
Price(...)` in Python, `agentic run --prices FILE`, or the gateway config's `prices:`. The
backend then prices every generation it returns, and `Budget(max_cost_usd=...)` has something to
charge. Prices are in USD per million tokens, the unit providers publish.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

from agentic.core.errors import ConfigError


class Price(BaseModel):
    """USD per million prompt and completion tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: float = Field(ge=0.0, description="USD per 1M prompt tokens")
    completion: float = Field(ge=0.0, description="USD per 1M completion tokens")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


class PriceTable(RootModel[dict[str, Price]]):
    """Prices by model name: a backend's `name` (`embedded:smollm2`, `openai:...#gpt-x`) or its
    URI, or a name the gateway serves a model under."""

    def price_for(self, names: Iterable[str]) -> Price | None:
        """The price of the first of `names` the table lists."""
        return next((self.root[n] for n in names if n in self.root), None)

    @classmethod
    def load(cls, path: str | Path) -> PriceTable:
        """A table from a YAML or JSON file: `{name: {prompt: USD/1M, completion: USD/1M}}`."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"price table {p}: {e.strerror or e}") from None
        data: Any
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ConfigError(f"price table {p}: not JSON ({e.msg}, line {e.lineno})") from None
        return cls.parse(data, where=str(p))

    @classmethod
    def parse(cls, data: Any, *, where: str = "prices") -> PriceTable:
        try:
            return cls.model_validate(data or {})
        except ValidationError as e:
            item = e.errors()[0]
            loc = ".".join(str(x) for x in item["loc"])
            raise ConfigError(f"{where}: {loc}: {item['msg']}") from None
