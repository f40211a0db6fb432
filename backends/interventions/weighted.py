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

- (ours) `gate`: s is snapped to s_max when s >= gate * s_max and to 0 otherwise, so a prompt
  is either steered at the full coefficient or left exactly alone.

Training (the paper's objective, and a scale-target one) lives in
`backends.interventions.weighted_training`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from agentic.core import ConfigError
from backends.interventions import files
from backends.interventions.base import Intervention, ModelShape, SlotPlan, check_layers

META_KEY = "weighted_steering"
FORMAT_VERSION = 1


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


def steering_directions(vectors: Any, layers: Iterable[int] | None) -> dict[int, torch.Tensor]:
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
        gate: float | None = None,
    ) -> None:
        if gate is not None and not 0.0 < gate < 1.0:
            raise ConfigError(f"weighted_steering: gate must be in (0, 1), got {gate}")
        self.gate = gate
        self.directions = steering_directions(directions, layers)
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
        scale = float(s[0])
        if self.gate is not None:
            s_max = self.controller.s_max
            scale = s_max if scale >= self.gate * s_max else 0.0
        for k, x in enumerate(self.layers):
            plan.steer_weight[x] = scale * float(w[0, k])
        plan.notes[self.kind] = {
            "scale": scale,
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
            "gate": self.gate,
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
            "gate": self.gate,
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
            gate = meta.get("gate")
            out = cls(
                directions,
                controller,
                read_layer=int(meta["read_layer"]),
                gate=None if gate is None else float(gate),
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{p}: not a valid weighted-steering file ({e!r})") from None
        out.source = str(meta.get("source", "tensors"))
        out.info = dict(meta.get("info", {}))
        return out
