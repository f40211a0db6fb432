"""`Forwards`: every forward of a local Hugging Face causal LM that `TransformersBackend` runs,
and the KV caches they read and write (synchronous; the scheduler calls it from a thread).

- `prefill`: encode prompts, left-padded with position ids that count real tokens only, so
  padding is invisible. Identical prompts (the n samples of a request) are encoded once; with a
  prefix cache (`prefix_cache.py`), a prompt that starts like one encoded before encodes only
  the rest.
- `decode`: one token for every row of a running batch, over its cache.
- `score`: the logits that predict given continuations (`Backend.score`).
- `states`: hidden states at chosen layers (`TransformersBackend.hidden_states`).

Prefill and decode run under the intervention hooks (`hooked`: which table slot each row
belongs to); score and states run the model as loaded. `stack` and `trim` reshape a batch's
cache as rows join and leave. Choosing tokens from the logits is `sampling.py`'s part.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from backends.hf.prefix_cache import KV, PrefixCache
from backends.interventions.hooks import HookedLayers

# ---- a batch's KV cache ---------------------------------------------------------------------


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


def joinable(cache: DynamicCache | None) -> bool:
    """Whether rows can join (and leading columns be trimmed): plain per-layer KV tensors only;
    sliding-window or other stateful cache layers (Gemma-3) cannot be stacked."""
    return cache is None or all(type(x) is DynamicLayer for x in cache.layers)


def trim(cache: DynamicCache, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading cache columns that no row attends to (left by rows that left); the mask of
    what remains."""
    if not joinable(cache):
        return mask
    first = int(mask.any(0).int().argmax())
    if first == 0:
        return mask
    for layer in cache.layers:
        for attr in ("keys", "values"):
            setattr(layer, attr, getattr(layer, attr)[:, :, first:])
    return mask[:, first:]


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


def _row_kv(layers: list[Any], row: int, start: int) -> KV:
    """One row's keys and values without its left padding, copied out of the batch."""
    return [
        (x.keys[row : row + 1, :, start:].clone(), x.values[row : row + 1, :, start:].clone())
        for x in layers
    ]


# ---- the forwards ---------------------------------------------------------------------------


