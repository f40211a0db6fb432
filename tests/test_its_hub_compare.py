"""`--resume` of `benchmarks/its_hub_compare.py`, on the file layout its rows are written in (no
server, no model): a group comes back as it was run, a file of other tasks or settings is
refused, and a file of other N still resumes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    from its_hub_compare import done_groups, rows_of, settings_of, suite_of
finally:
    sys.path.pop()


def cli(out: Path, **changes: Any) -> argparse.Namespace:
    """The arguments `main` hands on, for `--setting both --reward value`."""
    args = argparse.Namespace(
        tasks=3,
        n=[2],
        seed=0,
        tokens_per_step=32,
        max_steps=4,
        temperature=0.7,
        concurrency=16,
        repeats=1,
        ess_threshold=0.5,
        epf_lookahead=False,
        setting="both",
        reward="value",
        warmup=True,
        resume=True,
        out=out,
        settings=["fair", "old"],
    )
    for k, v in changes.items():
        setattr(args, k, v)
    return args


def run(side: str, seconds: float) -> dict[str, Any]:
    return {"side": side, "seconds": seconds, "accuracy": 0.5}


GROUP = {
    "order": [["its_hub:fair", "its_hub:old", "ours"]],
    "runs": {
        "ours": [run("ours", 1.0)],
        "its_hub:fair": [run("its_hub:fair", 2.0)],
        "its_hub:old": [run("its_hub:old", 3.0)],
    },
}


def written(args: argparse.Namespace) -> None:
    """The file as `main` leaves it after the (2, pf) group."""
    rows = rows_of(2, "pf", GROUP, args)
    result = {"suite": suite_of(args), "settings": settings_of(args), "rows": rows}
    args.out.write_text(json.dumps(result))


def test_a_written_group_resumes_as_it_was_run(tmp_path: Path) -> None:
    args = cli(tmp_path / "out.json")
    written(args)
    assert done_groups(args, settings_of(args)) == {(2, "pf"): GROUP}
    rows = rows_of(2, "pf", GROUP, args)
    assert [(r["setting"], r["speedup"]) for r in rows] == [("fair", 2.0), ("old", 3.0)]


def test_a_file_of_other_n_resumes(tmp_path: Path) -> None:
    written(cli(tmp_path / "out.json"))
    args = cli(tmp_path / "out.json", n=[4, 8])
    assert set(done_groups(args, settings_of(args))) == {(2, "pf")}


@pytest.mark.parametrize(
    "changes", [{"tasks": 4}, {"seed": 1}, {"reward": "judge"}, {"settings": ["fair"]}]
)
def test_a_file_of_other_tasks_or_settings_is_refused(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    written(cli(tmp_path / "out.json"))
    args = cli(tmp_path / "out.json", **changes)
    with pytest.raises(SystemExit, match="other settings"):
        done_groups(args, settings_of(args))


def test_without_resume_or_a_file_nothing_resumes(tmp_path: Path) -> None:
    args = cli(tmp_path / "out.json")
    assert done_groups(args, settings_of(args)) == {}
    written(args)
    args.resume = False
    assert done_groups(args, settings_of(args)) == {}
