"""The `agentic` command: generate, run, replay, trace show.

Every command is a thin synchronous edge over the async API. Errors the user can fix
(bad values, missing files, unknown backends, malformed traces) print one clear line and exit 2;
they never show a traceback. A backend URI is shown and recorded only through `redact_uri`, so a
key in it (`http://user:KEY@host`, `?api_key=KEY`) never reaches the screen or a recording.
"""

# Over 400 lines because `run` declares every option a user sets from the shell (about 30 typer
# parameters, each with its help text): one command's signature, which splitting would scatter.

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentic.cli.common import err, load_quietly, otel_sink
from agentic.cli.progress import solve_with_progress
from agentic.cli.spec import parse_config, read_controller, redacted
from agentic.core import (
    AgenticError,
    Budget,
    ConfigError,
    ConsoleSink,
    GenerateRequest,
    JSONLSink,
    Outcome,
    PriceTable,
    SamplingParams,
    Tracer,
    read_events,
    redact_uri,
    task_messages,
)
from agentic.core.otel import otel_endpoint

app = typer.Typer(
    help="Agents and test-time compute over any language model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()

BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        help="Backend URI: embedded:smollm2, embedded:gemma3-270m, hf:PATH, vllm:PATH, "
        "openai:http://HOST:PORT/v1#MODEL, replay:FILE, or a plugin's scheme.",
    ),
]


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message (or raw text with --raw).")],
    backend: BackendOpt = "embedded:smollm2",
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.0,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    system: Annotated[str | None, typer.Option(help="System message.")] = None,
    raw: Annotated[bool, typer.Option(help="Send PROMPT as raw text, no chat template.")] = False,
) -> None:
    """Generate a reply to PROMPT, streaming it to stdout."""
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    if raw:
        request = GenerateRequest(prompt=prompt, params=params)
    else:
        request = GenerateRequest(messages=task_messages(prompt, system), params=params)
    model = load_quietly(backend)

    async def go() -> None:
        try:
            if hasattr(model, "stream"):
                async for chunk in model.stream(request):
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
            else:
                [[g, *_]] = await model.generate([request])
                sys.stdout.write(g.text)
            sys.stdout.write("\n")
        finally:
            await model.aclose()

    asyncio.run(go())


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False)
    for k, v in rows:
        table.add_row(k, v)
    return table


def _summary(result: Any, backend: str) -> Table:
    u = result.usage
    rows = [
        ("suite", result.suite),
        ("backend", redact_uri(backend)),
        ("tasks", f"{len(result.outcomes)} done, {len(result.not_run)} not run"),
        ("accuracy (mean score)", f"{result.mean_score:.1%}"),
        ("solved (score 1.0)", f"{result.solved} of {len(result.outcomes)}"),
        ("errors", str(result.errors)),
        ("prompt tokens", str(u.prompt_tokens)),
        ("completion tokens", str(u.completion_tokens)),
        # Backend.score (an LLM judge's request) counts as a model call too; a reward call is
        # one verifier score, whatever it cost in model calls.
        ("model calls (generate + score)", str(u.model_calls)),
        ("reward calls (verifier)", str(u.reward_calls)),
        ("wall seconds", f"{result.wall_seconds:.1f}"),
        ("request seconds (summed)", f"{u.seconds:.1f}"),
    ]
    if result.stopped:
        rows.append(("stopped", result.stopped))
    return _table("agentic run", rows)


