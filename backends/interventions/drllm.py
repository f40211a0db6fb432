"""Skip / execute / repeat routers: "Dr.LLM: Dynamic Layer Routing in LLMs" (Heakl et al., 2025).

The paper, and where each part lives here:
- A router per layer l reads the hidden states entering l, pools them with *windowed mean
  pooling* (split the tokens into W windows, average each, average the window means:
  `windowed_mean`), and a *bottleneck MLP* (D -> h -> 3, GELU) picks one of
  {skip, execute, repeat} (`RouterNet`, classes `SKIP`, `EXECUTE`, `REPEAT`).
- Supervision comes from a search over layer configurations c in {skip, execute, repeat}^L
  under a compute budget (the paper uses MCTS; this file a beam search, `search_config`):
  starting from all-execute, each round tries one more edit (skip a layer, or repeat one) on
  every configuration in the beam; a configuration is scored by the log-likelihood of the
  task's gold answer under it, s(c) = sum_t log p_c(answer_t | prompt, answer_<t), and is
  *admissible* when s(c) >= s(all-execute) - `tolerance` * |answer| and its executions
  (L - #skip + #repeat) stay within `max_executions`. All candidates of a round run as one
  batch, one request slot each. The result is the admissible configuration with the fewest
  executions (ties: higher s).
- Routers train on (pooled input of layer l under the found configuration, c_l) with the
  *focal loss* FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t (`focal_loss`), alpha from inverse
  class frequency, because "execute" dominates the labels (`train_routers`).
- The reference decides per sequence at batch size 1. Here the decision for layer l is made
  from its input while the request's prompt is prefilled (`DrLLMRouter.before_layer`) and
  stays fixed for the decode, per request, so a batch mixes routed and unrouted requests and
  the KV cache stays consistent (a repeated layer's second pass has its own cache layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from agentic.core import ConfigError
from backends.interventions import files
from backends.interventions.base import Intervention, ModelShape, SlotPlan

SKIP, EXECUTE, REPEAT = 0, 1, 2
ACTIONS = ("skip", "execute", "repeat")


def windowed_mean(hidden: torch.Tensor, windows: int) -> torch.Tensor:
    """(T, D) -> (D): the mean of the means of `windows` contiguous token windows."""
    parts = torch.tensor_split(hidden.float(), min(windows, hidden.shape[0]), dim=0)
    return torch.stack([p.mean(0) for p in parts]).mean(0)


class RouterNet(nn.Module):
    """One bottleneck MLP per routed layer: D -> `width` -> 3."""

    def __init__(self, hidden_size: int, layers: Sequence[int], width: int = 64) -> None:
        super().__init__()
        self.layers = list(layers)
        self.nets = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(hidden_size), nn.Linear(hidden_size, width), nn.GELU(),
                nn.Linear(width, 3),
            )
            for _ in self.layers
        )  # fmt: skip
        self.hidden_size, self.width = hidden_size, width

    def forward(self, k: int, pooled: torch.Tensor) -> torch.Tensor:
        return self.nets[k](pooled)


def focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: torch.Tensor, gamma: float = 2.0
) -> torch.Tensor:
    logp = torch.log_softmax(logits, -1).gather(-1, target[:, None])[:, 0]
    return (-alpha[target] * (1 - logp.exp()) ** gamma * logp).mean()


class DrLLMRouter(Intervention):
    """Per request, at prefill: skip, execute or repeat each routed layer."""

    kind: ClassVar[str] = "drllm_router"

    def __init__(self, net: RouterNet, *, windows: int = 8) -> None:
        self.net = net.eval()
        self.windows = windows
        self.index = {layer: k for k, layer in enumerate(net.layers)}
        self.reads = frozenset(net.layers)

    def check(self, shape: ModelShape) -> None:
        if self.net.hidden_size != shape.hidden_size:
            raise ConfigError(
                f"drllm_router: trained for hidden size {self.net.hidden_size}, "
                f"{shape.name!r} has {shape.hidden_size}"
            )
        bad = [x for x in self.net.layers if not 0 <= x < shape.num_layers]
        if bad:
            raise ConfigError(f"drllm_router: layers {bad} are outside [0, {shape.num_layers})")

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        with torch.no_grad():
            pooled = windowed_mean(hidden, self.windows)
            action = int(self.net(self.index[layer], pooled.to(_dtype(self.net))).argmax())
        if action == SKIP:
            plan.skip.add(layer)
        elif action == REPEAT:
            plan.repeat.add(layer)
        plan.notes.setdefault("drllm", {})[layer] = ACTIONS[action]

    def save(self, path: str | Path) -> Path:
        meta = {"layers": self.net.layers, "hidden_size": self.net.hidden_size,
                "width": self.net.width, "windows": self.windows}  # fmt: skip
        return files.write(path, "drllm_router", meta, self.net.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> DrLLMRouter:
        p = Path(path)
        meta, state = files.read(p, "drllm_router", "Dr.LLM router")
        try:
            net = RouterNet(int(meta["hidden_size"]), meta["layers"], int(meta["width"]))
            net.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{p}: not a Dr.LLM router file ({type(e).__name__}: {e})") from None
        return cls(net, windows=int(meta["windows"]))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "layers": len(self.net.layers), "windows": self.windows}


def _dtype(m: nn.Module) -> torch.dtype:
    return next(m.parameters()).dtype


# ---- configuration search ------------------------------------------------------------------


@dataclass(frozen=True)
class LayerConfig:
    """A layer configuration and its score: the gold answer's log-likelihood under it."""

    skip: frozenset[int]
    repeat: frozenset[int]
    score: float

    def executions(self, num_layers: int) -> int:
        return num_layers - len(self.skip) + len(self.repeat)

    def actions(self, num_layers: int) -> list[int]:
        return [
            SKIP if i in self.skip else REPEAT if i in self.repeat else EXECUTE
            for i in range(num_layers)
        ]


