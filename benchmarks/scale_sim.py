"""Planning past this machine: how a replica pool scales, simulated.

A discrete-event simulation of a run on R replicas, routed by the real pool's routing
(`backends.pool.ReplicaPool.choose`: rendezvous hashing with bounded loads, or least-loaded with
affinity off), with a latency model in place of the models:

- a task is a particle filter: `steps` rounds of `particles` calls; every call of a round shares
  the task's prefix (prompt + the steps so far) and adds `step_tokens` tokens. A round is one
  pool call (one `generate` with a request per particle), so its particles share a replica.
- a replica has `slots` decode slots (continuous batching, as vLLM's scheduler keeps up to
  `max_num_seqs` sequences; the per-token step time is taken as independent of the batch, which
  holds on a GPU while the batch is memory-bound). A call holds a slot for
  `prefill_s * uncached prompt tokens + decode_s * step_tokens`; calls wait FIFO for a slot.
- a replica's prefix cache holds `cache_tokens` tokens of task prefixes (LRU over tasks); a call
  whose task's prefix is cached there prefills only the rest, and a prefix is cached once
  prefilled, so a round's particles after the first find it. Without affinity the calls of one
  task land on different replicas, each of which must prefill the prefix itself.
- the driver keeps `concurrency_per_replica * R` tasks in flight.

Defaults are made-up GPU-scale orders of magnitude (0.1 ms per prefill token, 15 ms per decode
step, 64 slots, 2,000-token prompts as an agent's context makes them, 64-token steps, PF-8 over 3
steps): they show shapes (where the curves bend, what affinity buys), not any machine's numbers
(`pool_scaling.py` measures real servers here). The driver's own cost per task (Ray, HTTP) is
not modelled.

    .venv/bin/python benchmarks/scale_sim.py

Writes benchmarks/results/scale_sim.json and scale_sim.png (throughput and p95 task latency
against replicas, affinity on and off, for 1k, 10k and 100k tasks).
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.pool import Replica, ReplicaPool
from backends.testing import FunctionBackend

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Model:
    prefill_s: float = 0.1e-3
    decode_s: float = 15e-3
    slots: int = 64
    cache_tokens: int = 400_000
    prompt_tokens: int = 2000
    step_tokens: int = 64
    steps: int = 3
    particles: int = 8
    concurrency_per_replica: int = 16


@dataclass
class Server:
    replica: Replica
    free: int
    queue: deque[Any] = field(default_factory=deque)
    cache: OrderedDict[int, int] = field(default_factory=OrderedDict)
    cached: int = 0
    prefilled: int = 0
    reused: int = 0

    def lookup(self, task: int, prefix: int) -> int:
        have = self.cache.get(task, 0)
        if task in self.cache:
            self.cache.move_to_end(task)
        return min(have, prefix)

    def store(self, task: int, prefix: int, capacity: int) -> None:
        self.cached += prefix - self.cache.get(task, 0)
        self.cache[task] = prefix
        self.cache.move_to_end(task)
        while self.cached > capacity and self.cache:
            _, n = self.cache.popitem(last=False)
            self.cached -= n


def simulate(replicas: int, tasks: int, affinity: bool, m: Model) -> dict[str, Any]:
    pool = ReplicaPool(
        [FunctionBackend(lambda r: "", name=f"r{i}") for i in range(replicas)],
        affinity=affinity,
    )
    servers = {id(r): Server(r, m.slots) for r in pool.replicas}
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, payload: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    started: dict[int, float] = {}
    pending: dict[int, int] = {}  # calls of a task's current round still running
    step: dict[int, int] = {}
    latencies: list[float] = []
    next_task = 0

    def start_call(server: Server, now: float, task: int) -> None:
        prefix = m.prompt_tokens + step[task] * m.step_tokens
        reused = server.lookup(task, prefix)
        server.prefilled += prefix - reused
        server.reused += reused
        server.free -= 1
        # prefilled blocks are cached as soon as they are computed: the round's other particles
        # find the prefix (vLLM's automatic prefix caching shares blocks this way)
        server.store(task, prefix, m.cache_tokens)
        service = m.prefill_s * (prefix - reused) + m.decode_s * m.step_tokens
        push(now + service, "done", (server, task, prefix))

    def send_round(now: float, task: int) -> None:
        # a round's particles are one pool call (`generate` with one request per particle), so
        # they go to one replica together, as the search sends them
        pending[task] = m.particles
        replica = pool.choose(f"task-{task}")
        assert replica is not None
        replica.in_flight += m.particles
        server = servers[id(replica)]
        for _ in range(m.particles):
            if server.free:
                start_call(server, now, task)
            else:
                server.queue.append(task)

    def admit(now: float) -> None:
        nonlocal next_task
        while next_task < tasks and len(started) < m.concurrency_per_replica * replicas:
            task, next_task = next_task, next_task + 1
            started[task] = now
            step[task] = 0
            send_round(now, task)

    admit(0.0)
    now = 0.0
    while events:
        now, _, _, (server, task, prefix) = heapq.heappop(events)
        server.replica.in_flight -= 1
        server.free += 1
        server.store(task, prefix + m.step_tokens, m.cache_tokens)
        if server.queue:
            start_call(server, now, server.queue.popleft())
        pending[task] -= 1
        if pending[task] == 0:
            step[task] += 1
            if step[task] < m.steps:
                send_round(now, task)
            else:
                latencies.append(now - started.pop(task))
                admit(now)
    prefilled = sum(s.prefilled for s in servers.values())
    reused = sum(s.reused for s in servers.values())
    return {
        "replicas": replicas,
        "tasks": tasks,
        "affinity": affinity,
        "seconds": now,
        "tasks_per_s": tasks / now,
        "p95_task_s": statistics.quantiles(latencies, n=20)[18] if len(latencies) > 1 else now,
        "prefix_hit_rate": reused / max(reused + prefilled, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", default="1,2,4,8,16,32,64")
    ap.add_argument("--tasks", default="1000,10000,100000")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/scale_sim.json")
    args = ap.parse_args()
    m = Model()
    rows = []
    for tasks in (int(x) for x in args.tasks.split(",")):
        for replicas in (int(x) for x in args.replicas.split(",")):
            for affinity in (True, False):
                row = simulate(replicas, tasks, affinity, m)
                rows.append(row)
                print(
                    f"tasks {tasks:>6} replicas {replicas:>2} affinity {affinity!s:<5} "
                    f"{row['tasks_per_s']:8.1f} tasks/s  p95 {row['p95_task_s']:6.2f} s  "
                    f"hit {100 * row['prefix_hit_rate']:.0f}%",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": vars(m), "rows": rows}, indent=2) + "\n")
    _plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for tasks in sorted({r["tasks"] for r in rows}):
        for affinity, style in ((True, "-"), (False, "--")):
            sel = [r for r in rows if r["tasks"] == tasks and r["affinity"] == affinity]
            xs = [r["replicas"] for r in sel]
            label = f"{tasks} tasks, affinity {'on' if affinity else 'off'}"
            ax1.plot(xs, [r["tasks_per_s"] for r in sel], style, marker="o", label=label)
            ax2.plot(xs, [r["p95_task_s"] for r in sel], style, marker="o", label=label)
    for ax, title in ((ax1, "throughput (tasks/s)"), (ax2, "p95 task latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("replicas")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
