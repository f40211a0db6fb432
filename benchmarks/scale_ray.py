"""The real machinery against simulated replicas: `agentic run --ray` with a `pool:` backend over
N simulated OpenAI-compatible servers, to find what the driver, Ray and HTTP cost per task.

`scale_sim.py` models the replicas in virtual time and leaves the driver out. Here everything
but the model is real: the CLI, the Ray executor (a local Ray started by the run, 2 worker
actors), the replica pool with affinity, the `openai` backend and HTTP. The replicas are one
process (`serve`, below) answering under `/r0/v1`, `/r1/v1`, ...; each has `slots` decode slots
and a prefix cache (the tasks it has seen), and answers a chat completion of n samples after
`scale * (prefill_s * uncached prompt tokens + decode_s * max_tokens)` seconds. A task is
self-consistency over 8 samples: one pool call. The simulated prompt is the real one plus a
2,000-token context.

    .venv/bin/python benchmarks/scale_ray.py --tasks 400 --replicas 1,2,4,8

Writes benchmarks/results/scale_ray.json and prints a table: tasks/s against replicas, and the
ideal wall (the busiest replica's service time over the 16 tasks it holds at once), so that the
gap between the two is what the machinery costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request  # at module level: FastAPI resolves the handler's annotations here

REPO = Path(__file__).resolve().parents[1]
CONTEXT_TOKENS = 2000


def serve(replicas: int, port: int, scale: float, slots: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    gates = [asyncio.Semaphore(slots) for _ in range(replicas)]
    caches: list[set[str]] = [set() for _ in range(replicas)]
    busy = [0.0] * replicas
    prefill_s, decode_s = 0.1e-3, 15e-3

    @app.get("/r{i}/v1/models")
    async def models(i: int) -> dict[str, Any]:
        return {"data": [{"id": "sim", "owned_by": "sim"}]}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {"busy_s": busy}

    @app.post("/r{i}/v1/chat/completions")
    async def chat(i: int, request: Request) -> dict[str, Any]:
        body = await request.json()
        prompt = json.dumps(body["messages"])
        tokens = CONTEXT_TOKENS + len(prompt) // 4
        uncached = 0 if prompt in caches[i] else tokens
        caches[i].add(prompt)
        n, out = int(body.get("n", 1)), int(body.get("max_tokens", 16))
        service = prefill_s * uncached + decode_s * out
        async with gates[i]:
            await asyncio.sleep(scale * service)
        busy[i] += service
        choice = {"message": {"role": "assistant", "content": "7"}, "finish_reason": "stop"}
        return {
            "id": "sim",
            "object": "chat.completion",
            "model": "sim",
            "choices": [{**choice, "index": j} for j in range(n)],
            "usage": {"prompt_tokens": tokens, "completion_tokens": n, "total_tokens": tokens + n},
        }

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--replicas", default="1,2,4,8")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=float, default=0.2, help="simulated seconds -> real")
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/scale_ray.json")
    ap.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.scale, args.slots)
        return
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="scale-ray-"))
    for k in (int(x) for x in args.replicas.split(",")):
        port = _port()
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                *("--serve", str(k), "--port", str(port)),
                *("--scale", str(args.scale), "--slots", str(args.slots)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.2)
            urls = ",".join(f"http://127.0.0.1:{port}/r{i}/v1" for i in range(k))
            cmd = [
                str(Path(sys.executable).with_name("agentic")),
                "run",
                "--n",
                str(args.tasks),
                "--controller",
                "sc",
                "--samples",
                "8",
                "--max-tokens",
                "64",
                "--backend",
                f"pool:openai:{urls}#sim",
                "--ray",
                "local",
                "--ray-workers",
                str(args.workers),
                "--concurrency",
                str(16 * k),
                "--json",
                str(tmp / f"r{k}.json"),
            ]
            t0 = time.perf_counter()
            run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            wall = time.perf_counter() - t0
            if run.returncode != 0:
                sys.exit(f"agentic run failed:\n{run.stderr[-3000:]}")
            busy = httpx.get(f"http://127.0.0.1:{port}/stats").json()["busy_s"]
        finally:
            server.terminate()
            server.wait(timeout=30)
        result = json.loads((tmp / f"r{k}.json").read_text())
        # the wall a run would take if only the replicas cost anything: the busiest replica's
        # real service time over the 16 tasks it holds at once
        ideal = args.scale * max(busy) / 16
        row = {
            "replicas": k,
            "tasks": args.tasks,
            "wall_s": wall,
            "run_s": result["seconds"],
            "tasks_per_s": args.tasks / result["seconds"],
            "errors": sum(1 for o in result["outcomes"] if o.get("error")),
            "ideal_s": ideal,
        }
        rows.append(row)
        print(
            f"replicas {k:>2}  run {row['run_s']:6.1f} s  {row['tasks_per_s']:6.1f} tasks/s  "
            f"ideal {ideal:5.1f} s  errors {row['errors']}",
            flush=True,
        )
    print("\n| replicas | run s | tasks/s | ideal s (replicas only) | errors |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['replicas']} | {r['run_s']:.1f} | {r['tasks_per_s']:.1f} "
            f"| {r['ideal_s']:.1f} | {r['errors']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"scale": args.scale, "slots": args.slots, "workers": args.workers, "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