def _resumable(path: Path, suite: dict[str, Any], config: dict[str, Any]) -> list[Outcome]:
    """Outcomes already recorded in `path`, after checking it records this same run.
    A line cut off by the kill that interrupted the run is dropped, so appending stays valid."""
    if not path.exists():
        raise ConfigError(f"--resume: {path} does not exist")
    events = list(read_events(path))  # a torn last line is skipped here, cut below
    start = next((e for e in events if e.type == "run.start"), None)
    if start is None:
        raise ConfigError(
            f"--resume: {path} has no run.start event: not a recording of `agentic run`"
        )
    for key, want, got in [
        *((f"suite.{k}", suite.get(k), start.payload["suite"].get(k)) for k in suite),
        *((k, config[k], start.payload["config"].get(k)) for k in ("backend", "controller")),
    ]:
        if want != got:
            raise ConfigError(
                f"--resume: {path} recorded a different run: {key} was {got!r}, now {want!r}"
            )
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    return [
        Outcome.model_validate(e.payload["outcome"]) for e in events if e.type == "task.outcome"
    ]


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="reasoning-gym dataset name, or humaneval.")] = (
        "basic_arithmetic"
    ),
    n: Annotated[int, typer.Option(help="Number of tasks.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the task generator.")] = 0,
    backend: BackendOpt = "embedded:smollm2",
    record: Annotated[
        Path | None, typer.Option(help="Write every event of the run to this JSONL file.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --record file.")] = False,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Finish an interrupted `--record` run: solve only the tasks it has no outcome "
            "for, appending to the same file."
        ),
    ] = None,
    config: Annotated[
        list[str] | None, typer.Option("--config", "-c", help="Suite setting KEY=VALUE.")
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            help="Tasks in flight at once. Not part of a run's identity: a --resume may use "
            "another value (outcomes do not depend on it)."
        ),
    ] = 16,
    max_tokens: Annotated[
        int | None, typer.Option(help="direct, sc, cyberv, search: tokens per answer at most.")
    ] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Stop after this many tokens.")] = None,
    budget_seconds: Annotated[float | None, typer.Option(help="Stop after this long.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print events.")] = False,
    progress_every: Annotated[
        float,
        typer.Option(
            help="When stderr is not a terminal: print a progress line at least this many "
            "seconds apart (and at each tenth of the tasks)."
        ),
    ] = 30.0,
    controller: Annotated[
        str,
        typer.Option(
            help="direct; a search (bon, beam, pf, epf, astar; set by the options below); another "
            "controller with its defaults (sc, cyberv, agent, psr, ead, router, or a plugin's "
            "type); or a pipeline spec: a .yaml/.json file or inline JSON."
        ),
    ] = "direct",
    samples: Annotated[
        int | None, typer.Option(help="Search: N samples / beams / particles; sc, cyberv: n.")
    ] = None,
    width: Annotated[int | None, typer.Option(help="Beam search: beams kept.")] = None,
    k: Annotated[int | None, typer.Option(help="A*: continuations per expansion.")] = None,
    astar_cost: Annotated[
        str | None, typer.Option(help="A*: neglog (g = -log prod r, h = 0) or mean_gap.")
    ] = None,
    tokens_per_step: Annotated[
        int | None, typer.Option(help="Search: tokens per step at most.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Search: steps per answer at most.")] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Search, sc, cyberv: sampling temperature.")
    ] = None,
    min_p: Annotated[
        float | None,
        typer.Option(help="Search, sc: drop tokens below min_p x the top token's probability."),
    ] = None,
    reward: Annotated[
        str | None,
        typer.Option(
            help="Search: the verifier: value (the default: the shipped value model, a LoRA "
            "SmolLM2 with a scalar head; best ROC AUC on held-out train-family prefixes), judge "
            "(LLM judge on the backend), head (a trained head, see --head), confidence (the "
            "policy's own token confidence), program (agreement with a program the model writes, "
            "run in the sandbox), checker (oracle), or a weighted sum such as "
            "0.7*confidence+0.3*program."
        ),
    ] = None,
    head: Annotated[
        Path | None, typer.Option(help="--reward head: the saved head (.pt, with its .pt.json).")
    ] = None,
    confidence: Annotated[
        str | None, typer.Option(help="--reward confidence: lowest_group, tail or mean.")
    ] = None,
    select: Annotated[
        str | None,
        typer.Option(help="bon: best (top reward) or weighted_majority (reward-weighted vote)."),
    ] = None,
    keep: Annotated[
        float | None, typer.Option(help="bon: vote over the best-scored fraction only (DeepConf).")
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option(
            help="Price table (YAML/JSON: {name: {prompt: USD/1M, completion: USD/1M}}, by "
            "backend name or URI): prices usage, so --budget-usd charges."
        ),
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option(help="Stop after this many dollars (needs --prices).")
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Solve the tasks on a Ray cluster: HOST:PORT, ray://HOST:PORT, auto, or local "
            "(start Ray in this process). The recording, --resume and the table are as local.",
        ),
    ] = None,
    ray_workers: Annotated[
        int, typer.Option(help="--ray: worker actors, one CPU each (a local model per actor).")
    ] = 2,
    otel: Annotated[
        str | None,
        typer.Option(
            "--otel",
            help="Export the run as OpenTelemetry spans (GenAI conventions) to this OTLP/HTTP "
            "endpoint: a base URL such as http://127.0.0.1:6006 (Phoenix) or a .../v1/traces "
            "URL. Default: OTEL_EXPORTER_OTLP_ENDPOINT when it is set.",
        ),
    ] = None,
) -> None:
    """Solve a task suite and print accuracy and cost: plain greedy answering (`direct`) or a
    test-time search guided by a reward model.

    `--resume` checks that the recording is of the same run (suite, backend, controller);
    `--concurrency` is deliberately not part of that identity, so a resume may change it."""
    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext

    if resume is not None and record is not None and record != resume:
        raise ConfigError(f"--resume appends to {resume}; drop --record {record}")
    if resume is None and record is not None and record.exists() and not overwrite:
        raise ConfigError(f"{record} exists; pass --overwrite to replace it (or --resume it)")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
    if not progress_every >= 0:
        raise ConfigError(f"--progress-every must be >= 0 seconds, got {progress_every}")
    otel_endpoint(otel)  # a bad --otel URL fails here, before the model loads
    flags = {
        "max_tokens": max_tokens,
        "samples": samples,
        "width": width,
        "k": k,
        "cost": astar_cost,
        "tokens_per_step": tokens_per_step,
        "max_steps": max_steps,
        "temperature": temperature,
        "min_p": min_p,
        "reward": reward,
        "head": str(head) if head is not None else None,
        "confidence": confidence,
        "select": select,
        "keep": keep,
    }
    spec = read_controller(controller, {f: v for f, v in flags.items() if v is not None})
    task_suite = load_suite(suite, n=n, seed=seed, config=parse_config(config or []))
    if budget_usd is not None and prices is None:
        raise ConfigError("--budget-usd needs --prices: without a price table nothing costs")
    table = PriceTable.load(prices) if prices is not None else None
    budget = Budget(max_tokens=budget_tokens, max_seconds=budget_seconds, max_cost_usd=budget_usd)

    def load_priced(uri: str) -> Any:
        b = load_quietly(uri)
        if table is not None:
            b.price = table.price_for([b.name, uri])
        return b

    executor = None
    if ray is not None:
        from agentic.runtime.on_ray import RayExecutor

        executor = RayExecutor(ray, backend=backend, workers=ray_workers, prices=table)
    # on Ray the model loads in the workers, not here
    model = load_priced(backend) if executor is None else None
    # recorded with every URI redacted (a pipeline's own backends too); a resume compares and a
    # replay looks backends up in this same redacted form, so neither needs the key. Names stay
    # as the backend gives them: they key its events (OpenAIBackend redacts its own)
    run_config: dict[str, Any] = {
        "backend": redact_uri(backend),
        "backend_name": model.name if model is not None else None,
        "controller": redacted(spec.model_dump(mode="json")),
        "concurrency": concurrency,
    }
    if executor is not None:
        run_config["ray"] = {"address": redact_uri(ray or ""), "workers": ray_workers}
    done: list[Outcome] | None = None
    if resume is not None:
        done = _resumable(resume, task_suite.config(), run_config)
        record = resume
    elif record is not None and overwrite:
        record.unlink(missing_ok=True)
    sink = JSONLSink(record) if record is not None else None
    sinks: list[Any] = [sink] if sink else []
    if verbose:
        sinks.append(ConsoleSink(types={"backend.generate", "task.outcome", "run.end"}))
    exporter = otel_sink(otel)
    if exporter is not None:
        sinks.append(exporter)
    tracer = Tracer(sinks)

    builder = BuildContext(model, task_suite, load_priced) if model is not None else None

    async def go() -> Any:
        built: Any = None
        try:
            if executor is not None:
                built = await executor.controller(spec, task_suite)
                run_config["backend_name"] = built.backend_name
                run_config["backends"] = built.info[0]["backends"]
            else:
                assert builder is not None
                built = builder.build(spec)
                # other backends the pipeline named, so a replay can serve each from the
                # recording
                run_config["backends"] = {
                    redact_uri(uri): b.name for uri, b in builder.backends.items()
                }
            with tracer.activate():
                return await solve_with_progress(
                    task_suite, built, concurrency, budget, run_config, done, err, progress_every
                )
        finally:
            if executor is not None and built is not None:
                await built.aclose()
            if builder is not None:
                await builder.aclose()
                for b in [builder.backend, *builder.backends.values()]:
                    await b.aclose()
            if sink is not None:
                sink.close()
            if exporter is not None:
                exporter.close()  # ends what a failure left open, and sends every span

    result = asyncio.run(go())
    out.print(_summary(result, backend))
    if record is not None:
        err.print(f"recorded to {record}")
    if json_out is not None:
        json_out.write_text(result.model_dump_json(indent=2))


