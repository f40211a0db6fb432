"""A composed pipeline from a YAML spec: PSR over an A²FM router over Direct / SC / ToolAgent.

`examples/pipeline.yaml` nests the controllers; `parse_controller_spec` validates it (a bad field
is a `ConfigError` naming it and its node) and `BuildContext` builds it on the run's backend. Three
one-digit arithmetic tasks run under one `Budget` and one trace; the trace is printed as a tree
of spans (task -> psr -> router decision, model calls, reflections), repeated events folded
into one line. The same run from the command line, in the repository root:

    .venv/bin/agentic run --controller examples/pipeline.yaml --n 3

.venv/bin/python examples/pipeline.py
"""

import asyncio
from collections import defaultdict
from pathlib import Path

from agentic import Budget, Event, Outcome, Tracer, load_backend, load_suite, run_suite
from agentic.specs.registry import BuildContext, parse_controller_spec

SPEC = Path(__file__).with_name("pipeline.yaml")
SHOWN = {  # the payload fields worth a glance, per event type
    "task": ("task_id",),
    "psr.rounds": ("rounds", "source"),
    "router.decision": ("mode",),
    "psr.reflection": ("p", "flagged"),
    "psr.backtrack": ("backtracks",),
    "psr.done": ("backtracks", "reflections"),
}


def describe(event: Event) -> str:
    p = event.payload
    if event.type == "task.outcome":
        outcome = Outcome.model_validate(p["outcome"])
        return f"task.outcome score={outcome.score} tokens={outcome.usage.total_tokens}"
    fields = SHOWN.get(event.type, ())
    return " ".join(
        [event.type, *(f"{k}={p[k]:.2f}" if k == "p" else f"{k}={p[k]}" for k in fields)]
    )


def print_tree(events: list[Event]) -> None:
    children: dict[str | None, list[Event]] = defaultdict(list)
    for e in events:
        children[e.parent_id].append(e)

    def walk(parent: str | None, depth: int) -> None:
        kids = children[parent]
        i = 0
        while i < len(kids):
            e, j = kids[i], i + 1
            # fold a run of identical leaves (model calls, reflections) into one line
            while j < len(kids) and describe(kids[j]) == describe(e) and not children[e.span_id]:
                j += 1
            print("  " * depth + describe(e) + (f"  x{j - i}" if j - i > 1 else ""))
            walk(e.span_id, depth + 1)
            i = j

    walk(None, 0)


async def main() -> None:
    spec = parse_controller_spec(str(SPEC))
    backend = load_backend("embedded:smollm2")
    suite = load_suite("basic_arithmetic", n=3, seed=0)
    controller = BuildContext(backend, suite).build(spec)
    print(f"spec: {spec.model_dump_json(exclude_defaults=True)}\n")
    events: list[Event] = []
    with Tracer([events.append]).activate():
        result = await run_suite(suite, controller, budget=Budget(max_tokens=20_000))
    print_tree([e for e in events if e.type not in ("run.start", "run.end")])
    for task, outcome in zip(suite.tasks, result.outcomes, strict=True):
        answer, mode = outcome.output.strip()[:40], outcome.info["mode"]
        print(f"{task.input.splitlines()[0]} -> {answer!r} (expected {task.answer}, mode {mode})")
    print(f"accuracy {result.accuracy:.0%}; spent {result.usage.total_tokens} tokens of 20000")
    await backend.aclose()


asyncio.run(main())
