"""`agentic steer apply`, `agentic route trace` and `agentic route train` on the real model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from agentic.cli import app
from backends.interventions.drllm import DrLLMRouter
from backends.interventions.steering_vectors import SteeringVector

pytestmark = pytest.mark.slow


@pytest.fixture
def lm(smollm2: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("agentic.cli.steer._load_backend", lambda uri: smollm2)
    monkeypatch.setattr("agentic.cli.route._load_backend", lambda uri: smollm2)
    yield smollm2
    smollm2.clear_interventions()


def test_steer_apply_shows_both_answers(lm: Any, tmp_path: Path) -> None:
    vec = SteeringVector(
        name="noise",
        method="mean_difference",
        model=lm.name,
        hidden_size=lm.hidden_size,
        directions={8: torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0))},
    )
    path = vec.save(tmp_path / "noise.safetensors")
    args = ["steer", "apply", str(path), "-p", "Name a fruit.", "--max-tokens", "8"]
    res = CliRunner().invoke(app, [*args, "--scale", "12"])
    assert res.exit_code == 0, res.output
    assert "without" in res.output and "with" in res.output and "noise x 12.0" in res.output
    res = CliRunner().invoke(app, [*args, "--layers", "3"])
    assert res.exit_code == 2 and "no vector at layers [3]" in res.output


def test_route_trace_prints_bars_and_writes_a_png(lm: Any, tmp_path: Path) -> None:
    png = tmp_path / "t.png"
    args = ["route", "trace", "-p", "Calculate 3 + 4.", "--max-tokens", "4"]
    res = CliRunner().invoke(app, [*args, "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "relative change per layer" in res.output and "█" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(app, [*args, "--png", str(tmp_path / "t.jpg")])
    assert res.exit_code == 2 and "--png must name a .png file" in res.output


def test_route_train_writes_a_router_that_loads(lm: Any, tmp_path: Path) -> None:
    out = tmp_path / "r.safetensors"
    args = ["route", "train", "--out", str(out), "--tasks", "1", "--rounds", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "drllm: 1 tasks" in res.output
    router = DrLLMRouter.load(out)
    assert router.net.layers == list(range(1, lm.num_layers))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "exists" in res.output
