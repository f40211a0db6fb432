"""What an intervention is, and the per-request plan it writes into.

A local backend keeps a table with one *slot* per running request that names interventions
(`GenerateRequest.interventions`); slot 0 is the no-op every other request uses. Opening a slot
asks each named intervention to `configure` a `SlotPlan`: steering vectors to add after given
layers, layers to skip (whole layer, or its feed-forward block only), whether to trace layer
activity. Dynamic interventions (routers, weighted steering) also look at the request's prompt
activations while it is prefilled (`before_layer` / `after_layer`) and change the plan then;
from the first decode step on, the plan is fixed, so the KV cache the prefill wrote stays
consistent with what decoding does.

Layer numbering: layer i is decoder layer i (0-based); a steering vector "at layer i" is added
to that layer's output, which is transformers' `hidden_states[i + 1]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from agentic.core import ConfigError


@dataclass(frozen=True)
class ModelShape:
    """What an intervention may check itself against when it is attached."""

    name: str
    num_layers: int
    hidden_size: int


@dataclass
class SlotPlan:
    """One request's interventions, resolved. Mutable until its prefill ends."""

    steer: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (D,) float32
    steer_weight: dict[int, float] = field(default_factory=dict)  # layer -> weight (default 1)
    skip: set[int] = field(default_factory=set)  # whole layer, prefill and decode
    decode_skip: set[int] = field(default_factory=set)  # whole layer, decode only
    ffn_skip: set[int] = field(default_factory=set)  # feed-forward block only
    repeat: set[int] = field(default_factory=set)  # run the layer twice, prefill and decode
    trace: bool = False
    notes: dict[str, Any] = field(default_factory=dict)  # decisions, for the trace event

    def add_steering(self, layer: int, vector: torch.Tensor) -> None:
        v = vector.detach().to("cpu", torch.float32)
        self.steer[layer] = self.steer[layer] + v if layer in self.steer else v


class LayerActivity(BaseModel):
    """Per-layer L2 change of the residual stream, ||h_out - h_in||, averaged over tokens, for
    the prompt (prefill) and the generated tokens (decode); `*_relative` divides by ||h_in||.
    Layers whose relative change is small are "voids": candidates to skip."""

    model_config = ConfigDict(frozen=True)

    prefill_tokens: int
    decode_tokens: int
    prefill_delta: list[float]
    prefill_relative: list[float]
    decode_delta: list[float]
    decode_relative: list[float]


class Intervention:
    """Base class. Subclasses override `configure` (static part) and, if they decide from the
    prompt, declare `reads` and override `before_layer` / `after_layer`."""

    kind: ClassVar[str] = "intervention"
    reads: frozenset[int] = frozenset()  # layers whose prefill activations it looks at

    def check(self, shape: ModelShape) -> None:
        """Raise `ConfigError` if this intervention does not fit the model."""

    def configure(self, plan: SlotPlan, scale: float) -> None:
        """Write this intervention's static part into a new request's plan."""

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        """Prefill only, for layers in `reads`: `hidden` is the layer's input for one request's
        prompt tokens, shape (T, D). May change the plan for this layer and the ones after."""

    def after_layer(
        self, layer: int, before: torch.Tensor, after: torch.Tensor, plan: SlotPlan
    ) -> None:
        """Prefill only, for layers in `reads`: the layer's input and output, (T, D) each."""

    def finished(self, plan: SlotPlan, activity: LayerActivity | None) -> None:
        """The request is done; `activity` is set when the plan traced."""

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


def check_layers(layers: set[int] | frozenset[int], shape: ModelShape, what: str) -> None:
    bad = sorted(x for x in layers if not 0 <= x < shape.num_layers)
    if bad:
        raise ConfigError(
            f"{what}: layers {bad} are outside [0, {shape.num_layers}) for {shape.name!r}"
        )