class Forwards:
    """Runs the model; one per model. `encoded_tokens` counts the prompt tokens actually run
    through it; `hooks` are the intervention hooks while any are installed."""

    def __init__(self, model: Any, pad_id: int, prefix_cache_tokens: int = 0) -> None:
        self.model = model
        self.pad_id = pad_id
        self.prefix_cache = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens > 0 else None
        self.encoded_tokens = 0  # prompt tokens actually run through the model
        self.hooks: HookedLayers | None = None  # set while interventions are attached

    def hooked(
        self, slots: list[int], new: torch.Tensor, decode: bool
    ) -> AbstractContextManager[None]:
        """The next model call runs rows of these intervention slots."""
        if self.hooks is None:
            return nullcontext()
        return self.hooks.forward(slots, new, decode)

    def left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-align sequences; position ids count real tokens only, so padding is invisible."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        ids, mask = ids.to(self.model.device), mask.to(self.model.device)
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    # ---- prefill and decode ------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(
        self, prompts: Sequence[tuple[int, list[int]]]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode (intervention slot, prompt ids) rows: their KV cache, attention mask and
        next-token logits. Identical prompts in one slot (the n samples of a request) are
        encoded once; with a prefix cache, a prompt that starts like one encoded before encodes
        only the rest."""
        unique: dict[tuple[int, tuple[int, ...]], int] = {}
        for slot, ids in prompts:
            unique.setdefault((slot, tuple(ids)), len(unique))
        slots = [slot for slot, _ in unique]
        seqs = [list(p) for _, p in unique]
        pc = self.prefix_cache
        # keys and values computed under interventions are not shared with other requests
        found = [
            pc.longest(p) if pc is not None and not slot else (0, None)
            for slot, p in zip(slots, seqs, strict=True)
        ]
        cold = [i for i, (m, _) in enumerate(found) if m == 0]
        parts, order = [], []
        if cold:
            parts.append(self._encode([seqs[i] for i in cold], [slots[i] for i in cold]))
            order += cold
        for i, (m, kv) in enumerate(found):
            if m and kv is not None:
                parts.append(self._encode_rest(seqs[i], m, kv))
                order.append(i)
        cache, mask, logits = parts[0]
        for part in parts[1:]:
            cache, mask, logits = stack(cache, mask, logits, *part)
        if pc is not None:
            width = mask.shape[1]
            self._keep(
                cache,
                [
                    (pos, seqs[i], width - len(seqs[i]))
                    for pos, i in enumerate(order)
                    if not slots[i]
                ],
            )
        where = {u: pos for pos, u in enumerate(order)}
        sel = [where[unique[(slot, tuple(ids))]] for slot, ids in prompts]
        if sel != list(range(len(order))):
            index = torch.tensor(sel, device=mask.device)
            cache.batch_select_indices(index)
            mask, logits = mask[index], logits[index]
        return cache, mask, logits

    @torch.inference_mode()
    def decode(
        self, cache: DynamicCache, mask: torch.Tensor, tokens: torch.Tensor, slots: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run each row's next token (`tokens`, one per row) over `cache`: the mask grown by
        that token, and the logits after it."""
        mask = torch.cat([mask, mask.new_ones((len(slots), 1))], -1)
        with self.hooked(slots, mask[:, -1:], decode=True):
            out = self.model(
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=mask.sum(-1, keepdim=True) - 1,
                past_key_values=cache,
                use_cache=True,
            )
        return mask, out.logits[:, -1, :].float()

    @torch.inference_mode()
    def _encode(
        self, prompts: list[list[int]], slots: list[int]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode prompts from scratch, left-padded in one forward."""
        ids, mask, pos = self.left_pad(prompts)
        cache = DynamicCache(config=self.model.config)
        with self.hooked(slots, mask, decode=False):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        self.encoded_tokens += sum(len(p) for p in prompts)
        return cache, mask, out.logits[:, -1, :].float()

    @torch.inference_mode()
    def _forward_rest(
        self, ids: list[int], m: int, kv: KV, keep: int
    ) -> tuple[DynamicCache, torch.Tensor]:
        """Run `ids[m:]` over the known keys and values of `ids[:m]`: the cache of all of `ids`
        and the logits of its last `keep` positions."""
        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(kv):
            cache.update(k, v, layer)
        device = self.model.device
        out = self.model(
            input_ids=torch.tensor([ids[m:]], device=device),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
            position_ids=torch.arange(m, len(ids), device=device)[None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=keep,
        )
        self.encoded_tokens += len(ids) - m
        return cache, out.logits[0].float()

    def _encode_rest(
        self, prompt: list[int], m: int, kv: KV
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode a prompt whose first `m` tokens' keys and values are known."""
        cache, logits = self._forward_rest(prompt, m, kv, keep=1)
        mask = torch.ones((1, len(prompt)), dtype=torch.long, device=logits.device)
        return cache, mask, logits[-1:]

    # ---- score and hidden states ---------------------------------------------------------------

    @torch.inference_mode()
    def score(self, prompts: list[list[int]], conts: list[list[int]]) -> list[torch.Tensor]:
        """Per row, the logits that predict each continuation token given everything before it
        (len(cont), vocabulary). Rows whose prompt starts like one encoded before reuse its keys
        and values; the others share one forward."""
        pc = self.prefix_cache
        found = [pc.longest(p) if pc is not None else (0, None) for p in prompts]
        out: dict[int, torch.Tensor] = {}
        cold = [i for i, (m, _) in enumerate(found) if m == 0]
        if cold:
            ids, mask, pos = self.left_pad([prompts[i] + conts[i] for i in cold])
            cache = DynamicCache(config=self.model.config) if pc is not None else None
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache
            ).logits.float()
            self.encoded_tokens += sum(len(prompts[i]) + len(conts[i]) for i in cold)
            width = ids.shape[1]
            for row, i in enumerate(cold):
                out[i] = logits[row, width - len(conts[i]) - 1 : width - 1]
            if pc is not None and cache is not None:
                self._keep(cache, [(row, prompts[i], width - len(prompts[i]) - len(conts[i]))
                                   for row, i in enumerate(cold)])  # fmt: skip
        for i, (m, kv) in enumerate(found):
            if m and kv is not None:
                full = prompts[i] + conts[i]
                # logits from the prompt's last token on: they predict the continuation
                cache, logits = self._forward_rest(full, m, kv, keep=len(conts[i]) + 1)
                out[i] = logits[: len(conts[i])]
                self._keep(cache, [(0, prompts[i], 0)])
        return [out[i] for i in range(len(prompts))]

    def states(self, seqs: list[list[int]], layers: list[int], pool: str) -> torch.Tensor:
        """Hidden states of `seqs` at `layers` (transformers' `hidden_states` indices), each
        sequence's last token (`pool="last"`) or the mean over its tokens (`"mean"`): shape
        (len(seqs), len(layers), hidden size), float32 on the CPU. Only the forward runs in
        inference mode: the result is an ordinary tensor, which callers may train on."""
        ids, mask, pos = self.left_pad(seqs)  # left padding puts every last token in column -1
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                output_hidden_states=True,
                use_cache=False,
                logits_to_keep=1,  # the vocabulary projection is not needed
            )
        picked = torch.stack([out.hidden_states[layer] for layer in layers], 1).float()
        if pool == "last":
            return picked[:, :, -1, :].cpu()
        m = mask.to(picked.device, torch.float32)[:, None, :, None]
        return ((picked * m).sum(2) / m.sum(2)).cpu()

    def _keep(self, cache: DynamicCache, rows: list[tuple[int, list[int], int]]) -> None:
        """Put (batch row, prompt, first column) prompts' keys and values in the prefix cache."""
        pc = self.prefix_cache
        layers = [x for x in cache.layers if type(x) is DynamicLayer]
        if pc is None or len(layers) != len(cache.layers):
            self.prefix_cache = None  # sliding-window layers keep only a window
            return
        cfg = self.model.config
        # extra layers beyond the model's hold repeated layers' second passes: not shared
        layers = layers[
            : (cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg).num_hidden_layers
        ]
        for row, prompt, start in rows:
            kv = _row_kv(layers, row, start)
            pc.add(prompt, [(k[:, :, : len(prompt)], v[:, :, : len(prompt)]) for k, v in kv])
