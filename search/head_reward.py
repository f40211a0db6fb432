"""A process reward model (PRM) that is a small head on the policy model's own hidden states,
trained on step labels made automatically, as in Math-Shepherd (Wang et al. 2024, "Math-Shepherd:
Verify and Reinforce LLMs Step-by-step without Human Annotations").

Math-Shepherd labels step s_i of a solution without people: a *completer* rolls out N completions
from the prefix s_1..s_i, and the final answers are checked against the gold answer:
    hard estimation  y_HE(s_i) = 1 if any of the N completions is correct, else 0
    soft estimation  y_SE(s_i) = (number of correct completions) / N
Here the PRM is not a fine-tuned LM but a probe: sigmoid(head(h_i)), with h_i the hidden state
of the prefix's last token at one layer of the policy model, so scoring a step costs one forward
pass of the model the search already runs, and no second model.

Symbols -> code:
    s_1..s_i (a step prefix)          `LabelledPrefix.prefix`; what `StepGenerator` continues
    completer, N                      `collect_labels(backend, ..., rollouts=N)`
    y_HE, y_SE                        `LabelledPrefix.hard`, `LabelledPrefix.soft`
    h_i at layer l                    `HeadReward.features` (`layer`, as in `hidden_states[l]`)
    PRM(s_i) = sigmoid(head(h_i))     `HeadReward.score`, head = `ProbeHead`
    training loss                     `fit_head`: BCE against y_SE (the paper trains on either
                                      label; y_SE also says how likely the prefix succeeds)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from agentic.core import (
    ConfigError,
    Context,
    GenerateRequest,
    Message,
    SamplingParams,
    Task,
    TaskSuite,
    Usage,
    charge_budget,
    emit,
)
from backends.hf.backend import TransformersBackend
from search.base import Partial, SearchTree, StepGenerator

log = logging.getLogger(__name__)

MessagesOf = Callable[[Task], tuple[Message, ...]]


def user_only(task: Task) -> tuple[Message, ...]:
    """The chat `StepGenerator.messages` builds when it has no system prompt."""
    return (Message(role="user", content=task.input),)


class ProbeHead(torch.nn.Module):
    """Standardise the features, then a linear layer (or a one-hidden-layer MLP) to one logit.

    Residual-stream features have a few dimensions hundreds of times larger than the rest;
    standardising with the training set's mean and std (kept as buffers, so saved with the
    weights) lets a linear probe train in a few hundred full-batch steps."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, hidden_size: int, mlp: int | None = None) -> None:
        super().__init__()
        self.hidden_size, self.mlp = hidden_size, mlp
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))
        self.net: torch.nn.Module = (
            torch.nn.Sequential(
                torch.nn.Linear(hidden_size, mlp), torch.nn.GELU(), torch.nn.Linear(mlp, 1)
            )
            if mlp
            else torch.nn.Linear(hidden_size, 1)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net((h - self.mean) / self.std)
        return out.squeeze(-1)


class LabelledPrefix(BaseModel):
    """One step prefix with its Math-Shepherd labels."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    messages: tuple[Message, ...]
    prefix: str
    step: int  # 1-based: the prefix holds steps 1..step
    hard: float = Field(ge=0.0, le=1.0)
    soft: float = Field(ge=0.0, le=1.0)
    rollouts: int  # 0 when the prefix is a finished answer, labelled by checking it directly


class HeadReward:
    """PRM from a head on `backend.model`'s hidden states; one batched forward per `score` call.

    `messages` builds the chat for a task exactly as the search's `StepGenerator` does (pass
    `steps.messages`), so the head sees the same tokens at scoring time as in training. Scores are
    cached per (task, prefix): a solution that grew by one step pays only for the new step."""

    kind: Literal["process"] = "process"
    prefix_only = True  # a step's score reads only the hidden state at the end of its prefix

    def __init__(
        self,
        backend: TransformersBackend,
        head: torch.nn.Module | None = None,
        *,
        layer: int = -1,
        messages: MessagesOf = user_only,
    ) -> None:
        backend.check_layer(layer)
        self.hidden_size = backend.hidden_size
        self.backend, self.layer, self.messages = backend, layer, messages
        self.head = (head if head is not None else ProbeHead(self.hidden_size)).eval()
        self.train_losses: list[float] = []
        self._cache: dict[tuple[str, str], float] = {}

    # ---- features ------------------------------------------------------------------------

    async def features(
        self, items: Sequence[tuple[Sequence[Message], str]]
    ) -> tuple[torch.Tensor, int]:
        """Features of (messages, prefix) pairs, shape (len(items), hidden), and the number of
        tokens encoded."""
        reqs = [GenerateRequest(messages=tuple(m), prefix=p) for m, p in items]
        states, tokens = await self.backend.hidden_states(reqs, self.layer)
        return states, tokens

    def predict(self, feats: torch.Tensor) -> list[float]:
        with torch.no_grad():  # sigmoid in float64: float32 rounds to 1.0 from a logit of ~17
            return [float(x) for x in torch.sigmoid(self.head(feats).double()).reshape(-1)]

    # ---- ProcessReward -------------------------------------------------------------------

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        prefixes = [["".join(s[: k + 1]) for k in range(len(s))] for s in solutions]
        todo = sorted({p for ps in prefixes for p in ps if (task.id, p) not in self._cache})
        if todo:
            msgs = self.messages(task)
            feats, tokens = await self.features([(msgs, p) for p in todo])
            charge_budget(Usage(reward_calls=len(todo), prompt_tokens=tokens))
            for p, v in zip(todo, self.predict(feats), strict=True):
                self._cache[(task.id, p)] = v
        return [[self._cache[(task.id, p)] for p in ps] for ps in prefixes]

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """The head's state dict at `path`, and its meta (hidden size, layer, ...) beside it at
        `path` + ".json". Returns the meta path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.head.state_dict(), p)
        meta = {
            "hidden_size": self.hidden_size,
            "layer": self.layer,
            "mlp": getattr(self.head, "mlp", None),
            "head": type(self.head).__name__,
            "model": self.backend.name,
        }
        meta_path = p.with_name(p.name + ".json")
        meta_path.write_text(json.dumps(meta, indent=2))
        return meta_path

    @classmethod
    def load(
        cls,
        backend: TransformersBackend,
        path: str | Path,
        *,
        head: torch.nn.Module | None = None,
        messages: MessagesOf = user_only,
    ) -> HeadReward:
        """A saved head on `backend`; `head` is the module to load into when it is not a
        `ProbeHead`."""
        p = Path(path)
        meta_path = p.with_name(p.name + ".json")
        if not p.exists() or not meta_path.exists():
            raise ConfigError(
                f"no saved head at {p} (needs {p.name} and {meta_path.name}); build one with "
                "`python benchmarks/train_head.py`"
            )
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        reward = cls(backend, head, layer=int(meta["layer"]), messages=messages)
        if int(meta["hidden_size"]) != reward.hidden_size:
            raise ConfigError(
                f"head at {p} was trained on hidden size {meta['hidden_size']} "
                f"({meta.get('model')}); model {backend.name!r} has hidden size "
                f"{reward.hidden_size}"
            )
        if head is None:
            reward.head = ProbeHead(reward.hidden_size, meta.get("mlp")).eval()
        reward.head.load_state_dict(torch.load(p, weights_only=True))
        return reward


