"""Triton implementations of the four kernels, same signatures and semantics as
`kernels.reference` (see there for what each computes).

Why kernels at all: each op sits inside a forward hook that runs per layer per decode step, where
eager torch launches several kernels and materializes float32 temporaries of the whole
activation (steer_add: gather, gather, multiply, upcast, add, downcast, select). Here each op is
one pass over memory: read the activations once, write the result once.

The three activation kernels share one tiling: the (B, T, D) input is walked as B*T rows of D,
through its strides (no copy for non-contiguous inputs), in (BLOCK_R, BLOCK_D) tiles, and the
per-batch-element operand (table row, keep flag) is gathered per row, so a decode step (T == 1)
still fills whole tiles. `entropy_topk` lives in `kernels.triton_entropy` and is re-exported.

Every launch passes enable_fp_fusion=False: no fused multiply-add, so a GPU rounds as the torch
reference does (multiply, round, add, round), at no cost to these memory-bound kernels.

Importing this module imports triton. Under TRITON_INTERPRET=1 (set before the import) the
kernels run on CPU tensors through Triton's interpreter; the launchers then pick a few large
tiles, because the interpreter pays per program instance.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _checks
from kernels.triton_entropy import entropy_topk  # re-exported: one module for all four ops

__all__ = ["entropy_topk", "gated_residual", "row_l2_delta", "steer_add"]


def _tiles(rows: int, d: int, on_gpu: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_D): about 4K elements a program on a GPU, up to 1M in the interpreter."""
    if on_gpu:
        block_d = min(triton.next_power_of_2(d), 1024)
        budget = 4096
    else:
        block_d = min(triton.next_power_of_2(d), 8192)
        budget = 1 << 20
    return max(1, min(triton.next_power_of_2(rows), budget // block_d)), block_d


@triton.jit
def _steer_add_kernel(  # type: ignore[no-untyped-def]
    h_ptr, rows_ptr, vec_ptr, w_ptr, out_ptr,
    n_rows, T, D, sh_b, sh_t, sh_d, sv_r, sv_d,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = r < n_rows
    b = r // T
    idx = tl.load(rows_ptr + b, mask=rmask, other=0).to(tl.int64)
    steered = rmask & (idx != 0)
    scale = tl.load(w_ptr + idx, mask=steered, other=0.0).to(tl.float32)
    mask = rmask[:, None] & (d < D)[None, :]
    h = tl.load(h_ptr + (b * sh_b + (r % T) * sh_t)[:, None] + d[None, :] * sh_d, mask=mask)
    # Row-0 elements never read the table: no traffic, and no rounding of their values.
    smask = mask & steered[:, None]
    v = tl.load(vec_ptr + idx[:, None] * sv_r + d[None, :] * sv_d, mask=smask, other=0.0)
    y = (h.to(tl.float32) + scale[:, None] * v.to(tl.float32)).to(h.dtype)
    tl.store(out_ptr + r[:, None] * D + d[None, :], tl.where(smask, y, h), mask=mask)


@triton.jit
def _gated_residual_kernel(  # type: ignore[no-untyped-def]
    b_ptr, a_ptr, keep_ptr, out_ptr,
    n_rows, T, D, sb_b, sb_t, sb_d, sa_b, sa_t, sa_d,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = r < n_rows
    bt = r // T
    t = r % T
    keep = tl.load(keep_ptr + bt, mask=rmask, other=0)
    mask = rmask[:, None] & (d < D)[None, :]
    # Each element is read from one source only: 2 memory passes instead of torch.where's 3.
    take_a = mask & (keep != 0)[:, None]
    take_b = mask & (keep == 0)[:, None]
    a = tl.load(a_ptr + (bt * sa_b + t * sa_t)[:, None] + d[None, :] * sa_d, mask=take_a)
    x = tl.load(b_ptr + (bt * sb_b + t * sb_t)[:, None] + d[None, :] * sb_d, mask=take_b)
    tl.store(out_ptr + r[:, None] * D + d[None, :], tl.where(take_a, a, x), mask=mask)


@triton.jit
def _row_l2_delta_kernel(  # type: ignore[no-untyped-def]
    b_ptr, a_ptr, delta_ptr, base_ptr,
    n_rows, T, D, sb_b, sb_t, sb_d, sa_b, sa_t, sa_d,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = r < n_rows
    bt = r // T
    t = r % T
    row_b = (bt * sb_b + t * sb_t)[:, None]
    row_a = (bt * sa_b + t * sa_t)[:, None]
    acc_delta = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    acc_base = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
        mask = rmask[:, None] & (d < D)[None, :]
        x = tl.load(b_ptr + row_b + d[None, :] * sb_d, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(a_ptr + row_a + d[None, :] * sa_d, mask=mask, other=0.0).to(tl.float32)
        diff = y - x
        acc_delta += diff * diff
        acc_base += x * x
    tl.store(delta_ptr + r, tl.sqrt(tl.sum(acc_delta, axis=1)), mask=rmask)
    tl.store(base_ptr + r, tl.sqrt(tl.sum(acc_base, axis=1)), mask=rmask)


def steer_add(
    hidden: torch.Tensor, rows: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Triton `kernels.reference.steer_add`."""
    _checks.steer_add(hidden, rows, vectors, weights)
    return _steer_add(hidden, rows, vectors, weights)


def _steer_add(
    hidden: torch.Tensor, rows: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    b, t, d = hidden.shape
    out = torch.empty((b, t, d), dtype=hidden.dtype, device=hidden.device)
    if out.numel() == 0:
        return out
    block_r, block_d = _tiles(b * t, d, hidden.is_cuda)
    grid = (triton.cdiv(b * t, block_r), triton.cdiv(d, block_d))
    _steer_add_kernel[grid](
        hidden, rows.contiguous(), vectors, weights.contiguous(), out,
        b * t, t, d, *hidden.stride(), *vectors.stride(),
        BLOCK_R=block_r, BLOCK_D=block_d,
        enable_fp_fusion=False,
    )  # fmt: skip
    return out


def gated_residual(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Triton `kernels.reference.gated_residual`."""
    _checks.gated_residual(before, after, keep)
    return _gated_residual(before, after, keep)


def _gated_residual(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    b, t, d = before.shape
    out = torch.empty((b, t, d), dtype=before.dtype, device=before.device)
    if out.numel() == 0:
        return out
    block_r, block_d = _tiles(b * t, d, before.is_cuda)
    grid = (triton.cdiv(b * t, block_r), triton.cdiv(d, block_d))
    _gated_residual_kernel[grid](
        before, after, keep.contiguous().view(torch.uint8), out,
        b * t, t, d, *before.stride(), *after.stride(),
        BLOCK_R=block_r, BLOCK_D=block_d,
        enable_fp_fusion=False,
    )  # fmt: skip
    return out


def row_l2_delta(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton `kernels.reference.row_l2_delta`."""
    _checks.pair(before, after, same_dtype=False)
    return _row_l2_delta(before, after)


def _row_l2_delta(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, t, d = before.shape
    delta = torch.empty((b, t), dtype=torch.float32, device=before.device)
    base = torch.empty((b, t), dtype=torch.float32, device=before.device)
    if delta.numel() == 0:
        return delta, base
    if d == 0:
        return delta.zero_(), base.zero_()
    block_r, block_d = _tiles(b * t, d, before.is_cuda)
    # One program per BLOCK_R rows; it loops over D, so no cross-program reduction is needed.
    _row_l2_delta_kernel[(triton.cdiv(b * t, block_r),)](
        before, after, delta, base,
        b * t, t, d, *before.stride(), *after.stride(),
        BLOCK_R=block_r, BLOCK_D=block_d,
        enable_fp_fusion=False,
    )  # fmt: skip
    return delta, base
