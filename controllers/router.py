"""`A2FMRouter`: route each task to an instant, a reasoning or an agentic mode, after Chen et al.
2025, "A²FM: An Adaptive Agent Foundation Model for Tool-Aware Hybrid Reasoning".

A²FM puts three modes behind one backbone: *instant* (answer directly), *reasoning* (think at
length) and *agentic* (act with tools); a router picks one per query, trained with a
cost-regularised reward (accuracy − λ·cost) so easy queries stop paying for thought and tools.
Its quality measure is *cost-of-pass*: cost spent per correct answer. Here the modes are any three
controllers (say `Direct`, a search controller, a `ToolAgent`), and the router is either

- `SelfTagPolicy`: the model's own classification, as A²FM's route tag: the model is asked which
  mode the question needs and the most likely tag wins (tags scored with `Backend.score`, or
  generated under a regex where the backend cannot score);
- `LearnedPolicy`: a softmax policy π(m|x) = softmax(W·φ(x) + b) over the modes, φ(x) an
  embedding of the question plus a few surface features (its length, how many digits and
  operators, its longest number), fitted on logged outcomes of every mode on training tasks by
  maximising Σ_x Σ_m π(m|x)·(r(x,m) − λ·c(x,m)), r = checker score, c = cost (tokens) divided by
  the mean cost of all logged runs, so λ is free of units. At inference the mode is argmax π.

Both policies emit `router.decision` with the scores; `Outcome.info["mode"]` holds the mode, and
the routing call's usage is part of the outcome's usage.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from agentic.core import (
    ConfigError,
    Context,
    Controller,
    GenerateRequest,
    Message,
    Outcome,
    ResponseFormat,
    SamplingParams,
    ScoreRequest,
    Task,
    Usage,
    emit,
)
from backends import Backend
from memory.embedders import Embedder

Mode = Literal["instant", "reasoning", "agentic"]
MODES: tuple[Mode, ...] = ("instant", "reasoning", "agentic")


class RouteDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    mode: Mode
    scores: dict[str, float]
    policy: str
    usage: Usage = Usage()


class RoutingPolicy(Protocol):
    async def route(self, task: Task, ctx: Context | None = None) -> RouteDecision: ...


SELF_TAG_PROMPT = (
    "Decide how to answer the question below.\n"
    "instant: a simple fact or an easy question, answered directly.\n"
    "reasoning: needs careful step-by-step thinking.\n"
    "agentic: needs a tool, for example a calculator for large numbers.\n\n"
    "Question: {question}\n\nReply with one word: instant, reasoning or agentic."
)


class SelfTagPolicy:
    """The model tags the question with a mode; the tag with the highest probability wins."""

    def __init__(self, backend: Backend, *, prompt: str = SELF_TAG_PROMPT) -> None:
        if "{question}" not in prompt:
            raise ConfigError("SelfTagPolicy prompt must contain '{question}'")
        self.backend, self.prompt = backend, prompt

    async def route(self, task: Task, ctx: Context | None = None) -> RouteDecision:
        messages = (Message(role="user", content=self.prompt.format(question=task.input)),)
        if self.backend.capabilities.score:
            results = await self.backend.score(
                [ScoreRequest(messages=messages, continuation=m) for m in MODES]
            )
            scores = {m: r.logprob for m, r in zip(MODES, results, strict=True)}
            usage = Usage.total(r.usage for r in results)
            mode = max(MODES, key=lambda m: scores[m])
        else:
            request = GenerateRequest(
                messages=messages,
                params=SamplingParams(temperature=0.0, max_tokens=4),
                response_format=ResponseFormat.pattern("instant|reasoning|agentic"),
            )
            [[gen, *_]] = await self.backend.generate([request])
            found = re.search("instant|reasoning|agentic", gen.text)
            mode = found.group(0) if found else "reasoning"  # type: ignore[assignment]
            scores, usage = {m: float(m == mode) for m in MODES}, gen.usage
        return RouteDecision(mode=mode, scores=scores, policy="self-tag", usage=usage)


_NUM = re.compile(r"\d+")


def surface_features(text: str) -> np.ndarray:
    """Cheap features a router can lean on: length, digits, operators, the longest number."""
    numbers = _NUM.findall(text)
    return np.array(
        [
            len(text) / 200.0,
            sum(c.isdigit() for c in text) / 10.0,
            sum(text.count(op) for op in "+-*/") / 4.0,
            max((len(n) for n in numbers), default=0) / 4.0,
        ],
        dtype=np.float32,
    )


class RouteRecord(BaseModel):
    """One logged outcome: task input, the mode that ran, its score and cost in tokens."""

    model_config = ConfigDict(frozen=True)

    input: str
    mode: Mode
    score: float
    tokens: float
    seconds: float = 0.0


class LearnedPolicy:
    def __init__(self, embedder: Embedder | None = None, *, lam: float = 0.5) -> None:
        if lam < 0:
            raise ConfigError(f"lam must be >= 0, got {lam}")
        self.embedder, self.lam = embedder, lam
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None
        self.cost_scale = 1.0

    async def features(self, texts: Sequence[str]) -> np.ndarray:
        surface = np.stack([surface_features(t) for t in texts])
        if self.embedder is None:
            return surface
        return np.concatenate([np.asarray(await self.embedder.embed(texts)), surface], axis=1)

    async def fit(
        self, records: Sequence[RouteRecord], *, epochs: int = 300, lr: float = 0.05, seed: int = 0
    ) -> dict[str, float]:
        """Fit π on every mode's logged outcome per input (each input needs all three)."""
        import torch

        by_input: dict[str, dict[str, RouteRecord]] = {}
        for r in records:
            by_input.setdefault(r.input, {})[r.mode] = r
        missing = [x for x, got in by_input.items() if set(got) != set(MODES)]
        if not by_input or missing:
            raise ConfigError(
                f"records need an outcome of every mode for each input; "
                f"{len(missing)} input(s) lack some, e.g. {missing[:1]}"
            )
        inputs = list(by_input)
        self.cost_scale = float(np.mean([r.tokens for r in records])) or 1.0
        cost = self.lam / self.cost_scale
        utility = np.array(
            [[by_input[x][m].score - cost * by_input[x][m].tokens for m in MODES] for x in inputs],
            dtype=np.float32,
        )
        feats = torch.tensor(await self.features(inputs))
        gain = torch.tensor(utility)
        torch.manual_seed(seed)
        layer = torch.nn.Linear(feats.shape[1], len(MODES))
        opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=1e-3)
        for _ in range(epochs):
            opt.zero_grad()
            loss = -(torch.softmax(layer(feats), -1) * gain).sum(-1).mean()
            loss.backward()
            opt.step()
        self.weight = layer.weight.detach().numpy().copy()
        self.bias = layer.bias.detach().numpy().copy()
        chosen = (feats.numpy() @ self.weight.T + self.bias).argmax(-1)
        return {
            "inputs": float(len(inputs)),
            "train_utility": float(utility[np.arange(len(inputs)), chosen].mean()),
            "oracle_utility": float(utility.max(-1).mean()),
        }

    async def route(self, task: Task, ctx: Context | None = None) -> RouteDecision:
        if self.weight is None or self.bias is None:
            raise ConfigError("LearnedPolicy is not trained: call fit() or load() first")
        logits = (await self.features([task.input]))[0] @ self.weight.T + self.bias
        mode = MODES[int(np.argmax(logits))]
        return RouteDecision(
            mode=mode, scores=dict(zip(MODES, map(float, logits), strict=True)), policy="learned"
        )

    def save(self, path: str | Path) -> None:
        if self.weight is None or self.bias is None:
            raise ConfigError("nothing to save: the policy is not trained")
        data = {
            "modes": list(MODES),
            "lam": self.lam,
            "cost_scale": self.cost_scale,
            "embedder": self.embedder.name if self.embedder else None,
            "weight": self.weight.tolist(),
            "bias": self.bias.tolist(),
        }
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> LearnedPolicy:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"router file not found: {p}")
        data = json.loads(p.read_text())
        want = data.get("embedder")
        if want != (embedder.name if embedder else None):
            raise ConfigError(f"{p} was trained with embedder {want!r}; pass the same one")
        policy = cls(embedder, lam=data["lam"])
        policy.weight = np.array(data["weight"], dtype=np.float32)
        policy.bias = np.array(data["bias"], dtype=np.float32)
        policy.cost_scale = data["cost_scale"]
        return policy


class A2FMRouter:
    """`await router(task)`: the policy picks a mode, that mode's controller answers."""

    def __init__(
        self,
        *,
        instant: Controller,
        reasoning: Controller,
        agentic: Controller,
        policy: RoutingPolicy,
    ) -> None:
        self.modes: dict[str, Controller] = {
            "instant": instant,
            "reasoning": reasoning,
            "agentic": agentic,
        }
        self.policy = policy

    def __repr__(self) -> str:
        return f"A2FMRouter({type(self.policy).__name__}, {self.modes})"

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        decision = await self.policy.route(task, ctx)
        emit("router.decision", mode=decision.mode, scores=decision.scores, policy=decision.policy)
        outcome = await self.modes[decision.mode](task, ctx or Context())
        info: dict[str, Any] = {**outcome.info, "mode": decision.mode}
        return outcome.model_copy(update={"usage": outcome.usage + decision.usage, "info": info})