def _same(a: Outcome, b: Outcome) -> bool:
    return (a.output, a.score, a.usage, a.error) == (b.output, b.score, b.usage, b.error)


@app.command()
def replay(
    path: Annotated[Path, typer.Argument(help="A recording made with `agentic run --record`.")],
) -> None:
    """Re-run a recorded run with no model: every backend call is served from the recording.
    Exits 1 if any outcome differs from the recorded one."""
    from agentic.runtime.runner import run_suite
    from agentic.runtime.suites import suite_from_config
    from agentic.specs.pipeline import memory_nodes
    from agentic.specs.registry import BuildContext, parse_controller_spec
    from backends.replay import ReplayBackend

    events = list(read_events(path))
    start = next((e for e in events if e.type == "run.start"), None)
    if start is None:
        raise ConfigError(f"{path} has no run.start event: not a recording of `agentic run`")
    cfg = start.payload["config"]
    suite = suite_from_config(start.payload["suite"])
    recorded = {
        o.task_id: o
        for o in (
            Outcome.model_validate(e.payload["outcome"]) for e in events if e.type == "task.outcome"
        )
    }
    model = ReplayBackend(path, backend=cfg.get("backend_name"))
    others = cfg.get("backends", {})

    def recorded_backend(uri: str) -> Any:
        if uri not in others:
            raise ConfigError(f"{path} recorded no backend {uri!r}; it has {sorted(others)}")
        return ReplayBackend(path, backend=others[uri])

    spec = parse_controller_spec(cfg["controller"], files=False)
    if memory := memory_nodes(spec):
        raise ConfigError(
            f"{path} ran a pipeline with memory ({', '.join(memory)}): its prompts depend on "
            "what the memory held at each step, which the store no longer holds; replay is "
            "not supported for it"
        )
    tasks = [t for t in suite.tasks if t.id in recorded]
    result = asyncio.run(
        run_suite(
            suite,
            BuildContext(model, suite, recorded_backend).build(spec),
            concurrency=cfg.get("concurrency", 16),
            tasks=tasks,
            config=cfg,
        )
    )
    differ = [o.task_id for o in result.outcomes if not _same(o, recorded[o.task_id])]
    out.print(_summary(result, f"replay of {cfg.get('backend')}"))
    if differ:
        out.print(
            f"[red]{len(differ)} outcome(s) differ from the recording:[/] {', '.join(differ[:10])}"
        )
        raise typer.Exit(1)
    out.print(f"[green]identical[/]: {len(result.outcomes)} outcomes match the recording")


