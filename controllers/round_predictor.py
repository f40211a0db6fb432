"""`RoundPredictor`: how many reflection rounds a prompt deserves, predicted from its embedding
before any token is generated (the "self-reflection predictor" of Phan, Li & Lei 2025,
"Think Twice, Generate Once: Safeguarding by Progressive Self-Reflection", arXiv:2510.01270).

PSR's cost grows with its round budget R, yet benign prompts need none. The predictor is a
multinomial logistic regression over the prompt's `Embedder` vector: classes are the round
counts seen in training (for example {0, R}: benign, harmful), features are standardised with
the training mean and spread, classes are weighted to balance, and the weights are fit by
full-batch gradient descent with an L2 penalty, its step 1/L from the loss's smoothness bound so
it converges on any data (numpy only, deterministic). `benchmarks/train_round_predictor.py`
picks the penalty by cross-validation on its training split. `predict` returns
the most probable round count; `ProgressiveSelfReflection` then spends no reflection at all on
a prompt predicted 0.

The paper's predictor reads the policy model's own hidden states; ours reads a separate sentence
embedder, so it works with any backend (remote ones included) and costs one MiniLM forward.

Saved as JSON (`save` / `load`): weights, standardisation, classes, and the embedder's name and
dimension, which `load` checks against the embedder it is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from agentic.core import ConfigError
from memory.embedders import Embedder


class RoundPredictorState(BaseModel):
    """What `save` writes: enough to predict again with the same embedder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["agentic.round_predictor"] = "agentic.round_predictor"
    version: int = 1
    embedder: str
    dim: int
    classes: tuple[int, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[tuple[float, ...], ...] = Field(description="(classes, dim)")
    bias: tuple[float, ...]
    metadata: dict[str, Any] = Field(default_factory=dict)


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=1, keepdims=True)
    return out


class RoundPredictor:
    def __init__(
        self,
        embedder: Embedder,
        *,
        l2: float = 1.0,
        epochs: int = 2000,
    ) -> None:
        if l2 < 0:
            raise ConfigError(f"l2 must be >= 0, got {l2}")
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {epochs}")
        self.embedder = embedder
        self.l2, self.epochs = l2, epochs
        self.state: RoundPredictorState | None = None

    def __repr__(self) -> str:
        classes = self.state.classes if self.state else "unfitted"
        return f"RoundPredictor({self.embedder.name}, classes={classes})"

    @property
    def classes(self) -> tuple[int, ...]:
        """The round counts it chooses between (the columns of `proba`)."""
        return self._fitted().classes

    @property
    def max_rounds(self) -> int:
        return max(self.classes)

    def _fitted(self) -> RoundPredictorState:
        if self.state is None:
            raise ConfigError("RoundPredictor is not fitted: call fit() or load() first")
        return self.state

    # ---- training ------------------------------------------------------------------------

    async def fit(
        self,
        prompts: Sequence[str],
        rounds: Sequence[int],
        *,
        metadata: dict[str, Any] | None = None,
    ) -> RoundPredictor:
        """Fit on prompts labelled with the number of rounds each should get."""
        if len(prompts) != len(rounds):
            raise ConfigError(f"fit() got {len(prompts)} prompts but {len(rounds)} round labels")
        x = await self.embedder.embed(list(prompts))
        return self.fit_embeddings(x, rounds, metadata=metadata)

    def fit_embeddings(
        self,
        x: npt.ArrayLike,
        rounds: Sequence[int],
        *,
        metadata: dict[str, Any] | None = None,
    ) -> RoundPredictor:
        """Fit on precomputed embeddings (rows of `x`) from this predictor's embedder."""
        xs = np.asarray(x, dtype=np.float64)
        if xs.ndim != 2 or xs.shape[0] != len(rounds):
            raise ConfigError(f"x must have shape ({len(rounds)}, dim), got {xs.shape}")
        bad = [r for r in rounds if not isinstance(r, int | np.integer) or r < 0]
        if bad:
            raise ConfigError(f"rounds must be ints >= 0, got {bad[0]!r}")
        classes = sorted({int(r) for r in rounds})
        if len(classes) < 2:
            raise ConfigError(f"rounds need at least two distinct values to learn, got {classes}")
        y = np.array([classes.index(int(r)) for r in rounds])
        mean = xs.mean(axis=0)
        scale = xs.std(axis=0) + 1e-6
        z = (xs - mean) / scale
        onehot = np.eye(len(classes))[y]
        counts = onehot.sum(axis=0)
        # balanced: each class carries the same total weight whatever its share of the data
        sample_w = (len(y) / (len(classes) * counts))[y][:, None]
        w = np.zeros((z.shape[1], len(classes)))
        b = np.zeros(len(classes))
        n = len(y)
        # the softmax loss's gradient is L-Lipschitz with L <= max weight * ||z||^2 / 2n (+ l2)
        step = 1.0 / (float(sample_w.max()) * np.linalg.norm(z, 2) ** 2 / (2 * n) + self.l2)
        for _ in range(self.epochs):
            grad = (_softmax(z @ w + b) - onehot) * sample_w / n
            w -= step * (z.T @ grad + self.l2 * w)
            b -= step * grad.sum(axis=0)
        self.state = RoundPredictorState(
            embedder=self.embedder.name,
            dim=int(xs.shape[1]),
            classes=tuple(classes),
            mean=tuple(mean.tolist()),
            scale=tuple(scale.tolist()),
            weights=tuple(tuple(row) for row in w.T.tolist()),
            bias=tuple(b.tolist()),
            metadata={"examples": n, **(metadata or {})},
        )
        return self

    # ---- prediction ----------------------------------------------------------------------

    def proba_embeddings(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(class) per row, columns in the order of `state.classes`."""
        s = self._fitted()
        xs = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if xs.shape[1] != s.dim:
            raise ConfigError(f"embeddings have dim {xs.shape[1]}, the predictor expects {s.dim}")
        z = (xs - np.array(s.mean)) / np.array(s.scale)
        return _softmax(z @ np.array(s.weights).T + np.array(s.bias))

    async def proba(self, prompts: Sequence[str]) -> npt.NDArray[np.float64]:
        self._fitted()
        return self.proba_embeddings(await self.embedder.embed(list(prompts)))

    async def predict_many(self, prompts: Sequence[str]) -> list[int]:
        if not prompts:
            return []
        classes = self._fitted().classes
        return [classes[i] for i in (await self.proba(prompts)).argmax(axis=1)]

    async def predict(self, prompt: str) -> int:
        """The round count for one prompt."""
        [r] = await self.predict_many([prompt])
        return r

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self._fitted().model_dump_json(indent=1), encoding="utf-8")
        return p

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder) -> RoundPredictor:
        """A saved predictor, bound to `embedder`, which must be the one it was trained with."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"round predictor file not found: {p}")
        try:
            state = RoundPredictorState.model_validate(json.loads(p.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{p}: not a saved RoundPredictor ({e})") from None
        if state.embedder != embedder.name:
            raise ConfigError(
                f"{p} was trained on embedder {state.embedder!r}, got {embedder.name!r}"
            )
        out = cls(embedder)
        out.state = state
        return out
