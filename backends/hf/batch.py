"""`RunningBatch`: the rows a `RowDecoder` decodes together, and `stack`, which puts one
prefilled batch's KV cache, attention mask and logits under another's (left-padded to a common
width), so rows can join a batch between decode steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

if TYPE_CHECKING:
    from backends.hf.decode import Row, RowDecoder


def stack(
    cache_a: DynamicCache,
    mask_a: torch.Tensor,
    logits_a: torch.Tensor,
    cache_b: DynamicCache,
    mask_b: torch.Tensor,
    logits_b: torch.Tensor,
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """Rows of b under rows of a: KV caches and masks left-padded to a common width."""
    width = max(mask_a.shape[1], mask_b.shape[1])
    _even_layers(cache_a, cache_b)
    for la, lb in zip(cache_a.layers, cache_b.layers, strict=True):
        for attr in ("keys", "values"):
            a, b = getattr(la, attr), getattr(lb, attr)
            pad_a, pad_b = width - a.shape[2], width - b.shape[2]
            setattr(la, attr, torch.cat([_pad_left(a, pad_a, 2), _pad_left(b, pad_b, 2)]))
    mask = torch.cat(
        [
            _pad_left(mask_a, width - mask_a.shape[1], 1),
            _pad_left(mask_b, width - mask_b.shape[1], 1),
        ]
    )
    return cache_a, mask, torch.cat([logits_a, logits_b])


def _even_layers(a: DynamicCache, b: DynamicCache) -> None:
    """Give both caches as many layers: a repeated layer's second pass keeps its keys and
    values in extra layers (interventions/hooks.py), which a cache without repeats lacks;
    zeros stand in for them (rows without the repeat never read them)."""
    short = a if len(a.layers) < len(b.layers) else b
    while len(short.layers) < max(len(a.layers), len(b.layers)):
        layer = DynamicLayer()
        first = short.layers[0]
        assert isinstance(first, DynamicLayer) and first.keys is not None
        zeros = torch.zeros_like(first.keys)
        layer.update(zeros, zeros.clone())
        short.layers.append(layer)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return t
    shape = list(t.shape)
    shape[dim] = width
    return torch.cat([t.new_zeros(shape), t], dim)


class RunningBatch:
    """Rows decoded together. Rows join between steps (their prompts are prefilled on their
    own, then their KV cache is left-padded and stacked onto the running one) and leave as soon
    as they finish. Position ids count each row's real tokens, so padding anywhere is invisible.
    Joining needs plain per-layer KV tensors; models with sliding-window or other stateful cache
    layers (Gemma-3) take new rows only when the batch is empty."""

    def __init__(self, decoder: RowDecoder) -> None:
        self.decoder = decoder
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    @property
    def joinable(self) -> bool:
        return self.cache is None or all(type(x) is DynamicLayer for x in self.cache.layers)

    @torch.inference_mode()
    def join(self, rows: list[Row]) -> None:
        if not rows:
            return
        if self.rows and not self.joinable:
            raise RuntimeError("this model's KV cache cannot take rows mid-batch")
        cache, mask, logits = self.decoder.prefill(rows)
        if self.cache is None or self.mask is None or self.logits is None or not self.rows:
            self.cache, self.mask, self.logits, self.rows = cache, mask, logits, list(rows)
            return
        self.cache, self.mask, self.logits = stack(
            self.cache, self.mask, self.logits, cache, mask, logits
        )
        self.rows += rows

    @torch.inference_mode()
    def step(self) -> None:
        """One token for every row; finished rows leave; the rest get their next logits."""
        assert self.cache is not None and self.mask is not None and self.logits is not None
        nxt = self.decoder.record(self.rows, self.logits)
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if not keep:
            self.rows, self.cache, self.mask, self.logits = [], None, None, None
            return
        if len(keep) < len(self.rows):
            sel = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(sel)
            self.mask, nxt = self.mask[sel], nxt[sel]
            self.rows = [self.rows[i] for i in keep]
            self._trim()
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], -1)
        slots = [r.slot for r in self.rows]
        with self.decoder.hooked(slots, self.mask[:, -1:], decode=True):
            out = self.decoder.model(
                input_ids=nxt[:, None],
                attention_mask=self.mask,
                position_ids=self.mask.sum(-1, keepdim=True) - 1,
                past_key_values=self.cache,
                use_cache=True,
            )
        self.logits = out.logits[:, -1, :].float()

    def _trim(self) -> None:
        """Drop leading cache columns that no remaining row attends to (left by rows that left)."""
        assert self.cache is not None and self.mask is not None
        if not self.joinable:
            return
        first = int(self.mask.any(0).int().argmax())
        if first == 0:
            return
        for layer in self.cache.layers:
            for attr in ("keys", "values"):
                setattr(layer, attr, getattr(layer, attr)[:, :, first:])
        self.mask = self.mask[:, first:]
