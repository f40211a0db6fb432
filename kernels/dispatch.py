"""Which implementation runs: the Triton kernel where one can run, the torch reference elsewhere.

`backend_for(t)` is "triton" when triton imports and either `t` is a CUDA tensor, or
TRITON_INTERPRET=1 and AGENTIC_KERNELS=triton (Triton's CPU interpreter: slow, for tests).
AGENTIC_KERNELS=torch forces the references everywhere (to rule a kernel out when debugging);
unset or "auto" means the rule above. The environment is read on every call; TRITON_INTERPRET,
though, is read by triton when `kernels.triton_ops` is first imported, so set it before that.

The public functions check their arguments once (ValueError naming the argument), pick a
backend from the first tensor argument, and call that implementation's unchecked body.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from kernels import _checks, reference

Backend = Literal["triton", "torch"]
_MODES = ("", "auto", "torch", "triton")


@functools.cache
def triton_available() -> bool:
    """Whether `import triton` works here (cached: the answer cannot change in a process)."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:  # a broken install raises more than ImportError
        return False
    return True


def backend_for(t: torch.Tensor) -> Backend:
    """The implementation the public functions use for tensors like `t`."""
    mode = os.environ.get("AGENTIC_KERNELS", "").strip().lower()
    if mode not in _MODES:
        raise ValueError(f"AGENTIC_KERNELS={mode!r} is not one of auto, torch, triton")
    if mode == "torch" or not triton_available():
        return "torch"
    if t.is_cuda:
        return "triton"
    if os.environ.get("TRITON_INTERPRET") == "1" and mode == "triton":
        return "triton"
    return "torch"


def steer_add(
    hidden: torch.Tensor, rows: torch.Tensor, vectors: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """hidden[b, t] + weights[rows[b]] * vectors[rows[b]] in float32, cast back to hidden's
    dtype; rows[b] == 0 copies hidden[b] bit-exactly. See `kernels.reference.steer_add`."""
    _checks.steer_add(hidden, rows, vectors, weights)
    if backend_for(hidden) == "triton":
        from kernels import triton_ops

        return triton_ops._steer_add(hidden, rows, vectors, weights)
    return reference._steer_add(hidden, rows, vectors, weights)


def gated_residual(before: torch.Tensor, after: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """after[b] if keep[b] else before[b], exact copies. See `kernels.reference.gated_residual`."""
    _checks.gated_residual(before, after, keep)
    if backend_for(before) == "triton":
        from kernels import triton_ops

        return triton_ops._gated_residual(before, after, keep)
    return reference._gated_residual(before, after, keep)


def row_l2_delta(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(||after - before||_2, ||before||_2) per token, (B, T) float32 each. See
    `kernels.reference.row_l2_delta`."""
    _checks.pair(before, after, same_dtype=False)
    if backend_for(before) == "triton":
        from kernels import triton_ops

        return triton_ops._row_l2_delta(before, after)
    return reference._row_l2_delta(before, after)


def entropy_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Entropy (B,) and top-k log-probabilities (B, k) and ids (B, k) of softmax(logits). See
    `kernels.reference.entropy_topk`."""
    _checks.entropy_topk(logits, k)
    if backend_for(logits) == "triton":
        from kernels import triton_entropy

        return triton_entropy._entropy_topk(logits, k)
    return reference._entropy_topk(logits, k)


class Unchecked(NamedTuple):
    """One implementation's bodies, without the argument checks."""

    steer_add: Callable[..., torch.Tensor]
    gated_residual: Callable[..., torch.Tensor]
    row_l2_delta: Callable[..., tuple[torch.Tensor, torch.Tensor]]


def unchecked(t: torch.Tensor) -> Unchecked:
    """The bodies `backend_for(t)` picks, for a caller that builds the arguments itself and calls
    many times per model step (the layer hooks): on a GPU decode step the checks cost more host
    time than the kernels. Wrong arguments fail inside the implementation, not with a
    ValueError."""
    if backend_for(t) == "triton":
        from kernels import triton_ops

        return Unchecked(
            triton_ops._steer_add, triton_ops._gated_residual, triton_ops._row_l2_delta
        )
    return Unchecked(reference._steer_add, reference._gated_residual, reference._row_l2_delta)
