"""What constrained decoding buys and costs on the embedded SmolLM2-135M (CPU).

Asks for a person and their pet as JSON (a pydantic model with a nested object, an enum and
integer bounds), `--samples` seeded samples, batched, three ways: prompted only (the schema in
the prompt, no constraint), constrained by `response_format` (xgrammar mask per row), and
`generate_structured` (constrained, validated, one corrective retry). Reports the share that
validates and the decode time per generated token, and what the mask alone costs per row and
step (`RowGrammar.steer` on the full vocabulary).

    .venv/bin/python benchmarks/structured.py [--samples 16] [--max-tokens 120]

Prints a table and writes benchmarks/results/structured.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from rich.console import Console
from rich.table import Table

from agentic.core import GenerateRequest, Generation, ResponseFormat, StructuredOutputError
from backends import TransformersBackend, generate_structured, load_backend


class Color(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Pet(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    legs: int = Field(ge=0, le=8)


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=24)
    age: int = Field(ge=1, le=99)
    favorite: Color
    pet: Pet


PROMPT = "Describe a person and their pet as JSON with the fields name, age, favorite, pet."


def _valid(text: str) -> bool:
    try:
        Person.model_validate_json(text)
    except ValidationError:
        return False
    return True


async def _batch(
    backend: TransformersBackend, args: argparse.Namespace, fmt: ResponseFormat | None
) -> dict[str, Any]:
    prompt = PROMPT if fmt else PROMPT + "\nSchema: " + json.dumps(Person.model_json_schema())
    reqs = [
        GenerateRequest.chat(
            prompt, max_tokens=args.max_tokens, temperature=0.7, seed=s
        ).model_copy(update={"response_format": fmt})
        for s in range(args.samples)
    ]
    t0 = time.perf_counter()
    gens: list[Generation] = [g for [g] in await backend.generate(reqs)]
    seconds = time.perf_counter() - t0
    tokens = sum(len(g.token_ids) for g in gens)
    return {
        "valid": sum(_valid(g.text) for g in gens),
        "samples": len(gens),
        "tokens": tokens,
        "ms_per_token": 1000 * seconds / max(tokens, 1),
        "seconds": seconds,
    }


async def _structured(backend: TransformersBackend, args: argparse.Namespace) -> dict[str, Any]:
    async def one(seed: int) -> tuple[bool, int, int]:
        req = GenerateRequest.chat(PROMPT, max_tokens=args.max_tokens, temperature=0.7, seed=seed)
        try:
            out = await generate_structured(backend, req, Person)
        except StructuredOutputError:
            return False, 2, 0
        return True, out.attempts, out.usage.completion_tokens

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(s) for s in range(args.samples)))
    seconds = time.perf_counter() - t0
    tokens = sum(r[2] for r in results)
    return {
        "valid": sum(r[0] for r in results),
        "samples": len(results),
        "retried": sum(r[1] > 1 for r in results),
        "tokens": tokens,
        "ms_per_token": 1000 * seconds / max(tokens, 1),
        "seconds": seconds,
    }


def _mask_ms(backend: TransformersBackend, fmt: ResponseFormat, steps: int = 200) -> float:
    import torch

    assert backend._grammars is not None
    row = backend._grammars.matcher(fmt)
    logits = torch.zeros((1, backend.vocab_size))
    t0 = time.perf_counter()
    for _ in range(steps):
        row.steer(logits)
    return 1000 * (time.perf_counter() - t0) / steps


async def measure(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    backend = load_backend("embedded:smollm2")
    assert isinstance(backend, TransformersBackend)
    fmt = ResponseFormat.from_model(Person)
    await _batch(backend, argparse.Namespace(samples=1, max_tokens=8), fmt)  # warm up
    return {
        "prompted only": await _batch(backend, args, None),
        "response_format": await _batch(backend, args, fmt),
        "generate_structured": await _structured(backend, args),
        "mask": {"ms_per_row_step": _mask_ms(backend, fmt), "vocab": backend.vocab_size},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "structured.json"
    )
    args = ap.parse_args()
    rows = asyncio.run(measure(args))

    table = Table(title=f"Person JSON, {args.samples} seeded samples, SmolLM2-135M, CPU")
    for col in ("", "valid", "retried", "tokens", "ms/token", "s"):
        table.add_column(col, justify="right")
    mask = rows.pop("mask")
    for name, r in rows.items():
        table.add_row(
            name,
            f"{r['valid']}/{r['samples']}",
            str(r.get("retried", "-")),
            str(r["tokens"]),
            f"{r['ms_per_token']:.1f}",
            f"{r['seconds']:.1f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"mask: {mask['ms_per_row_step']:.2f} ms per row and step ({mask['vocab']} tokens)"
    )
    rows["mask"] = mask
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "structured",
                "args": vars(args) | {"out": str(args.out)},
                "results": rows,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
