"""Triton `entropy_topk`: entropy and top-k log-probabilities of softmax(logits) in one read of
the logits, top-k included (no torch.topk, no log_softmax tensor).

Why: a sampler that wants per-token entropy and top logprobs (entropy-guided search, logprob
reporting) otherwise materializes log_softmax over the vocabulary (B x 262144 float32 for
Gemma) and reads it three more times (exp, sum, topk).

How, per row of logits:
- The vocabulary is cut into `splits` spans; one program streams over its span in BLOCK_V
  chunks keeping an online log-sum-exp: running max m, s = sum exp(x - m) and
  t = sum exp(x - m) * (x - m), rescaled when m grows. Keeping t relative to m makes the
  entropy log(s) - t/s free of the cancellation that lse - E[x] suffers on peaked rows.
- Top-k candidates are KP = next_power_of_2(k) int64 keys: the float32 logit mapped to an
  order-preserving int32 in the high half, (2^31 - 1 - token id) in the low half, so one integer
  comparison orders by value, ties toward the lower id, and every key is distinct. A chunk is
  merged only when its best key beats the running k-th, which after the first chunks is rare
  for real logits. The default merge takes the chunk's keys above the k-th one at a time by
  max-reduction (at most KP rounds; works on any Triton and in the interpreter). The other,
  `launch(..., bitonic=True)`, runs Triton's bitonic `tl.topk` on the chunk and on the union
  (Triton >= 3.4): fewer rounds, but it compiles in ~20 s per k and the interpreter runs it at
  ~1 ms per element; benchmarks/kernels_gpu.py times both so the default can follow the data.
- With one span the program writes the results itself; otherwise a second kernel combines the
  spans' (m, s, t) the same way and the top-k of their candidates. Splitting gives a small batch
  enough programs; a large batch gets one span a row and a single launch.
- The k results are written in order by rank (how many candidates beat each), so no sort.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels import _checks

HAS_TOPK = hasattr(tl, "topk")

# Below the key of every logit but a negative NaN.
_EMPTY = tl.constexpr(-9223372036854775807)


@triton.jit
def _pack(x, idx):  # type: ignore[no-untyped-def]
    bits = x.to(tl.int32, bitcast=True)
    # Negative floats order backwards as integers: flip their magnitude bits.
    key32 = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (key32.to(tl.int64) << 32) | (0x7FFFFFFF - idx).to(tl.int64)


@triton.jit
def _merge(best, keys, KP: tl.constexpr, BITONIC: tl.constexpr):  # type: ignore[no-untyped-def]
    """The KP largest of `best` (KP keys) and `keys` (a chunk), in any order."""
    if BITONIC:
        best = tl.topk(tl.reshape(tl.join(best, tl.topk(keys, KP)), [2 * KP]), KP)
    else:
        slot = tl.arange(0, KP)
        cand = tl.where(keys > tl.min(best, axis=0), keys, _EMPTY)
        n = tl.minimum(tl.sum((cand != _EMPTY).to(tl.int32), axis=0), KP)
        for _ in range(n):
            top = tl.max(cand, axis=0)
            # Keys are distinct, so `== top` removes exactly one; the slot is the current minimum.
            low = tl.argmin(best, axis=0)
            best = tl.where((slot == low) & (top > tl.min(best, axis=0)), top, best)
            cand = tl.where(cand == top, _EMPTY, cand)
    return best


@triton.jit
def _finish(  # type: ignore[no-untyped-def]
    row, m, s, t, best, ent_ptr, top_ptr, ids_ptr, k, KP: tl.constexpr, TOPK: tl.constexpr
):
    """Writes the entropy and, with TOPK, the top-k from (m, s, t) and the packed candidates."""
    log_s = tl.log(s)
    tl.store(ent_ptr + row, log_s - t / s)
    if TOPK:
        key32 = (best >> 32).to(tl.int32)
        value = tl.where(key32 < 0, key32 ^ 0x7FFFFFFF, key32).to(tl.float32, bitcast=True)
        ids = 0x7FFFFFFF - (best & 0xFFFFFFFF)
        # Output position = how many candidates are larger (only _EMPTY fillers can tie).
        rank = tl.sum((best[None, :] > best[:, None]).to(tl.int32), axis=1)
        keep = (rank < k) & (best != _EMPTY)
        tl.store(top_ptr + row * k + rank, value - (m + log_s), mask=keep)
        tl.store(ids_ptr + row * k + rank, ids, mask=keep)


@triton.jit
def _span_kernel(  # type: ignore[no-untyped-def]
    x_ptr, stride_x, V, span,
    m_ptr, s_ptr, t_ptr, key_ptr, splits,
    ent_ptr, top_ptr, ids_ptr, k,
    BLOCK_V: tl.constexpr, KP: tl.constexpr, TOPK: tl.constexpr, BITONIC: tl.constexpr,
    FINAL: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    start = split * span
    # m stays finite (0 while every logit so far is -inf) so exp(x - m) never sees inf - inf.
    m = tl.full([], 0.0, tl.float32)
    seen = tl.full([], float("-inf"), tl.float32)
    s = tl.full([], 0.0, tl.float32)
    t = tl.full([], 0.0, tl.float32)
    best = tl.full([KP], _EMPTY, tl.int64)
    for off in range(0, span, BLOCK_V):
        i = start + off + tl.arange(0, BLOCK_V).to(tl.int64)
        inside = i < V
        x = tl.load(x_ptr + row * stride_x + i, mask=inside, other=float("-inf")).to(tl.float32)
        seen = tl.maximum(seen, tl.max(x, axis=0))
        m_new = tl.where(seen == float("-inf"), 0.0, seen)
        alpha = tl.exp(m - m_new)
        # Re-base t on the new max: (x - m) = (x - m_new) + (m - m_new).
        t = alpha * (t + (m - m_new) * s)
        s = alpha * s
        e = tl.exp(x - m_new)
        s += tl.sum(e, axis=0)
        # Where e == 0 (x == -inf), e * (x - m) would be 0 * -inf = nan.
        t += tl.sum(e * tl.where(e > 0, x - m_new, 0.0), axis=0)
        m = m_new
        if TOPK:
            keys = tl.where(inside, _pack(x, i), _EMPTY)
            if tl.max(keys, axis=0) > tl.min(best, axis=0):
                best = _merge(best, keys, KP, BITONIC)
    if FINAL:
        _finish(row, m, s, t, best, ent_ptr, top_ptr, ids_ptr, k, KP, TOPK)
    else:
        at = row * splits + split
        tl.store(m_ptr + at, m)
        tl.store(s_ptr + at, s)
        tl.store(t_ptr + at, t)
        if TOPK:
            tl.store(key_ptr + at * KP + tl.arange(0, KP), best)


@triton.jit
def _combine_kernel(  # type: ignore[no-untyped-def]
    m_ptr, s_ptr, t_ptr, key_ptr, splits,
    ent_ptr, top_ptr, ids_ptr, k,
    SP: tl.constexpr, KP: tl.constexpr, TOPK: tl.constexpr, BITONIC: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, SP)
    valid = j < splits
    at = row * splits + j
    m_j = tl.load(m_ptr + at, mask=valid, other=0.0)
    s_j = tl.load(s_ptr + at, mask=valid, other=0.0)
    t_j = tl.load(t_ptr + at, mask=valid, other=0.0)
    # A span whose logits are all -inf has s == 0 and a placeholder m of 0: it must not vote.
    m = tl.max(tl.where(s_j > 0, m_j, float("-inf")), axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)
    alpha = tl.where(s_j > 0, tl.exp(m_j - m), 0.0)
    s = tl.sum(alpha * s_j, axis=0)
    t = tl.sum(alpha * (t_j + (m_j - m) * s_j), axis=0)
    best = tl.full([KP], _EMPTY, tl.int64)
    if TOPK:
        keys = tl.load(
            key_ptr + at[:, None] * KP + tl.arange(0, KP)[None, :],
            mask=valid[:, None],
            other=_EMPTY,
        )
        best = _merge(best, tl.reshape(keys, [SP * KP]), KP, BITONIC)
    _finish(row, m, s, t, best, ent_ptr, top_ptr, ids_ptr, k, KP, TOPK)


def entropy_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton `kernels.reference.entropy_topk` (same values; top-k done in-kernel)."""
    _checks.entropy_topk(logits, k)
    return _entropy_topk(logits, k)


