"""Steering vectors: one direction per decoder layer, extracted from contrastive prompts.

A steering vector is added to the residual stream to push a model toward a concept (refusal, a
programming language, ...). Two extraction methods, both in activation units:

- Mean difference, as in ActAdd (Turner et al. 2023) and CAA, "contrastive activation addition"
  (Panickssery et al. 2024): `d_i = mean_j h_i(pos_j) - mean_j h_i(neg_j)`
  -> `extract_mean_difference`. Adding `d_i` at layer i moves the negative set's mean onto the
  positive set's mean.
- PCA of paired differences, as in RepE, "representation engineering" (Zou et al. 2023):
  `delta_j = h_i(pos_j) - h_i(neg_j)`; `u_i` is the first principal component of `delta`
  (`_principal_direction`), its sign chosen so that `mean(delta . u_i) > 0`, and
  `d_i = mean(delta . u_i) * u_i` -> `extract_pca`. The share of variance that component explains
  goes into `info["explained_variance.{i}"]`. By default `delta` is not centred: RepE shuffles
  the order within pairs before its PCA, which keeps the shift all pairs share (the concept) as
  the main axis, and centring would remove exactly that shift (held-out AUC on SmolLM2 fell
  from 0.95 to 0.66 on refusal with it). `center=True` gives the centred variant.

`h_i` is the OUTPUT of decoder layer i (0-based, i in [0, num_layers)), which transformers calls
`hidden_states[i + 1]`; `TransformersBackend.layer_states` reads it, pooled at the last prompt
token (after the chat template) or averaged over the prompt's tokens.

`SteeringVector.save` writes safetensors: tensors `layer.{i}` of shape (hidden_size,) float32,
and the rest (name, method, model, hidden size, info) as JSON under the header key
`steering_vector`, so the file is readable by any safetensors reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from agentic.core import ConfigError, GenerateRequest, Message
from backends.interventions import files

Pool = Literal["last", "mean"]
Prompt = str | GenerateRequest
InfoValue = float | int | str
META_KEY = "steering_vector"
FORMAT_VERSION = 1


class SteeringVector(BaseModel):
    """Directions for some layers of one model, in that model's activation units."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    method: Literal["mean_difference", "pca"]
    model: str
    hidden_size: int
    directions: dict[int, torch.Tensor]
    info: dict[str, InfoValue] = {}

    @field_validator("directions")
    @classmethod
    def _cpu_float32(cls, v: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        # hooks add these to float32 or half residuals on any device: keep one canonical copy
        if not v:
            raise ValueError("directions is empty: a steering vector needs at least one layer")
        if any(layer < 0 for layer in v):
            raise ValueError(f"layers must be >= 0, got {sorted(v)}")
        return {k: t.detach().to("cpu", torch.float32).contiguous() for k, t in sorted(v.items())}

    @model_validator(mode="after")
    def _shapes(self) -> SteeringVector:
        for layer, t in self.directions.items():
            if tuple(t.shape) != (self.hidden_size,):
                raise ValueError(
                    f"direction for layer {layer} has shape {tuple(t.shape)}, "
                    f"expected ({self.hidden_size},)"
                )
        return self

    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    def direction(self, layer: int) -> torch.Tensor:
        """The direction added at the output of decoder layer `layer`."""
        if layer not in self.directions:
            raise ConfigError(
                f"steering vector {self.name!r} has no direction for layer {layer}; "
                f"it has layers {', '.join(map(str, self.directions))}"
            )
        return self.directions[layer]

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (written beside and renamed, so a reader never sees half)."""
        p = Path(path)
        meta = {
            "version": FORMAT_VERSION,
            "name": self.name,
            "method": self.method,
            "model": self.model,
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "info": self.info,
        }
        tensors = {f"layer.{i}": t for i, t in self.directions.items()}
        return files.write(p, META_KEY, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a file written by `save`; any other file is a `ConfigError` naming it."""
        p = Path(path)
        meta, tensors = files.read(p, META_KEY, "steering-vector")
        try:
            layers = [int(i) for i in meta["layers"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{p}: unreadable steering-vector metadata ({e!r})") from None
        expected = {f"layer.{i}" for i in layers}
        if set(tensors) != expected:
            raise ConfigError(
                f"{p}: tensors {sorted(tensors)} do not match the layers {layers} in its metadata"
            )
        try:
            return cls(
                name=meta.get("name"),
                method=meta.get("method"),
                model=meta.get("model"),
                hidden_size=meta.get("hidden_size"),
                directions={i: tensors[f"layer.{i}"] for i in layers},
                info=meta.get("info", {}),
            )
        except ValidationError as e:
            what = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
            raise ConfigError(f"{p}: not a valid steering vector ({what})") from None


# ---- extraction ------------------------------------------------------------------------------


def as_request(prompt: Prompt, field: str = "prompt") -> GenerateRequest:
    """A string becomes a one-message user turn; requests pass through unchanged."""
    if isinstance(prompt, GenerateRequest):
        return prompt
    if isinstance(prompt, str):
        return GenerateRequest(messages=(Message(role="user", content=prompt),))
    raise ConfigError(f"{field}: expected a str or GenerateRequest, got {type(prompt).__name__}")


def _requests(prompts: Sequence[Prompt], field: str) -> list[GenerateRequest]:
    if isinstance(prompts, str | GenerateRequest):
        # a lone string is a Sequence of characters: refuse it rather than steer on letters
        raise ConfigError(
            f"{field} must be a list of prompts, got a single {type(prompts).__name__}"
        )
    if not prompts:
        raise ConfigError(f"{field} is empty: give at least one prompt")
    return [as_request(x, f"{field}[{j}]") for j, x in enumerate(prompts)]


def _check(backend: Any, layers: Sequence[int], pool: str, name: str) -> list[int]:
    """Validated layers, refusing backends that cannot read the residual stream."""
    label = f"{getattr(backend, 'name', '?')!r} ({type(backend).__name__})"
    if not callable(getattr(backend, "layer_states", None)):
        raise ConfigError(
            f"backend {label} has no layer_states: steering vectors need a local model's "
            "hidden states (hf:PATH or embedded:NAME)"
        )
    if not name:
        raise ConfigError("name is empty: name the steering vector")
    if pool not in ("last", "mean"):
        raise ConfigError(f"pool must be 'last' or 'mean', got {pool!r}")
    if not layers:
        raise ConfigError("layers is empty: name at least one decoder layer")
    n = int(backend.num_layers)
    seen: set[int] = set()
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ConfigError(f"layers: expected integers, got {layer!r}")
        if not 0 <= layer < n:
            raise ConfigError(f"layers: layer {layer} is out of range [0, {n}) for {label}")
        if layer in seen:
            raise ConfigError(f"layers: layer {layer} appears twice")
        seen.add(layer)
    return list(layers)


async def _layer_states(
    backend: Any, requests: list[GenerateRequest], layers: list[int], pool: str
) -> tuple[torch.Tensor, int]:
    # decoder layer i's output is hidden_states[i + 1]: index 0 there is the embeddings
    got = await backend.layer_states(requests, [i + 1 for i in layers], pool=pool)
    states = got.states.to("cpu", torch.float32)
    if states.shape[:2] != (len(requests), len(layers)):
        raise ConfigError(f"backend returned states of shape {tuple(states.shape)}")
    return states, int(got.prompt_tokens)


def _vector(
    name: str,
    method: Literal["mean_difference", "pca"],
    backend: Any,
    directions: dict[int, torch.Tensor],
    info: dict[str, InfoValue],
    extra: Mapping[str, InfoValue] | None,
) -> SteeringVector:
    for i, d in directions.items():
        info[f"norm.{i}"] = float(d.norm())
    info.update(extra or {})
    hidden = next(iter(directions.values())).shape[0]
    model = str(getattr(backend, "name", type(backend).__name__))
    return SteeringVector(
        name=name, method=method, model=model, hidden_size=hidden, directions=directions, info=info
    )


async def extract_mean_difference(
    backend: Any,
    positive: Sequence[Prompt],
    negative: Sequence[Prompt],
    layers: Sequence[int],
    *,
    name: str,
    pool: Pool = "last",
    info: Mapping[str, InfoValue] | None = None,
) -> SteeringVector:
    """ActAdd / CAA: `mean(positive) - mean(negative)` of each layer's output."""
    pos = _requests(positive, "positive")
    neg = _requests(negative, "negative")
    picked = _check(backend, layers, pool, name)
    # one call, so the backend batches both sets together
    states, tokens = await _layer_states(backend, pos + neg, picked, pool)
    diff = states[: len(pos)].mean(0) - states[len(pos) :].mean(0)  # (L, D)
    directions = {layer: diff[k].clone() for k, layer in enumerate(picked)}
    meta: dict[str, InfoValue] = {
        "n_positive": len(pos),
        "n_negative": len(neg),
        "pool": pool,
        "prompt_tokens": tokens,
    }
    return _vector(name, "mean_difference", backend, directions, meta, info)


def _principal_direction(delta: torch.Tensor, center: bool = False) -> tuple[torch.Tensor, float]:
    """RepE on paired differences `delta` (N, D): (mean(delta . u) * u, explained variance of u).
    float64, because the centered differences of near-identical pairs are small."""
    delta = delta.double()
    centered = delta - delta.mean(0) if center else delta
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    total = float((s**2).sum())
    if total <= 0.0:
        # every pair differs by the same vector: no spread to analyse, that vector is the axis
        mean = delta.mean(0)
        norm = float(mean.norm())
        u = mean / norm if norm > 0 else torch.zeros_like(mean)
        ratio = 1.0
    else:
        u = vh[0]
        ratio = float(s[0] ** 2) / total
    proj = float((delta @ u).mean())
    if proj < 0:  # an SVD's sign is arbitrary; point from negative toward positive
        u, proj = -u, -proj
    return (proj * u).float(), ratio


async def extract_pca(
    backend: Any,
    pairs: Sequence[tuple[Prompt, Prompt]],
    layers: Sequence[int],
    *,
    name: str,
    pool: Pool = "last",
    info: Mapping[str, InfoValue] | None = None,
    center: bool = False,
) -> SteeringVector:
    """RepE: first principal component of the paired differences, scaled to their mean
    projection. `pairs` is (positive, negative) per item; `center` subtracts the mean
    difference before the PCA (see the module docstring for why it is off)."""
    if len(pairs) < 2:
        raise ConfigError(
            f"pairs: PCA needs at least 2 (positive, negative) pairs, got {len(pairs)}"
        )
    for j, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ConfigError(f"pairs[{j}]: expected a (positive, negative) pair, got {pair!r}")
    pos = _requests([p for p, _ in pairs], "pairs (positive)")
    neg = _requests([n for _, n in pairs], "pairs (negative)")
    picked = _check(backend, layers, pool, name)
    states, tokens = await _layer_states(backend, pos + neg, picked, pool)
    delta = states[: len(pos)] - states[len(pos) :]  # (N, L, D), pair j with pair j
    meta: dict[str, InfoValue] = {
        "n_pairs": len(pos),
        "n_positive": len(pos),
        "n_negative": len(neg),
        "pool": pool,
        "prompt_tokens": tokens,
        "centered": int(center),
    }
    directions = {}
    for k, layer in enumerate(picked):
        directions[layer], meta[f"explained_variance.{layer}"] = _principal_direction(
            delta[:, k], center
        )
    return _vector(name, "pca", backend, directions, meta, info)
