"""What the value model costs beside generating the candidates it scores (#18's verifier-cost
target: scoring adds at most 25% to the wall time of generating the same candidates).

Per batch of tasks, in one process and under the same load: generate 16 samples per task with
the matrix's chosen sampling (`results/ttc/defaults.json`), then score every sample with the
shipped value model twice, each time with a fresh reward (no score cache carried over):

- `whole`: every row encoded whole (`prefix_cache_tokens=0`), as the matrix measured it;
- `shared`: the chat that a task's rows share encoded once and kept in the prefix cache, each
  row encoding only its answer (`ValueReward`'s default).

The two orders alternate batch by batch, so neither always runs on a warmer machine. Both must
give the same values (checked, within 1e-4). Tasks are the TRAIN families' (nothing here is
tuned, but the eval families stay for evaluation only).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/value_cost.py --tasks 8

Writes `results/ttc/value_cost.json`: seconds per task for each phase, their ratios, and the
tokens the value model encoded per task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from ttc_matrix import RESULTS, SEED, TRAIN, messages, params_of

from agentic.core import GenerateRequest
from agentic.runtime.suites import load_suite
from backends import load_backend
from search.value_model import ValueReward


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sampling = json.loads((RESULTS / "defaults.json").read_text())["sampling"]
    # as the matrix samples: with top-5 logprobs, which the confidence verifiers read
    params = params_of(argparse.Namespace(**sampling, samples=args.samples))
    backend = load_backend(args.backend)
    seconds = {"generate": 0.0, "whole": 0.0, "shared": 0.0}
    encoded = {"whole": 0, "shared": 0}
    tasks_done, worst = 0, 0.0
    try:
        for f_index, family in enumerate(TRAIN.values()):
            suite = load_suite(family.dataset, n=args.tasks, seed=SEED, config=family.config)
            for b in range(0, len(suite.tasks), args.concurrency):
                tasks = suite.tasks[b : b + args.concurrency]
                t0 = time.perf_counter()
                gens = await backend.generate(
                    [
                        GenerateRequest(
                            messages=messages(t),
                            params=params.model_copy(update={"seed": SEED + b + i}),
                        )
                        for i, t in enumerate(tasks)
                    ]
                )
                seconds["generate"] += time.perf_counter() - t0
                texts = [[[g.text] for g in samples] for samples in gens]
                order = ["whole", "shared"] if (f_index + b) % 2 == 0 else ["shared", "whole"]
                values: dict[str, list[Any]] = {}
                for mode in order:
                    reward = ValueReward.load(prefix_cache_tokens=0 if mode == "whole" else 2048)
                    t0 = time.perf_counter()
                    got = await asyncio.gather(
                        *(reward.score(t, s) for t, s in zip(tasks, texts, strict=True))
                    )
                    seconds[mode] += time.perf_counter() - t0
                    encoded[mode] += reward.encoded_tokens
                    values[mode] = [v for per_task in got for [v] in per_task]
                worst = max(
                    [worst]
                    + [abs(a - b) for a, b in zip(values["whole"], values["shared"], strict=True)]
                )
                tasks_done += len(tasks)
                print(
                    f"{family.key}: {b + len(tasks)}/{len(suite.tasks)}  "
                    + "  ".join(f"{k} {v / tasks_done:.2f} s/task" for k, v in seconds.items()),
                    flush=True,
                )
    finally:
        await backend.aclose()
    if worst > 1e-4:
        raise SystemExit(f"error: shared-prefix values differ from whole ones by {worst:.2e}")
    per_task = {k: v / tasks_done for k, v in seconds.items()}
    return {
        "command": "benchmarks/value_cost.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "tasks": tasks_done,
        "families": list(TRAIN),
        "samples_per_task": args.samples,
        "seconds_per_task": per_task,
        "share_of_generation": {
            "whole": per_task["whole"] / per_task["generate"],
            "shared": per_task["shared"] / per_task["generate"],
        },
        "encoded_tokens_per_task": {k: v / tasks_done for k, v in encoded.items()},
        "max_value_difference": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="embedded:smollm2")
    ap.add_argument("--tasks", type=int, default=8, help="tasks per train family")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS / "value_cost.json")
    args = ap.parse_args()
    report = asyncio.run(run(args))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
