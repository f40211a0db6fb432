"""Decode-step time with interventions attached vs the same batch with nothing attached.

Part of `kernels_gpu.py` (which calls `run`), runnable alone. A Llama model is built from a
config with random weights (timing does not depend on the values, and the GPU machine has no
checkpoints): the SmolLM2-135M shape, and the Llama-3-8B shape on a GPU. After a prefill of
`context` tokens per row, one decode step (one new token per row, the cache cropped back after
it, so every step sees the same context) is timed for each variant:

- `none`: no hooks on the model;
- `hooks idle`: the intervention hooks on every layer, every row in slot 0 (the no-op);
- `steer+route`: a quarter of the rows steered at 7 middle layers, a quarter routed (3 late
  layers skipped and one feed-forward block; the layers still run for the other rows, so this is
  the cost of the gating, with nothing saved), half of the rows untouched;
- `steer all`: every row steered at the same 7 layers.

Each variant's time is the median over interleaved rounds of `steps` steps, timed on the host
around a device synchronisation (decode of a small model is bound by launches and host work,
which the hooks add to). Target: `steer+route` within 3% of `none`. Each row also says
whether two steps without hooks give bit-identical logits (the control), and whether in each
mixed batch (steered, routed, both) the untouched rows' logits are bit-identical to the step
without hooks while every steered or routed row's differ.

`--graph-decode` (the default) times the same step once more, captured in a CUDA graph through a
StaticCache (`graph_batch`): that takes the host's cost per launch away, as vLLM's CUDA-graph
decode does, and leaves what the hooks cost the device. `--profile N` profiles N steps of each
variant (torch.profiler: launches, device waits, the ops with the most host time).

    .venv/bin/python benchmarks/steered_step.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

from backends.interventions.base import ModelShape
from backends.interventions.hooks import HookedLayers
from backends.interventions.static import LayerSkip, Steering
from backends.interventions.table import Interventions

SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                     "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152},
    "llama3-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256},
}  # fmt: skip
VARIANTS = ("none", "hooks idle", "steer+route", "steer all")


def build(name: str, dev: str, dtype: torch.dtype) -> Any:
    config = LlamaConfig(**SHAPES[name], max_position_embeddings=4096)
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the final dtype: an 8B model in fp32 is 32 GB
    try:
        with torch.device(dev):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    return model.eval()


def plan_slots(table: Interventions, layers: int, width: int, batch: int) -> dict[str, list[int]]:
    """The slot of each row for every variant (opens the slots it needs); batch >= 4."""
    g = torch.Generator().manual_seed(0)
    middle = range(layers // 3, min(layers, layers // 3 + 7))
    vectors = {i: torch.randn(width, generator=g) * 0.05 for i in middle}
    steer = table.open(((Steering(vectors), 1.0),))
    late = [layers - 4, layers - 3, layers - 2]
    route = table.open(((LayerSkip(late, ffn_layers=[layers // 2]), 1.0),))
    q = batch // 4
    mixed = [steer] * q + [route] * q + [0] * (batch - 2 * q)
    return {
        "hooks idle": [0] * batch,
        "steer+route": mixed,
        "steer all": [steer] * batch,
        "steer half": [steer] * q + [0] * (batch - q),
        "route half": [route] * q + [0] * (batch - q),
    }


def one_model(name: str, batches: list[int], context: int, args: argparse.Namespace) -> list[dict]:
    dev = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    model = build(name, dev, dtype)
    rows = []
    for batch in batches:
        ms = time_batch(model, batch, context, args)
        row: dict[str, Any] = {"model": name, "batch": batch, "context": context}
        for check in [k for k in ms if k not in VARIANTS]:
            row[check] = ms.pop(check)
        for v in VARIANTS:
            row[f"{v} ms"] = ms[v]
            row[f"{v} overhead"] = ms[v] / ms["none"] - 1.0
        row["meets_3pct"] = row["steer+route overhead"] <= 0.03
        if args.graph_decode:
            try:
                graphed = graph_batch(model, batch, context, args)
            except Exception as e:  # a capture failure is a finding, not a crash
                graphed = {"graph failed": repr(e)[:300]}
            row |= graphed
            if "graph none ms" in graphed:
                print(
                    "    graph:", {k: round(v, 4) for k, v in graphed.items() if k.endswith("ms")}
                )
                print(
                    "   ",
                    {k: v for k, v in graphed.items() if k.endswith(("identical", "changed"))},
                )
        rows.append(row)
        print(
            f"{name:<14} B={batch:<3} "
            + " ".join(f"{v}={ms[v]:.3f}ms({row[f'{v} overhead']:+.1%})" for v in VARIANTS)
        )
        checks = ("identical", "changed", "repeat")
        print("   ", {k: v for k, v in row.items() if k.endswith(checks)})
        for key in [k for k in row if k.startswith("profile")]:
            got = row[key]
            print(f"    {key}: launches/step {got['launches per step']:.0f}, waits {got['waits']}")
            print(
                "      top:", {k: round(v["self_cpu_us"]) for k, v in got["top self cpu"].items()}
            )
    return rows


@torch.inference_mode()
def time_batch(model: Any, batch: int, context: int, args: argparse.Namespace) -> dict[str, Any]:
    """Median milliseconds per decode step of each variant, after one prefill, and whether the
    mixed batch's rows came out as they should."""
    cfg, dev = model.config, model.device
    table = Interventions(
        ModelShape("bench", cfg.num_hidden_layers, cfg.hidden_size), model.dtype, dev
    )
    slots = plan_slots(table, cfg.num_hidden_layers, cfg.hidden_size, batch)
    g = torch.Generator(device=dev).manual_seed(batch)
    prompt = torch.randint(0, cfg.vocab_size, (batch, context), device=dev, generator=g)
    cache = DynamicCache(config=cfg)
    model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    inputs = {
        "input_ids": prompt[:, -1:],
        "past_key_values": cache,
        "use_cache": True,
        "attention_mask": torch.ones((batch, context + 1), dtype=torch.long, device=dev),
        "position_ids": torch.full((batch, 1), context, device=dev),
        "logits_to_keep": 1,
    }
    new = torch.ones((batch, 1), dtype=torch.bool, device=dev)
    hooks: list[HookedLayers] = []  # attached while a variant with hooks is timed

    def step(variant: str) -> None:
        if variant == "none":
            model(**inputs)
        else:
            with hooks[0].forward(slots[variant], new, decode=True):
                model(**inputs)
        cache.crop(-1)  # the next step sees the same context

    samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            if variant == "none" and hooks:
                hooks.pop().remove()
            elif variant != "none" and not hooks:
                hooks.append(HookedLayers(model, table))
            samples[variant].append(ms_per_step(partial(step, variant), args, dev.type))
    if hooks:
        hooks.pop().remove()
    out: dict[str, Any] = {v: statistics.median(x) for v, x in samples.items()}
    if args.profile:
        for variant in VARIANTS:
            if variant != "none" and not hooks:
                hooks.append(HookedLayers(model, table))
            out[f"profile {variant}"] = profile(partial(step, variant), args.profile)
        hooks.pop().remove()
    out.update(identity(model, inputs, table, slots, new))
    return out


