"""Triton kernels with torch reference implementations, for the model-side controls
(activation steering, layer routing, void detection) and sampling statistics.

    steer_add(hidden, rows, vectors, weights)  hidden + weights[rows] * vectors[rows]; row 0 a no-op
    gated_residual(before, after, keep)        per sequence: a layer's output, or its input
    row_l2_delta(before, after)                per token: ||after - before||, ||before||
    entropy_topk(logits, k)                    entropy, top-k logprobs and ids of softmax(logits)

Each public function checks its arguments (ValueError naming the argument) and runs the Triton
kernel on CUDA tensors, the torch reference elsewhere (`backend_for`, `kernels.dispatch`). The
implementations are importable on their own: `kernels.reference.<op>` (torch only) and
`kernels.triton_ops.<op>` (imports triton). Depends only on torch and triton; importing
`kernels` does not import triton, and without triton everything runs on the references.
"""

from kernels import reference
from kernels.dispatch import (
    Backend,
    backend_for,
    entropy_topk,
    gated_residual,
    row_l2_delta,
    steer_add,
    triton_available,
)

__all__ = [
    "Backend",
    "backend_for",
    "entropy_topk",
    "gated_residual",
    "reference",
    "row_l2_delta",
    "steer_add",
    "triton_available",
]