# `trace` and `plot` read recordings; they live beside this module and share its consoles
from agentic.cli.inspect import plot_app, trace_app  # noqa: E402

app.add_typer(trace_app, name="trace")
app.add_typer(plot_app, name="plot")

from agentic.cli.memory import memory_app  # noqa: E402

app.add_typer(memory_app, name="memory")

from agentic.cli.steer import steer_app  # noqa: E402

app.add_typer(steer_app, name="steer")

from agentic.cli.route import route_app  # noqa: E402

app.add_typer(route_app, name="route")

from agentic.cli.serve import serve  # noqa: E402

app.command()(serve)

from agentic.cli.view import view  # noqa: E402

app.command()(view)


def _explain(e: ValidationError) -> str:
    parts = []
    for item in e.errors():
        where = ".".join(str(x) for x in item.get("loc", ())) or e.title
        parts.append(f"{where}: {item.get('msg')}")
    return f"invalid {e.title}: " + "; ".join(parts)


def main() -> None:
    try:
        app()
    except ValidationError as e:
        err.print(f"[red]error:[/] {escape(redact_uri(_explain(e)))}")
        sys.exit(2)
    except (AgenticError, FileNotFoundError) as e:
        # redacted again here: a plugin's error may quote the URI it was given
        err.print(f"[red]error:[/] {escape(redact_uri(str(e)))}")
        sys.exit(2)