@torch.inference_mode()
def identity(
    model: Any,
    inputs: dict[str, Any],
    table: Interventions,
    slots: dict[str, list[int]],
    new: torch.Tensor,
) -> dict[str, Any]:
    """What the timed steps did: whether a second step without hooks repeats the first bit for
    bit (the control), and for each mixed batch whether its untouched rows are bit-identical to
    the step without hooks and its steered or routed rows differ from it."""
    cache = inputs["past_key_values"]

    def logits(variant: str) -> torch.Tensor:
        if variant == "none":
            got = model(**inputs).logits[:, -1]
        else:
            hooked = HookedLayers(model, table)
            try:
                with hooked.forward(slots[variant], new, decode=True):
                    got = model(**inputs).logits[:, -1]
            finally:
                hooked.remove()
        cache.crop(-1)
        return got.float()

    plain = logits("none")
    out: dict[str, Any] = {"plain steps repeat": bool((logits("none") == plain).all())}
    for variant in ("hooks idle", "steer half", "route half", "steer+route"):
        got = logits(variant)
        touched = torch.tensor(slots[variant], device=plain.device) != 0
        same = (got == plain).all(-1)
        out[f"{variant}: untouched identical"] = bool(same[~touched].all())
        out[f"{variant}: untouched max diff"] = float((got - plain)[~touched].abs().max())
        if bool(touched.any()):
            out[f"{variant}: touched changed"] = bool((~same[touched]).all())
    return out  # fmt: skip


