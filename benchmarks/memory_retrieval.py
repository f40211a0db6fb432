"""Case-retrieval latency: `VectorIndex` over stored MiniLM embeddings vs re-embedding the bank.

An agent retrieves past cases one query at a time. This measures, at each bank size (10k and
100k cases by default), the latency of one top-k retrieval:

- `VectorIndex` in `auto` mode (flat below `hnsw_from`=20k, HNSW above) and in `flat` mode,
  plus `hnsw` where auto is still flat, over embeddings stored when the cases were written. The
  query is embedded once with MiniLM; that time is reported on its own row. Each search is
  timed with faiss on 1 thread and with faiss' default thread count; HNSW recall@k is measured
  against the exact flat results.
- the anchor: a numpy scan that re-embeds the whole bank with MiniLM for every query (what a
  case memory without stored vectors does). Timed for real at sizes up to `--anchor-measure-max`
  (`--anchor-queries` queries); above that, computed as size / measured MiniLM throughput plus
  the measured query embedding and scan, and labelled "computed".

Bank texts are task questions from ten reasoning-gym generators (seeded; short arithmetic,
string and time tasks). At most `--real-texts` of them (default 10k) are embedded with MiniLM
(that pass gives the throughput). A bigger bank is filled with perturbed copies: row i >= R is
normalise(v[i mod R] + noise * g / sqrt(dim)), g ~ N(0, I), noise 0.5 (cosine ~0.89 to its
source), so the 100k bank is 10k real MiniLM vectors plus 90k near-duplicates of them. Queries
are further questions from the same generators with another seed (none in the bank).

torch runs on `--torch-threads` (default 1: on a shared 2-core machine, MiniLM on 2 threads
was ~15x slower per query than on 1 because of thread contention).

    .venv/bin/python benchmarks/memory_retrieval.py [--sizes 10000,100000] [--queries 200]

Prints a table and writes benchmarks/results/memory_retrieval.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from memory import SentenceTransformerEmbedder, VectorIndex, l2_normalise

GENERATORS = (
    "basic_arithmetic",
    "simple_equations",
    "spell_backward",
    "lcm",
    "chain_sum",
    "count_bits",
    "gcd",
    "letter_counting",
    "time_intervals",
    "fraction_simplification",
)


def task_texts(n: int, seed: int, exclude: Collection[str] = ()) -> list[str]:
    """n distinct task questions, round-robin over the generators."""
    import reasoning_gym

    per = n // len(GENERATORS) + 50
    pools = [
        [
            reasoning_gym.create_dataset(g, seed=seed + j, size=per)[i]["question"]
            for i in range(per)
        ]
        for j, g in enumerate(GENERATORS)
    ]
    out: dict[str, None] = {}
    for i in range(per):
        for pool in pools:
            if len(out) < n and pool[i] not in exclude:
                out[pool[i]] = None
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct texts for {n}; lower the sizes")
    return list(out)


def bank(real: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The first min(n, R) rows are the real vectors; the rest perturbed copies of them."""
    r, dim = real.shape
    if n <= r:
        return real[:n]
    src = real[np.arange(r, n) % r]
    copies = l2_normalise(src + noise * rng.standard_normal(src.shape, dtype=np.float32) / dim**0.5)
    return np.concatenate([real, copies])


def stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def time_search(index: VectorIndex, queries: np.ndarray, k: int, threads: int) -> dict[str, Any]:
    faiss.omp_set_num_threads(threads)
    for q in queries[:10]:  # warm caches
        index.search(q, k)
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = index.search(q, k)[0]
        times.append(time.perf_counter() - t0)
        results.append([i for i, _ in hits])
    return {**stats(times), "results": results}


