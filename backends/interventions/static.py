"""Interventions decided before a request runs: add steering vectors, skip layers, trace
layer activity. Each is attached once to a backend and named by the requests it applies to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch

from agentic.core import ConfigError
from backends.interventions.base import (
    Intervention,
    LayerActivity,
    ModelShape,
    SlotPlan,
    check_layers,
)


class Steering(Intervention):
    """Add `scale * direction[i]` to the output of each layer i (ActAdd / CAA style). The
    request's `InterventionRef.scale` multiplies `scale`. `vectors` is a `SteeringVector` (its
    `directions`) or a mapping layer -> (D,) tensor; `layers` keeps a subset of them."""

    kind: ClassVar[str] = "steering"

    def __init__(
        self, vectors: Any, *, scale: float = 1.0, layers: Iterable[int] | None = None
    ) -> None:
        directions = getattr(vectors, "directions", vectors)
        if not isinstance(directions, Mapping) or not directions:
            raise ConfigError("steering: vectors must map layers to (hidden_size,) tensors")
        chosen = set(directions) if layers is None else set(layers)
        missing = sorted(chosen - set(directions))
        if missing:
            raise ConfigError(
                f"steering: no vector for layers {missing}; it has {sorted(directions)}"
            )
        self.directions = {
            int(i): torch.as_tensor(directions[i]).detach().float().cpu() for i in sorted(chosen)
        }
        for i, d in self.directions.items():
            if d.ndim != 1:
                raise ConfigError(f"steering: vector at layer {i} has shape {tuple(d.shape)}")
        self.scale = float(scale)
        self.source = str(getattr(vectors, "name", "tensors"))

    def check(self, shape: ModelShape) -> None:
        check_layers(frozenset(self.directions), shape, "steering")
        for i, d in self.directions.items():
            if d.shape[0] != shape.hidden_size:
                raise ConfigError(
                    f"steering: vector at layer {i} has size {d.shape[0]}, but {shape.name!r} "
                    f"has hidden size {shape.hidden_size}"
                )

    def configure(self, plan: SlotPlan, scale: float) -> None:
        for i, d in self.directions.items():
            plan.add_steering(i, d * (self.scale * scale))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "layers": sorted(self.directions),
            "scale": self.scale,
        }


class LayerSkip(Intervention):
    """Skip whole decoder layers (the residual stream passes through unchanged) and/or only the
    feed-forward block of others, for prefill and decode alike."""

    kind: ClassVar[str] = "layer_skip"

    def __init__(self, layers: Iterable[int] = (), *, ffn_layers: Iterable[int] = ()) -> None:
        self.layers = frozenset(int(x) for x in layers)
        self.ffn_layers = frozenset(int(x) for x in ffn_layers)
        if not self.layers and not self.ffn_layers:
            raise ConfigError("layer_skip: name at least one layer in layers or ffn_layers")

    def check(self, shape: ModelShape) -> None:
        check_layers(self.layers, shape, "layer_skip")
        check_layers(self.ffn_layers, shape, "layer_skip ffn_layers")

    def configure(self, plan: SlotPlan, scale: float) -> None:
        plan.skip |= self.layers
        plan.ffn_skip |= self.ffn_layers

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": sorted(self.layers), "ffn": sorted(self.ffn_layers)}


class LayerRepeat(Intervention):
    """Run decoder layers twice in a row (the second pass on the first's output, with keys and
    values of its own), for prefill and decode alike."""

    kind: ClassVar[str] = "layer_repeat"

    def __init__(self, layers: Iterable[int]) -> None:
        self.layers = frozenset(int(x) for x in layers)
        if not self.layers:
            raise ConfigError("layer_repeat: name at least one layer")

    def check(self, shape: ModelShape) -> None:
        check_layers(self.layers, shape, "layer_repeat")

    def configure(self, plan: SlotPlan, scale: float) -> None:
        plan.repeat |= self.layers

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": sorted(self.layers)}


class ActivityTrace(Intervention):
    """Measure each layer's L2 change of the residual stream for the requests that name it;
    every finished request's `LayerActivity` is appended to `reports` (newest last) and is in
    the `backend.intervention` trace event."""

    kind: ClassVar[str] = "activity_trace"

    def __init__(self, keep: int = 1000) -> None:
        self.keep = keep
        self.reports: list[LayerActivity] = []

    def configure(self, plan: SlotPlan, scale: float) -> None:
        plan.trace = True

    def finished(self, plan: SlotPlan, activity: LayerActivity | None) -> None:
        if activity is not None:
            self.reports.append(activity)
            del self.reports[: -self.keep]