@torch.inference_mode()
def graph_batch(model: Any, batch: int, context: int, args: argparse.Namespace) -> dict[str, Any]:
    """The same decode step of each variant captured in a CUDA graph and replayed, as vLLM runs
    decode: the host's cost per launch is gone and what is left is device time, so this is the
    step's cost of the hooks themselves. The plan is fixed at prefill, so the hooks' branches
    are decided at capture. transformers' StaticCache (written in place) makes the step
    capturable; each replay first resets the cache's write position, inside the graph, so every
    step sees the same context. Milliseconds per step: median over interleaved rounds of
    `steps` replays, timed on the host around a device synchronisation (`ms_per_step`).
    Without CUDA the same step runs eagerly (the code path, for tests). Also: whether the
    untouched rows of the mixed batch are bit-identical to the graph without hooks."""
    cfg, dev = model.config, model.device
    cuda = dev.type == "cuda"
    table = Interventions(
        ModelShape("bench", cfg.num_hidden_layers, cfg.hidden_size), model.dtype, dev
    )
    slots = plan_slots(table, cfg.num_hidden_layers, cfg.hidden_size, batch)
    g = torch.Generator(device=dev).manual_seed(batch)
    prompt = torch.randint(0, cfg.vocab_size, (batch, context), device=dev, generator=g)
    cache = StaticCache(config=cfg, max_cache_len=context + 1)
    model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    ids, new = prompt[:, -1:].clone(), torch.ones((batch, 1), dtype=torch.bool, device=dev)
    position = torch.full((batch, 1), context, device=dev)
    mask = torch.ones((batch, context + 1), dtype=torch.long, device=dev)

    def step() -> torch.Tensor:
        for layer in cache.layers:
            layer.cumulative_length.fill_(context)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, attention_mask=mask,
                    position_ids=position, logits_to_keep=1)  # fmt: skip
        return out.logits[:, -1]

    runs: dict[str, Callable[[], torch.Tensor]] = {"none": capture(step) if cuda else step}
    hooked = HookedLayers(model, table)
    try:
        for variant in VARIANTS[1:]:
            with hooked.forward(slots[variant], new, decode=True):
                # captured, the plan's tensors must outlive the capture: the runs keep them
                runs[variant] = (
                    partial(_replay, capture(step), hooked.current)
                    if cuda
                    else partial(_eager, hooked, slots[variant], new, step)
                )
        logits = {v: run().float().clone() for v, run in runs.items()}
        samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                samples[variant].append(ms_per_step(runs[variant], args, dev.type))
    finally:
        hooked.remove()
    out: dict[str, Any] = {}
    for v in VARIANTS:
        out[f"graph {v} ms"] = statistics.median(samples[v])
        out[f"graph {v} overhead"] = out[f"graph {v} ms"] / out["graph none ms"] - 1.0
    # the control: on some shapes two replays of the same graph already differ
    out["graph plain steps repeat"] = bool((runs["none"]().float() == logits["none"]).all())
    touched = torch.tensor(slots["steer+route"], device=dev) != 0
    diff = (logits["steer+route"] - logits["none"]).abs()
    out["graph steer+route: untouched identical"] = bool((diff[~touched] == 0).all())
    out["graph steer+route: untouched max diff"] = float(diff[~touched].max())
    out["graph steer+route: touched changed"] = bool((diff[touched].amax(-1) > 0).all())
    out["graph hooks idle: identical"] = bool((logits["hooks idle"] == logits["none"]).all())
    return out


def _replay(run: Callable[[], torch.Tensor], plan: Any) -> torch.Tensor:
    """`plan` only rides along: the captured kernels read its tensors."""
    return run()


def _eager(
    hooked: HookedLayers, slots: list[int], new: torch.Tensor, step: Callable[[], torch.Tensor]
) -> torch.Tensor:
    with hooked.forward(slots, new, decode=True):
        return step()


def capture(step: Callable[[], Any]) -> Callable[[], Any]:
    """`step` captured in a CUDA graph (after warm-up on a side stream, as capture wants): a
    callable that replays it and returns its (static) output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return result

    return replay


SYNCS = (
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaMemcpyAsync",
    "cudaEventSynchronize",
)


def profile(fn: Callable[[], None], steps: int) -> dict[str, Any]:
    """Where `steps` steps spend host time (torch.profiler): the calls that wait for the device,
    kernel launches, and the ops with the most self CPU time, per step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    fn()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(steps):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    events = prof.key_averages()
    per_step = {
        e.key: {"calls": e.count / steps, "self_cpu_us": e.self_cpu_time_total / steps}
        for e in events
    }
    launches = [k for k in per_step if "LaunchKernel" in k or k.startswith("cuLaunch")]
    top = sorted(per_step.items(), key=lambda kv: -kv[1]["self_cpu_us"])[:12]
    return {
        "waits": {k: per_step[k] for k in SYNCS if k in per_step},
        "launches per step": sum(per_step[k]["calls"] for k in launches),
        "top self cpu": dict(top),
    }


def ms_per_step(fn: Callable[[], None], args: argparse.Namespace, dev: str) -> float:
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for _ in range(args.step_warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        fn()
    sync()
    return (time.perf_counter() - t0) * 1e3 / args.steps


def run(args: argparse.Namespace) -> list[dict]:
    if args.smoke:
        plan = [("tiny", [4], 16)]
    else:
        plan = [("smollm2-135m", [16, 64], 512), ("llama3-8b", [16, 32], 512)]
        if args.models:
            plan = [p for p in plan if p[0] in args.models.split(",")]
        if args.batches:
            plan = [(n, [int(b) for b in args.batches.split(",")], c) for n, _, c in plan]
    rows = []
    for name, batches, context in plan:
        rows += one_model(name, batches, context, args)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the last model is garbage by now
    return rows


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--steps", type=int, default=30, help="decode steps per timed sample")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved samples per variant")
    ap.add_argument("--step-warmup", type=int, default=3, help="untimed steps per sample")
    ap.add_argument(
        "--graph-decode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each variant's step captured in a CUDA graph (StaticCache)",
    )
    ap.add_argument("--models", default="", help="comma-separated shapes (default: both)")
    ap.add_argument(
        "--batches", default="", help="comma-separated batch sizes (default: 16,64 / 16,32)"
    )
    ap.add_argument(
        "--profile", type=int, default=0, help="also profile this many steps of each variant"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny model on the CPU")
    add_arguments(ap)
    print(json.dumps(run(ap.parse_args()), indent=1))
