"""Weighted steering (Guiding Giants): the controller's decisions land in the request's plan and
act exactly like static steering with those scales; a controller trained on SmolLM2 steers
held-out harmful prompts harder than benign ones; files round-trip; bad input is refused."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from agentic.core import ConfigError, GenerateRequest, InterventionRef, Tracer
from backends.interventions.base import ModelShape, SlotPlan
from backends.interventions.static import Steering
from backends.interventions.weighted import SteeringController, WeightedSteering
from backends.interventions.weighted_training import (
    train_scale_controller,
    train_weighted_controller,
)
from controllers.harm_judge import REFUSAL_PATTERNS

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "safety_prompts.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
REFUSES = [re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS]
D = 576  # SmolLM2-135M's hidden size


def prompts(label: str, split: str, n: int) -> list[str]:
    return [r["prompt"] for r in ROWS if r["label"] == label and r["split"] == split][:n]


def req(
    text: str, *refs: InterventionRef, max_tokens: int = 16, prefix: str = ""
) -> GenerateRequest:
    r = GenerateRequest.chat(text, max_tokens=max_tokens, temperature=0.0)
    return r.model_copy(update={"interventions": refs, "prefix": prefix})


def refuses(text: str) -> bool:
    text = text.replace("\u2019", "'")
    return any(p.search(text) for p in REFUSES)


def random_steering(read_layer: int = 6, layers: tuple[int, ...] = (8, 12)) -> WeightedSteering:
    g = torch.Generator().manual_seed(0)
    directions = {x: torch.randn(D, generator=g) * 8.0 for x in layers}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        controller = SteeringController(D, len(layers), s_max=4.0)
    return WeightedSteering(directions, controller, read_layer=read_layer)


@pytest.fixture
def lm(smollm2: Any) -> Iterator[Any]:
    yield smollm2
    smollm2.clear_interventions()


# ---- mechanics (real model) ------------------------------------------------------------------


@pytest.mark.slow
async def test_predicted_weights_land_in_the_plan_and_equal_static_steering(lm: Any) -> None:
    text = "Name a color."
    ws = random_steering()
    lm.attach("weighted", ws)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        [[steered]] = await lm.generate([req(text, InterventionRef(name="weighted"))])
    [ev] = [e for e in events if e.type == "backend.intervention"]
    notes = ev.payload["decisions"]["weighted_steering"]
    assert notes["layers"] == [8, 12] and ev.payload["steered_layers"] == [8, 12]
    # the controller read the mean of layer 6's input over the prompt's tokens
    feats = (await lm.layer_states([req(text)], [6], pool="mean")).states[:, 0]
    s, w = ws.predict(feats)
    assert notes["scale"] == pytest.approx(float(s[0]), rel=1e-4)
    assert notes["weights"] == pytest.approx(w[0].tolist(), rel=1e-4)
    assert 0.0 < notes["scale"] < 4.0 and all(0.0 < x < 1.0 for x in notes["weights"])

    scales = {
        x: notes["scale"] * wx for x, wx in zip(notes["layers"], notes["weights"], strict=True)
    }
    lm.clear_interventions()
    lm.attach("static", Steering({x: ws.directions[x] * c for x, c in scales.items()}))
    [[static]] = await lm.generate([req(text, InterventionRef(name="static"))])
    [[plain]] = await lm.generate([req(text)])
    assert steered.token_ids == static.token_ids
    assert steered.token_ids != plain.token_ids  # the steering did something


# ---- training (real model) -------------------------------------------------------------------


async def refusal_direction(
    lm: Any, train: list[str], layers: list[int]
) -> dict[int, torch.Tensor]:
    """CAA-style refusal direction: on the TRAIN prompts, the last-token state after a refusing
    assistant opening minus that after a complying one, averaged. (The plain harmful-minus-benign
    prompt difference separates the classes but barely moves SmolLM2 toward refusing.)"""
    refuse = [req(p, prefix="I'm sorry, but I can't") for p in train]
    comply = [req(p, prefix="Sure, here is how") for p in train]
    states = (await lm.layer_states(refuse + comply, [x + 1 for x in layers])).states
    diff = states[: len(train)].mean(0) - states[len(train) :].mean(0)
    return {x: diff[k] for k, x in enumerate(layers)}


@pytest.mark.slow
async def test_trained_controller_steers_harmful_prompts_harder(lm: Any) -> None:
    harmful, benign = prompts("harmful", "train", 20), prompts("benign", "train", 20)
    layers = list(range(10, 17))
    directions = await refusal_direction(lm, harmful + benign, layers)
    started = time.perf_counter()
    ws = await train_weighted_controller(
        lm, directions, harmful, benign, read_layer=10, epochs=2, s_max=0.5, lr=0.1
    )
    seconds = time.perf_counter() - started
    print(f"\ntraining: {seconds:.1f} s, loss per epoch {ws.info['epoch_loss']}")
    assert ws.info["epoch_loss"][-1] < ws.info["epoch_loss"][0]

    test_h, test_b = prompts("harmful", "test", 24), prompts("benign", "test", 24)
    feats = (await lm.layer_states([req(p) for p in test_h + test_b], [10], pool="mean")).states
    s, w = ws.predict(feats[:, 0])
    s_h, s_b = float(s[:24].mean()), float(s[24:].mean())
    print(f"held-out mean scale: harmful {s_h:.3f}, benign {s_b:.3f}")
    w_h, w_b = w[:24].mean(0).numpy().round(2), w[24:].mean(0).numpy().round(2)
    print(f"mean weights: harmful {w_h}, benign {w_b}")
    assert s_h > s_b

    lm.attach("guide", ws)
    shown = test_h[:10] + test_b[:10]
    both = [req(p, max_tokens=20) for p in shown]
    both += [req(p, InterventionRef(name="guide"), max_tokens=20) for p in shown]
    texts = [g[0].text for g in await lm.generate(both)]  # one batch: plain rows are unaffected
    plain, guided = texts[:20], texts[20:]
    rate = {
        "plain": [sum(map(refuses, plain[:10])), sum(map(refuses, plain[10:]))],
        "guided": [sum(map(refuses, guided[:10])), sum(map(refuses, guided[10:]))],
    }
    print(f"refusals of 10 harmful / 10 benign held-out prompts: {rate}")
    # robust parts: benign answers are (nearly) left alone, harmful ones are steered, and
    # steering toward refusal does not make the model refuse less
    assert sum(a == b for a, b in zip(plain[10:], guided[10:], strict=True)) >= 7
    assert sum(a != b for a, b in zip(plain[:10], guided[:10], strict=True)) >= 5
    assert rate["guided"][0] >= rate["plain"][0]


@pytest.mark.slow
async def test_scale_targets_gate_held_out_prompts_by_class(lm: Any) -> None:
    harmful, benign = prompts("harmful", "train", 72), prompts("benign", "train", 72)
    layers = list(range(10, 17))
    directions = await refusal_direction(lm, harmful[:20] + benign[:20], layers)
    ws = await train_scale_controller(
        lm, directions, harmful, benign, read_layer=10, s_max=0.1, gate=0.5
    )
    assert ws.info["loss"][1] < ws.info["loss"][0] and ws.gate == 0.5
    test_h, test_b = prompts("harmful", "test", 24), prompts("benign", "test", 24)
    lm.attach("gated", ws)
    events: list[Any] = []
    shown = test_h + test_b
    with Tracer([events.append]).activate():
        await lm.generate([req(p, InterventionRef(name="gated"), max_tokens=1) for p in shown])
    notes = [e.payload["decisions"]["weighted_steering"] for e in events
             if e.type == "backend.intervention"]  # fmt: skip
    assert len(notes) == len(shown)
    # the gate snaps every scale to exactly 0 or s_max
    assert {n["scale"] for n in notes} <= {0.0, 0.1}
    feats = (await lm.layer_states([req(p) for p in shown], [10], pool="mean")).states[:, 0]
    s, _ = ws.predict(feats)
    gated_on = (s >= 0.05).tolist()
    tpr, fpr = sum(gated_on[:24]) / 24, sum(gated_on[24:]) / 24
    print(f"held-out: steered {tpr:.0%} of harmful, {fpr:.0%} of benign prompts")
    # the same decisions as from the features read outside generation (one borderline may flip)
    assert abs(sum(n["scale"] == 0.1 for n in notes) - sum(gated_on)) <= 1
    assert tpr >= 0.6 and fpr <= 0.25


# ---- files and errors (no model) -------------------------------------------------------------


def test_the_gate_snaps_the_scale_and_is_saved(tmp_path: Path) -> None:
    ws = random_steering()
    gated = WeightedSteering(ws.directions, ws.controller, read_layer=6, gate=0.5)
    bias = ws.controller.net[2].bias
    assert isinstance(bias, torch.Tensor)
    for b0, want in ((6.0, 4.0), (-6.0, 0.0)):
        with torch.no_grad():
            bias[0] = b0
        plan = SlotPlan()
        gated.configure(plan, 1.0)
        gated.before_layer(6, torch.randn(5, D), plan)
        notes = plan.notes["weighted_steering"]
        assert notes["scale"] == want
        assert [plan.steer_weight[x] for x in (8, 12)] == [want * w for w in notes["weights"]]
    back = WeightedSteering.load(gated.save(tmp_path / "gated.safetensors"))
    assert back.gate == 0.5 and WeightedSteering.load(ws.save(tmp_path / "w.st")).gate is None
    with pytest.raises(ConfigError, match="gate must be in"):
        WeightedSteering(ws.directions, ws.controller, read_layer=6, gate=1.5)


def test_save_load_round_trip(tmp_path: Path) -> None:
    ws = random_steering()
    ws.info = {"epoch_loss": [1.5, 0.5]}
    path = ws.save(tmp_path / "guide.safetensors")
    back = WeightedSteering.load(path)
    assert back.layers == ws.layers and back.read_layer == 6 and back.info == ws.info
    for layer in ws.layers:
        assert torch.equal(back.directions[layer], ws.directions[layer])
    a, b = ws.controller.state_dict(), back.controller.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    feats = torch.randn(3, D)
    assert all(
        torch.equal(p, q) for p, q in zip(ws.predict(feats), back.predict(feats), strict=True)
    )


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no weighted-steering file"):
        WeightedSteering.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="is not a safetensors file"):
        WeightedSteering.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(ConfigError, match="without weighted-steering settings"):
        WeightedSteering.load(other)
    meta = {"layers": [8], "read_layer": 6, "hidden_size": D, "s_max": 1.0, "width": 32}
    save_file({"x": torch.zeros(2)}, str(other), metadata={"weighted_steering": json.dumps(meta)})
    with pytest.raises(ConfigError, match="not a valid weighted-steering file"):
        WeightedSteering.load(other)


async def test_bad_inputs_are_refused_with_names() -> None:
    c2 = SteeringController(D, 2)
    dirs = {8: torch.zeros(D), 12: torch.zeros(D)}
    with pytest.raises(ConfigError, match=r"read_layer must be in \[0, 8\]"):
        WeightedSteering(dirs, c2, read_layer=9)
    with pytest.raises(ConfigError, match="controller is for hidden size 576 and 2 layers"):
        WeightedSteering({8: torch.zeros(D)}, c2, read_layer=6)
    with pytest.raises(ConfigError, match="directions must map layers"):
        WeightedSteering({}, c2, read_layer=6)
    with pytest.raises(ConfigError, match=r"no direction for layers \[3\]"):
        WeightedSteering(dirs, c2, read_layer=2, layers=[3, 8])
    with pytest.raises(ConfigError, match="s_max must be > 0"):
        SteeringController(D, 2, s_max=0.0)
    # duck-typed on `.directions`, as a SteeringVector is
    ws = WeightedSteering(SimpleNamespace(directions=dirs, name="refusal"), c2, read_layer=6)
    assert ws.source == "refusal" and ws.reads == frozenset({6})
    with pytest.raises(ConfigError, match="hidden size 100"):
        ws.check(ModelShape("m", 30, 100))
    with pytest.raises(ConfigError, match=r"layers \[6, 8, 12\] are outside \[0, 5\)"):
        ws.check(ModelShape("m", 5, D))
    plan = SlotPlan()
    plan.add_steering(12, torch.ones(D))
    with pytest.raises(ConfigError, match="layer 12 is already steered"):
        ws.configure(plan, 1.0)
    fresh = SlotPlan()
    ws.configure(fresh, 2.0)
    assert fresh.steer_weight == {8: 0.0, 12: 0.0} and sorted(fresh.steer) == [8, 12]
    with pytest.raises(ConfigError, match="harmful: expected a non-empty list"):
        await train_weighted_controller(object(), dirs, [], ["hi"], read_layer=6)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        await train_weighted_controller(object(), dirs, ["x"], ["hi"], read_layer=6, epochs=0)
    with pytest.raises(ConfigError, match="is not a local model"):
        await train_weighted_controller(object(), dirs, ["x"], ["hi"], read_layer=6)
