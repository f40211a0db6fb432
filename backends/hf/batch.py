"""`RunningBatch`: the rows a `TransformersBackend` decodes together (continuous batching).

Rows join between steps: their prompts are prefilled on their own (`Forwards.prefill`), then
their KV cache is left-padded and stacked onto the running one (`forward.stack`). Each step
chooses every row's next token (`Sampler.record`), lets finished rows (EOS, stop string,
`max_tokens`) leave the batch and the KV cache at once, so the others do not pay for them, and
runs one decode forward for the rest (`Forwards.decode`). Position ids count each row's real
tokens, so padding anywhere is invisible. Joining needs plain per-layer KV tensors; models with
sliding-window or other stateful cache layers (Gemma-3) take new rows only when the batch is
empty.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from backends.hf.forward import Forwards, joinable, stack, trim
from backends.hf.sampling import Row, Sampler


class RunningBatch:
    """Rows decoded together; they join between steps and leave as soon as they finish."""

    def __init__(self, forwards: Forwards, sampler: Sampler) -> None:
        self.forwards = forwards
        self.sampler = sampler
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None

    @property
    def joinable(self) -> bool:
        return joinable(self.cache)

    @torch.inference_mode()
    def join(self, rows: list[Row]) -> None:
        if not rows:
            return
        if self.rows and not self.joinable:
            raise RuntimeError("this model's KV cache cannot take rows mid-batch")
        cache, mask, logits = self.forwards.prefill([(r.slot, r.prompt_ids) for r in rows])
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
        nxt = self.sampler.record(self.rows, self.logits)
        keep = [i for i, r in enumerate(self.rows) if not r.done]
        if not keep:
            self.rows, self.cache, self.mask, self.logits = [], None, None, None
            return
        if len(keep) < len(self.rows):
            sel = torch.tensor(keep, device=self.mask.device)
            self.cache.batch_select_indices(sel)
            self.mask, nxt = self.mask[sel], nxt[sel]
            self.rows = [self.rows[i] for i in keep]
            self.mask = trim(self.cache, self.mask)
        self.mask, self.logits = self.forwards.decode(
            self.cache, self.mask, nxt, [r.slot for r in self.rows]
        )
