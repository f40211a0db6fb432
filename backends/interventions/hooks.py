"""Layer hooks: run each decoder layer (and its feed-forward block) through the intervention
table for the rows of the current forward.

The hooks replace `forward` on the layer *instances* (detaching deletes the attribute, so the
model is exactly as loaded), because a forward hook cannot skip the computation it wraps. Per
forward `backends/hf/forward.py` says which slot each row belongs to (`HookedLayers.forward`);
with every row in slot 0 a hook is one attribute check and a call of the original layer.

Skipping keeps the KV cache consistent: when some rows skip a layer, the layer still runs for
the batch and those rows keep their input (`gated_residual`); when all rows skip it, the layer
is not run and zero keys/values are written to its cache instead, so every cache layer keeps
the same length. That matters for layer 0, whose length transformers reads as the sequence
length (the source of the corrupted generations seen when layer 0 was simply not called).
A skipped row never reads those placeholder keys: it skips the layer for the whole request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from backends.interventions.table import Interventions, Snapshot
from kernels.dispatch import Unchecked, unchecked


@dataclass
class _Forward:
    """One model call's plan. The masks are CPU tensors, and the hooks branch on per-layer
    Python flags read off them once per call: reading a GPU tensor per layer would synchronise
    the device, and even CPU tensor ops per layer add up to a large share of a decode step. The
    kernels get the masks on the model's device, layer-major (row i is contiguous), copied once
    per call."""

    slots: torch.Tensor  # (B,) slot of each row, on the CPU
    new: torch.Tensor  # (B, T) bool: real (not padding) tokens of this forward, on the device
    decode: bool
    snap: Snapshot
    trace: torch.Tensor  # (B,)
    any_trace: bool
    dynamic: frozenset[int]  # layers some row's intervention reads during this prefill
    skip_any: list[bool]  # per layer
    skip_all: list[bool]
    ffn_any: list[bool]
    ffn_all: list[bool]
    repeat_any: list[bool]
    repeat_all: list[bool]
    steer_any: list[bool]
    keep: torch.Tensor  # (layers, B) ~skip, on the device
    ffn_keep: torch.Tensor  # (layers, B) ~ffn skip
    repeat: torch.Tensor  # (layers, B)
    steer_rows: torch.Tensor  # (layers, B) int64: the slot, or 0 where the row is not steered
    ops: Unchecked  # the kernels' bodies for the model's device (arguments built here)


def decoder_layers(model: Any, num_layers: int) -> torch.nn.ModuleList:
    """The decoder's layer list: the first ModuleList of `num_layers` modules with attention."""
    for module in model.modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and len(module) == num_layers
            and all(hasattr(m, "self_attn") for m in module)
        ):
            return module
    raise TypeError(f"no decoder layer list of {num_layers} layers in {type(model).__name__}")


