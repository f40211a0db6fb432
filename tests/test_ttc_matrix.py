"""The test-time-compute matrix (`benchmarks/ttc_matrix.py`, `ttc_stats.py`): the selectors and
statistics on known rows, the train/eval split, bad input, and one tiny real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import ttc_matrix  # noqa: E402
import ttc_stats  # noqa: E402


def sample(answer: str, score: float, tokens: int = 10, conf: float = 1.0) -> dict[str, Any]:
    return {
        "answer": answer,
        "score": score,
        "tokens": tokens,
        "confidence": {"tail": conf, "lowest_group": conf, "mean": conf},
        "program": 0.5,
    }


def test_train_and_eval_families_never_overlap() -> None:
    assert ttc_matrix.TRAIN and ttc_matrix.EVAL
    assert not set(ttc_matrix.TRAIN) & set(ttc_matrix.EVAL)
    datasets = [f.dataset for f in [*ttc_matrix.TRAIN.values(), *ttc_matrix.EVAL.values()]]
    assert len(datasets) == len(set(datasets)) >= 10  # split by family, not by task


def test_a_named_family_keeps_its_side_of_the_split() -> None:
    """`--families` with a train or eval family (one way to split a run across processes)
    labels its rows as the protocol does; any other family is the user's own."""
    split_of, parse = ttc_matrix.split_of, ttc_matrix.parse_family
    assert split_of(parse("lcm:max_value=10")) == "eval"
    assert split_of(parse("gcd:max_value=20")) == "train"
    assert split_of(parse("lcm:max_value=12")) == "user"
    assert split_of(parse("chain_sum:min_terms=3,max_terms=3,max_digits=1")) == "eval"


def test_the_default_aggregation_keeps_the_recorded_file_names() -> None:
    import argparse

    base = {"temperature": 1.0, "min_p": 0.1, "top_p": 1.0, "max_tokens": 64, "samples": 16}
    args = argparse.Namespace(**base, tokens_per_step=16, max_steps=4, aggregation="last")
    assert ttc_matrix.search_key(args) == "t1-minp0.1-topp1-64tok-16x4"
    args.aggregation = "min"
    assert ttc_matrix.search_key(args) == "t1-minp0.1-topp1-64tok-16x4-min"


def test_vote_ties_go_to_the_first_answer_and_weights_pick_the_member() -> None:
    group = [sample("7", 1.0, conf=0.1), sample("9", 0.0, conf=3.0), sample("7", 1.0, conf=2.0)]
    assert ttc_stats.vote(group) is group[0]
    assert ttc_stats.vote(group[:2])["answer"] == "7"  # 1 vote each: first seen wins
    # weighted (σ of the confidence, uncalibrated): the 7s' σ(0.1) + σ(2) = 1.41 beats the 9's
    # σ(3) = 0.95, and the 7 picked is the more confident one
    assert ttc_stats.vote(group, "confidence.tail") is group[2]


def test_curves_split_samples_into_disjoint_groups() -> None:
    row = {
        "greedy": {"score": 1.0, "tokens": 5},
        "samples": [sample("1", 0.0), sample("2", 1.0), sample("2", 1.0), sample("3", 0.0)],
    }
    c = ttc_stats.curves([row])
    assert c["greedy"][1] == (1.0, 5.0)
    assert c["oracle"][1] == (0.5, 10.0) and c["oracle"][2] == (1.0, 20.0)
    assert c["vote"][2] == (0.5, 20.0)  # groups (1,2) -> 1 (first), (2,3) -> 2
    assert c["vote"][4] == (1.0, 40.0)


def test_auc_and_calibration_error() -> None:
    assert ttc_stats.roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert ttc_stats.roc_auc([0.1, 0.9], [True, False]) == 0.0
    assert ttc_stats.roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert ttc_stats.roc_auc([0.5], [True]) is None
    assert ttc_stats.ece([1.0, 0.0], [True, False]) == 0.0
    assert ttc_stats.ece([0.75, 0.75], [True, False]) == pytest.approx(0.25)


