"""Throughput of `TransformersBackend`'s request coalescing on the embedded SmolLM2-135M.

Three ways to produce 16 greedy 64-token completions (EOS ignored so every way does the same
work): 16 concurrent `generate` calls through the backend (coalesced into one batch), the same
16 calls one after another, and raw `model.generate` with a left-padded batch of 16.
Targets (issue #2): concurrent >= 3x sequential, and within 10% of raw `generate`.

    .venv/bin/python benchmarks/batching.py [--repeats 3] [--tokens 64] [--requests 16]

Prints a table and writes benchmarks/results/batching.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from agentic.core import GenerateRequest
from backends import TransformersBackend, load_backend

QUESTIONS = [
    "What is {i} plus {j}?",
    "Write one sentence about the number {i}.",
    "Name a colour and explain why {j} people might like it.",
    "Explain in simple words what {i} times {j} means.",
]


def requests(n: int, tokens: int) -> list[GenerateRequest]:
    return [
        GenerateRequest.chat(
            QUESTIONS[k % len(QUESTIONS)].format(i=k + 2, j=3 * k + 1),
            max_tokens=tokens,
            temperature=0.0,
            ignore_eos=True,
        )
        for k in range(n)
    ]


async def concurrent(backend: TransformersBackend, reqs: list[GenerateRequest]) -> int:
    results = await asyncio.gather(*(backend.generate([r]) for r in reqs))
    return sum(len(g.token_ids) for [[g]] in results)


async def sequential(backend: TransformersBackend, reqs: list[GenerateRequest]) -> int:
    total = 0
    for r in reqs:
        [[g]] = await backend.generate([r])
        total += len(g.token_ids)
    return total


def raw_generate(backend: TransformersBackend, reqs: list[GenerateRequest], tokens: int) -> int:
    tok, model = backend.tokenizer, backend.model
    texts = [
        tok.apply_chat_template(
            [m.model_dump(exclude_none=True) for m in r.messages or ()],
            tokenize=False,
            add_generation_prompt=True,
        )
        for r in reqs
    ]
    tok.padding_side = "left"
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=backend.forwards.pad_id,
        )
    return int((out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0])


def timed(fn: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    produced = fn()
    return time.perf_counter() - t0, produced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "batching.json")
    args = ap.parse_args()

    backend = load_backend("embedded:smollm2")
    assert isinstance(backend, TransformersBackend)
    reqs = requests(args.requests, args.tokens)
    ways = {
        "agentic concurrent": lambda: asyncio.run(concurrent(backend, reqs)),
        "agentic sequential": lambda: asyncio.run(sequential(backend, reqs)),
        # on the backend's model thread, as the backend's own forwards: a second thread running
        # torch would bring a second OpenMP team that slows whichever way runs next to it
        f"raw model.generate batch {args.requests}": lambda: asyncio.run(
            backend.exclusive(raw_generate, backend, reqs, args.tokens)
        ),
    }
    ways["agentic concurrent"]()  # warm-up: first forward passes allocate
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            seconds, produced = timed(fn)
            rates[name].append(produced / seconds)

    med = {name: statistics.median(r) for name, r in rates.items()}
    names = list(ways)
    conc, seq, raw = (med[n] for n in names)
    result = {
        "benchmark": "batching",
        "model": "embedded:smollm2 (SmolLM2-135M-Instruct, fp32)",
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "requests": args.requests,
        "tokens_per_request": args.tokens,
        "repeats": args.repeats,
        "tokens_per_second_median": med,
        "tokens_per_second_all": rates,
        "speedup_vs_sequential": conc / seq,
        "ratio_vs_raw_generate": conc / raw,
        "targets": {"speedup_vs_sequential": ">= 3.0", "ratio_vs_raw_generate": ">= 0.90"},
    }
    table = Table(title=f"{args.requests} x {args.tokens}-token greedy requests, SmolLM2-135M")
    table.add_column("way")
    table.add_column("tokens/s (median)", justify="right")
    table.add_column("vs agentic concurrent", justify="right")
    for name in names:
        table.add_row(name, f"{med[name]:.1f}", f"{conc / med[name]:.2f}x")
    console = Console()
    console.print(table)
    console.print(
        f"speedup vs sequential {conc / seq:.2f}x (target >= 3), "
        f"vs raw generate {conc / raw:.2f} (target >= 0.90)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
