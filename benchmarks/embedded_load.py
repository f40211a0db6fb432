"""Load time of the embedded models: first use (dequantize the GGUF, save safetensors) and
every later use (load the cached copy). Target (issue #2): later loads < 5 s.

    .venv/bin/python benchmarks/embedded_load.py [--models smollm2 gemma3-270m]

Uses a fresh temporary cache dir, so the first load really converts. Prints a table and writes
benchmarks/results/embedded_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3-270m"])
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "embedded_load.json"
    )
    args = ap.parse_args()
    os.environ["AGENTIC_CACHE_DIR"] = tempfile.mkdtemp(prefix="agentic-bench-")
    from transformers.utils import logging as hf_logging

    from backends import load_backend

    hf_logging.disable_progress_bar()
    rows = {}
    for name in args.models:
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            load_backend(f"embedded:{name}")
            times.append(time.perf_counter() - t0)
        rows[name] = {"first_load_s": times[0], "cached_load_s": times[1]}
    table = Table(title="embedded model load (fresh cache dir)")
    for col in ("model", "first load (convert) s", "cached load s", "target"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, f"{r['first_load_s']:.1f}", f"{r['cached_load_s']:.2f}", "< 5 s")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "embedded_load", "models": rows}, indent=2))


if __name__ == "__main__":
    main()
