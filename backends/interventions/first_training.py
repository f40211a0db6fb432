"""Training half of FiRST ("FiRST: Finetuning Router-Selective Transformers for Input-Adaptive
Latency Reduction", Jain et al., 2024): `train_routers` fits a `PrefillRouter` (first.py) by
self-distillation. The paper's training objective -> code:

- soft gating while training: h_out = h_in + p_l * (f_l(h_in) - h_in) (`_hooked` with a float
  gate), p_l from the router being trained (`PrefillRouter.p_batch` with the trained params).
- loss (`_train`) = KL(full model || routed model) over next-token distributions of the text
  (self-distillation, no labels) + lam * mean_l p_l (the compute the routers spend). The model is
  frozen; only the routers train. The paper's later LoRA finetuning step is not done here.

Routers are trained on what they see at inference: by default each text is rendered as a
one-turn chat prompt, exactly as the backend renders `GenerateRequest.chat(text)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from agentic.core import ConfigError
from backends.interventions.base import ModelShape, check_layers
from backends.interventions.first import (
    PrefillRouter,
    _batch,
    _check_backend,
    _encode,
    _exclusive,
    _hooked,
    _kl,
    _log_probs,
    _pool,
    _rms,
)


async def train_routers(
    backend: Any,
    texts: Sequence[str],
    *,
    layers: Iterable[int] | None = None,
    lam: float = 3.0,
    epochs: int = 4,
    lr: float = 0.3,
    weight_lr: float = 0.003,
    batch_size: int = 2,
    max_tokens: int = 32,
    chat: bool = True,
    threshold: float = 0.5,
    max_skip: int | None = None,
    init_p: float = 0.5,
    seed: int = 0,
) -> PrefillRouter:
    """Train one router per layer in `layers` (default: every layer but 0) on `texts`, each cut
    to `max_tokens` tokens. Loss = KL(full || soft-routed) + lam * mean p_l; Adam with `lr` on
    the biases and `weight_lr` on the weights (the weights see 576-dim inputs, a bias one).

    Gates start at `init_p` = 0.5, not near 1: at p = 1 the KL is at its minimum and its gradient
    is zero, so every layer would look equally unimportant for many steps. Small batches (2)
    give more optimizer steps for the same compute, which separates the layers better."""
    _check_backend(backend)
    ok = {
        "epochs": isinstance(epochs, int) and epochs >= 1,
        "batch_size": isinstance(batch_size, int) and batch_size >= 1,
        "max_tokens": isinstance(max_tokens, int) and max_tokens >= 2,
        "lam": lam >= 0 and math.isfinite(lam),
        "lr": lr > 0,
        "weight_lr": weight_lr >= 0,
    }
    given = dict(epochs=epochs, batch_size=batch_size, max_tokens=max_tokens, lam=lam, lr=lr)
    for field in (f for f, good in ok.items() if not good):
        raise ConfigError(
            f"train_routers: {field}={(given | {'weight_lr': weight_lr})[field]!r} is out of "
            "range (epochs, batch_size >= 1; max_tokens >= 2; lam, weight_lr >= 0, finite; lr > 0)"
        )
    n = int(backend.num_layers)
    router = PrefillRouter(
        range(1, n) if layers is None else layers,
        int(backend.hidden_size),
        threshold=threshold,
        max_skip=max_skip,
        init_p=init_p,
    )
    check_layers(frozenset(router.layers), ModelShape(str(backend.name), n, 1), "train_routers")
    seqs = _encode(backend, texts, max_tokens, chat)
    settings = {"lam": lam, "epochs": epochs, "lr": lr, "weight_lr": weight_lr, "chat": chat}
    settings |= {"batch_size": batch_size, "max_tokens": max_tokens, "seed": seed}
    await _exclusive(backend, lambda: _train(backend, router, seqs, settings))
    return router


def _train(backend: Any, router: PrefillRouter, seqs: list[list[int]], s: dict[str, Any]) -> None:
    started = time.monotonic()
    model, bs = backend.model, int(s["batch_size"])
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    handles: list[Any] = []
    try:
        for p in params:
            p.requires_grad_(False)  # frozen model: only the routers learn
        # the teacher (full model) once: its log-probs, and the centre c_l of rms(x_l)
        teacher: list[torch.Tensor] = []
        pooled = torch.zeros_like(router.center)
        with torch.inference_mode():
            for i in range(0, len(seqs), bs):
                ids, mask = _batch(backend, seqs[i : i + bs])
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                lp = torch.log_softmax(out.logits[:, :-1].float(), -1)
                for j, seq in enumerate(seqs[i : i + bs]):
                    teacher.append(lp[j, : len(seq) - 1].half())  # half: 16 texts ~ 0.1 GB
                for k, layer in enumerate(router.layers):
                    pooled[k] += _rms(_pool(out.hidden_states[layer], mask)).sum(0).cpu()
        router.center = pooled / len(seqs)
        w = torch.zeros_like(router.weight, requires_grad=True)
        b = router.bias.clone().requires_grad_(True)
        opt = torch.optim.Adam(
            [{"params": [b], "lr": s["lr"]}, {"params": [w], "lr": s["weight_lr"]}]
        )
        state: dict[str, Any] = {}

        def gate(layer: int, h_in: torch.Tensor) -> torch.Tensor:
            p = router.p_batch(layer, _pool(h_in, state["mask"]), (w, b))
            state["p"].append(p)
            return p

        handles = _hooked(backend, router.layers, gate)
        gen = torch.Generator().manual_seed(int(s["seed"]))
        history: list[list[float]] = []
        with torch.enable_grad():
            for _ in range(int(s["epochs"])):
                order = torch.randperm(len(seqs), generator=gen).tolist()
                for i in range(0, len(order), bs):
                    pick = order[i : i + bs]
                    ids, mask = _batch(backend, [seqs[j] for j in pick])
                    state.update(mask=mask, p=[])
                    student = _log_probs(backend, ids, mask)
                    target = torch.zeros_like(student)
                    for r, j in enumerate(pick):
                        target[r, : teacher[j].shape[0]] = teacher[j].float()
                    kl = _kl(target, student, mask).mean()
                    cost = torch.stack(state["p"], 1).mean()
                    loss = kl + s["lam"] * cost
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    history.append([kl.item(), cost.item()])
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    router.weight, router.bias = w.detach().clone(), b.detach().clone()
    mean_p = torch.sigmoid(router.bias).tolist()
    router.info = s | {
        "model": str(backend.name),
        "texts": len(seqs),
        "steps": len(history),
        "seconds": round(time.monotonic() - started, 2),
        "kl_first": history[0][0],
        "kl_last": history[-1][0],
        "p_mean_last": history[-1][1],
        "p_bias": {str(layer): round(p, 4) for layer, p in zip(router.layers, mean_p, strict=True)},
    }
