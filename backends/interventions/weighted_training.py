"""Training the weighted-steering controller ("Guiding Giants: Lightweight Controllers for
Weighted Activation Steering in LLMs", Hegazy et al., 2025); the intervention and the symbols
are in `backends.interventions.weighted`.

Training (`train_weighted_controller`) runs through the frozen model with autograd:

    L = mean_{harmful} [-1/|R| sum_t log p_steered(R_t | x, R_<t)]
      + mean_{benign}  [1/K sum_t KL(p_plain(. | x, y_<t) || p_steered(. | x, y_<t))
                        + lambda * s(x) / s_max]

R is a refusal answer (default "I'm sorry, but I can't help with that.") placed as the
assistant turn after the chat template; y is the unsteered model's own greedy answer to the
benign prompt (first K tokens), decoded once without gradients, and p_plain its unsteered
next-token distributions. Only the controller's parameters are trained.

A second objective, ours rather than the paper's (`train_scale_controller`), fits (s, w) to
targets from the prompt features alone, without running the model: s = s_max, w = 1 on harmful
prompts, s = 0 on benign ones (binary cross-entropy on s / s_max and w). With `gate` the scale is
snapped at inference to s_max when s >= gate * s_max and to 0 otherwise: a classifier-gated
fixed vector. It exists because on SmolLM2-135M the refusal-likelihood objective settles below
the coefficient that flips answers, and any coefficient large enough to flip them also changes
almost every benign answer it touches, so a benign prompt must get exactly zero.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import torch

from agentic.core import ConfigError, GenerateRequest
from backends.interventions.base import ModelShape
from backends.interventions.hooks import decoder_layers
from backends.interventions.weighted import (
    SteeringController,
    WeightedSteering,
    steering_directions,
)

REFUSAL = "I'm sorry, but I can't help with that."
_Item = tuple[list[int], int, torch.Tensor | None]  # (prompt + answer ids, answer start, p_plain)


def _steer_hooks(
    layers: torch.nn.ModuleList, directions: dict[int, torch.Tensor], coef: torch.Tensor
) -> list[Any]:
    """Forward hooks adding coef[:, k] * d_k to the output of each steered layer k."""
    handles = []
    for k, (x, d) in enumerate(directions.items()):

        def hook(_m: Any, _i: Any, out: Any, k: int = k, d: torch.Tensor = d) -> Any:
            h = out[0] if isinstance(out, tuple) else out
            h = h + coef[:, k, None, None].to(h.device, h.dtype) * d.to(h.device, h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handles.append(layers[x].register_forward_hook(hook))
    return handles


def _forward_logprobs(
    model: Any, seqs: list[list[int]], spans: list[tuple[int, int]], pad: int
) -> list[torch.Tensor]:
    """Log-probs (n_i, V) predicting seq[a:b] for each (a, b) in spans; right padding, so every
    real token keeps its position; the vocabulary projection runs only where needed."""
    width = max(len(s) for s in seqs)
    dev = model.device
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    hidden = model.get_decoder()(
        input_ids=ids.to(dev), attention_mask=mask.to(dev)
    ).last_hidden_state
    head = model.get_output_embeddings()
    return [
        torch.log_softmax(head(hidden[i, a - 1 : b - 1]).float(), -1)
        for i, (a, b) in enumerate(spans)
    ]


async def train_weighted_controller(
    backend: Any,
    directions: Any,
    harmful: Sequence[str],
    benign: Sequence[str],
    *,
    read_layer: int,
    epochs: int = 3,
    batch_size: int = 8,
    s_max: float = 0.5,
    width: int = 32,
    lr: float = 0.1,
    scale_penalty: float = 0.1,
    benign_tokens: int = 16,
    refusal: str = REFUSAL,
    seed: int = 0,
) -> WeightedSteering:
    """Fit a `SteeringController` on `harmful` / `benign` prompts (the objective is in the
    module docstring) and return the `WeightedSteering` that uses it. `s_max` caps each layer's
    coefficient s * w_l in units of the directions: a mean-difference direction added at several
    layers at once already breaks a small model's text at a summed coefficient near 1. Needs a
    local `TransformersBackend`; holds its forward lock during each step, and keeps the benign
    answers' plain distributions (K x vocabulary floats per prompt) in memory."""
    _check_inputs(
        backend,
        harmful,
        benign,
        {"epochs": epochs, "batch_size": batch_size, "benign_tokens": benign_tokens},
    )
    if not refusal:
        raise ConfigError("refusal is empty: give the answer harmful prompts should start with")
    started = time.perf_counter()
    dirs = steering_directions(directions, None)
    with torch.random.fork_rng():  # a seeded initialization, without moving the global RNG
        torch.manual_seed(seed)
        controller = SteeringController(backend.hidden_size, len(dirs), s_max=s_max, width=width)
    steering = WeightedSteering(dirs, controller, read_layer=read_layer)
    steering.check(ModelShape(backend.name, backend.num_layers, backend.hidden_size))

    prompts = [
        GenerateRequest.chat(p, max_tokens=benign_tokens, temperature=0.0)
        for p in (*harmful, *benign)
    ]
    feats = (await backend.layer_states(prompts, [read_layer], pool="mean")).states[:, 0]
    controller.fit_features(feats)
    answers = await backend.generate(prompts[len(harmful) :])  # the plain greedy answers
    ref_ids = list(backend.tokenizer(refusal, add_special_tokens=False).input_ids)
    tails = [ref_ids] * len(harmful) + [list(a[0].token_ids) or ref_ids for a in answers]
    items: list[_Item] = []
    for req, tail in zip(prompts, tails, strict=True):
        ids = backend.render(req)
        items.append((ids + tail, len(ids), None))  # p_plain is filled in for benign ones

    model = backend.model
    layers = decoder_layers(model, backend.num_layers)
    pad = int(backend.forwards.pad_id)
    frozen = [(q, q.requires_grad) for q in model.parameters()]

    def plain_targets() -> None:
        with torch.inference_mode():
            for a in range(len(harmful), len(items), batch_size):
                chunk = items[a : a + batch_size]
                spans = [(st, len(s)) for s, st, _ in chunk]
                lps = _forward_logprobs(model, [s for s, _, _ in chunk], spans, pad)
                for k, lp in enumerate(lps):
                    items[a + k] = (chunk[k][0], chunk[k][1], lp.clone())

    @torch.enable_grad()  # grad mode is per thread: switch it on in the worker thread
    def step(batch: list[int], opt: torch.optim.Optimizer) -> float:
        s, w = controller(feats[batch])
        handles = _steer_hooks(layers, dirs, s[:, None] * w)
        try:
            chunk = [items[i] for i in batch]
            spans = [(st, len(seq)) for seq, st, _ in chunk]
            lps = _forward_logprobs(model, [seq for seq, _, _ in chunk], spans, pad)
        finally:
            for h in handles:
                h.remove()
        losses = []
        for k, (seq, st, plain) in enumerate(chunk):
            if plain is None:  # harmful: likelihood of the refusal
                tgt = torch.tensor(seq[st:], device=lps[k].device)
                losses.append(-lps[k].gather(1, tgt[:, None]).mean())
            else:  # benign: stay on the plain distribution, and keep s small
                kl = (plain.exp() * (plain - lps[k])).sum(-1).mean()
                losses.append(kl + scale_penalty * s[k] / controller.s_max)
        loss = torch.stack(losses).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    opt = torch.optim.Adam(controller.parameters(), lr=lr, weight_decay=1e-4)
    rng = random.Random(seed)
    losses: list[float] = []
    controller.train()
    try:
        for q, _ in frozen:
            q.requires_grad_(False)
        await backend.exclusive(plain_targets)
        for _ in range(epochs):
            order = list(range(len(items)))
            rng.shuffle(order)
            for a in range(0, len(order), batch_size):
                losses.append(await backend.exclusive(step, order[a : a + batch_size], opt))
    finally:
        for q, flag in frozen:
            q.requires_grad_(flag)
        controller.eval()
    per = max(1, -(-len(items) // batch_size))
    steering.info = {
        "seconds": round(time.perf_counter() - started, 2),
        "epoch_loss": [
            round(sum(losses[i : i + per]) / per, 4) for i in range(0, len(losses), per)
        ],
        "n_harmful": len(harmful),
        "n_benign": len(benign),
        "refusal": refusal,
    }
    return steering


def _check_inputs(
    backend: Any, harmful: Sequence[str], benign: Sequence[str], counts: dict[str, int]
) -> None:
    for field, given in (("harmful", harmful), ("benign", benign)):
        if isinstance(given, str) or not given or not all(isinstance(x, str) for x in given):
            raise ConfigError(f"{field}: expected a non-empty list of prompt strings")
    for field, v in counts.items():
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{field} must be an integer >= 1, got {v!r}")
    if not callable(getattr(backend, "layer_states", None)) or not hasattr(backend, "model"):
        raise ConfigError(
            f"backend {getattr(backend, 'name', '?')!r} is not a local model: training needs "
            "a TransformersBackend (hf:PATH or embedded:NAME)"
        )


async def train_scale_controller(
    backend: Any,
    directions: Any,
    harmful: Sequence[str],
    benign: Sequence[str],
    *,
    read_layer: int,
    s_max: float = 0.1,
    gate: float | None = 0.5,
    epochs: int = 300,
    width: int = 32,
    lr: float = 0.01,
    seed: int = 0,
) -> WeightedSteering:
    """Fit a `SteeringController` to scale targets (s = s_max and w = 1 on harmful prompts, s = 0
    on benign ones; module docstring), full batch, from one forward over the prompts. `s_max` is
    then the per-layer coefficient a harmful prompt gets: pick one that flips the model's answers
    (a fixed `Steering` at that scale shows it). `gate` snaps the scale to 0 or s_max (None keeps
    it continuous)."""
    _check_inputs(backend, harmful, benign, {"epochs": epochs, "width": width})
    started = time.perf_counter()
    dirs = steering_directions(directions, None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        controller = SteeringController(backend.hidden_size, len(dirs), s_max=s_max, width=width)
    steering = WeightedSteering(dirs, controller, read_layer=read_layer, gate=gate)
    steering.check(ModelShape(backend.name, backend.num_layers, backend.hidden_size))
    prompts = [GenerateRequest.chat(p, max_tokens=1) for p in (*harmful, *benign)]
    feats = (await backend.layer_states(prompts, [read_layer], pool="mean")).states[:, 0]
    feats = feats.to("cpu", torch.float32)
    controller.fit_features(feats)
    y = torch.tensor([1.0] * len(harmful) + [0.0] * len(benign))
    bce = torch.nn.functional.binary_cross_entropy
    opt = torch.optim.Adam(controller.parameters(), lr=lr, weight_decay=1e-3)
    losses = []
    controller.train()
    with torch.enable_grad():
        for _ in range(epochs):
            s, w = controller(feats)
            on = y[:, None].expand_as(w)
            # the layer weights only matter where the scale is on
            loss = bce(s / s_max, y) + bce(w, torch.ones_like(w), weight=on)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    controller.eval()
    steering.info = {
        "objective": "scale targets",
        "seconds": round(time.perf_counter() - started, 2),
        "loss": [round(losses[0], 4), round(losses[-1], 4)],
        "n_harmful": len(harmful),
        "n_benign": len(benign),
    }
    return steering
