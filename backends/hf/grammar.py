"""Constrained decoding for local models: a `ResponseFormat` becomes a token mask per step.

Built on xgrammar (Dong et al., "XGrammar: Flexible and Efficient Structured Generation Engine
for Large Language Models", 2024), the engine vLLM uses by default: a JSON schema, a regular
expression or an EBNF grammar is compiled once per tokenizer into a pushdown automaton whose
context-independent tokens are precomputed, and a per-sequence `GrammarMatcher` fills a bitmask
of the tokens allowed next. Mapping to the code:

- compiled grammar (the paper's preprocessed PDA + adaptive token mask cache) -> `Grammars.compile`,
  cached here per format, since search and retries send the same format many times;
- per-sequence matcher state and `fill_next_token_bitmask` -> `RowGrammar.steer`;
- advancing the PDA with the sampled token -> `RowGrammar.accept`;
- the grammar accepting a stop token once complete -> `RowGrammar.terminated`.

The mask is applied to the logits used for *sampling* only: logprobs stay the model's own
distribution, as in vLLM. `logit_bias` is added to those same sampling logits here too.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from agentic.core import ConfigError, ResponseFormat

if TYPE_CHECKING:
    import xgrammar as xgr

# xgrammar's C++ errors start with a timestamp and a source location the user cannot act on
_CPP_NOISE = re.compile(r"^\[[\d:]+\] \S+:\d+: (Check failed: \(.*?\) is false: )?")


def _reason(e: Exception) -> str:
    return _CPP_NOISE.sub("", str(e).strip()).strip()


def format_key(fmt: ResponseFormat) -> str:
    """The cache key of a format: its canonical JSON (the schema dict makes it unhashable)."""
    return json.dumps(fmt.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class Grammars:
    """Compiled formats for one tokenizer and one logits width, least recently used evicted.

    `vocab_size` is the width of the model's logits, which may exceed `len(tokenizer)` (padded
    embedding matrices): the padding ids are never allowed."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_ids: Iterable[int], capacity: int = 64
    ) -> None:
        import xgrammar as xgr  # here, not at import: it takes a second to load

        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._capacity = capacity

    def compile(self, fmt: ResponseFormat) -> xgr.CompiledGrammar:
        key = format_key(fmt)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            if fmt.type == "json_schema":
                # no free whitespace: small models otherwise fill max_tokens with newlines
                compiled = self._compiler.compile_json_schema(
                    json.dumps(fmt.json_schema), any_whitespace=False
                )
            elif fmt.type == "regex":
                compiled = self._compiler.compile_regex(fmt.regex or "")
            else:
                compiled = self._compiler.compile_grammar(fmt.grammar or "")
        except Exception as e:  # xgrammar raises RuntimeError/ValueError subclasses for all
            raise ConfigError(
                f"response_format: invalid {fmt.type.replace('_', ' ')}: {_reason(e)}"
            ) from None
        self._cache[key] = compiled
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return compiled

    def matcher(self, fmt: ResponseFormat, prefix_ids: Sequence[int] = ()) -> RowGrammar:
        """A fresh matcher for one sample, advanced over `prefix_ids` (the assistant prefix
        the request continues), which must themselves follow the format."""
        import xgrammar as xgr

        row = RowGrammar(xgr.GrammarMatcher(self.compile(fmt)), self.vocab_size)
        for i, tid in enumerate(prefix_ids):
            if not row.matcher.accept_token(tid):
                raise ConfigError(
                    f"prefix does not follow response_format ({fmt.type}): token {i} "
                    f"({tid}) of the prefix is not allowed there"
                )
        return row


class RowGrammar:
    """The format's state for one row of the batch."""

    def __init__(self, matcher: xgr.GrammarMatcher, vocab_size: int) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        self.matcher = matcher
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def steer(self, logits: torch.Tensor) -> None:
        """Set the logits of tokens the format forbids next to -inf, in place; `logits` is one
        row shaped (1, vocab)."""
        if self.matcher.fill_next_token_bitmask(self.bitmask):
            self.xgr.apply_token_bitmask_inplace(logits, self.bitmask.to(logits.device))

    def accept(self, token_id: int) -> None:
        if not self.matcher.accept_token(token_id):
            # only reachable if sampling ignored the mask: a bug, not a user error
            raise RuntimeError(f"token {token_id} was sampled although the format forbids it")

    @property
    def terminated(self) -> bool:
        return bool(self.matcher.is_terminated())


def steer_logits(
    logits: torch.Tensor, rows: Sequence[tuple[tuple[tuple[int, float], ...], RowGrammar | None]]
) -> torch.Tensor:
    """The logits to sample from: each row's `logit_bias` added and its format's mask applied.
    Rows with neither are left as they are, so they sample exactly what they would alone; the
    input is returned untouched when no row needs anything (the logprobs come from it)."""
    touched = [i for i, (bias, grammar) in enumerate(rows) if bias or grammar is not None]
    if not touched:
        return logits
    out = logits.clone()
    for i in touched:
        bias, grammar = rows[i]
        if bias:
            ids = torch.tensor([t for t, _ in bias], device=out.device)
            out[i, ids] += torch.tensor([b for _, b in bias], dtype=out.dtype, device=out.device)
        if grammar is not None:
            grammar.steer(out[i : i + 1])
    return out
