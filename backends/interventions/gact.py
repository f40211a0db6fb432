"""Probe-selected steering: G-ACT, "gradient-refined adaptive activation steering", from Sharma &
Raman, "Steering Conceptual Bias via Transformer Latent-Subspace Activation" (arXiv 2506.18887,
2025), which steers code LLMs toward one programming language.

The paper, and where each piece lives here:

- Contrastive pairs j = (x_j+, x_j-): a prompt that asks for the target concept ("... Use
  Python.") and its plain or other-concept variant.
- Per-prompt activation differences `delta_{j,l} = h_l(x_j+) - h_l(x_j-)`, with h_l the OUTPUT of
  decoder layer l at the last prompt token (transformers' `hidden_states[l + 1]`)
  -> `extract_directions`.
- The differences of each layer are clustered into K groups (k-means, k-means++ seeding from a
  fixed seed, Lloyd iterations, in float64) -> `kmeans`; the centroids `mu_{l,1..K}` are the K
  steering directions of layer l, in activation units.
- A lightweight probe per steered layer, `P_l(c | z) = softmax(W_l z + b_l)` over K + 1 classes
  (0 = "do not steer", c >= 1 = direction `mu_{l,c}`) -> `Probes`; `Probes.fit` trains it by
  cross-entropy (full batch, Adam, weight decay) on prompts labelled with the cluster of their
  pair's difference, or 0 for prompts that should be left alone.
- "Gradient-refined": a few plain gradient steps on newly labelled examples, online, while the
  probes keep serving -> `Probes.refine` / `ProbeSteering.refine`.
- Injection `h_l <- h_l + alpha * mu_{l, argmax P_l}` at each steered layer -> `ProbeSteering`.

One deviation, on purpose: the paper's probe at layer l taps layer l's own residual stream. Here
every probe reads one feature vector z, the mean over the prompt's tokens of the INPUT of one
read layer r <= the first steered layer (`hidden_states[r]`, which `prompt_features` reads with
`layer_states(pool="mean")`). The decision is then taken once per request, during prefill, on an
unsteered stream that is exactly what the probes were trained on, and the plan is fixed before
any steered layer runs, so the prompt's KV cache and the decode agree (see base.py). z is
standardized with the training set's per-feature mean and deviation (kept with the probes),
because a few residual dimensions of small models are orders of magnitude larger than the rest.
"""

from __future__ import annotations

# Over 400 lines on purpose: the paper's method (directions, probes, the steering hook, the
# fitting loop) reads in the paper's order, checked against it in one file; the contrastive
# prompts and requests it shares with plain steering vectors are in steering_vectors.py.
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from agentic.core import ConfigError
from backends.interventions import files
from backends.interventions.base import Intervention, ModelShape, SlotPlan, check_layers
from backends.interventions.steering_vectors import Prompt, _check, _requests

META_KEY = "gact"
FORMAT_VERSION = 1


# ---- directions ------------------------------------------------------------------------------


