"""Choosing tokens from a local model's logits, and knowing when a row is done: `Row` (one
sample being generated), `Sampler`, and `generations` (finished rows as `Generation`s).

Each row samples with its own `torch.Generator`, so a seeded request gives the same tokens
alone or in any batch. Logprobs are the raw model distribution (before temperature / top-k /
top-p / min-p), as in vLLM. A row with a response format or a `logit_bias` samples from logits
steered by `grammar.py`; the other rows of the batch sample from untouched logits. A row is done
at EOS, when its grammar terminates, at a stop string (cut exactly), at `max_tokens`, or when
its caller went away. The forwards that produce the logits are `forward.py`'s part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from agentic.core import Generation, SamplingParams, TopLogprob, Usage
from backends.hf.grammar import RowGrammar, steer_logits
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


class Sampler:
    """What choosing and stopping need from the tokenizer; one per model."""

    def __init__(self, tokenizer: Any, eos_ids: set[int]) -> None:
        self.tok = tokenizer
        self.eos_ids = eos_ids

    def decode_text(self, ids: list[int]) -> str:
        return str(self.tok.decode(ids, skip_special_tokens=True))

    def record(self, rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
        """Choose each row's next token, append it with its logprob, alternatives and entropy,
        and mark rows that are done. Returns the chosen tokens."""
        x = logits.float()
        want_top = max((r.params.logprobs or 0) for r in rows)  # <= 20 (SamplingParams)
        # one pass over the vocabulary (the Triton kernel on a GPU) for entropy and top-k
        entropy, top_values, top_ids = entropy_topk(x, want_top)
        nxt = self.pick(
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
            self.finish(row)
        return nxt

    def pick(self, rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
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

    def finish(self, row: Row) -> None:
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

    @torch.inference_mode()
    def continuation(
        self, logits: torch.Tensor, cont: list[int], top_k: int
    ) -> tuple[list[float], list[tuple[TopLogprob, ...]]]:
        """Logprobs of the tokens `cont` under the logits that predict them (`Forwards.score`),
        and the `top_k` alternatives at each position."""
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


def generations(rows: list[Row], seconds: float) -> list[Generation]:
    """The finished rows of one request as its `Generation`s (the first carries the request's
    prompt tokens, model call and `seconds`)."""
    out = []
    for j, r in enumerate(rows):
        want = r.params.logprobs
        out.append(
            Generation(
                text=r.text,
                token_ids=tuple(r.out_ids),
                token_logprobs=tuple(r.logprobs) if want is not None else None,
                top_logprobs=tuple(r.tops) if want else None,
                entropies=tuple(r.entropies),
                finish_reason="stop" if r.finish_reason == "stop" else "length",
                stop_reason=r.stop_reason,
                usage=Usage(
                    prompt_tokens=len(r.prompt_ids) if j == 0 else 0,
                    completion_tokens=len(r.out_ids),
                    model_calls=1 if j == 0 else 0,
                    seconds=seconds if j == 0 else 0.0,
                ),
            )
        )
    return out
