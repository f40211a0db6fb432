"""KV tensors of prompts already encoded, so a prompt that starts the same way encodes only the
rest.

Step-wise search sends the same chat again and again with a growing `prefix`: step t+1's
prompt is step t's prompt plus the step just generated; siblings share everything up to their
parent; a judge's prompts share the question. Attention is causal, so the keys and values of a
prompt's first m tokens do not depend on what follows them: the cache keeps, per encoded
prompt, its per-layer keys and values (batch 1, no padding), and a new prompt reuses those of
the longest common token prefix with any kept prompt.

Bounded in tokens, least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, tokens, dim]


def _common(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens
        self.tokens = 0
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: list[int], *, fresh: int = 1) -> tuple[int, KV | None]:
        """The longest reusable prefix of `ids`, leaving at least its last `fresh` tokens to be
        encoded (1 by default: the caller needs the last token's logits), and its keys and
        values."""
        best, hit = 0, None
        for seq in self._entries:
            m = min(_common(seq, ids), len(ids) - fresh)
            if m > best:
                best, hit = m, seq
        if hit is None:
            return 0, None
        self._entries.move_to_end(hit)
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in self._entries[hit]]

    def add(self, ids: list[int], kv: KV) -> None:
        key = tuple(ids)
        if key in self._entries or len(ids) > self.max_tokens:
            return
        self._entries[key] = kv
        self.tokens += len(ids)
        while self.tokens > self.max_tokens:
            old, _ = self._entries.popitem(last=False)
            self.tokens -= len(old)
