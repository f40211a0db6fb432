"""Weighted activation steering: "Guiding Giants: Lightweight Controllers for Weighted Activation
Steering in LLMs" (Hegazy et al., 2025).

A small network (the *controller*) reads the prompt's activations and decides how hard to push
a fixed steering direction at each layer, so harmful prompts get steered toward refusal and
benign ones are left alone. Paper symbols -> code:

- direction d_l at steered layer l (a refusal direction, e.g. a mean difference)
  -> `WeightedSteering.directions[l]` (any mapping layer -> (D,) tensor, or a `SteeringVector`)
- controller input x: the prompt's activations at a read layer r -> the mean over the prompt's
  tokens of decoder layer r's INPUT (transformers' `hidden_states[r]`); r <= min(steered
  layers), so the controller never reads activations its own steering changed.
- global scale s = s_max * sigmoid(a) and per-layer weights w_l = sigmoid(b_l), (a, b) = f(x)
  -> `SteeringController` (standardize x, Linear-Tanh-Linear). We use independent sigmoids for
  w_l rather than softmax * L: the controller may then switch every layer off (or on) at once,
  which is what a benign prompt needs, instead of only redistributing a fixed budget.
- steered residual h_l <- h_l + s * w_l * d_l at every position (prompt and generated tokens)
  -> `configure` adds d_l with weight 0.0; `before_layer(r)` sets `plan.steer_weight[l] = s*w_l`.

Training (`train_weighted_controller`) runs through the frozen model with autograd:

    L = mean_{harmful} [-1/|R| sum_t log p_steered(R_t | x, R_<t)]
      + mean_{benign}  [1/K sum_t KL(p_plain(. | x, y_<t) || p_steered(. | x, y_<t))
                        + lambda * s(x) / s_max]

R is a refusal answer (default "I'm sorry, but I can't help with that.") placed as the
assistant turn after the chat template; y is the unsteered model's own greedy answer to the
benign prompt (first K tokens), decoded once without gradients, and p_plain its unsteered
next-token distributions. Only the controller's parameters are trained.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from agentic.core import ConfigError, GenerateRequest
from backends.interventions import files
from backends.interventions.base import Intervention, ModelShape, SlotPlan, check_layers
from backends.interventions.hooks import decoder_layers

META_KEY = "weighted_steering"
FORMAT_VERSION = 1
REFUSAL = "I'm sorry, but I can't help with that."
_Item = tuple[list[int], int, torch.Tensor | None]  # (prompt + answer ids, answer start, p_plain)


class SteeringController(torch.nn.Module):
    """x (B, D) -> (s (B,), w (B, L)): global scale in (0, s_max), per-layer weights in (0, 1)."""

    mu: torch.Tensor
    sigma: torch.Tensor

    def __init__(
        self, hidden_size: int, num_layers: int, *, s_max: float = 1.0, width: int = 32
    ) -> None:
        super().__init__()
        if min(hidden_size, num_layers, width) < 1:
            raise ConfigError(
                f"controller: sizes must be >= 1, got {hidden_size, num_layers, width}"
            )
        if not s_max > 0:
            raise ConfigError(f"controller: s_max must be > 0, got {s_max}")
        self.hidden_size, self.num_layers = hidden_size, num_layers
        self.s_max, self.width = float(s_max), width
        # feature standardization, fitted on the training prompts (`fit_features`)
        self.register_buffer("mu", torch.zeros(hidden_size))
        self.register_buffer("sigma", torch.ones(()))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(hidden_size, width),
            torch.nn.Tanh(),
            torch.nn.Linear(width, 1 + num_layers),
        )
        with torch.no_grad():
            # start nearly off (s = 0.12 s_max) with every layer half on: benign prompts start
            # close to the unsteered model, and harmful ones have gradient to climb
            bias = self.net[2].bias
            assert isinstance(bias, torch.Tensor)
            bias.zero_()
            bias[0] = -2.0

    def fit_features(self, x: torch.Tensor) -> None:
        """Center on the training features; one scalar scale (their RMS spread), because a
        per-dimension std from a few dozen prompts would blow up near-constant dimensions."""
        with torch.no_grad():
            self.mu.copy_(x.mean(0))
            self.sigma.copy_((x - x.mean(0)).pow(2).mean().sqrt().clamp(min=1e-6))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net((x - self.mu) / self.sigma)
        return self.s_max * torch.sigmoid(out[:, 0]), torch.sigmoid(out[:, 1:])


def _directions(vectors: Any, layers: Iterable[int] | None) -> dict[int, torch.Tensor]:
    found = getattr(vectors, "directions", vectors)
    if not isinstance(found, Mapping) or not found:
        raise ConfigError("weighted_steering: directions must map layers to (hidden_size,) tensors")
    chosen = sorted(found) if layers is None else sorted({int(x) for x in layers})
    missing = [x for x in chosen if x not in found]
    if missing or not chosen:
        raise ConfigError(
            f"weighted_steering: no direction for layers {missing or chosen}; "
            f"it has {sorted(found)}"
        )
    out = {int(x): torch.as_tensor(found[x]).detach().to("cpu", torch.float32) for x in chosen}
    for x, d in out.items():
        if d.ndim != 1 or d.shape != out[chosen[0]].shape:
            raise ConfigError(
                f"weighted_steering: direction at layer {x} has shape {tuple(d.shape)}"
            )
    return out


class WeightedSteering(Intervention):
    """Add `s * w_l * d_l` at each steered layer l, with (s, w) predicted per request by
    `controller` from the mean of the prompt's input to layer `read_layer`. The request's
    `InterventionRef.scale` multiplies the directions."""

    kind: ClassVar[str] = "weighted_steering"

    def __init__(
        self,
        directions: Any,
        controller: SteeringController,
        *,
        read_layer: int,
        layers: Iterable[int] | None = None,
    ) -> None:
        self.directions = _directions(directions, layers)
        self.layers = sorted(self.directions)
        if not isinstance(controller, SteeringController):
            raise ConfigError(f"weighted_steering: controller is a {type(controller).__name__}")
        hidden = next(iter(self.directions.values())).shape[0]
        if (controller.hidden_size, controller.num_layers) != (hidden, len(self.layers)):
            raise ConfigError(
                f"weighted_steering: controller is for hidden size {controller.hidden_size} and "
                f"{controller.num_layers} layers; directions have size {hidden} at "
                f"{len(self.layers)} layers {self.layers}"
            )
        if not 0 <= read_layer <= self.layers[0]:
            raise ConfigError(
                f"weighted_steering: read_layer must be in [0, {self.layers[0]}] (at most the "
                f"first steered layer), got {read_layer}"
            )
        self.controller = controller.eval()
        self.read_layer = int(read_layer)
        self.reads = frozenset({self.read_layer})
        self.source = str(getattr(directions, "name", "tensors"))
        self.info: dict[str, Any] = {}  # how it was trained (losses, seconds); saved with it

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s (N,), w (N, L)) for features (N, D): mean prompt inputs of `read_layer`."""
        with torch.no_grad():
            return self.controller(features.detach().to("cpu", torch.float32))

    def check(self, shape: ModelShape) -> None:
        check_layers(frozenset(self.layers) | self.reads, shape, "weighted_steering")
        if self.controller.hidden_size != shape.hidden_size:
            raise ConfigError(
                f"weighted_steering: directions have size {self.controller.hidden_size}, but "
                f"{shape.name!r} has hidden size {shape.hidden_size}"
            )

    def configure(self, plan: SlotPlan, scale: float) -> None:
        for layer, d in self.directions.items():
            if layer in plan.steer:
                # the plan holds one weight per layer: sharing it would rescale the other vector
                raise ConfigError(
                    f"weighted_steering: layer {layer} is already steered by another "
                    "intervention of this request"
                )
            plan.add_steering(layer, d * scale)
            plan.steer_weight[layer] = 0.0  # off until the controller has read the prompt

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        s, w = self.predict(hidden.float().mean(0, keepdim=True))
        for k, x in enumerate(self.layers):
            plan.steer_weight[x] = float(s[0] * w[0, k])
        plan.notes[self.kind] = {
            "scale": float(s[0]),
            "layers": self.layers,
            "weights": w[0].tolist(),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "layers": self.layers,
            "read_layer": self.read_layer,
            "s_max": self.controller.s_max,
        }

    # ---- files -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Safetensors: `direction.{l}` and `controller.*` tensors, the rest as JSON metadata."""
        p = Path(path)
        c = self.controller
        meta = {
            "version": FORMAT_VERSION,
            "layers": self.layers,
            "read_layer": self.read_layer,
            "hidden_size": c.hidden_size,
            "s_max": c.s_max,
            "width": c.width,
            "source": self.source,
            "info": self.info,
        }
        tensors = {f"direction.{x}": d.contiguous() for x, d in self.directions.items()}
        tensors |= {
            f"controller.{k}": v.detach().cpu().contiguous() for k, v in c.state_dict().items()
        }
        return files.write(p, META_KEY, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> WeightedSteering:
        p = Path(path)
        meta, tensors = files.read(p, META_KEY, "weighted-steering")
        try:
            layers = [int(x) for x in meta["layers"]]
            controller = SteeringController(
                int(meta["hidden_size"]),
                len(layers),
                s_max=float(meta["s_max"]),
                width=int(meta["width"]),
            )
            cut = len("controller.")
            controller.load_state_dict(
                {k[cut:]: v for k, v in tensors.items() if k[:cut] == "controller."}
            )
            directions = {x: tensors[f"direction.{x}"] for x in layers}
            out = cls(directions, controller, read_layer=int(meta["read_layer"]))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{p}: not a valid weighted-steering file ({e!r})") from None
        out.source = str(meta.get("source", "tensors"))
        out.info = dict(meta.get("info", {}))
        return out


# ---- training ------------------------------------------------------------------------------


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
    for field, given in (("harmful", harmful), ("benign", benign)):
        if isinstance(given, str) or not given or not all(isinstance(x, str) for x in given):
            raise ConfigError(f"{field}: expected a non-empty list of prompt strings")
    counts = {"epochs": epochs, "batch_size": batch_size, "benign_tokens": benign_tokens}
    for field, v in counts.items():
        if not isinstance(v, int) or v < 1:
            raise ConfigError(f"{field} must be an integer >= 1, got {v!r}")
    if not refusal:
        raise ConfigError("refusal is empty: give the answer harmful prompts should start with")
    if not callable(getattr(backend, "layer_states", None)) or not hasattr(backend, "model"):
        raise ConfigError(
            f"backend {getattr(backend, 'name', '?')!r} is not a local model: training needs "
            "a TransformersBackend (hf:PATH or embedded:NAME)"
        )
    started = time.perf_counter()
    dirs = _directions(directions, None)
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
    pad = int(backend.decoder.pad_id)
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