def measure_size(
    n: int,
    real: np.ndarray,
    texts: list[str],
    queries: np.ndarray,
    query_texts: list[str],
    embedder: SentenceTransformerEmbedder,
    throughput: float,
    query_embed_p50_ms: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    default_threads = args.faiss_default_threads
    vecs = bank(real, n, args.noise, np.random.default_rng(args.seed + n))
    rows: dict[str, Any] = {}
    modes = ["auto", "flat"]
    if n < VectorIndex(1).hnsw_from:
        modes.append("hnsw")  # auto is flat at this size; show HNSW too
    exact: list[list[int]] = []
    for mode in modes:
        faiss.omp_set_num_threads(default_threads)
        index = VectorIndex(real.shape[1], mode=mode)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        index.add(range(n), vecs)
        build = time.perf_counter() - t0
        one = time_search(index, queries, args.k, 1)
        many = time_search(index, queries, args.k, default_threads)
        if mode == "flat":
            exact = one["results"]
        adds = []
        for j, v in enumerate(vecs[: args.add_samples]):  # one new case at a time
            t0 = time.perf_counter()
            index.add([n + j], v[None])
            adds.append(time.perf_counter() - t0)
        rows[f"VectorIndex {mode}"] = {
            "mode": index.mode,
            "build_s": build,
            "search_1_thread": {k: v for k, v in one.items() if k != "results"},
            f"search_{default_threads}_threads": {k: v for k, v in many.items() if k != "results"},
            "add_one_p50_ms": stats(adds)["p50_ms"],
            "results": one["results"],
        }
        del index
    for row in rows.values():
        got = row.pop("results")
        row["recall_at_k"] = float(
            np.mean([len(set(g) & set(e)) / len(e) for g, e in zip(got, exact, strict=True)])
        )

    scan = []
    for q in queries:  # the numpy scan over stored vectors: the anchor minus its re-embedding
        t0 = time.perf_counter()
        sims = vecs @ q
        top = np.argpartition(-sims, args.k)[: args.k]
        top[np.argsort(-sims[top])]
        scan.append(time.perf_counter() - t0)
    rows["numpy scan of stored vectors"] = {"mode": "exact", "search_1_thread": stats(scan)}

    bank_texts = [texts[i % len(texts)] for i in range(n)]
    if n <= args.anchor_measure_max:
        anchor = []
        for qt in query_texts[: args.anchor_queries]:
            t0 = time.perf_counter()
            q = embedder.embed_sync([qt])[0]
            sims = embedder.embed_sync(bank_texts) @ q
            np.argpartition(-sims, args.k)[: args.k]
            anchor.append(time.perf_counter() - t0)
        rows["anchor: re-embed bank, scan"] = {
            "mode": "exact",
            "how": f"measured, {len(anchor)} queries",
            "search_1_thread": stats(anchor),
        }
    else:
        scan_p50 = stats(scan)["p50_ms"]
        ms = n / throughput * 1000 + query_embed_p50_ms + scan_p50
        rows["anchor: re-embed bank, scan"] = {
            "mode": "exact",
            "how": f"computed: {n} / {throughput:.1f} texts/s + query embed + scan",
            "search_1_thread": {"p50_ms": ms, "p99_ms": None, "mean_ms": ms, "n": 0},
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated bank sizes")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--real-texts", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--anchor-queries", type=int, default=2)
    ap.add_argument("--anchor-measure-max", type=int, default=10_000)
    ap.add_argument("--add-samples", type=int, default=50)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "memory_retrieval.json"
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.queries < 1 or args.k < 1 or min(sizes) <= args.k:
        raise SystemExit("--queries and --k must be >= 1 and every size above k")
    args.faiss_default_threads = faiss.omp_get_max_threads()
    start = time.perf_counter()
    load_before = os.getloadavg()

    import torch

    torch.set_num_threads(args.torch_threads)
    embedder = SentenceTransformerEmbedder()
    embedder.embed_sync(["warm up"])
    texts = task_texts(min(args.real_texts, max(sizes)), args.seed)
    query_texts = task_texts(args.queries, args.seed + 1000, exclude=set(texts))

    t0 = time.perf_counter()
    real = asyncio.run(embedder.embed(texts))
    throughput = len(texts) / (time.perf_counter() - t0)
    q_times, q_vecs = [], []
    for qt in query_texts:  # one at a time, as an agent would
        t0 = time.perf_counter()
        q_vecs.append(embedder.embed_sync([qt])[0])
        q_times.append(time.perf_counter() - t0)
    queries = np.stack(q_vecs)
    query_embed = stats(q_times)

    results = {
        str(n): measure_size(
            n, real, texts, queries, query_texts, embedder, throughput, query_embed["p50_ms"], args
        )
        for n in sizes
    }

    report = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "generators": GENERATORS,
        "real_texts_embedded": len(texts),
        "minilm_texts_per_s": throughput,
        "query_embed": query_embed,
        "sizes": results,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_start": load_before,
            "loadavg_end": os.getloadavg(),
            "faiss": faiss.__version__,
        },
        "seconds": time.perf_counter() - start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    dt = args.faiss_default_threads
    table = Table(
        title=f"top-{args.k} retrieval, one query at a time (MiniLM {throughput:.0f} texts/s; "
        f"query embed p50 {query_embed['p50_ms']:.1f} ms, p99 {query_embed['p99_ms']:.1f} ms)"
    )
    columns = ["cases", "method", "mode", "build s", "p50 ms", "p99 ms", f"p50 ms {dt} thr"]
    for col in [*columns, "recall@k", "add ms", "note"]:
        table.add_column(col, justify="left" if col in ("method", "mode", "note") else "right")

    def fmt(x: float | None, digits: int = 2) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    for n, rows in results.items():
        for name, r in rows.items():
            one, many = r["search_1_thread"], r.get(f"search_{dt}_threads")
            table.add_row(
                n,
                name,
                r["mode"],
                fmt(r.get("build_s"), 1),
                fmt(one["p50_ms"]),
                fmt(one["p99_ms"]),
                fmt(many["p50_ms"] if many else None),
                fmt(r.get("recall_at_k"), 3),
                fmt(r.get("add_one_p50_ms")),
                r.get("how", ""),
            )
    Console(width=200).print(table)
    load_after = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    load_start = ", ".join(f"{x:.1f}" for x in load_before)
    seconds = time.perf_counter() - start
    print(f"wrote {args.out} in {seconds:.0f} s; load average {load_start} -> {load_after}")


if __name__ == "__main__":
    main()
