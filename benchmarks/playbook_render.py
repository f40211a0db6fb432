"""An ACE playbook under 500 updates: does its rendering stay within the token budget, how full
does it get, and what does an update cost?

A seeded stream of `--updates` batches (60% ADD of 3-30 words into a random section, 30% TAG
helpful/harmful, 10% UPDATE / MERGE / DELETE) is applied to a playbook in a store file (WAL,
one transaction per batch) with grow-and-refine on (hashing embedder, threshold 0.9). After
every batch the playbook is rendered at each budget in `--budgets`, counted both by the default
estimate (4 characters a token) and by SmolLM2's own tokenizer (`--no-tokenizer` skips it).
Reported per budget and counter: the largest rendered size over the run (must be <= budget),
the mean fill of the budget once the playbook outgrew it, and the bullets shown at the end.

    .venv/bin/python benchmarks/playbook_render.py [--updates 500] [--budgets 256,1024]

Prints a table and writes benchmarks/results/playbook_render.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memory import HashingEmbedder, Playbook
from memory.playbook_ops import estimate_tokens

OUT = Path(__file__).parent / "results" / "playbook_render.json"


def batch(rng: random.Random, pb: Playbook, k: int) -> list[dict[str, Any]]:
    ids = [b.id for b in pb.bullets]
    r = rng.random()
    if r < 0.6 or len(ids) < 2:
        words = " ".join(f"w{rng.randrange(500)}" for _ in range(rng.randrange(3, 31)))
        return [{"op": "ADD", "section": rng.choice(list(pb.sections)), "content": f"{k} {words}"}]
    if r < 0.9:
        return [{"op": "TAG", "id": rng.choice(ids), "tag": rng.choice(["helpful", "harmful"])}]
    if r < 0.95:
        return [{"op": "UPDATE", "id": rng.choice(ids), "content": f"revised at {k}"}]
    if r < 0.98:
        return [{"op": "MERGE", "ids": rng.sample(ids, 2), "content": f"merged at {k}"}]
    return [{"op": "DELETE", "id": rng.choice(ids)}]


async def run(updates: int, budgets: list[int], counters: dict[str, Callable[[str], int]]) -> dict:
    rng = random.Random(0)
    sizes: dict[tuple[int, str], list[int]] = {(b, c): [] for b in budgets for c in counters}
    full: dict[tuple[int, str], list[float]] = {(b, c): [] for b in budgets for c in counters}
    apply_s, render_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        pb = await Playbook.open(Path(tmp) / "pb.db", embedder=HashingEmbedder())
        for k in range(updates):
            t = time.perf_counter()
            await pb.apply(batch(rng, pb, k), source=f"u{k}")
            apply_s.append(time.perf_counter() - t)
            for name, count in counters.items():
                whole = count(pb.render(10**9, count_tokens=count))
                for b in budgets:
                    t = time.perf_counter()
                    text = pb.render(b, count_tokens=count)
                    render_s.append(time.perf_counter() - t)
                    sizes[b, name].append(count(text))
                    if whole > b:  # the playbook no longer fits: how full is the render?
                        full[b, name].append(count(text) / b)
        shown = {b: sum(ln.startswith("[") for ln in pb.render(b).splitlines()) for b in budgets}
        bullets, version = len(pb), pb.version
        await pb.aclose()
    rows = [
        {
            "budget": b,
            "counter": name,
            "max_rendered": max(sizes[b, name]),
            "within_budget": max(sizes[b, name]) <= b,
            "mean_fill_when_over": round(statistics.mean(full[b, name]), 3)
            if full[b, name]
            else None,
            "shown_at_end": shown[b] if name == "estimate" else None,
        }
        for b in budgets
        for name in counters
    ]
    return {
        "updates": updates,
        "final_bullets": bullets,
        "final_version": version,
        "apply_ms_median": round(1000 * statistics.median(apply_s), 2),
        "apply_ms_p95": round(1000 * sorted(apply_s)[int(0.95 * len(apply_s))], 2),
        "render_ms_median": round(1000 * statistics.median(render_s), 2),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=500)
    ap.add_argument("--budgets", default="256,1024")
    ap.add_argument("--no-tokenizer", action="store_true")
    args = ap.parse_args()
    counters: dict[str, Callable[[str], int]] = {"estimate": estimate_tokens}
    if not args.no_tokenizer:
        from backends import load_backend

        counters["smollm2"] = load_backend("embedded:smollm2").count_tokens
    budgets = [int(b) for b in args.budgets.split(",")]
    result = asyncio.run(run(args.updates, budgets, counters))
    table = Table(title=f"playbook render over {args.updates} updates")
    for col in ("budget", "counter", "max rendered", "within", "mean fill", "shown at end"):
        table.add_column(col)
    for r in result["rows"]:
        table.add_row(
            str(r["budget"]),
            r["counter"],
            str(r["max_rendered"]),
            str(r["within_budget"]),
            str(r["mean_fill_when_over"]),
            str(r["shown_at_end"] or ""),
        )
    Console().print(table)
    print(
        f"final: {result['final_bullets']} bullets, version {result['final_version']}; apply "
        f"median {result['apply_ms_median']} ms (p95 {result['apply_ms_p95']} ms), render "
        f"median {result['render_ms_median']} ms"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