def _entropy_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = logits.shape[0]
    if logits.is_cuda:
        # ~512 programs in all: enough to fill an H100's 132 SMs at B=1 without tiny spans.
        return launch(logits, k, block_v=4096, splits=max(1, 512 // max(b, 1)), bitonic=False)
    # The interpreter pays per program and per operation: one span a row, big chunks.
    return launch(logits, k, block_v=1 << 16, splits=1, bitonic=False)


def launch(
    logits: torch.Tensor, k: int, *, block_v: int, splits: int, bitonic: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs the kernels with an explicit chunk size (a power of two), at most `splits` spans a
    row, and a merge strategy. Unchecked: the tests and the benchmark use it to reach each path.
    """
    if bitonic and not HAS_TOPK:
        raise ValueError(
            f"bitonic=True needs tl.topk (Triton >= 3.4), not Triton {triton.__version__}"
        )
    b, v = logits.shape
    dev = logits.device
    entropy = torch.empty((b,), dtype=torch.float32, device=dev)
    top = torch.empty((b, k), dtype=torch.float32, device=dev)
    ids = torch.empty((b, k), dtype=torch.int64, device=dev)
    if b == 0:
        return entropy, top, ids
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    kp = triton.next_power_of_2(max(k, 1))
    # tl.topk wants the chunk at least KP long; 64 keeps tiny vocabularies in one chunk.
    block_v = max(64, kp, min(block_v, triton.next_power_of_2(v)))
    span = triton.cdiv(triton.cdiv(v, max(1, splits)), block_v) * block_v
    n = triton.cdiv(v, span)  # every span holds at least one logit
    ws = torch.empty((3, b * n), dtype=torch.float32, device=dev)
    keys = torch.empty((b * n * kp if k and n > 1 else 1,), dtype=torch.int64, device=dev)
    # enable_fp_fusion=False: no FMA contraction, rounding as the torch reference does.
    _span_kernel[(b, n)](
        logits, logits.stride(0), v, span,
        ws[0], ws[1], ws[2], keys, n,
        entropy, top, ids, k,
        BLOCK_V=block_v, KP=kp, TOPK=k > 0, BITONIC=bitonic, FINAL=n == 1,
        enable_fp_fusion=False,
    )  # fmt: skip
    if n > 1:
        _combine_kernel[(b,)](
            ws[0], ws[1], ws[2], keys, n,
            entropy, top, ids, k,
            SP=triton.next_power_of_2(n), KP=kp, TOPK=k > 0, BITONIC=bitonic,
            enable_fp_fusion=False,
        )  # fmt: skip
    return entropy, top, ids
