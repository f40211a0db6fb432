"""Void detection drives skipping: "Void in Language Models" (Shemiranifar, 2025), L2 Adaptive
Computation (LAC).

The paper watches the L2 norm of each layer's change to the residual stream and calls a layer
whose change is small a *void* for that input: skipping it costs little. Here, per request:

    r_l = mean over the prompt's tokens t of ||h_l(t) - h_{l-1}(t)||_2 / ||h_{l-1}(t)||_2

is measured while the prompt is prefilled (every layer runs then), and the layers with
r_l < `threshold` (at most `max_skip` of them, smallest r_l first, never those in `keep`) are
skipped for the whole decode. The prefill already wrote those layers' keys and values, and the
decode never reads them again for this request, so the cache stays consistent.
`ActivityTrace` (static.py) reports the same quantity per layer for prefill and decode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from agentic.core import ConfigError
from backends.interventions.base import Intervention, ModelShape, SlotPlan, check_layers


class VoidSkip(Intervention):
    """Skip, during decoding, the layers that changed the prompt's residual stream least."""

    kind: ClassVar[str] = "void_skip"

    def __init__(
        self, threshold: float, *, max_skip: int | None = None, keep: Iterable[int] = (0,)
    ) -> None:
        if threshold <= 0:
            raise ConfigError(f"void_skip: threshold must be > 0, got {threshold}")
        if max_skip is not None and max_skip < 0:
            raise ConfigError(f"void_skip: max_skip must be >= 0, got {max_skip}")
        self.threshold = float(threshold)
        self.max_skip = max_skip
        self.keep = frozenset(int(x) for x in keep)
        self.reads = frozenset()

    def check(self, shape: ModelShape) -> None:
        check_layers(self.keep, shape, "void_skip keep")
        self.num_layers = shape.num_layers
        self.reads = frozenset(range(shape.num_layers))

    def after_layer(
        self, layer: int, before: torch.Tensor, after: torch.Tensor, plan: SlotPlan
    ) -> None:
        rel = (after.float() - before.float()).norm(dim=-1) / before.float().norm(dim=-1).clamp(
            min=1e-12
        )
        ratios: dict[int, float] = plan.notes.setdefault("void_ratio", {})
        ratios[layer] = float(rel.mean())
        if layer != self.num_layers - 1:
            return
        voids = sorted(
            (r, i) for i, r in ratios.items() if r < self.threshold and i not in self.keep
        )
        if self.max_skip is not None:
            voids = voids[: self.max_skip]
        plan.decode_skip |= {i for _, i in voids}
        plan.notes["voids"] = sorted(i for _, i in voids)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "threshold": self.threshold, "max_skip": self.max_skip}
