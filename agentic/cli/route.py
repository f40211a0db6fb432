"""`agentic route`: layer activity traces and layer routers for local models.

agentic route trace -p "Calculate 3 + 4." --png trace.png
agentic route train --method drllm --tasks 24 --out router.safetensors
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentic.core import ConfigError

route_app = typer.Typer(
    help="Layer activity traces (void detection) and skip/execute/repeat routers.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


def _load_backend(uri: str) -> Any:
    from agentic.cli.common import load_quietly as _load

    model = _load(uri)
    if not hasattr(model, "attach"):
        raise ConfigError(f"--backend {uri!r} runs no interventions: use a local model")
    return model


def bars(values: list[float], width: int = 40) -> list[str]:
    """Bars scaled to the second-largest value: the embedding layer's change (layer 0) dwarfs
    the rest, and its bar is cut off with a marker instead."""
    ranked = sorted(values)
    top = (ranked[-2] if len(ranked) > 1 else ranked[-1] if ranked else 0.0) or 1.0
    return ["█" * width + "▶" if v > top else "█" * round(width * v / top) for v in values]


def save_trace_png(activity: Any, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(range(len(activity.prefill_relative)))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    w = 0.4
    ax.bar([x - w / 2 for x in layers], activity.prefill_relative, w, label="prefill")
    ax.bar([x + w / 2 for x in layers], activity.decode_relative, w, label="decode")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("||h_out - h_in|| / ||h_in||")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@route_app.command("trace")
def trace(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The prompt to trace.")],
    backend: Annotated[str, typer.Option("--backend", "-b", help="A local model's URI.")] = (
        "embedded:smollm2"
    ),
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 32,
    png: Annotated[Path | None, typer.Option(help="Also save the chart as PNG.")] = None,
) -> None:
    """Per-layer L2 change of the residual stream for a prompt and its answer, as bars."""
    try:
        _trace(prompt, backend, max_tokens, png)
    except ConfigError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


def _trace(prompt: str, uri: str, max_tokens: int, png: Path | None) -> None:
    from agentic.core import GenerateRequest, InterventionRef
    from backends.interventions.static import ActivityTrace

    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be >= 1, got {max_tokens}")
    if png is not None and png.suffix.lower() != ".png":
        raise ConfigError(f"--png must name a .png file, got {png}")
    model = _load_backend(uri)
    tracer = ActivityTrace()
    model.attach("trace", tracer)
    req = GenerateRequest.chat(prompt, max_tokens=max_tokens, temperature=0.0)
    req = req.model_copy(update={"interventions": (InterventionRef(name="trace"),)})

    async def go() -> str:
        try:
            return (await model.generate([req]))[0][0].text
        finally:
            await model.aclose()

    text = asyncio.run(go())
    [a] = tracer.reports
    out.print(f"[bold]answer:[/] {escape(text)}")
    table = Table(title=f"relative change per layer ({a.prefill_tokens} prompt tokens, "
                        f"{a.decode_tokens} decoded)")  # fmt: skip
    for col in ("layer", "prefill", "", "decode", ""):
        table.add_column(col, justify="right" if col in ("layer", "prefill", "decode") else "left")
    pb, db = bars(a.prefill_relative, 24), bars(a.decode_relative, 24)
    for i, (p, d) in enumerate(zip(a.prefill_relative, a.decode_relative, strict=True)):
        table.add_row(str(i), f"{p:.3f}", f"[cyan]{pb[i]}[/]", f"{d:.3f}", f"[magenta]{db[i]}[/]")
    out.print(table)
    if png is not None:
        out.print(f"wrote {escape(str(save_trace_png(a, png, prompt[:60])))}")


@route_app.command("train")
def train(
    out_path: Annotated[Path, typer.Option("--out", help="The router file to write.")],
    method: Annotated[Literal["drllm"], typer.Option(help="Which router to train.")] = "drllm",
    backend: Annotated[str, typer.Option("--backend", "-b", help="A local model's URI.")] = (
        "embedded:smollm2"
    ),
    tasks: Annotated[int, typer.Option(help="basic_arithmetic training tasks.")] = 16,
    seed: Annotated[int, typer.Option(help="Task seed.")] = 100,
    max_executions: Annotated[
        int | None, typer.Option(help="Layer executions allowed (default: layers - 2).")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Answer log-lik loss allowed per token.")] = 0.3,
    rounds: Annotated[int, typer.Option(help="Search rounds (edits) per task.")] = 6,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Search layer configurations on arithmetic tasks and train Dr.LLM routers on them."""
    try:
        _train(out_path, method, backend, tasks, seed, max_executions, tolerance, rounds, overwrite)
    except ConfigError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


def _train(
    out_path: Path,
    method: str,
    uri: str,
    n: int,
    seed: int,
    max_executions: int | None,
    tolerance: float,
    rounds: int,
    overwrite: bool,
) -> None:
    from agentic.core import GenerateRequest
    from agentic.runtime.suites import load_suite
    from backends.interventions.drllm import fit_drllm

    if out_path.exists() and not overwrite:
        raise ConfigError(f"--out: {out_path} exists; pass --overwrite to replace it")
    if n < 1:
        raise ConfigError(f"--tasks must be >= 1, got {n}")
    suite = load_suite("basic_arithmetic", n=n, seed=seed, config=EASY)
    model = _load_backend(uri)
    budget = max_executions if max_executions is not None else model.num_layers - 2
    examples = [(GenerateRequest.chat(t.input), str(t.answer)) for t in suite.tasks]
    search = {"max_executions": budget, "tolerance": tolerance, "rounds": rounds, "beam": 1}

    async def go() -> Any:
        try:
            return await fit_drllm(
                model, examples, layers=range(1, model.num_layers), search=search
            )
        finally:
            await model.aclose()

    with err.status(f"searching configurations on {n} tasks, then training {method} routers"):
        router, configs = asyncio.run(go())
    router.save(out_path)
    skipped = [len(c.skip) for c in configs]
    repeated = [len(c.repeat) for c in configs]
    out.print(
        f"{method}: {n} tasks, mean skipped {sum(skipped) / n:.1f}, repeated "
        f"{sum(repeated) / n:.1f} of {model.num_layers} layers; wrote {escape(str(out_path))}"
    )
