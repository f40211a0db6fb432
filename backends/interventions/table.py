"""The row-indexed intervention table of one local backend.

`Interventions` holds what is attached (by name) and one slot per running request that names
any of them; slot 0 is the no-op. Before each forward the backend (`backends/hf/forward.py`)
states which slot every batch row belongs to, and `snapshot` turns the plans into the tensors
the layer hooks index by row: steering vectors per layer as a (slots, D) table with a weight per
slot, and (slots, layers) masks for skipping. Rows of slot 0 are never touched by the kernels,
so a request without interventions gives the same bits in a steered batch as in the same batch
without any.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agentic.core import ConfigError, InterventionRef
from backends.interventions.base import Intervention, LayerActivity, ModelShape, SlotPlan


@dataclass
class Snapshot:
    """Tensors of every slot, rebuilt when a plan changes (`version`)."""

    version: int
    vectors: dict[int, torch.Tensor]  # layer -> (slots, D) in the model's dtype, on its device
    weights: dict[int, torch.Tensor]  # layer -> (slots,) float32, on the model's device
    # The masks stay on the CPU: the hooks branch on them per layer, and reading a GPU tensor
    # there would synchronise the device once per layer.
    steer_on: torch.Tensor  # (slots, layers) bool
    skip: torch.Tensor  # (slots, layers) bool, prefill and decode
    decode_skip: torch.Tensor  # (slots, layers) bool, decode only
    ffn_skip: torch.Tensor  # (slots, layers) bool
    repeat: torch.Tensor  # (slots, layers) bool
    trace: torch.Tensor  # (slots,) bool


@dataclass
class _Slot:
    refs: tuple[tuple[Intervention, float], ...]
    plan: SlotPlan
    sums: torch.Tensor | None = None  # (4, layers): prefill delta, rel, decode delta, rel
    tokens: tuple[int, int] = (0, 0)


class Interventions:
    """Attach / detach interventions by name; open a slot per request that names them."""

    def __init__(self, shape: ModelShape, dtype: torch.dtype, device: torch.device) -> None:
        self.shape = shape
        self.dtype, self.device = dtype, device
        self.attached: dict[str, Intervention] = {}
        self._slots: list[_Slot | None] = [None]
        self._version = 0
        self._snap: Snapshot | None = None
        self._lock = threading.Lock()

    # ---- attaching -------------------------------------------------------------------------

    def attach(self, name: str, intervention: Intervention) -> None:
        """Make `intervention` available to requests as `InterventionRef(name=name)`. Requests
        already running keep the plan they started with."""
        if not isinstance(intervention, Intervention):
            raise ConfigError(
                f"attach({name!r}): {type(intervention).__name__} is not an Intervention"
            )
        if not name:
            raise ConfigError("attach: the name is empty")
        intervention.check(self.shape)
        with self._lock:
            self.attached[name] = intervention

    def detach(self, name: str) -> Intervention:
        with self._lock:
            if name not in self.attached:
                raise ConfigError(f"detach: no intervention {name!r}; attached: {self._names()}")
            return self.attached.pop(name)

    def _names(self) -> str:
        return ", ".join(sorted(self.attached)) or "none"

    def resolve(self, refs: Sequence[InterventionRef]) -> tuple[tuple[Intervention, float], ...]:
        """The interventions a request names, or `ConfigError` naming the unknown one."""
        out = []
        for r in refs:
            iv = self.attached.get(r.name)
            if iv is None:
                raise ConfigError(
                    f"intervention {r.name!r} is not attached to {self.shape.name!r}; "
                    f"attached: {self._names()}"
                )
            out.append((iv, r.scale))
        return tuple(out)

    # ---- slots -----------------------------------------------------------------------------

    def open(self, refs: tuple[tuple[Intervention, float], ...]) -> int:
        plan = SlotPlan()
        for iv, scale in refs:
            iv.configure(plan, scale)
        slot = _Slot(refs, plan)
        if plan.trace:
            slot.sums = torch.zeros((4, self.shape.num_layers), dtype=torch.float64)
        with self._lock:
            free = next((i for i in range(1, len(self._slots)) if self._slots[i] is None), None)
            if free is None:
                free = len(self._slots)
                self._slots.append(slot)
            else:
                self._slots[free] = slot
            self._version += 1
        return free

    def close(self, index: int) -> tuple[SlotPlan, LayerActivity | None]:
        with self._lock:
            slot = self._slots[index]
            assert slot is not None, f"slot {index} is not open"
            self._slots[index] = None
            self._version += 1
        activity = self._activity(slot)
        for iv, _ in slot.refs:
            iv.finished(slot.plan, activity)
        return slot.plan, activity

    def open_slots(self) -> int:
        return sum(s is not None for s in self._slots)

    def plan(self, index: int) -> SlotPlan:
        slot = self._slots[index]
        assert slot is not None
        return slot.plan

    def reads(self, index: int, layer: int) -> list[Intervention]:
        slot = self._slots[index]
        return [] if slot is None else [iv for iv, _ in slot.refs if layer in iv.reads]

    def changed(self) -> None:
        """A plan was edited in place (by a dynamic intervention during prefill)."""
        with self._lock:
            self._version += 1

    @property
    def dynamic_layers(self) -> frozenset[int]:
        layers: set[int] = set()
        for s in self._slots:
            if s is not None:
                for iv, _ in s.refs:
                    layers |= iv.reads
        return frozenset(layers)

    # ---- tensors ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snap is not None and self._snap.version == self._version:
                return self._snap
            n, layers, d = len(self._slots), self.shape.num_layers, self.shape.hidden_size
            masks = torch.zeros((5, n, layers), dtype=torch.bool)
            trace = torch.zeros(n, dtype=torch.bool)
            steered = sorted({i for s in self._slots if s is not None for i in s.plan.steer})
            vectors = {i: torch.zeros((n, d), dtype=torch.float32) for i in steered}
            weights = {i: torch.zeros(n, dtype=torch.float32) for i in steered}
            for k, s in enumerate(self._slots):
                if s is None:
                    continue
                p = s.plan
                for i, v in p.steer.items():
                    vectors[i][k] = v
                    weights[i][k] = p.steer_weight.get(i, 1.0)
                    masks[0, k, i] = p.steer_weight.get(i, 1.0) != 0.0
                sets = (p.skip, p.decode_skip, p.ffn_skip, p.repeat)
                for m, layer_set in enumerate(sets, start=1):
                    for i in layer_set:
                        masks[m, k, i] = True
                trace[k] = p.trace
            dev = self.device
            self._snap = Snapshot(
                version=self._version,
                vectors={i: v.to(dev, self.dtype) for i, v in vectors.items()},
                weights={i: w.to(dev) for i, w in weights.items()},
                steer_on=masks[0],
                skip=masks[1],
                decode_skip=masks[2],
                ffn_skip=masks[3],
                repeat=masks[4],
                trace=trace,
            )
            return self._snap

    # ---- activity --------------------------------------------------------------------------

    def add_activity(
        self, index: int, layer: int, decode: bool, delta: float, relative: float, tokens: int
    ) -> None:
        slot = self._slots[index]
        if slot is None or slot.sums is None:
            return
        row = 2 if decode else 0
        slot.sums[row, layer] += delta
        slot.sums[row + 1, layer] += relative
        if layer == 0:
            p, g = slot.tokens
            slot.tokens = (p, g + tokens) if decode else (p + tokens, g)

    def _activity(self, slot: _Slot) -> LayerActivity | None:
        if slot.sums is None:
            return None
        p, g = slot.tokens
        s = slot.sums
        per = [(s[0] / max(p, 1)), (s[1] / max(p, 1)), (s[2] / max(g, 1)), (s[3] / max(g, 1))]
        return LayerActivity(
            prefill_tokens=p,
            decode_tokens=g,
            prefill_delta=per[0].tolist(),
            prefill_relative=per[1].tolist(),
            decode_delta=per[2].tolist(),
            decode_relative=per[3].tolist(),
        )

    def describe(self, index: int) -> list[dict[str, Any]]:
        slot = self._slots[index]
        return [] if slot is None else [iv.describe() | {"request_scale": s} for iv, s in slot.refs]