def test_calibration_fit_orders_like_the_data() -> None:
    rows = [
        {"samples": [sample("a", 1.0, conf=c) for c in (2.0, 2.5, 3.0)]
         + [sample("b", 0.0, conf=c) for c in (0.5, 1.0, 1.5)]}
    ]  # fmt: skip
    fits = ttc_stats.fit_calibration(rows)
    center, scale = fits["confidence.tail"]
    assert 1.0 < center < 2.5 and scale > 0


def test_at_tokens_interpolates_in_log_tokens() -> None:
    curve = {1: (0.2, 10.0), 2: (0.4, 100.0)}
    assert ttc_stats.at_tokens(curve, 5.0) == 0.2
    assert ttc_stats.at_tokens(curve, 1000.0) == 0.4
    assert ttc_stats.at_tokens(curve, 10**1.5) == pytest.approx(0.3)


def test_parse_family_reads_json_values() -> None:
    f = ttc_matrix.parse_family("chain_sum:min_terms=2,max_terms=3,name=x")
    assert (f.dataset, f.config) == ("chain_sum", {"min_terms": 2, "max_terms": 3, "name": "x"})
    assert f.key == "chain_sum:max_terms=3,min_terms=2,name=x"
    with pytest.raises(ttc_matrix.ConfigError, match="KEY=VALUE"):
        ttc_matrix.parse_family("chain_sum:oops")


def run_matrix(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(BENCH / "ttc_matrix.py"), *args],
        capture_output=True, text=True, timeout=900, env=env, cwd=cwd,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--families", "no_such_family"], "unknown suite 'no_such_family'"),
        (["--families", "chain_sum:max_termz=2"], "max_termz"),
        (["--verifiers", "oracle"], "--verifiers: unknown ['oracle']"),
        (["--controllers", "pf-3"], "--controllers: unknown ['pf-3']"),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    res = run_matrix(*args, "--out", str(tmp_path), cwd=tmp_path)
    assert res.returncode != 0
    assert needle in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_tiny_real_run_resumes_and_summarizes(tmp_path: Path) -> None:
    family = "basic_arithmetic:max_terms=2,min_terms=2"
    common = ["--families", family, "--samples", "2", "--max-tokens", "16", "--out", str(tmp_path)]
    first = run_matrix(*common, "--tasks", "2", "--verifiers", "program", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    [rows_path] = tmp_path.glob("*/*.rows.jsonl")
    rows = [json.loads(ln) for ln in rows_path.read_text().splitlines()]
    assert [r["split"] for r in rows] == ["user", "user"]
    for r in rows:
        assert len(r["samples"]) == 2 and {"generate", "confidence", "program"} <= set(r["seconds"])
        for s in r["samples"]:
            assert 0.0 <= s["program"] <= 1.0 and set(s["confidence"]) == {
                "tail",
                "lowest_group",
                "mean",
            }
    # a rerun with one more task samples only that task
    again = run_matrix(*common, "--tasks", "3", "--verifiers", "program", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(rows_path.read_text().splitlines()) == 3
    summary = json.loads(next(tmp_path.glob("summary.*.json")).read_text())
    user = summary["splits"]["user"]
    assert {"vote", "oracle", "greedy", "bon(program)", "wvote(confidence.tail)"} <= set(
        user["mean"]
    )
    assert user["mean"]["oracle"]["2"][0] >= user["mean"]["vote"]["2"][0]


def test_a_verifier_missing_from_some_rows_is_left_out_of_the_pooled_summary() -> None:
    """While one family's rows are made again, its samples lack the value model's scores until
    a later pass adds them: the summary then pools the verifiers every row has."""
    scored = {"samples": [{**sample("7", 1.0), "value": 0.9}, {**sample("9", 0.0), "value": 0.2}]}
    fresh = {"samples": [sample("7", 1.0), sample("8", 0.0)]}
    assert "value" in ttc_stats.verifier_names([scored])
    names = ttc_stats.verifier_names([scored, fresh])
    assert "value" not in names and "value+program" not in names
    assert "program" in names
    assert set(ttc_stats.verifier_quality([scored, fresh])) == set(names)