def kmeans(
    x: torch.Tensor, k: int, *, seed: int = 0, iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means of the rows of `x` (N, D): (centroids (k, D), assignment (N,) in [0, k)).
    k-means++ seeding from `seed`, then Lloyd steps until the assignment stops changing."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"kmeans: expected a non-empty (N, D) tensor, got {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ConfigError(f"k must be in [1, {x.shape[0]}] (the number of pairs), got {k}")
    data = x.detach().double().cpu()
    g = torch.Generator().manual_seed(seed)
    centers = [data[int(torch.randint(len(data), (1,), generator=g))]]
    for _ in range(1, k):
        d2 = torch.cdist(data, torch.stack(centers)).min(1).values ** 2
        # all points already sit on a center: any point will do
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / len(d2))
        centers.append(data[int(torch.multinomial(p, 1, generator=g))])
    c = torch.stack(centers)
    assign = torch.full((len(data),), -1, dtype=torch.long)
    for _ in range(iters):
        new = torch.cdist(data, c).argmin(1)
        if torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = data[assign == j]
            if len(members):
                c[j] = members.mean(0)
            else:  # an emptied cluster takes the point farthest from its center
                far = int(torch.cdist(data, c).min(1).values.argmax())
                c[j] = data[far]
    return c.float(), assign


async def extract_directions(
    backend: Any,
    pairs: Sequence[tuple[Prompt, Prompt]],
    layers: Sequence[int],
    k: int,
    *,
    seed: int = 0,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Cluster each pair's last-token difference (target minus plain) at the output of each
    layer. Returns (centroids: layer -> (k, D) float32, clusters: layer -> (N,) long in [0, k)):
    the K steering directions per layer and which one each pair's difference belongs to."""
    for j, pair in enumerate(pairs):
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ConfigError(f"pairs[{j}]: expected a (target, plain) pair, got {pair!r}")
    pos = _requests([p for p, _ in pairs], "pairs (target)")
    neg = _requests([n for _, n in pairs], "pairs (plain)")
    picked = _check(backend, layers, "last", "gact")
    if not 1 <= k <= len(pos):
        raise ConfigError(f"k must be in [1, {len(pos)}] (the number of pairs), got {k}")
    got = await backend.layer_states(pos + neg, [i + 1 for i in picked], pool="last")
    states = got.states.to("cpu", torch.float32)
    delta = states[: len(pos)] - states[len(pos) :]  # (N, L, D)
    centroids, clusters = {}, {}
    for n, layer in enumerate(picked):
        centroids[layer], clusters[layer] = kmeans(delta[:, n], k, seed=seed)
    return centroids, clusters


async def prompt_features(backend: Any, prompts: Sequence[Prompt], read_layer: int) -> torch.Tensor:
    """z for each prompt: the mean over its tokens of decoder layer `read_layer`'s input, the
    same vector `ProbeSteering.before_layer` sees at prefill. (N, D) float32."""
    reqs = _requests(prompts, "prompts")
    n = int(backend.num_layers)
    if not 0 <= read_layer < n:
        raise ConfigError(f"read_layer: {read_layer} is out of range [0, {n})")
    got = await backend.layer_states(reqs, [read_layer], pool="mean")
    return got.states[:, 0].to("cpu", torch.float32)


# ---- probes ----------------------------------------------------------------------------------


class Probes:
    """One linear softmax probe per steered layer over K + 1 classes (0 = none, c = direction
    c), all reading the same standardized feature vector z."""

    def __init__(self, layers: Sequence[int], k: int, hidden_size: int) -> None:
        if not layers:
            raise ConfigError("probes: layers is empty")
        if k < 1 or hidden_size < 1:
            raise ConfigError(f"probes: k and hidden_size must be >= 1, got {k}, {hidden_size}")
        self.layers = [int(x) for x in layers]
        self.k, self.hidden_size = int(k), int(hidden_size)
        shape = (len(self.layers), self.k + 1)
        self.weight = torch.zeros((*shape, self.hidden_size))
        self.bias = torch.zeros(shape)
        self.mean = torch.zeros(self.hidden_size)
        self.std = torch.ones(self.hidden_size)

    def _logits(self, z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = (z - self.mean) / self.std
        return torch.einsum("nd,lcd->nlc", x, weight) + bias  # (N, L, K+1)

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, L, K + 1) class probabilities per steered layer."""
        z = self._features(z)
        with torch.no_grad():
            return self._logits(z, self.weight, self.bias).softmax(-1)

    def _features(self, z: torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(z).detach().to("cpu", torch.float32)
        if z.ndim != 2 or z.shape[1] != self.hidden_size:
            raise ConfigError(
                f"features: expected shape (N, {self.hidden_size}), got {tuple(z.shape)}"
            )
        return z

    def _labels(self, labels: torch.Tensor, n: int) -> torch.Tensor:
        y = torch.as_tensor(labels).long()
        if y.ndim == 1:  # one class for every layer
            y = y[:, None].expand(-1, len(self.layers))
        if tuple(y.shape) != (n, len(self.layers)):
            raise ConfigError(
                f"labels: expected shape ({n},) or ({n}, {len(self.layers)}), got {tuple(y.shape)}"
            )
        if len(y) and not (0 <= int(y.min()) and int(y.max()) <= self.k):
            raise ConfigError(
                f"labels: classes must be in [0, {self.k}] (0 = none), "
                f"got {int(y.min())}..{int(y.max())}"
            )
        return y

    def _steps(
        self, z: torch.Tensor, y: torch.Tensor, steps: int, lr: float, decay: float, adam: bool
    ) -> list[float]:
        if steps < 1 or lr <= 0 or decay < 0:
            raise ConfigError(
                f"steps must be >= 1, lr > 0, weight_decay >= 0; got {steps}, {lr}, {decay}"
            )
        # train copies and swap them in at the end: requests may read the probes meanwhile
        w = self.weight.clone().requires_grad_(True)
        b = self.bias.clone().requires_grad_(True)
        opt: torch.optim.Optimizer = (
            torch.optim.Adam([w, b], lr=lr, weight_decay=decay)
            if adam
            else torch.optim.SGD([w, b], lr=lr, weight_decay=decay)
        )
        losses = []
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                logits = self._logits(z, w, b)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, self.k + 1), y.reshape(-1)
                )
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        self.weight, self.bias = w.detach(), b.detach()
        return losses

    def fit(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        *,
        steps: int = 300,
        lr: float = 0.01,
        weight_decay: float = 1e-3,
    ) -> list[float]:
        """Train from scratch: labels (N,) or (N, L) in [0, K]. Returns the loss per step."""
        z = self._features(features)
        y = self._labels(labels, len(z))
        if len(z) < 2:
            raise ConfigError(f"features: fit needs at least 2 labelled prompts, got {len(z)}")
        self.mean = z.mean(0)
        self.std = z.std(0).clamp(min=1e-6)
        self.weight.zero_()
        self.bias.zero_()
        return self._steps(z, y, steps, lr, weight_decay, adam=True)

    def refine(
        self, features: torch.Tensor, labels: torch.Tensor, *, steps: int = 10, lr: float = 0.1
    ) -> list[float]:
        """G-ACT's online refinement: `steps` plain gradient steps on new labelled examples,
        keeping the standardization fitted on the first training set."""
        z = self._features(features)
        if len(z) == 0:
            raise ConfigError("features: refine needs at least one labelled prompt")
        return self._steps(z, self._labels(labels, len(z)), steps, lr, 0.0, adam=False)


# ---- the intervention ------------------------------------------------------------------------


class ProbeSteering(Intervention):
    """At prefill, read z at `read_layer`, let each steered layer's probe pick a direction (or
    none), and add `scale * mu_{l,c}` to that layer's output for the prompt and the decode.
    A layer whose most likely class has probability below `min_prob` is not steered. The
    choices and probabilities go to `plan.notes["gact"]`."""

    kind: ClassVar[str] = "gact"

    def __init__(
        self,
        centroids: Mapping[int, torch.Tensor],
        read_layer: int,
        *,
        probes: Probes | None = None,
        scale: float = 1.0,
        min_prob: float = 0.0,
    ) -> None:
        if not isinstance(centroids, Mapping) or not centroids:
            raise ConfigError("gact: centroids must map layers to (K, hidden_size) tensors")
        self.centroids = {
            int(i): torch.as_tensor(c).detach().to("cpu", torch.float32)
            for i, c in sorted(centroids.items())
        }
        shapes = {tuple(c.shape) for c in self.centroids.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ConfigError(f"gact: centroids must all be (K, hidden_size), got {sorted(shapes)}")
        k, d = next(iter(shapes))
        self.layers = list(self.centroids)
        if read_layer > self.layers[0]:
            raise ConfigError(
                f"gact: read_layer {read_layer} is after the first steered layer "
                f"{self.layers[0]}: the choice must be made before any steered layer runs"
            )
        if not 0.0 <= min_prob <= 1.0:
            raise ConfigError(f"gact: min_prob must be in [0, 1], got {min_prob}")
        self.read_layer, self.scale, self.min_prob = int(read_layer), float(scale), float(min_prob)
        self.probes = probes if probes is not None else Probes(self.layers, k, d)
        if (self.probes.layers, self.probes.k, self.probes.hidden_size) != (self.layers, k, d):
            raise ConfigError(
                f"gact: probes are for layers {self.probes.layers}, k={self.probes.k}, "
                f"hidden {self.probes.hidden_size}; centroids are for {self.layers}, k={k}, "
                f"hidden {d}"
            )
        self.reads = frozenset({self.read_layer})

    @property
    def k(self) -> int:
        return self.probes.k

    def check(self, shape: ModelShape) -> None:
        check_layers(frozenset(self.layers) | self.reads, shape, "gact")
        if self.probes.hidden_size != shape.hidden_size:
            raise ConfigError(
                f"gact: directions have size {self.probes.hidden_size}, but {shape.name!r} has "
                f"hidden size {shape.hidden_size}"
            )

    # ---- training (delegates to the probes) -----------------------------------------------

    def train_probes(self, features: torch.Tensor, labels: torch.Tensor, **kw: Any) -> list[float]:
        """Fit the probes: `features` from `prompt_features(backend, prompts, read_layer)`,
        labels (N,) or (N, len(layers)): 0 = do not steer, c = the prompt's cluster + 1."""
        return self.probes.fit(features, labels, **kw)

    def refine(
        self, features: torch.Tensor, labels: torch.Tensor, *, steps: int = 10, lr: float = 0.1
    ) -> list[float]:
        """Online gradient refinement on new labelled prompts (see `Probes.refine`)."""
        return self.probes.refine(features, labels, steps=steps, lr=lr)

    def choose(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(classes (N, L) long with 0 = none, probabilities (N, L, K + 1)) for features."""
        p = self.probes.probs(features)
        best = p.argmax(-1)
        best[p.max(-1).values < self.min_prob] = 0  # not confident enough: leave the prompt alone
        return best, p

    # ---- prefill ---------------------------------------------------------------------------

    def configure(self, plan: SlotPlan, scale: float) -> None:
        # before_layer gets no scale: keep the request's in its plan (JSON-able, in the trace)
        plan.notes["gact"] = {"scale": self.scale * scale}

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        note = plan.notes.setdefault("gact", {"scale": self.scale})
        z = hidden.detach().to("cpu", torch.float32).mean(0, keepdim=True)
        best, p = self.choose(z)
        alpha = float(note["scale"])
        for n, steered in enumerate(self.layers):
            c = int(best[0, n])
            if c:
                plan.add_steering(steered, self.centroids[steered][c - 1] * alpha)
        note["choice"] = {str(x): int(best[0, n]) for n, x in enumerate(self.layers)}
        note["probs"] = {
            str(x): [round(float(v), 4) for v in p[0, n]] for n, x in enumerate(self.layers)
        }

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "layers": self.layers,
            "k": self.k,
            "read_layer": self.read_layer,
            "scale": self.scale,
        }

    # ---- files -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Safetensors: `centroids.{l}` (K, D) and the probes' tensors; settings as JSON under
        the header key `gact`. Written beside and renamed, so a reader never sees half."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "version": FORMAT_VERSION,
            "layers": self.layers,
            "k": self.k,
            "hidden_size": self.probes.hidden_size,
            "read_layer": self.read_layer,
            "scale": self.scale,
            "min_prob": self.min_prob,
        }
        pr = self.probes
        tensors = {f"centroids.{i}": c.contiguous() for i, c in self.centroids.items()}
        tensors |= {"probe.weight": pr.weight, "probe.bias": pr.bias}
        tensors |= {"probe.mean": pr.mean, "probe.std": pr.std}
        return files.write(p, META_KEY, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> ProbeSteering:
        """Read a file written by `save`; any other file is a `ConfigError` naming it."""
        p = Path(path)
        meta, t = files.read(p, META_KEY, "G-ACT")
        try:
            layers = [int(i) for i in meta["layers"]]
            probes = Probes(layers, int(meta["k"]), int(meta["hidden_size"]))
            parts = ("weight", "bias", "mean", "std")
            shapes = [tuple(getattr(probes, a).shape) for a in parts]
            for a, shape in zip(parts, shapes, strict=True):
                if tuple(t[f"probe.{a}"].shape) != shape:
                    raise ValueError(f"probe.{a} has shape {tuple(t[f'probe.{a}'].shape)}")
                setattr(probes, a, t[f"probe.{a}"].float())
            return cls(
                {i: t[f"centroids.{i}"] for i in layers},
                int(meta["read_layer"]),
                probes=probes,
                scale=float(meta["scale"]),
                min_prob=float(meta["min_prob"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{p}: not a valid G-ACT file ({e!r})") from None


async def fit_gact(
    backend: Any,
    pairs: Sequence[tuple[Prompt, Prompt]],
    layers: Sequence[int],
    k: int,
    read_layer: int,
    *,
    leave_alone: Sequence[Prompt] = (),
    scale: float = 1.0,
    seed: int = 0,
    steps: int = 300,
) -> ProbeSteering:
    """The whole recipe: directions from `pairs`; probes trained to pick, for each pair's plain
    prompt, the cluster of its difference, and "none" for each target prompt (it already asks
    for the concept) and for each prompt in `leave_alone`."""
    centroids, clusters = await extract_directions(backend, pairs, layers, k, seed=seed)
    gact = ProbeSteering(centroids, read_layer, scale=scale)
    plain = [n for _, n in pairs]
    rest = [p for p, _ in pairs] + list(leave_alone)
    z = await prompt_features(backend, plain + rest, read_layer)
    y_plain = torch.stack([clusters[x] + 1 for x in gact.layers], 1)  # (N, L)
    y = torch.cat([y_plain, torch.zeros((len(rest), len(gact.layers)), dtype=torch.long)])
    gact.train_probes(z, y, steps=steps)
    return gact
