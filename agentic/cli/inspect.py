"""`agentic trace` and `agentic plot`: commands that read recordings, no model involved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agentic.core import ConfigError, read_events

trace_app = typer.Typer(help="Inspect recorded traces.", no_args_is_help=True)
plot_app = typer.Typer(help="Plot recorded runs.", no_args_is_help=True)
out = Console()
err = Console(stderr=True, soft_wrap=True)


def _brief(type_: str, p: dict[str, Any]) -> str:
    if type_.startswith("backend."):
        req = p.get("request", {})
        text = req.get("prompt") or (req.get("messages") or [{}])[-1].get("content", "")
        res = (p.get("results") or [{}])[0]
        return f"{p.get('backend')} {text[:40]!r} -> {str(res.get('text', ''))[:40]!r}"
    if type_ == "task.outcome":
        o = p.get("outcome", {})
        return f"{o.get('task_id')} score={o.get('score')} {str(o.get('output', ''))[:40]!r}"
    return json.dumps(p, default=str)[:90]


@trace_app.command("show")
def trace_show(
    path: Annotated[Path, typer.Argument(help="A JSONL trace.")],
    type_: Annotated[str | None, typer.Option("--type", help="Only events of this type.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many events.")] = 200,
    tree: Annotated[
        bool, typer.Option("--tree", help="Draw the search trees the trace holds instead.")
    ] = False,
) -> None:
    """Print the events of a trace as a table, or its search trees with --tree."""
    if tree:
        trees = _search_trees(list(read_events(path)))
        if not trees:
            raise ConfigError(f"{path} holds no search.node events: no search ran in it")
        for t in trees[:limit]:
            out.print(t)
        return
    events = [e for e in read_events(path) if type_ is None or e.type == type_]
    t0 = events[0].ts if events else 0.0
    table = Table(title=f"{path} ({len(events)} events)")
    for col in ("#", "t (s)", "type", "span", "parent", "summary"):
        table.add_column(col, overflow="fold")
    for i, e in enumerate(events[:limit]):
        table.add_row(
            str(i),
            f"{e.ts - t0:.2f}",
            e.type,
            e.span_id[:8],
            (e.parent_id or "")[:8],
            _brief(e.type, e.payload),
        )
    out.print(table)
    if len(events) > limit:
        out.print(f"... {len(events) - limit} more (use --limit)")


def _search_trees(events: list[Any]) -> list[Any]:
    """One rich Tree per search (the events of one search share the span they ran in)."""
    from rich.markup import escape
    from rich.tree import Tree

    searches: dict[str, dict[int, dict[str, Any]]] = {}
    for e in events:
        if e.type == "search.node":
            nodes = searches.setdefault(e.parent_id or "", {0: {"step": "", "kids": []}})
            nodes[e.payload["node"]] = {**e.payload, "kids": []}
            nodes[e.payload["parent"]]["kids"].append(e.payload["node"])
        elif e.type == "search.score" and (e.parent_id or "") in searches:
            searches[e.parent_id or ""][e.payload["node"]]["score"] = e.payload["score"]
    trees = []
    for span_id, nodes in searches.items():
        root = Tree(f"search {span_id[:8]} ({len(nodes) - 1} nodes)")

        def grow(branch: Any, node: int, nodes: dict[int, dict[str, Any]] = nodes) -> None:
            for kid in nodes[node]["kids"]:
                d = nodes[kid]
                score = f" [cyan]{d['score']:.3f}[/]" if d.get("score") is not None else ""
                done = " [green]done[/]" if d.get("done") else ""
                label = escape(repr(d["step"][:60]))
                grow(branch.add(f"#{kid}{score}{done} {label}"), kid)

        grow(root, 0)
        trees.append(root)
    return trees


@plot_app.command("budget")
def plot_budget(
    recordings: Annotated[
        list[Path] | None,
        typer.Argument(help="Recordings made with `agentic run --record`, one point each."),
    ] = None,
    out_path: Annotated[
        Path, typer.Option("--out", help="The image to write (PNG); the points go beside it.")
    ] = Path("budget.png"),
    x: Annotated[
        str, typer.Option(help="Cost axis: completion_tokens, total_tokens or seconds.")
    ] = "completion_tokens",
    title: Annotated[str | None, typer.Option(help="Title of the plot.")] = None,
) -> None:
    """Accuracy against mean cost per task, one line per controller (points: its sizes)."""
    from agentic.runtime.plot import budget_points
    from agentic.runtime.plot import plot_budget as draw

    points = budget_points(recordings or [], x=x)
    image = draw(points, out_path, x_name=x, title=title)
    err.print(f"wrote {image} and {image.with_suffix('.json')} ({len(points)} points)")
