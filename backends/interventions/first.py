"""Prefill-decided layer routers: "FiRST: Finetuning Router-Selective Transformers for
Input-Adaptive Latency Reduction" (Jain et al., 2024).

FiRST puts a small router before each decoder layer l. During prefill the router reads the
prompt's hidden state at layer l's input and decides whether the layer runs; the decision is
kept for the whole decode, so the KV cache the prefill wrote stays consistent with decoding.
Symbols of the paper -> code:

- x_l, the prompt's state entering layer l: the mean over the prompt's tokens 1..T-1 of layer l's
  input (`_pool`). Token 0 is left out: it carries the attention-sink "massive activation"
  (norm ~25000 in SmolLM2 against ~150 elsewhere), which would swamp the mean.
- router g_l(x_l) -> p_l = sigmoid(w_l . (rms(x_l) - c_l) + b_l) (`PrefillRouter.p_batch`):
  a linear router on the RMS-normalised state; c_l, the mean of rms(x_l) over the training texts,
  centres it so that b_l carries the layer's average decision and w_l only the input's
  deviation from it.
- execute if p_l >= threshold, else skip (`PrefillRouter.before_layer` adds l to `plan.skip`:
  skipped in prefill and decode). With `max_skip=k` at most k layers are skipped, greedily in
  layer order: later layers' inputs do not exist when an earlier layer is decided, so "the k
  lowest p_l" cannot be known in time.

Training (soft gates, self-distillation) is in `first_training.py` (`train_routers`); it shares
the data and model plumbing below with `routing_report`, which measures held-out KL and
perplexity with hard decisions (or a fixed skip set).
The request's `InterventionRef.scale` does not apply to routers and is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel

from agentic.core import ConfigError, GenerateRequest
from backends.interventions import files
from backends.interventions.base import Intervention, ModelShape, SlotPlan, check_layers

META_KEY = "prefill_router"


def _pool(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) or (T, D) -> (B, D) or (D,): mean over real tokens, token 0 left out."""
    h = hidden.float()
    if mask is None:
        return h[..., 1:, :].mean(-2) if h.shape[-2] > 1 else h.mean(-2)
    m = mask.to(h.dtype).clone()
    m[:, 0] = torch.where(m[:, 1:].sum(-1) > 0, 0.0, m[:, 0])  # keep token 0 if it is alone
    return (h * m[..., None]).sum(-2) / m.sum(-1, keepdim=True).clamp(min=1.0)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class PrefillRouter(Intervention):
    """One linear router per routed layer; skips, for prefill and decode, the layers whose
    p_l < `threshold` (at most `max_skip`, first in layer order)."""

    kind: ClassVar[str] = "prefill_router"

    def __init__(
        self,
        layers: Iterable[int],
        hidden_size: int,
        *,
        threshold: float = 0.5,
        max_skip: int | None = None,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        center: torch.Tensor | None = None,
        init_p: float = 0.9,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.layers = sorted(int(x) for x in layers)
        if not self.layers:
            raise ConfigError("prefill_router: layers is empty: route at least one layer")
        if len(set(self.layers)) != len(self.layers) or self.layers[0] < 0:
            raise ConfigError(f"prefill_router: layers {self.layers} repeat a layer or are < 0")
        if hidden_size < 1:
            raise ConfigError(f"prefill_router: hidden_size must be >= 1, got {hidden_size}")
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"prefill_router: threshold must be in (0, 1), got {threshold}")
        if max_skip is not None and max_skip < 0:
            raise ConfigError(f"prefill_router: max_skip must be >= 0, got {max_skip}")
        if not 0.0 < init_p < 1.0:
            raise ConfigError(f"prefill_router: init_p must be in (0, 1), got {init_p}")
        n, d = len(self.layers), hidden_size
        self.hidden_size, self.threshold, self.max_skip = d, float(threshold), max_skip
        self.weight = self._tensor("weight", weight, (n, d), torch.zeros(n, d))
        self.bias = self._tensor(
            "bias", bias, (n,), torch.full((n,), math.log(init_p / (1 - init_p)))
        )
        self.center = self._tensor("center", center, (n, d), torch.zeros(n, d))
        self.index = {layer: k for k, layer in enumerate(self.layers)}
        self.reads = frozenset(self.layers)
        self.info: dict[str, Any] = dict(info or {})

    @staticmethod
    def _tensor(
        name: str, value: torch.Tensor | None, shape: tuple[int, ...], default: torch.Tensor
    ) -> torch.Tensor:
        t = default if value is None else torch.as_tensor(value).detach().to("cpu", torch.float32)
        if tuple(t.shape) != shape:
            raise ConfigError(
                f"prefill_router: {name} has shape {tuple(t.shape)}, expected {shape}"
            )
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"prefill_router: {name} has non-finite values")
        return t.contiguous()

    def check(self, shape: ModelShape) -> None:
        check_layers(frozenset(self.layers), shape, "prefill_router")
        if shape.hidden_size != self.hidden_size:
            raise ConfigError(
                f"prefill_router: routers read hidden size {self.hidden_size}, but "
                f"{shape.name!r} has hidden size {shape.hidden_size}"
            )

    def p_batch(
        self,
        layer: int,
        pooled: torch.Tensor,
        params: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(N, D) pooled layer inputs -> (N,) p_l; `params` = (weight, bias) being trained."""
        w, b = params if params is not None else (self.weight, self.bias)
        k = self.index[layer]
        z = _rms(pooled.float()) - self.center[k].to(pooled.device)
        return torch.sigmoid(z @ w[k].to(z.device) + b[k])

    def probability(self, layer: int, hidden: torch.Tensor) -> float:
        """p_l for one prompt whose layer-`layer` input is `hidden` (T, D)."""
        return float(self.p_batch(layer, _pool(hidden)[None])[0])

    def skips(self, p: float, already: int) -> bool:
        """The hard decision from p_l, given how many layers this request already skips."""
        return p < self.threshold and (self.max_skip is None or already < self.max_skip)

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        p = self.probability(layer, hidden)
        probs: dict[int, float] = plan.notes.setdefault("router_p", {})
        skipped: list[int] = plan.notes.setdefault("router_skip", [])
        probs[layer] = round(p, 5)
        if self.skips(p, len(skipped)):
            skipped.append(layer)
            plan.skip.add(layer)

    def describe(self) -> dict[str, Any]:
        return dict(
            kind=self.kind, layers=self.layers, threshold=self.threshold, max_skip=self.max_skip
        )

    # ---- persistence -----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write safetensors (weight, bias, center) with the settings as JSON metadata."""
        meta = self.describe() | {"hidden_size": self.hidden_size, "info": self.info}
        tensors = {"weight": self.weight, "bias": self.bias, "center": self.center}
        return files.write(path, META_KEY, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> PrefillRouter:
        p = Path(path)
        meta, tensors = files.read(p, META_KEY, "prefill router")
        if set(tensors) != {"weight", "bias", "center"}:
            raise ConfigError(f"{p} is not a prefill router file (write it with .save)")
        try:
            return cls(
                meta["layers"],
                int(meta["hidden_size"]),
                threshold=float(meta["threshold"]),
                max_skip=meta["max_skip"],
                info=meta.get("info", {}),
                weight=tensors["weight"],
                bias=tensors["bias"],
                center=tensors["center"],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{p}: unreadable prefill router metadata ({e!r})") from None


# ---- data and model plumbing ----------------------------------------------------------------


def _encode(backend: Any, texts: Sequence[str], max_tokens: int, chat: bool) -> list[list[int]]:
    if isinstance(texts, str) or not texts:
        raise ConfigError("texts must be a non-empty list of strings")
    out = []
    for j, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"texts[{j}] must be a non-empty string, got {text!r}")
        ids = backend.tokenizer(text, add_special_tokens=False).input_ids[:max_tokens]
        if chat:
            ids = backend.render(GenerateRequest.chat(backend.tokenizer.decode(ids)))
        if len(ids) < 2:
            raise ConfigError(f"texts[{j}] has fewer than 2 tokens: nothing to predict")
        out.append(ids)
    return out


def _batch(backend: Any, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask: real tokens keep positions 0..T-1 whatever the batch."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), int(backend.forwards.pad_id), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    device = backend.model.device
    return ids.to(device), mask.to(device)


def _log_probs(backend: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = backend.model(input_ids=ids, attention_mask=mask, use_cache=False)
    return torch.log_softmax(out.logits[:, :-1].float(), -1)  # predicts tokens 1..T-1


def _kl(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over predicted real tokens of KL(teacher || student)."""
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    m = mask[:, 1:].float()
    return (kl * m).sum(-1) / m.sum(-1)


Gate = Callable[[int, torch.Tensor], torch.Tensor]


def _hooked(backend: Any, layers: Iterable[int], gate: Gate) -> list[Any]:
    """Forward hooks replacing layer l's output by h_in + g * (out - h_in), g = gate(l, h_in) of
    shape (B,): soft (float, for training with autograd) or hard (bool: keep `out` or `h_in`
    exactly). The caller removes them."""
    handles = []
    for layer in layers:

        def hook(_m: Any, args: Any, kwargs: Any, output: Any, layer: int = layer) -> Any:
            h_in = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            g = gate(layer, h_in)[:, None, None]
            if g.dtype == torch.bool:
                mixed = torch.where(g.to(out.device), out, h_in)
            else:
                mixed = h_in + g.to(out.dtype) * (out - h_in)
            return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

        module = backend.model.model.layers[layer]
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    return handles


async def _exclusive(backend: Any, fn: Callable[[], Any]) -> Any:
    """Run `fn` in a thread while the backend's scheduler is held off: the hooks act on the
    shared model, so no generation may run meanwhile."""
    return await backend.exclusive(fn)


def _check_backend(backend: Any) -> None:
    if not hasattr(backend, "model") or not hasattr(backend, "tokenizer"):
        raise ConfigError(
            f"backend {getattr(backend, 'name', type(backend).__name__)!r} is not a local "
            "transformers model: routers need one (hf:PATH or embedded:NAME)"
        )


# ---- evaluation (hard decisions) -------------------------------------------------------------


class RoutingReport(BaseModel):
    """Held-out effect of routing: `kl` is the mean per-token KL(full || routed); perplexities
    pool every predicted token of every text; `skipped` lists each text's skipped layers."""

    texts: int
    tokens: int
    skipped: list[list[int]]
    mean_skipped: float
    kl: float
    ppl_full: float
    ppl_routed: float


async def routing_report(
    backend: Any,
    texts: Sequence[str],
    route: PrefillRouter | Collection[int],
    *,
    max_tokens: int = 32,
    chat: bool = True,
    batch_size: int = 8,
) -> RoutingReport:
    """Run `texts` through the full model and through the model with `route` applied: a
    router's hard per-text decisions (as `before_layer` makes them), or a fixed skip set."""
    _check_backend(backend)
    shape = ModelShape(str(backend.name), int(backend.num_layers), int(backend.hidden_size))
    if isinstance(route, PrefillRouter):
        route.check(shape)
    else:
        if isinstance(route, str | bytes) or not all(isinstance(x, int) for x in route):
            raise ConfigError(f"routing_report: route must be a router or layer ids, got {route!r}")
        check_layers(frozenset(route), shape, "routing_report")
    if batch_size < 1:
        raise ConfigError(f"routing_report: batch_size must be >= 1, got {batch_size}")
    seqs = _encode(backend, texts, max_tokens, chat)
    return await _exclusive(backend, lambda: _report(backend, seqs, route, batch_size))


def _report(
    backend: Any, seqs: list[list[int]], route: PrefillRouter | Collection[int], bs: int
) -> RoutingReport:
    router = route if isinstance(route, PrefillRouter) else None
    layers = route.layers if isinstance(route, PrefillRouter) else sorted(route)
    skipped: list[list[int]] = []
    kl = nll_full = nll_routed = 0.0
    tokens = 0
    for i in range(0, len(seqs), bs):
        ids, mask = _batch(backend, seqs[i : i + bs])
        rows: list[list[int]] = [[] for _ in range(ids.shape[0])]

        def gate(layer: int, h_in: torch.Tensor, rows: Any = rows, mask: Any = mask) -> Any:
            """Hard decisions, each row on its own as one request would decide."""
            keep = torch.ones(h_in.shape[0], dtype=torch.bool)
            drop = [True] * len(rows)
            if router is not None:
                p = router.p_batch(layer, _pool(h_in, mask)).tolist()
                drop = [router.skips(x, len(row)) for x, row in zip(p, rows, strict=True)]
            for r, row in enumerate(rows):
                if drop[r]:
                    row.append(layer)
                    keep[r] = False
            return keep

        with torch.inference_mode():
            full = _log_probs(backend, ids, mask)
            handles = _hooked(backend, layers, gate)
            try:
                routed = _log_probs(backend, ids, mask)
            finally:
                for h in handles:
                    h.remove()
        m, target = mask[:, 1:].float(), ids[:, 1:, None]
        nll_full -= float((full.gather(-1, target)[..., 0] * m).sum())
        nll_routed -= float((routed.gather(-1, target)[..., 0] * m).sum())
        kl += float((_kl(full, routed, mask) * m.sum(-1)).sum())
        tokens += int(m.sum())
        skipped += rows
    mean = sum(map(len, skipped)) / len(skipped)
    ppl_full, ppl_routed = math.exp(nll_full / tokens), math.exp(nll_routed / tokens)
    return RoutingReport(
        texts=len(seqs), tokens=tokens, skipped=skipped, mean_skipped=mean, kl=kl / tokens,
        ppl_full=ppl_full, ppl_routed=ppl_routed,
    )  # fmt: skip
