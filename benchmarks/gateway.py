"""What the gateway costs: the same controller through `agentic serve` and in process.

Both sides run one controller spec (default: self-consistency over 4 samples of at most 32
tokens, seed 0) on the embedded SmolLM2 and solve the same chat requests, `c` at a time, for
c in 1, 4 and 16. The gateway side sends them with the official `openai` SDK (async) to a
server on 127.0.0.1 started here. The in-process side solves each as the gateway does
(`ChatSuite` + `run_suite`) on a backend loaded in this process. The two never run at the same
time, and their order alternates per repeat. Reported: wall seconds per batch of requests,
mean latency, requests/s, and the gateway's overhead, wall_gateway / wall_in_process - 1
(target: <= 5% at c = 16).

    .venv/bin/python benchmarks/gateway.py --repeats 3

Writes benchmarks/results/gateway.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = {"type": "sc", "n": 4, "max_tokens": 32, "seed": 0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _questions(k: int, offset: int) -> list[str]:
    return [f"What is {(i + offset) % 10} + {(i + offset) // 10 % 10}?" for i in range(k)]


async def _gateway(url: str, questions: list[str], c: int) -> tuple[float, list[float]]:
    import openai

    gate = asyncio.Semaphore(c)
    async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=600) as cl:

        async def one(q: str) -> float:
            async with gate:
                t = time.perf_counter()
                await cl.chat.completions.create(
                    model="bench", messages=[{"role": "user", "content": q}]
                )
                return time.perf_counter() - t

        t0 = time.perf_counter()
        lat = await asyncio.gather(*(one(q) for q in questions))
        return time.perf_counter() - t0, list(lat)


async def _in_process(controller: Any, questions: list[str], c: int) -> tuple[float, list[float]]:
    from agentic.core import Message
    from agentic.runtime.chat import ChatSuite
    from agentic.runtime.runner import run_suite

    gate = asyncio.Semaphore(c)

    async def one(i: int, q: str) -> float:
        async with gate:
            t = time.perf_counter()
            suite = ChatSuite.from_messages(str(i), [Message(role="user", content=q)])
            await run_suite(suite, controller, concurrency=1)
            return time.perf_counter() - t

    t0 = time.perf_counter()
    lat = await asyncio.gather(*(one(i, q) for i, q in enumerate(questions)))
    return time.perf_counter() - t0, list(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/gateway.json")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from agentic.runtime.chat import ChatSuite
    from agentic.specs.registry import BuildContext
    from backends import load_backend

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({"presets": {"bench": SPEC}, "max_concurrency": 64}))
    port = _port()
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentic.cli",
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        backend = load_backend("embedded:smollm2")
        controller = BuildContext(backend, ChatSuite([])).build(SPEC)
        rows = []
        for c in levels:
            k = max(4, 2 * c)
            runs: dict[str, list[tuple[float, list[float]]]] = {"gateway": [], "in_process": []}
            for r in range(args.repeats + 1):  # the first repeat warms both sides, not kept
                qs = _questions(k, offset=r * k)
                order = ["gateway", "in_process"] if r % 2 else ["in_process", "gateway"]
                for side in order:
                    if side == "gateway":
                        res = asyncio.run(_gateway(url, qs, c))
                    else:
                        res = asyncio.run(_in_process(controller, qs, c))
                    if r:
                        runs[side].append(res)
            row: dict[str, Any] = {"concurrency": c, "requests": k}
            for side, got in runs.items():
                wall = statistics.median(w for w, _ in got)
                row[side] = {
                    "wall_s": wall,
                    "mean_latency_s": statistics.median(statistics.mean(lat) for _, lat in got),
                    "requests_per_s": k / wall,
                    "walls": [w for w, _ in got],
                }
            row["overhead"] = row["gateway"]["wall_s"] / row["in_process"]["wall_s"] - 1
            rows.append(row)
            print(
                f"c={c:>2} n={k:>2}  gateway {row['gateway']['wall_s']:7.2f} s  "
                f"in-process {row['in_process']['wall_s']:7.2f} s  "
                f"overhead {100 * row['overhead']:+.1f}%",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(
        "\n| concurrent | requests | gateway s | in-process s | gateway req/s | in-process req/s "
        "| mean latency gateway / in-process | overhead |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for row in rows:
        g, p = row["gateway"], row["in_process"]
        print(
            f"| {row['concurrency']} | {row['requests']} | {g['wall_s']:.2f} | {p['wall_s']:.2f} "
            f"| {g['requests_per_s']:.2f} | {p['requests_per_s']:.2f} "
            f"| {g['mean_latency_s']:.2f} / {p['mean_latency_s']:.2f} "
            f"| {100 * row['overhead']:+.1f}% |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"spec": SPEC, "repeats": args.repeats, "rows": rows}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