class _Fixed(Intervention):
    """A given configuration as an intervention (one slot per searched candidate)."""

    def __init__(self, skip: frozenset[int], repeat: frozenset[int]) -> None:
        self.skip, self.repeat = skip, repeat

    def configure(self, plan: SlotPlan, scale: float) -> None:
        plan.skip |= self.skip
        plan.repeat |= self.repeat


class _Record(Intervention):
    """Keeps every layer's pooled prefill input."""

    def __init__(self, layers: Sequence[int], windows: int) -> None:
        self.reads = frozenset(layers)
        self.windows = windows
        self.pooled: dict[int, torch.Tensor] = {}

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        self.pooled[layer] = windowed_mean(hidden, self.windows).cpu()


def _answer_loglik(
    backend: Any, ids: list[int], start: int, plans: list[tuple[Intervention, ...]]
) -> list[float]:
    """log p(ids[start:] | ids[:start]) under each plan, one batch row (and slot) per plan."""
    table, hooks = backend.interventions, backend.hooks()
    slots = [table.open(tuple((iv, 1.0) for iv in p)) if p else 0 for p in plans]
    try:
        x = torch.tensor([ids] * len(plans), device=backend.model.device)
        with torch.inference_mode(), hooks.forward(slots, torch.ones_like(x), decode=False):
            logits = backend.model(input_ids=x, use_cache=False).logits.float()
        logp = torch.log_softmax(logits[:, start - 1 : -1], -1)
        target = x[:, start:, None]
        return logp.gather(-1, target)[..., 0].sum(-1).tolist()
    finally:
        for s in slots:
            if s:
                table.close(s)


