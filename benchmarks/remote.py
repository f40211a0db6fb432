"""Overhead of `OpenAIBackend` over a bare `httpx` loop, against a real llama.cpp server.

64 chat requests at concurrency 1, 4 and 16, sent two ways that put the same bytes on the wire:
through agentic's `OpenAIBackend` (validation, retry policy, budget, events) and through a bare
`httpx.AsyncClient` loop with a semaphore. The server is llama.cpp's (`llama-cpp-python[server]`,
started on 127.0.0.1 by tests/servers.py) serving the embedded SmolLM2-135M GGUF. Target
(issue #3): agentic's throughput within 5% of bare httpx at each concurrency.

The two ways alternate within each repeat (bare, agentic, bare, agentic, ...) so drift in the
server's speed hits both; the table reports medians.

    .venv/bin/python benchmarks/remote.py [--requests 64] [--tokens 16] [--repeats 5]

Prints a table and writes benchmarks/results/remote.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from servers import MODEL, start_llamacpp

from agentic.core import GenerateRequest
from backends.openai.backend import OpenAIBackend


def prompts(n: int) -> list[str]:
    return [f"What is {k} plus {2 * k + 1}? Answer with a number." for k in range(n)]


async def bare(url: str, texts: list[str], tokens: int, concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(text: str) -> int:
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": tokens,
                "temperature": 0.0,
                "top_p": 1.0,
                "n": 1,
            }
            async with gate:
                resp = await client.post(f"{url}/chat/completions", json=body)
            resp.raise_for_status()
            return int(resp.json()["usage"]["completion_tokens"])

        return sum(await asyncio.gather(*(one(t) for t in texts)))


async def agentic(backend: OpenAIBackend, texts: list[str], tokens: int) -> int:
    # one generate() call per request, as independent coroutines would make them
    reqs = [GenerateRequest.chat(t, max_tokens=tokens, temperature=0.0) for t in texts]
    results = await asyncio.gather(*(backend.generate([r]) for r in reqs))
    return sum(g.usage.completion_tokens for [[g]] in results)


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    texts = prompts(args.requests)
    rows: dict[str, Any] = {}
    for c in (1, 4, 16):
        backend = OpenAIBackend(url, MODEL, server="llama.cpp", max_concurrency=c)
        ways = {
            "bare httpx": lambda c=c: bare(url, texts, args.tokens, c),
            "agentic": lambda b=backend: agentic(b, texts, args.tokens),
        }
        rates: dict[str, list[float]] = {name: [] for name in ways}
        tokens: dict[str, int] = {}
        await ways["agentic"]()  # warm-up: the server caches prompts
        for _ in range(args.repeats):
            for name, way in ways.items():
                t0 = time.perf_counter()
                tokens[name] = await way()
                rates[name].append(args.requests / (time.perf_counter() - t0))
        await backend.aclose()
        med = {name: statistics.median(r) for name, r in rates.items()}
        rows[str(c)] = {
            "requests_per_second_median": med,
            "requests_per_second_all": rates,
            "completion_tokens": tokens,
            "agentic_vs_bare": med["agentic"] / med["bare httpx"],
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "remote.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as logs:
        server = start_llamacpp(Path(logs))
        try:
            rows = asyncio.run(measure(server.url, args))
        finally:
            server.stop()

    table = Table(title=f"{args.requests} chat requests x {args.tokens} tokens, llama.cpp server")
    table.add_column("concurrency", justify="right")
    table.add_column("bare httpx req/s", justify="right")
    table.add_column("agentic req/s", justify="right")
    table.add_column("agentic / bare", justify="right")
    for c, row in rows.items():
        med = row["requests_per_second_median"]
        table.add_row(
            c, f"{med['bare httpx']:.2f}", f"{med['agentic']:.2f}", f"{row['agentic_vs_bare']:.3f}"
        )
    console = Console()
    console.print(table)
    worst = min(row["agentic_vs_bare"] for row in rows.values())
    console.print(f"worst ratio {worst:.3f} (target >= 0.95)")
    result = {
        "benchmark": "remote",
        "server": "llama-cpp-python[server] 0.3.36, SmolLM2-135M-Instruct Q4_1 GGUF",
        "machine": f"{platform.machine()} {platform.python_version()}",
        "requests": args.requests,
        "max_tokens": args.tokens,
        "repeats": args.repeats,
        "by_concurrency": rows,
        "worst_ratio": worst,
        "target": "agentic / bare >= 0.95 at each concurrency",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
