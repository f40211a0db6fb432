"""The bookkeeping of `benchmarks/controller_eval.py`: SC@m read off one run of n samples, the
equal-token interpolation, cost-of-pass, the oracle, the choice of λ, the merged results file,
and (on the real model) that the samples `SampledSC` reports are the ones it voted over."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from agentic.core import Outcome, SamplingParams, Task, Usage, read_answer

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    import controllers_common as common
    from controllers_a2fm import cost_of_pass, oracle, pick_lam
    from mixed_suite import MixedSuite
finally:
    sys.path.pop()


def s(answer: str, score: float, tokens: int = 10) -> common.Sample:
    return common.Sample(answer, score, tokens)


def test_sc_at_votes_over_the_first_m_and_breaks_ties_to_the_first_seen() -> None:
    samples = [s("3", 0.0, 5), s("4", 1.0, 7), s("4", 1.0, 9), s("3", 0.0, 11)]
    assert common.sc_at(samples, 1) == (0.0, 5)
    assert common.sc_at(samples, 2) == (0.0, 12)  # 3 and 4 tie: 3 came first
    assert common.sc_at(samples, 3) == (1.0, 21)  # 4 leads
    assert common.sc_at(samples, 4) == (0.0, 32)  # tie again: 3 first


def test_sc_curve_averages_tasks_and_rotations() -> None:
    right_late = [s("1", 0.0), s("2", 1.0)]
    always = [s("2", 1.0), s("2", 1.0)]
    curve = common.sc_curve([right_late, always])
    assert [p["m"] for p in curve] == [1, 2]
    assert curve[0]["accuracy"] == 0.5  # first sample: wrong, right
    assert curve[0]["accuracy_rotations"] == 0.75  # rotations: (0 + 1) / 2 and 1
    assert curve[1]["accuracy"] == 0.5  # the tie goes to "1", seen first
    assert curve[1]["tokens"] == 20.0


def test_at_tokens_interpolates_and_clamps() -> None:
    curve = [
        {"m": 1, "accuracy": 0.2, "tokens": 10.0},
        {"m": 2, "accuracy": 0.4, "tokens": 20.0},
        {"m": 3, "accuracy": 0.1, "tokens": 30.0},
    ]
    acc, m, note = common.at_tokens(curve, 15.0)
    assert acc == pytest.approx(0.3) and m == pytest.approx(1.5) and note == ""
    assert common.at_tokens(curve, 25.0)[0] == pytest.approx(0.25)
    assert common.at_tokens(curve, 5.0) == (0.2, 1.0, "below SC@1: clamped")
    assert common.at_tokens(curve, 99.0) == (0.1, 3, "above SC@3: clamped")


def _out(tid: str, score: float, tokens: int, seconds: float = 1.0) -> Outcome:
    usage = Usage(
        prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2, seconds=seconds
    )
    return Outcome(task_id=tid, output="", score=score, usage=usage)


def test_cost_of_pass_and_the_oracle() -> None:
    tasks = list(MixedSuite(split="test", per_kind=1).tasks)  # trivial, calculator, reasoning
    runs = {
        "instant": [_out("a", 1.0, 10), _out("b", 0.0, 10), _out("c", 0.0, 10)],
        "reasoning": [_out("a", 1.0, 40), _out("b", 0.0, 40), _out("c", 1.0, 40)],
        "agentic": [_out("a", 1.0, 90), _out("b", 1.0, 90), _out("c", 1.0, 90)],
    }
    row = cost_of_pass("reasoning", tasks, runs["reasoning"], ["reasoning"] * 3)
    assert row["accuracy"] == pytest.approx(2 / 3)
    assert row["tokens_per_correct"] == pytest.approx(60.0)  # 120 tokens, 2 right
    assert row["seconds_per_correct"] == pytest.approx(1.5)
    assert row["modes"]["trivial"] == "0/1/0"
    best = oracle(tasks, runs)
    assert best["accuracy"] == 1.0
    assert best["tokens_per_task"] == pytest.approx((10 + 90 + 40) / 3)
    assert best["modes"] == {"trivial": "1/0/0", "calculator": "0/0/1", "reasoning": "0/1/0"}
    nothing = cost_of_pass("x", tasks, [_out(t.id, 0.0, 5) for t in tasks], ["instant"] * 3)
    assert nothing["tokens_per_correct"] is None


def test_pick_lam_puts_accuracy_first_then_cost_of_pass() -> None:
    sweep = [
        {"lam": 0.1, "accuracy": 0.60, "tokens_per_correct": 500.0},
        {"lam": 0.2, "accuracy": 0.59, "tokens_per_correct": 339.0},
        {"lam": 0.4, "accuracy": 0.40, "tokens_per_correct": 125.0},  # cheap, but far less right
    ]
    assert pick_lam(sweep) == 0.2
    assert pick_lam(sweep[:1] + sweep[2:]) == 0.1


def test_save_section_merges_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path / "controllers.json")
    common.save_section("psr", {"rows": [1]})
    common.save_section("cyberv", {"rows": [2]})
    common.save_section("psr", {"rows": [3]})
    assert json.loads((tmp_path / "controllers.json").read_text()) == {
        "psr": {"rows": [3]},
        "cyberv": {"rows": [2]},
    }


TASK_Q = Task(id="q", input="What is 7 + 5?", answer="12")


@pytest.mark.slow
async def test_sampled_sc_reports_the_samples_it_voted_over(smollm2: object) -> None:
    sc = common.SampledSC(smollm2, 4, SamplingParams(temperature=0.7, max_tokens=16))  # type: ignore[arg-type]
    out, _ = await common.run_all(sc, [TASK_Q])
    [o] = out
    samples = o.info["samples"]
    assert len(samples) == 4 and all(x["tokens"] > 0 for x in samples)
    assert sum(x["tokens"] for x in samples) == o.usage.completion_tokens
    answers = [read_answer(TASK_Q, x["text"]) for x in samples]
    assert o.info["answer"] in answers
    # the output is the first sample with the voted answer, as sc_at picks it
    assert o.output == samples[answers.index(o.info["answer"])]["text"]
    scored = [
        common.Sample(a, float(a == o.info["answer"]), x["tokens"])
        for a, x in zip(answers, samples, strict=True)
    ]
    assert common.sc_at(scored, 4)[0] == 1.0
