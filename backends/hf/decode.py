"""Batched decoding of many independent rows with one Hugging Face causal LM (synchronous).

Rows are prefilled left-padded with explicit position ids and decoded together in a
`RunningBatch` (`batch.py`); new rows join between steps, and rows that finish (EOS, stop
string, `max_tokens`) leave the batch and the KV cache at once, so the others do not pay for them.
Each row samples with its own `torch.Generator`, so a seeded request gives the same tokens
alone or in any batch.
Logprobs are the raw model distribution (before temperature / top-k / top-p / min-p), as in vLLM.
A row with a response format or a `logit_bias` samples from logits steered by `grammar.py`;
the other rows of the batch sample from untouched logits.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from agentic.core import SamplingParams, TopLogprob
from backends.hf.batch import stack
from backends.hf.grammar import RowGrammar, steer_logits
from backends.hf.prefix_cache import KV, PrefixCache
from backends.interventions.hooks import HookedLayers
from kernels import entropy_topk


@dataclass
class Row:
    """One sample to generate. Filled in place as a `RunningBatch` decodes it."""

    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None = None
    on_text: Callable[[str], None] | None = None
    grammar: RowGrammar | None = None
    slot: int = 0  # row of the intervention table (0: none)
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[tuple[TopLogprob, ...]] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    stop_reason: str | None = None
    done: bool = False
    cancelled: bool = False
    _sent: int = 0


class RowDecoder:
    """Holds what the decode loop needs from the tokenizer; one per model."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_ids: set[int],
        pad_id: int,
        prefix_cache_tokens: int = 0,
    ) -> None:
        self.model = model
        self.tok = tokenizer
        self.eos_ids = eos_ids
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

    def decode_text(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=True))

    def _pick(self, rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
        """Next token per row: greedy rows by argmax, sampled rows with their own generator."""
        picked = logits.argmax(-1)
        for i, row in enumerate(rows):
            p = row.params
            if p.temperature == 0.0:
                continue
            scores = logits[i] / p.temperature
            if p.top_k and p.top_k < scores.shape[-1]:
                kth = torch.topk(scores, p.top_k).values[-1]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            if p.top_p < 1.0:
                sorted_scores, order = torch.sort(scores, descending=True)
                cum = torch.softmax(sorted_scores, -1).cumsum(-1)
                drop = cum - torch.softmax(sorted_scores, -1) > p.top_p
                scores = scores.scatter(0, order, sorted_scores.masked_fill(drop, float("-inf")))
            probs = torch.softmax(scores, -1)
            if p.min_p > 0.0:
                # last, as transformers' MinPLogitsWarper: the threshold is relative to the top
                # token, which top-k / top-p always keep, so their renormalising does not move it
                probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
            picked[i] = torch.multinomial(probs, 1, generator=row.generator)[0]
        return picked

    def _finish(self, row: Row) -> None:
        """Decide whether `row` is done after its latest token; cut stop strings exactly."""
        if row.out_ids[-1] in self.eos_ids and not row.params.ignore_eos:
            row.done, row.finish_reason = True, "stop"
        if row.grammar is not None and row.grammar.terminated:
            row.done, row.finish_reason = True, "stop"
        stops = row.params.stop
        # the text is needed every step only to find stop strings or to stream
        watch = bool(stops) or row.on_text is not None
        if watch:
            row.text = self.decode_text(row.out_ids)
        if stops and not row.done:
            hits = [(row.text.find(s), s) for s in stops if s in row.text]
            if hits:
                at, s = min(hits)
                row.text = row.text[:at]
                row.done, row.finish_reason, row.stop_reason = True, "stop", s
        if not row.done and (row.cancelled or len(row.out_ids) >= row.params.max_tokens):
            row.done, row.finish_reason = True, "length"
        if row.done and not watch:
            row.text = self.decode_text(row.out_ids)
        if row.on_text is not None:
            self._stream(row)

    @staticmethod
    def _stream(row: Row) -> None:
        assert row.on_text is not None
        text = row.text
        if not row.done:
            hold = max((len(s) - 1 for s in row.params.stop), default=0)
            cut = len(text) - hold
            # a trailing U+FFFD is half of a multi-byte character: wait for the rest
            while cut > row._sent and text[cut - 1] == "\ufffd":
                cut -= 1
            text = text[:cut]
        if len(text) > row._sent:
            row.on_text(text[row._sent :])
            row._sent = len(text)

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-align sequences; position ids count real tokens only, so padding is invisible."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        ids, mask = ids.to(self.model.device), mask.to(self.model.device)
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    @torch.inference_mode()
    def _encode(
        self, prompts: list[list[int]], slots: list[int]
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode prompts from scratch, left-padded in one forward."""
        ids, mask, pos = self._left_pad(prompts)
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

    @torch.inference_mode()
    def prefill(self, rows: list[Row]) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode the rows' prompts: their KV cache, attention mask and next-token logits.
        Identical prompts (the n samples of a request) are encoded once; with a prefix cache,
        a prompt that starts like one encoded before encodes only the rest."""
        unique: dict[tuple[int, tuple[int, ...]], int] = {}
        for r in rows:
            unique.setdefault((r.slot, tuple(r.prompt_ids)), len(unique))
        slots = [slot for slot, _ in unique]
        prompts = [list(p) for _, p in unique]
        pc = self.prefix_cache
        # keys and values computed under interventions are not shared with other requests
        found = [
            pc.longest(p) if pc is not None and not slot else (0, None)
            for slot, p in zip(slots, prompts, strict=True)
        ]
        cold = [i for i, (m, _) in enumerate(found) if m == 0]
        parts, order = [], []
        if cold:
            parts.append(self._encode([prompts[i] for i in cold], [slots[i] for i in cold]))
            order += cold
        for i, (m, kv) in enumerate(found):
            if m and kv is not None:
                parts.append(self._encode_rest(prompts[i], m, kv))
                order.append(i)
        cache, mask, logits = parts[0]
        for part in parts[1:]:
            cache, mask, logits = stack(cache, mask, logits, *part)
        if pc is not None:
            width = mask.shape[1]
            self._keep(
                cache,
                [
                    (pos, prompts[i], width - len(prompts[i]))
                    for pos, i in enumerate(order)
                    if not slots[i]
                ],
            )
        where = {u: pos for pos, u in enumerate(order)}
        sel = [where[unique[(r.slot, tuple(r.prompt_ids))]] for r in rows]
        if sel != list(range(len(order))):
            index = torch.tensor(sel, device=mask.device)
            cache.batch_select_indices(index)
            mask, logits = mask[index], logits[index]
        return cache, mask, logits

    def record(self, rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
        """Choose each row's next token, append it with its logprob, alternatives and entropy,
        and mark rows that are done. Returns the chosen tokens."""
        x = logits.float()
        want_top = max((r.params.logprobs or 0) for r in rows)  # <= 20 (SamplingParams)
        # one pass over the vocabulary (the Triton kernel on a GPU) for entropy and top-k
        entropy, top_values, top_ids = entropy_topk(x, want_top)
        nxt = self._pick(
            rows, steer_logits(logits, [(r.params.logit_bias, r.grammar) for r in rows])
        )
        # the same shift as the top-k values, so a greedy token's logprob equals its top-1
        chosen = x.gather(-1, nxt[:, None])[:, 0] - torch.logsumexp(x, -1)
        nxt_l, chosen_l, ent_l = nxt.tolist(), chosen.tolist(), entropy.tolist()
        for i, row in enumerate(rows):
            row.out_ids.append(nxt_l[i])
            if row.grammar is not None:
                row.grammar.accept(nxt_l[i])
            row.logprobs.append(chosen_l[i])
            row.entropies.append(ent_l[i])
            if row.params.logprobs:
                k = row.params.logprobs
                vals, idx = top_values[i, :k].tolist(), top_ids[i, :k].tolist()
                row.tops.append(
                    tuple(
                        TopLogprob(token_id=t, token=self.tok.decode([t]), logprob=v)
                        for t, v in zip(idx, vals, strict=True)
                    )
                )
            self._finish(row)
        return nxt

    @torch.inference_mode()
    def score_rows(
        self, prompts: list[list[int]], conts: list[list[int]], top_k: int
    ) -> list[tuple[list[float], list[tuple[TopLogprob, ...]]]]:
        """Logprob of each continuation token given everything before it. Rows whose prompt
        starts like one encoded before reuse its keys and values; the others share one forward."""
        pc = self.prefix_cache
        found = [pc.longest(p) if pc is not None else (0, None) for p in prompts]
        out: dict[int, tuple[list[float], list[tuple[TopLogprob, ...]]]] = {}
        cold = [i for i, (m, _) in enumerate(found) if m == 0]
        if cold:
            ids, mask, pos = self._left_pad([prompts[i] + conts[i] for i in cold])
            cache = DynamicCache(config=self.model.config) if pc is not None else None
            logits = self.model(
                input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache
            ).logits.float()
            self.encoded_tokens += sum(len(prompts[i]) + len(conts[i]) for i in cold)
            width = ids.shape[1]
            for row, i in enumerate(cold):
                start = width - len(conts[i]) - 1
                out[i] = self._continuation(logits[row, start : width - 1], conts[i], top_k)
            if pc is not None and cache is not None:
                self._keep(cache, [(row, prompts[i], width - len(prompts[i]) - len(conts[i]))
                                   for row, i in enumerate(cold)])  # fmt: skip
        for i, (m, kv) in enumerate(found):
            if m and kv is not None:
                full = prompts[i] + conts[i]
                # logits from the prompt's last token on: they predict the continuation
                cache, logits = self._forward_rest(full, m, kv, keep=len(conts[i]) + 1)
                out[i] = self._continuation(logits[: len(conts[i])], conts[i], top_k)
                self._keep(cache, [(0, prompts[i], 0)])
        return [out[i] for i in range(len(prompts))]

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

    def _continuation(
        self, logits: torch.Tensor, cont: list[int], top_k: int
    ) -> tuple[list[float], list[tuple[TopLogprob, ...]]]:
        logp = torch.log_softmax(logits, -1)
        index = torch.tensor(cont, device=logits.device)[:, None]
        chosen = logp.gather(-1, index)[:, 0].tolist()
        tops: list[tuple[TopLogprob, ...]] = []
        if top_k:
            t = logp.topk(top_k, -1)
            for vals, idx in zip(t.values.tolist(), t.indices.tolist(), strict=True):
                tops.append(
                    tuple(
                        TopLogprob(token_id=j, token=self.tok.decode([j]), logprob=v)
                        for j, v in zip(idx, vals, strict=True)
                    )
                )
        return chosen, tops


def _row_kv(layers: list[Any], row: int, start: int) -> KV:
    """One row's keys and values without its left padding, copied out of the batch."""
    return [
        (x.keys[row : row + 1, :, start:].clone(), x.values[row : row + 1, :, start:].clone())
        for x in layers
    ]
