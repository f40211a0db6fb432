"""Torch reference implementations of the four kernels: the semantics, written plainly.

Each runs anywhere torch does (CPU, CUDA, MPS) and defines what the Triton kernels in
`kernels.triton_ops` must compute; the tests hold the Triton kernels to these, and these to naive
float64 formulas. The public functions in `kernels` pick between the two (see
`kernels.dispatch.backend_for`).

- `steer_add`: activation steering, one table row per batch element, row 0 a bit-exact no-op.
- `gated_residual`: a per-sequence layer router: keep a layer's output or skip back to its input.
- `row_l2_delta`: per-token L2 size of what a layer wrote, and of what it read ("void" detection).
- `entropy_topk`: sampling-time statistics from one pass over the logits.
"""

from __future__ import annotations

import torch

from kernels import _checks


def steer_add(
    hidden: torch.Tensor, rows: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """hidden[b, t] + weights[rows[b]] * vectors[rows[b]], in float32, cast back to hidden.dtype.

    hidden (B, T, D); rows (B,) integer index into the table; vectors (R, D); weights (R,).
    Batch elements with rows[b] == 0 come back bit-identical to hidden[b]: table row 0 is the
    no-op, so a batch can mix steered and unsteered sequences without perturbing the latter.
    Returns a new tensor."""
    _checks.steer_add(hidden, rows, vectors, weights)
    return _steer_add(hidden, rows, vectors, weights)


def _steer_add(
    hidden: torch.Tensor, rows: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    idx = rows.long()
    add = weights.float()[idx][:, None, None] * vectors.float()[idx][:, None, :]
    out = (hidden.float() + add).to(hidden.dtype)
    # `where`, not `+ 0`: row 0 is the no-op whatever the table holds there, and -0.0 + 0.0
    # would come back as +0.0.
    return torch.where((idx == 0)[:, None, None], hidden, out)


def gated_residual(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """after[b] where keep[b] else before[b]: exact copies. before, after (B, T, D) of one dtype;
    keep (B,) bool."""
    _checks.gated_residual(before, after, keep)
    return _gated_residual(before, after, keep)


def _gated_residual(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.where(keep[:, None, None], after, before)


def row_l2_delta(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(||after - before||_2, ||before||_2) over the last axis, each (B, T) float32, accumulated
    in float32. before, after (B, T, D) of one shape (dtypes may differ)."""
    _checks.pair(before, after, same_dtype=False)
    return _row_l2_delta(before, after)


def _row_l2_delta(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b = before.float()
    delta = torch.linalg.vector_norm(after.float() - b, dim=-1)
    return delta, torch.linalg.vector_norm(b, dim=-1)


def entropy_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy (nats) of softmax(logits) and its k most likely tokens.

    logits (B, V), any float dtype, computed in float32; 0 <= k <= 64. Returns entropy (B,)
    float32, top_logprobs (B, k) float32 (log-softmax values, descending) and top_ids (B, k)
    int64. k == 0 gives (B, 0) tensors. Tied logits may come in any order."""
    _checks.entropy_topk(logits, k)
    return _entropy_topk(logits, k)


def _entropy_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    logp = x - lse[:, None]
    p = logp.exp()
    # p == 0 where a logit is -inf (masked vocabulary); 0 * -inf would be nan.
    entropy = -torch.where(p > 0, p * logp, 0.0).sum(dim=-1)
    if k == 0:
        b = x.shape[0]
        empty = torch.empty((b, 0), dtype=torch.float32, device=x.device)
        return entropy, empty, torch.empty((b, 0), dtype=torch.int64, device=x.device)
    # top-k of the logits, then the shift: the same float32 subtraction the kernel does.
    values, ids = torch.topk(x, k, dim=-1)
    return entropy, values - lse[:, None], ids
