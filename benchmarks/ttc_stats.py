"""The statistics of `ttc_matrix.py`, apart from running models: selectors over groups of
samples (majority vote, best-of-N and weighted vote by a verifier, DeepConf's filtered vote, the
oracle), accuracy-vs-tokens curves, ROC AUC, calibration error, and the logistic calibration of
confidence fitted on train families."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from search.confidence import STATISTICS

NS = (1, 2, 4, 8, 16)
CONSOLE = Console(width=150)

# ---- selection: every selector picks one sample of a group; its score is that sample's score


def vote(group: list[dict[str, Any]], weight: str | None = None) -> dict[str, Any]:
    """Majority vote over extracted answers (weighted by a verifier's score when `weight`);
    ties go to the answer seen first; the answer's best-weighted member is the pick."""
    totals: dict[str, float] = defaultdict(float)
    for r in group:
        totals[r["answer"]] += 1.0 if weight is None else _weight(r, weight)
    best = max(totals.values())
    winner = next(r["answer"] for r in group if totals[r["answer"]] == best)
    members = [r for r in group if r["answer"] == winner]
    return members[0] if weight is None else max(members, key=lambda r: _weight(r, weight))


def _weight(r: dict[str, Any], name: str) -> float:
    """A sample's score by verifier `name`; "a+b" is the equal-weight mean of both (a
    `WeightedReward` of the two)."""
    if "+" in name:
        parts = name.split("+")
        return sum(_weight(r, p) for p in parts) / len(parts)
    if name.startswith("confidence."):
        return calibrated(r["confidence"][name.split(".", 1)[1]], name)
    return float(r[name])


# Logistic calibration of each confidence statistic, fitted on the train families only
# (`--fit`); until fitted, the identity-like default (σ(C)) keeps the ordering.
CALIBRATION: dict[str, tuple[float, float]] = {}


def calibrated(raw: float, name: str) -> float:
    center, scale = CALIBRATION.get(name, (0.0, 1.0))
    z = (raw - center) / scale
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def selectors(verifiers: list[str]) -> dict[str, Any]:
    """name -> function(group) -> the picked sample."""
    out: dict[str, Any] = {
        "vote": vote,
        "oracle": lambda g: max(g, key=lambda r: r["score"]),
    }
    for v in verifiers:
        out[f"bon({v})"] = lambda g, v=v: max(g, key=lambda r: _weight(r, v))
        out[f"wvote({v})"] = lambda g, v=v: vote(g, v)
        if v.startswith("confidence."):
            # DeepConf: keep the most confident half, then the confidence-weighted vote
            out[f"filter50({v})"] = lambda g, v=v: vote(
                sorted(g, key=lambda r: -_weight(r, v))[: max(1, len(g) // 2)], v
            )
    return out


def verifier_names(rows: list[dict[str, Any]]) -> list[str]:
    """The verifiers every row was scored by: one that scored only some rows (a family's rows
    being made again, before a later pass adds its scores) is left out, not read as missing."""
    firsts = [row["samples"][0] for row in rows]
    scored = ("judge", "head", "trained", "value", "program")
    has = [k for k in scored if all(k in s for s in firsts)]
    stats = list(firsts[0]["confidence"])
    names = [f"confidence.{s}" for s in stats] + has
    if "program" in has:
        names += [f"confidence.{s}+program" for s in stats]
        names += ["value+program"] if "value" in has else []
    return names


def curves(rows: list[dict[str, Any]]) -> dict[str, dict[int, tuple[float, float]]]:
    """selector -> N -> (accuracy, generated tokens per task), over disjoint groups of N."""
    names = verifier_names(rows)
    sel = selectors(names)
    acc: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        samples = row["samples"]
        extra = samples[0].get("verifier_tokens", {})
        for n in NS:
            if n > len(samples):
                continue
            for start in range(0, len(samples) - n + 1, n):
                group = samples[start : start + n]
                tokens = sum(r["tokens"] for r in group)
                for name, pick in sel.items():
                    v = name[name.find("(") + 1 : -1] if "(" in name else ""
                    # a verifier that generates (programs) pays its tokens once per task
                    paid = sum(extra.get(part, 0) for part in v.split("+"))
                    acc[name][n].append((pick(group)["score"], tokens + paid))
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for name, by_n in acc.items():
        out[name] = {
            n: (sum(a for a, _ in xs) / len(xs), sum(t for _, t in xs) / len(xs))
            for n, xs in by_n.items()
        }
    g = [r["greedy"] for r in rows]
    out["greedy"] = {1: (sum(x["score"] for x in g) / len(g), sum(x["tokens"] for x in g) / len(g))}
    return out


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Probability that a solved sample outscores an unsolved one (ties count half)."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    # average ranks over ties (Mann-Whitney U)
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + j + 1) / 2
        rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
        i = j
    u = rank_sum - len(pos) * (len(pos) + 1) / 2
    return u / (len(pos) * len(neg))


def ece(probs: list[float], labels: list[bool], bins: int = 10) -> float:
    """Expected calibration error: the sample-weighted |accuracy - mean score| over bins."""
    total, err = len(probs), 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, p in enumerate(probs) if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if idx:
            acc = sum(labels[i] for i in idx) / len(idx)
            conf = sum(probs[i] for i in idx) / len(idx)
            err += len(idx) / total * abs(acc - conf)
    return err


def verifier_quality(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    samples = [r for row in rows for r in row["samples"]]
    labels = [r["score"] >= 1.0 for r in samples]
    out: dict[str, dict[str, float | None]] = {}
    for v in verifier_names(rows):
        scores = [_weight(r, v) for r in samples]
        out[v] = {"auc": roc_auc(scores, labels), "ece": ece(scores, labels)}
    return out


def fit_calibration(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per confidence statistic, the logistic fit P(solved) = σ((C - center) / scale) by a few
    hundred steps of gradient descent on the log loss (two parameters: no library needed)."""
    samples = [r for row in rows for r in row["samples"]]
    labels = [1.0 if r["score"] >= 1.0 else 0.0 for r in samples]
    fits = {}
    for stat in STATISTICS:
        xs = [r["confidence"][stat] for r in samples]
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs)) or 1.0
        a, b = 0.0, 0.0  # logit = a * z + b with z standardised
        for _ in range(2000):
            ga = gb = 0.0
            for x, y in zip(xs, labels, strict=True):
                z = (x - mean) / sd
                p = 1.0 / (1.0 + math.exp(-(a * z + b)))
                ga += (p - y) * z
                gb += p - y
            a -= 0.5 * ga / len(xs)
            b -= 0.5 * gb / len(xs)
        if a <= 1e-6:  # no positive relation: keep the ordering, flat scale
            a = 1e-6
        # a*z + b = (x - center) / scale
        scale = sd / a
        center = mean - b * scale
        fits[f"confidence.{stat}"] = (center, scale)
    return fits


def mean_curves(
    per_family: dict[str, dict[str, dict[int, tuple[float, float]]]],
) -> dict[str, dict[int, tuple[float, float]]]:
    """The unweighted mean over families (each family counts once, whatever its size)."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    names = set.intersection(*(set(c) for c in per_family.values()))
    for name in names:
        ns = set.intersection(*(set(c[name]) for c in per_family.values()))
        out[name] = {
            n: (
                sum(c[name][n][0] for c in per_family.values()) / len(per_family),
                sum(c[name][n][1] for c in per_family.values()) / len(per_family),
            )
            for n in sorted(ns)
        }
    return out


def at_tokens(curve: dict[int, tuple[float, float]], tokens: float) -> float:
    """A selector's accuracy at `tokens` generated tokens, interpolated on its curve (linear in
    log tokens; clamped at the ends): the equal-token baseline for a search."""
    pts = sorted(curve.values(), key=lambda p: p[1])
    if tokens <= pts[0][1]:
        return pts[0][0]
    for (a0, t0), (a1, t1) in itertools.pairwise(pts):
        if tokens <= t1:
            f = (math.log(tokens) - math.log(t0)) / (math.log(t1) - math.log(t0))
            return a0 + f * (a1 - a0)
    return pts[-1][0]


def show(summary: dict[str, Any]) -> None:
    for split, s in summary["splits"].items():
        table = Table(title=f"{split} families ({len(s['families'])}), mean over families: "
                      "accuracy (generated tokens per task)")  # fmt: skip
        table.add_column("selector")
        for n in NS:
            table.add_column(f"N={n}", justify="right")
        for name, by_n in sorted(s["mean"].items(), key=lambda kv: kv[0]):
            cells = [f"{by_n[n][0]:.1%} ({by_n[n][1]:.0f})" if n in by_n else "" for n in NS]
            table.add_row(name, *cells)
        CONSOLE.print(table)
        q = Table(title=f"{split}: verifiers on final answers (pooled)")
        q.add_column("verifier")
        q.add_column("ROC AUC", justify="right")
        q.add_column("ECE", justify="right")
        for v, m in s["verifiers"].items():
            auc = m["auc"]
            q.add_row(v, "n/a" if auc is None else f"{auc:.3f}", f"{m['ece']:.3f}")
        CONSOLE.print(q)
        CONSOLE.print(
            "seconds per task: "
            + ", ".join(f"{k} {v:.2f}" for k, v in s["seconds_per_task"].items())
        )
        if s.get("searches"):
            t = Table(title=f"{split}: search controllers, mean over families")
            for col in ("controller", "families", "tasks", "accuracy", "vote at equal tokens",
                        "vote@8", "greedy", "oracle@8", "tokens", "steps", "resampling",
                        "s/task"):  # fmt: skip
                t.add_column(col, justify="left" if col == "controller" else "right")
            for tag, r in s["searches"].items():
                m = r["mean"]
                t.add_row(
                    tag,
                    f"{len(r['families'])}",
                    f"{m['tasks']:.0f}",
                    f"{m['accuracy']:.1%}",
                    f"{m['vote_at_tokens']:.1%}",
                    f"{m['vote@8']:.1%}",
                    f"{m['greedy']:.1%}",
                    f"{m['oracle@8']:.1%}",
                    f"{m['tokens']:.0f}",
                    f"{m['steps']:.2f}",
                    f"{m['resampling_rate']:.0%}",
                    f"{m['seconds']:.1f}",
                )
            CONSOLE.print(t)


def plot(summary: dict[str, Any], out: Path) -> None:
    from matplotlib.figure import Figure

    splits = list(summary["splits"].items())
    fig = Figure(figsize=(7 * len(splits), 5.5), dpi=110, layout="constrained")
    for i, (split, s) in enumerate(splits):
        ax = fig.add_subplot(1, len(splits), i + 1)
        mean = s["mean"]
        shown = ["greedy", "vote", "oracle"] + [
            k for k in sorted(mean) if k.startswith(("bon(", "wvote(", "filter50("))
        ]
        for name in shown:
            if name not in mean:
                continue
            pts = sorted(mean[name].items(), key=lambda kv: int(kv[0]))
            style = "--" if name in ("oracle",) else "-"
            ax.plot([p[1][1] for p in pts], [p[1][0] for p in pts], style, marker="o",
                    markersize=4, label=name)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("generated tokens per task (log)")
        ax.set_ylabel("accuracy (mean over families)")
        ax.set_title(f"{split} families: {', '.join(s['families'])}", fontsize=8, wrap=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.savefig(out)


def markdown(summary: dict[str, Any]) -> str:
    """The tables in docs/search.md: per split, the main selectors' mean accuracy (tokens) by N, the
    verifiers' AUC and ECE, the seconds per task, and the search controllers."""
    out = []
    for split, s in summary["splits"].items():
        mean = s["mean"]
        out.append(f"**{split} families** ({', '.join(s['families'])}), mean over families:\n")
        out.append("| selector | " + " | ".join(f"N={n}" for n in NS) + " |")
        out.append("| --- |" + " ---: |" * len(NS))
        for name in sorted(mean, key=lambda k: (k not in ("greedy", "vote", "oracle"), k)):
            by_n = {int(n): v for n, v in mean[name].items()}
            cells = [f"{by_n[n][0]:.1%} ({by_n[n][1]:.0f})" if n in by_n else "" for n in NS]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("\n| verifier | ROC AUC | ECE |\n| --- | ---: | ---: |")
        for v, m in s["verifiers"].items():
            auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
            out.append(f"| {v} | {auc} | {m['ece']:.3f} |")
        secs = ", ".join(f"{k} {v:.2f}" for k, v in s["seconds_per_task"].items())
        out.append(f"\nSeconds per task (wall, batches of tasks): {secs}.\n")
        if s.get("searches"):
            out.append(
                "| search | tasks/family | accuracy | vote at equal tokens | vote@8 | greedy | "
                "oracle@8 | tokens | steps | resampling | s/task |"
            )
            out.append("| --- |" + " ---: |" * 10)
            for tag, r in s["searches"].items():
                m = r["mean"]
                out.append(
                    f"| {tag} | {m['tasks']:.0f} | {m['accuracy']:.1%} | {m['vote_at_tokens']:.1%}"
                    f" | {m['vote@8']:.1%} | {m['greedy']:.1%} | {m['oracle@8']:.1%} | "
                    f"{m['tokens']:.0f} | {m['steps']:.2f} | {m['resampling_rate']:.0%} | "
                    f"{m['seconds']:.1f} |"
                )
            out.append("")
    return "\n".join(out) + "\n"
