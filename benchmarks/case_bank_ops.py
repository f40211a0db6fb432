"""What a `CaseBank` costs around its vector index: writes, opening, and retrieval.

For each bank size (1k and 10k cases by default), with the dependency-free `HashingEmbedder`
(256-d) so that embedding time stays out of the numbers:

- `add`: cases written one `add` at a time (one embedding, one SQLite transaction each),
  in cases per second;
- `open (rebuild)`: opening the store with no index snapshot, so the faiss index is rebuilt
  from the stored vectors; `open (snapshot)`: opening after `close` stored a snapshot;
- `retrieve`: one top-4 `retrieve` (embed the query, replay the log, search, fetch the rows),
  median and p95 over `--queries` queries;
- `sync`: a `retrieve` right after another connection added 100 cases (replaying them).

    .venv/bin/python benchmarks/case_bank_ops.py [--sizes 1000,10000] [--queries 200]

Prints a table and writes benchmarks/results/case_bank_ops.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from memory import Case, CaseBank, HashingEmbedder
from memory.case_index import CaseIndex

OUT = Path(__file__).parent / "results" / "case_bank_ops.json"
WORDS = "add subtract multiply divide sort reverse count find sum list string number date".split()


def task_text(i: int) -> str:
    # distinct, word-overlapping task texts: retrieval has real neighbours to rank
    return f"{WORDS[i % 13]} the {WORDS[(i // 13) % 13]} of {i % 97} and {i // 7} items"


async def measure(size: int, queries: int, folder: Path) -> dict[str, Any]:
    path = folder / f"bank-{size}.db"
    bank = CaseBank.open(path, HashingEmbedder())
    t = time.perf_counter()
    for i in range(size):
        await bank.add(Case(task=task_text(i), plan="p", reward=1.0, label=i % 3 != 0))
    add_s = time.perf_counter() - t
    bank.conn.execute("DELETE FROM case_snapshots")
    bank.close()

    t = time.perf_counter()
    bank = CaseBank.open(path, HashingEmbedder())
    open_rebuild = time.perf_counter() - t
    bank.close()  # stores the snapshot
    t = time.perf_counter()
    bank = CaseBank.open(path, HashingEmbedder())
    open_snapshot = time.perf_counter() - t

    lat = []
    for q in range(queries):
        t = time.perf_counter()
        await bank.retrieve(task_text(q * 31 + 5) + " please", k=4)
        lat.append(time.perf_counter() - t)

    other = CaseBank.open(path, HashingEmbedder())
    for i in range(100):
        await other.add(Case(task=task_text(size + i), plan="p", reward=0.0, label=False))
    other.close()
    t = time.perf_counter()
    await bank.retrieve("count the items", k=4)
    sync_s = time.perf_counter() - t
    assert isinstance(bank._index, CaseIndex) and len(bank._index) == size + 100
    bank.close()
    lat.sort()
    return {
        "size": size,
        "add_per_s": size / add_s,
        "open_rebuild_ms": 1e3 * open_rebuild,
        "open_snapshot_ms": 1e3 * open_snapshot,
        "retrieve_median_ms": 1e3 * statistics.median(lat),
        "retrieve_p95_ms": 1e3 * lat[int(0.95 * (len(lat) - 1))],
        "sync_100_ms": 1e3 * sync_s,
        "store_mb": path.stat().st_size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as d:
        rows = [asyncio.run(measure(n, args.queries, Path(d))) for n in sizes]
    table = Table(title="CaseBank operations (HashingEmbedder 256-d, SQLite WAL; times in ms)")
    cols = [
        ("cases", "size", "{:,}"),
        ("add/s", "add_per_s", "{:,.0f}"),
        ("open rebuild", "open_rebuild_ms", "{:.0f}"),
        ("open snapshot", "open_snapshot_ms", "{:.0f}"),
        ("retrieve p50", "retrieve_median_ms", "{:.2f}"),
        ("retrieve p95", "retrieve_p95_ms", "{:.2f}"),
        ("sync 100", "sync_100_ms", "{:.1f}"),
        ("store MB", "store_mb", "{:.1f}"),
    ]
    for name, _, _ in cols:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(*(fmt.format(r[key]) for _, key, fmt in cols))
    Console().print(table)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "python": platform.python_version()}
    OUT.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