async def search_config(
    backend: Any,
    prompt_ids: list[int],
    answer_ids: list[int],
    *,
    max_executions: int | None = None,
    tolerance: float = 0.1,
    beam: int = 2,
    rounds: int = 8,
    allow_repeat: bool = True,
    keep: frozenset[int] = frozenset({0}),
) -> LayerConfig:
    """Beam search for the cheapest admissible configuration (module docstring)."""
    n = backend.num_layers
    budget = n if max_executions is None else max_executions
    if not answer_ids or not prompt_ids:
        raise ConfigError("search_config: prompt and answer need at least one token each")
    if tolerance < 0 or beam < 1 or rounds < 1:
        raise ConfigError("search_config: tolerance >= 0, beam >= 1 and rounds >= 1 are needed")
    ids, start = prompt_ids + answer_ids, len(prompt_ids)
    [base] = await backend.exclusive(_answer_loglik, backend, ids, start, [()])
    floor = base - tolerance * len(answer_ids)
    best = LayerConfig(frozenset(), frozenset(), base)
    frontier, seen = [best], {(best.skip, best.repeat)}
    for _ in range(rounds):
        cands = []
        for c in frontier:
            for i in range(n):
                if i in keep or i in c.skip:
                    continue
                edits = [(c.skip | {i}, c.repeat - {i})]
                if allow_repeat and i not in c.repeat:
                    edits.append((c.skip, c.repeat | {i}))
                for skip, rep in edits:
                    if (skip, rep) not in seen and n - len(skip) + len(rep) <= max(budget, n):
                        seen.add((skip, rep))
                        cands.append((skip, rep))
        if not cands:
            break
        plans = [(_Fixed(s, r),) for s, r in cands]
        scores = await backend.exclusive(_answer_loglik, backend, ids, start, plans)
        ok = [
            LayerConfig(s, r, score)
            for (s, r), score in zip(cands, scores, strict=True)
            if score >= floor
        ]
        if not ok:
            break
        ok.sort(key=lambda c: (c.executions(n), -c.score))
        frontier = sorted(ok, key=lambda c: -c.score)[:beam]
        within = [c for c in ok if c.executions(n) <= budget]
        if within and (within[0].executions(n), -within[0].score) < (
            best.executions(n),
            -best.score,
        ):
            best = within[0]
    return best


async def pooled_inputs(
    backend: Any, prompt_ids: list[int], config: LayerConfig, layers: Sequence[int], windows: int
) -> torch.Tensor:
    """(len(layers), D): each routed layer's windowed-mean prompt input under `config`."""
    if len(prompt_ids) < 2:
        raise ConfigError("pooled_inputs: the prompt needs at least two tokens")
    rec = _Record(layers, windows)
    plan = (_Fixed(config.skip, config.repeat), rec)
    await backend.exclusive(_answer_loglik, backend, prompt_ids, len(prompt_ids) - 1, [plan])
    return torch.stack([rec.pooled[x] for x in layers])


async def fit_drllm(
    backend: Any,
    examples: Sequence[tuple[Any, str]],
    *,
    layers: Sequence[int] | None = None,
    windows: int = 8,
    search: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> tuple[DrLLMRouter, list[LayerConfig]]:
    """Search a configuration for each (request, gold answer), then train the routers on the
    pooled inputs it produces. Returns the router and the configurations found."""
    if not examples:
        raise ConfigError("fit_drllm: examples is empty")
    routed = list(range(backend.num_layers)) if layers is None else list(layers)
    feats, labels, found = [], [], []
    for req, answer in examples:
        prompt = backend.render(req)
        ans = list(backend.tokenizer(answer, add_special_tokens=False).input_ids)
        config = await search_config(backend, prompt, ans, **(search or {}))
        found.append(config)
        feats.append(await pooled_inputs(backend, prompt, config, routed, windows))
        acts = config.actions(backend.num_layers)
        labels.append(torch.tensor([acts[x] for x in routed]))
    router = train_routers(
        torch.stack(feats), torch.stack(labels), routed, windows=windows, **(train or {})
    )
    return router, found


def train_routers(
    features: torch.Tensor,
    labels: torch.Tensor,
    layers: Sequence[int],
    *,
    width: int = 64,
    epochs: int = 200,
    lr: float = 3e-3,
    gamma: float = 2.0,
    seed: int = 0,
    windows: int = 8,
) -> DrLLMRouter:
    """Fit the routers on `features` (N, len(layers), D) and `labels` (N, len(layers)) in
    {SKIP, EXECUTE, REPEAT} with the focal loss, full batch."""
    if features.ndim != 3 or labels.shape != features.shape[:2]:
        raise ConfigError(
            f"train_routers: features (N, layers, D) and labels (N, layers) do not match: "
            f"{tuple(features.shape)} vs {tuple(labels.shape)}"
        )
    torch.manual_seed(seed)
    net = RouterNet(features.shape[-1], layers, width)
    counts = torch.bincount(labels.flatten(), minlength=3).float()
    alpha = torch.where(counts > 0, counts.sum() / (3 * counts.clamp(min=1)), 0.0)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-2)
    with torch.enable_grad():
        for _ in range(epochs):
            opt.zero_grad()
            loss = sum(
                focal_loss(net(k, features[:, k].float()), labels[:, k], alpha, gamma)
                for k in range(len(layers))
            )
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            opt.step()
    return DrLLMRouter(net, windows=windows)