# ---- labels: Math-Shepherd's automatic process annotation ---------------------------------


async def collect_labels(
    backend: TransformersBackend,
    suite: TaskSuite,
    steps: StepGenerator,
    *,
    rollouts: int = 4,
    tasks: Sequence[Task] | None = None,
    samples: int = 1,
    seed: int = 0,
    correct_at: float = 1.0,
) -> list[LabelledPrefix]:
    """Labelled step prefixes: per task, `samples` solutions sampled step by step with `steps`;
    each unfinished prefix is rolled out `rollouts` times to the end by `backend` (the completer;
    usually `steps.backend`), all prefixes of a task in one `generate` call. A rollout is correct
    when `suite.check` gives it at least `correct_at` (partial credit does not count). A finished
    prefix is the answer itself: checked directly, as the paper labels the last step."""
    if rollouts < 1:
        raise ConfigError(f"rollouts must be >= 1, got {rollouts}")
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    chosen = list(suite.tasks if tasks is None else tasks)
    ctx = Context(system_prompt=suite.system_prompt)

    async def label(idx: int, task: Task) -> list[LabelledPrefix]:
        task_seed = seed * 1_000_003 + idx * 7_919
        tree = SearchTree()
        frontier: list[Partial] = [tree.root()]
        made: list[Partial] = []
        for depth in range(steps.max_steps):
            if not frontier:
                break
            n = samples if depth == 0 else 1
            kids = await steps.extend(task, ctx, tree, frontier, n=n, seed=task_seed + depth)
            grown = [k for ks in kids for k in ks]
            made += grown
            frontier = [k for k in grown if not k.done]
        msgs = steps.messages(task, ctx)
        live = [p for p in made if not p.done]
        reqs = [
            GenerateRequest(
                messages=msgs,
                prefix=p.text,
                params=SamplingParams(
                    # the length the search would still allow this prefix; no step delimiter
                    max_tokens=steps.tokens_per_step * (steps.max_steps - len(p.steps)),
                    temperature=steps.temperature,
                    top_p=steps.top_p,
                    min_p=steps.min_p,
                    n=rollouts,
                    seed=task_seed + 100 + i,
                ),
            )
            for i, p in enumerate(live)
        ]
        outs = iter(await backend.generate(reqs) if reqs else [])
        labelled = []
        for p in made:
            texts = [p.text] if p.done else [p.text + g.text for g in next(outs)]
            checks = await asyncio.gather(*(suite.check(task, t) for t in texts))
            ok = [c >= correct_at for c in checks]
            labelled.append(
                LabelledPrefix(
                    task_id=task.id,
                    messages=msgs,
                    prefix=p.text,
                    step=len(p.steps),
                    hard=float(any(ok)),
                    soft=sum(ok) / len(ok),
                    rollouts=0 if p.done else rollouts,
                )
            )
        return labelled

    # concurrent tasks: the backend coalesces their calls into shared batches
    per_task = await asyncio.gather(*(label(i, t) for i, t in enumerate(chosen)))
    return [x for xs in per_task for x in xs]


