"""Prompt tokens encoded per generated token, with and without prefix KV reuse, in a search.

A particle filter (N particles, a few steps each) on basic_arithmetic tasks with the embedded
SmolLM2-135M, the suite's checker as the reward (so every encoded token is the policy's). Each
step re-sends the chat plus the growing answer as a prefix; without reuse the whole prompt is
encoded again at every step, with it only the newest step is. Target (issue #4): <= 1.5 prompt
tokens encoded per generated token with reuse.

    .venv/bin/python benchmarks/prefix_reuse.py [--tasks 5] [--particles 4] [--steps 4]

Prints a table and writes benchmarks/results/prefix_reuse.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agentic.core import Context
from agentic.runtime.suites import load_suite
from backends import TransformersBackend, load_backend
from search import CheckerReward, ParticleFilter, StepGenerator


async def measure(backend: TransformersBackend, args: argparse.Namespace) -> dict[str, Any]:
    suite = load_suite("basic_arithmetic", n=args.tasks, seed=args.seed)
    steps = StepGenerator(
        backend,
        tokens_per_step=args.tokens_per_step,
        max_steps=args.steps,
        temperature=0.7,
        system_prompt=suite.system_prompt,
    )
    pf = ParticleFilter(steps, CheckerReward(suite), n=args.particles)
    before = backend.forwards.encoded_tokens
    t0 = time.perf_counter()
    results = await asyncio.gather(*(pf.search(t, Context()) for t in suite.tasks))
    generated = sum(r.usage.completion_tokens for r in results)
    billed = sum(r.usage.prompt_tokens for r in results)
    encoded = backend.forwards.encoded_tokens - before
    return {
        "generated_tokens": generated,
        "prompt_tokens_billed": billed,
        "prompt_tokens_encoded": encoded,
        "encoded_per_generated": encoded / max(generated, 1),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--particles", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tokens-per-step", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "prefix_reuse.json"
    )
    args = ap.parse_args()

    base = load_backend("embedded:smollm2")
    assert isinstance(base, TransformersBackend)
    rows = {}
    for name, tokens in (("no reuse", 0), ("prefix reuse", 4096)):
        backend = TransformersBackend(base.model, base.tokenizer, prefix_cache_tokens=tokens)
        rows[name] = asyncio.run(measure(backend, args))

    table = Table(title=f"particle filter N={args.particles}, {args.tasks} tasks, SmolLM2-135M")
    for col in ("", "generated", "billed prompt", "encoded prompt", "encoded/generated", "s"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        table.add_row(
            name,
            str(r["generated_tokens"]),
            str(r["prompt_tokens_billed"]),
            str(r["prompt_tokens_encoded"]),
            f"{r['encoded_per_generated']:.2f}",
            f"{r['seconds']:.1f}",
        )
    console = Console()
    console.print(table)
    console.print("target: <= 1.5 encoded prompt tokens per generated token with reuse")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "prefix_reuse",
                "args": vars(args) | {"out": str(args.out)},
                "results": rows,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