class HookedLayers:
    def __init__(self, model: Any, table: Interventions) -> None:
        self.table = table
        self.layers = decoder_layers(model, table.shape.num_layers)
        self.current: _Forward | None = None
        # the last call's plan: decode steps of an unchanged batch reuse it
        self._last: tuple[tuple[tuple[int, ...], bool, int], _Forward] | None = None
        for i, layer in enumerate(self.layers):
            layer.forward = self._layer_forward(i, layer, layer.forward)
            mlp = getattr(layer, "mlp", None)
            if mlp is not None:
                mlp.forward = self._mlp_forward(i, mlp.forward)

    def remove(self) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
            mlp = getattr(layer, "mlp", None)
            if mlp is not None:
                mlp.__dict__.pop("forward", None)

    @contextmanager
    def forward(self, slots: list[int], new: torch.Tensor, decode: bool) -> Iterator[None]:
        """Rows of the next model call belong to `slots`; `new` marks their real new tokens."""
        if not any(slots):
            yield
            return
        key = (tuple(slots), decode, self.table.snapshot().version)
        if self._last is not None and self._last[0] == key:
            self.current = self._last[1]
            self.current.new = new.bool()
        else:
            self.current = self._derive(torch.tensor(slots), new.bool(), decode)
        try:
            yield
        finally:
            if self.current is not None:
                self._last = (key, self.current) if not self.current.dynamic else None
            self.current = None

    def _derive(self, slots: torch.Tensor, new: torch.Tensor, decode: bool) -> _Forward:
        snap = self.table.snapshot()
        skip = snap.skip[slots]
        if decode:
            skip = skip | snap.decode_skip[slots]
        ffn, repeat = snap.ffn_skip[slots], snap.repeat[slots] & ~skip
        steer_rows = torch.where(snap.steer_on[slots], slots[:, None], 0)
        trace = snap.trace[slots]
        dynamic = frozenset() if decode else self.table.dynamic_layers
        masks = torch.stack([~skip, ~ffn, repeat]).long()
        # one host-to-device copy for every mask the kernels read, layer-major
        dev = torch.cat([masks, steer_rows[None]]).transpose(1, 2).contiguous().to(new.device)
        return _Forward(
            slots, new, decode, snap, trace, bool(trace.any()), dynamic,
            skip.any(0).tolist(), skip.all(0).tolist(), ffn.any(0).tolist(),
            ffn.all(0).tolist(), repeat.any(0).tolist(), repeat.all(0).tolist(),
            steer_rows.bool().any(0).tolist(),
            dev[0].bool(), dev[1].bool(), dev[2].bool(), dev[3], unchecked(new),
        )  # fmt: skip

    def _refresh(self) -> None:
        f = self.current
        assert f is not None
        self.current = self._derive(f.slots, f.new, f.decode)

    # ---- the wrapped forwards --------------------------------------------------------------

    def _layer_forward(
        self, i: int, layer: Any, original: Callable[..., Any]
    ) -> Callable[..., Any]:
        def forward(hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            f = self.current
            if f is None:
                return original(hidden, *args, **kwargs)
            if i in f.dynamic:
                self._decide(i, hidden, None)
                f = self.current
                assert f is not None
            if f.skip_all[i]:
                self._placeholder_kv(layer, hidden, kwargs.get("past_key_values"))
                out = hidden
            else:
                out = _tensor(original(hidden, *args, **kwargs))
                if f.skip_any[i]:
                    out = f.ops.gated_residual(hidden, out, f.keep[i])
            out = self._repeat(i, layer, original, f, out, args, kwargs)
            if i in f.dynamic:
                self._decide(i, hidden, out)
                f = self.current
                assert f is not None
            if f.any_trace:
                self._trace(i, f, hidden, out)
            if f.steer_any[i]:
                out = f.ops.steer_add(out, f.steer_rows[i], f.snap.vectors[i], f.snap.weights[i])
            return out

        return forward

    def _mlp_forward(self, i: int, original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            f = self.current
            if f is None:
                return original(x, *args, **kwargs)
            if not f.ffn_any[i]:
                return original(x, *args, **kwargs)
            if f.ffn_all[i]:
                return torch.zeros_like(x)
            out = original(x, *args, **kwargs)
            return f.ops.gated_residual(torch.zeros_like(out), out, f.ffn_keep[i])

        return forward

    # ---- helpers ---------------------------------------------------------------------------

    def _repeat(
        self,
        i: int,
        layer: Any,
        original: Callable[..., Any],
        f: _Forward,
        out: torch.Tensor,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> torch.Tensor:
        """Second pass of layer i for the rows that repeat it, on the first pass's output.

        The second pass has keys and values of its own: they go to an extra cache layer
        (index num_layers + i), so the first pass's cache is untouched. Once that extra layer
        exists, every forward appends to it (zeros when no row repeats), to keep its length
        equal to the others'."""
        cache = kwargs.get("past_key_values")
        extra = self.table.shape.num_layers + i
        if not f.repeat_any[i]:
            if cache is not None and len(cache.layers) > extra:
                self._placeholder_kv(layer, out, cache, extra)
            return out
        attn = layer.self_attn
        if cache is not None:
            _grow(cache, extra, past=_length(cache) - out.shape[1], like=layer, hidden=out)
        attn.layer_idx, own = extra, attn.layer_idx
        try:
            again = _tensor(original(out, *args, **kwargs))
        finally:
            attn.layer_idx = own
        return again if f.repeat_all[i] else f.ops.gated_residual(out, again, f.repeat[i])

    @staticmethod
    def _placeholder_kv(layer: Any, hidden: torch.Tensor, cache: Any, index: int = -1) -> None:
        if cache is None:
            return
        zeros = _zero_kv(layer, hidden.shape[0], hidden.shape[1], hidden)
        cache.update(zeros, zeros, layer.self_attn.layer_idx if index < 0 else index)

    def _decide(self, i: int, before: torch.Tensor, after: torch.Tensor | None) -> None:
        """Let dynamic interventions read this layer's prefill activations, row by row."""
        f = self.current
        assert f is not None
        changed = False
        for b, slot in enumerate(f.slots.tolist()):
            readers = self.table.reads(slot, i) if slot else []
            if not readers:
                continue
            plan = self.table.plan(slot)
            real = f.new[b]
            for iv in readers:
                if after is None:
                    iv.before_layer(i, before[b, real], plan)
                else:
                    iv.after_layer(i, before[b, real], after[b, real], plan)
            changed = True
        if changed:
            self.table.changed()
            self._refresh()

    def _trace(self, i: int, f: _Forward, before: torch.Tensor, after: torch.Tensor) -> None:
        delta, base = f.ops.row_l2_delta(before, after)
        rel = delta / base.clamp(min=1e-12)
        mask = f.new.float()
        d_sum = (delta * mask).sum(-1).tolist()
        r_sum = (rel * mask).sum(-1).tolist()
        n = f.new.sum(-1).tolist()
        for b, slot in enumerate(f.slots.tolist()):
            if slot and bool(f.trace[b]):
                self.table.add_activity(slot, i, f.decode, d_sum[b], r_sum[b], int(n[b]))


def _tensor(result: Any) -> torch.Tensor:
    """A decoder layer's hidden states (older transformers return a tuple)."""
    return result[0] if isinstance(result, tuple) else result


def _zero_kv(layer: Any, batch: int, length: int, like: torch.Tensor) -> torch.Tensor:
    attn = layer.self_attn
    heads = int(getattr(attn.config, "num_key_value_heads", attn.config.num_attention_heads))
    return like.new_zeros((batch, heads, length, attn.head_dim))


def _length(cache: Any) -> int:
    """Tokens in the cache, read from layer 0 (which this forward has already updated)."""
    return int(cache.layers[0].keys.shape[-2])


def _grow(cache: Any, index: int, past: int, like: Any, hidden: torch.Tensor) -> None:
    """Add cache layers up to `index` (the extra layer of decoder layer `index - num_layers`).
    Each holds zeros for the positions it would have had: `past`, plus this forward's tokens
    for the extra layers of earlier decoder layers, whose hooks have already run."""
    from transformers.cache_utils import DynamicLayer

    while len(cache.layers) <= index:
        extra = DynamicLayer()
        j = len(cache.layers)
        length = past + (hidden.shape[1] if j < index else 0)
        if length > 0:
            zeros = _zero_kv(like, hidden.shape[0], length, hidden)
            extra.update(zeros, zeros)
        cache.layers.append(extra)
