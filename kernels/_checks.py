"""Argument checks shared by the torch references and the Triton launchers.

They look only at shapes, dtypes and devices (metadata): reading a value of a CUDA tensor would
synchronize the stream on every decode step. So `rows` values are range-checked only when `rows`
lives on the CPU; on a GPU an out-of-range row is the caller's bug, as in any gather kernel.
"""

from __future__ import annotations

import torch

HIDDEN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_TOP_K = 64


def _tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _float(name: str, t: torch.Tensor) -> None:
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def _same_device(ref_name: str, ref: torch.Tensor, **others: torch.Tensor) -> None:
    for name, t in others.items():
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def activations(name: str, t: object) -> torch.Tensor:
    """A (B, T, D) residual-stream tensor in one of the model dtypes."""
    t = _tensor(name, t)
    if t.dim() != 3:
        raise ValueError(f"{name} must be 3-D (B, T, D), got shape {_shape(t)}")
    if t.dtype not in HIDDEN_DTYPES:
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got dtype {t.dtype}")
    return t


def steer_add(hidden: object, rows: object, vectors: object, weights: object) -> None:
    h = activations("hidden", hidden)
    r = _tensor("rows", rows)
    v = _tensor("vectors", vectors)
    w = _tensor("weights", weights)
    b, _, d = h.shape
    if r.dim() != 1 or r.shape[0] != b:
        raise ValueError(f"rows has shape {_shape(r)} but hidden has batch {b}; want ({b},)")
    if r.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"rows must be int64 (or int32), got dtype {r.dtype}")
    if v.dim() != 2 or v.shape[1] != d or v.shape[0] < 1:
        raise ValueError(
            f"vectors has shape {_shape(v)} but hidden has width {d}; want (R, {d}) with R >= 1"
        )
    _float("vectors", v)
    n = v.shape[0]
    if w.dim() != 1 or w.shape[0] != n:
        raise ValueError(f"weights has shape {_shape(w)} but vectors has {n} rows; want ({n},)")
    _float("weights", w)
    _same_device("hidden", h, rows=r, vectors=v, weights=w)
    if r.device.type == "cpu" and r.numel():
        lo, hi = int(r.min()), int(r.max())
        if lo < 0 or hi >= n:
            raise ValueError(f"rows holds values in [{lo}, {hi}] but vectors has {n} rows")


def pair(before: object, after: object, same_dtype: bool) -> torch.Tensor:
    """Checks two (B, T, D) tensors of one shape; returns `before`."""
    b = activations("before", before)
    a = activations("after", after)
    if a.shape != b.shape:
        raise ValueError(f"after has shape {_shape(a)} but before has shape {_shape(b)}")
    if same_dtype and a.dtype != b.dtype:
        raise ValueError(f"after has dtype {a.dtype} but before has dtype {b.dtype}")
    _same_device("before", b, after=a)
    return b


def gated_residual(before: object, after: object, keep: object) -> None:
    b = pair(before, after, same_dtype=True)
    k = _tensor("keep", keep)
    batch = b.shape[0]
    if k.dim() != 1 or k.shape[0] != batch:
        raise ValueError(
            f"keep has shape {_shape(k)} but before has batch {batch}; want ({batch},)"
        )
    if k.dtype != torch.bool:
        raise ValueError(f"keep must be a bool tensor, got dtype {k.dtype}")
    _same_device("before", b, keep=k)


def entropy_topk(logits: object, k: object) -> None:
    x = _tensor("logits", logits)
    if x.dim() != 2:
        raise ValueError(f"logits must be 2-D (B, V), got shape {_shape(x)}")
    _float("logits", x)
    if x.shape[1] < 1:
        raise ValueError(f"logits has shape {_shape(x)}; the vocabulary must not be empty")
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an int, got {type(k).__name__}")
    if not 0 <= k <= min(MAX_TOP_K, x.shape[1]):
        raise ValueError(
            f"k={k} is out of range: want 0 <= k <= {min(MAX_TOP_K, x.shape[1])} "
            f"(at most {MAX_TOP_K} and at most the vocabulary {x.shape[1]})"
        )