# ---- training ------------------------------------------------------------------------------


def fit_head(
    feats: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int = 300,
    lr: float = 1e-2,
    l2: float = 1e-2,
    mlp: int | None = None,
    seed: int = 0,
) -> tuple[ProbeHead, list[float]]:
    """A `ProbeHead` fit by full-batch Adam on BCE against soft targets in [0, 1] plus `l2` times
    the squared weights (ridge logistic regression: a probe with more dimensions than examples
    separates any labelling, so only the penalty keeps it from fitting noise). Returns the head
    and the BCE of every epoch."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if l2 < 0:
        raise ConfigError(f"l2 must be >= 0, got {l2}")
    if feats.ndim != 2 or len(feats) != len(targets) or len(feats) == 0:
        raise ConfigError(
            f"features must be (n, hidden) with n = len(targets) > 0, "
            f"got {tuple(feats.shape)} and {len(targets)} targets"
        )
    with torch.random.fork_rng():  # a seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        head = ProbeHead(feats.shape[1], mlp)
    head.mean.copy_(feats.mean(0))
    head.std.copy_(feats.std(0, unbiased=False).clamp(min=1e-6))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    weights = [w for w in head.parameters() if w.ndim > 1]  # biases are not penalised
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses = []
    head.train()
    for epoch in range(epochs):
        opt.zero_grad()
        bce = loss_fn(head(feats), targets.float())
        (bce + l2 * sum((w**2).sum() for w in weights)).backward()
        opt.step()
        losses.append(bce.item())
        if epoch % max(1, epochs // 5) == 0 or epoch == epochs - 1:
            log.info("head epoch %d/%d: train BCE %.4f", epoch + 1, epochs, losses[-1])
    return head.eval(), losses


async def train_head(
    backend: TransformersBackend,
    examples: Sequence[LabelledPrefix],
    *,
    layer: int = -1,
    epochs: int = 300,
    lr: float = 1e-2,
    l2: float = 1e-2,
    mlp: int | None = None,
    messages: MessagesOf = user_only,
    features: torch.Tensor | None = None,
    seed: int = 0,
) -> HeadReward:
    """A `HeadReward` whose head is fit on `examples` (features extracted batched, no grad; BCE on
    the soft labels). `messages` is the builder the returned reward scores with: it should make
    the chats the examples were labelled with. `features`, if given, are the examples' features
    at `layer` already (`HeadReward.features`), so a caller that also evaluates on them encodes
    each prefix once. `.train_losses` holds the loss curve."""
    if not examples:
        raise ConfigError("examples must hold at least one LabelledPrefix")
    reward = HeadReward(backend, layer=layer, messages=messages)
    feats = features
    if feats is None:
        feats, _ = await reward.features([(e.messages, e.prefix) for e in examples])
    targets = torch.tensor([e.soft for e in examples])
    fit = partial(fit_head, epochs=epochs, lr=lr, l2=l2, mlp=mlp, seed=seed)
    head, losses = await asyncio.to_thread(fit, feats, targets)
    reward.head, reward.train_losses = head, losses
    emit("reward.train", examples=len(examples), layer=layer, loss=losses[-1])
    return reward
