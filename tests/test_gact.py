"""G-ACT probe-selected steering (backends/interventions/gact.py): k-means on planted clusters
and the probes' errors without a model; then on SmolLM2-135M-Instruct: a probe's choice steers
exactly like `Steering` with that centroid, JavaScript-vs-plain directions raise the share
of JavaScript answers on held-out tasks, online refinement moves the probes, and save/load."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from agentic.cli.steer import code_language, code_tasks
from agentic.core import ConfigError, GenerateRequest, InterventionRef, Tracer
from backends.interventions.gact import (
    Probes,
    ProbeSteering,
    fit_gact,
    kmeans,
    prompt_features,
)
from backends.interventions.static import Steering

LAYERS = [6, 9, 12]  # steered layers
READ = 6  # the probes read layer 6's input, before any steered layer runs
K = 3
SCALE = 4.0  # on 12 train tasks: 3 gave 0/12 JavaScript answers, 4 gave 6/12, 5 broke all
TOKENS = 32
TARGET = "JavaScript"


# ---- without a model -------------------------------------------------------------------------


def planted(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three well separated blobs of 30 points in 16 dimensions, shuffled."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 16, generator=g) * 10
    truth = torch.arange(3).repeat_interleave(30)
    x = centers[truth] + torch.randn(90, 16, generator=g)
    order = torch.randperm(90, generator=g)
    return x[order], truth[order], centers


def test_kmeans_recovers_planted_clusters() -> None:
    x, truth, centers = planted()
    c, assign = kmeans(x, 3, seed=0)
    # the same partition up to a renaming of the clusters
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: int((torch.tensor(p)[assign] == truth).sum()),
    )
    assert torch.equal(torch.tensor(best)[assign], truth)
    for found, planted_at in enumerate(best):
        assert float((c[found] - centers[planted_at]).norm()) < 2.0  # noise ~0.7
        assert torch.allclose(c[found], x[assign == found].mean(0), atol=1e-5)
    again, _ = kmeans(x, 3, seed=0)
    assert torch.equal(again, c)  # a fixed seed gives the same centroids
    with pytest.raises(ConfigError, match=r"k must be in \[1, 90\]"):
        kmeans(x, 91)


def test_probes_fit_refine_and_refuse_bad_input() -> None:
    x, truth, _ = planted(1)
    probes = Probes([3, 5], k=2, hidden_size=16)
    labels = truth  # blob 0 -> none, blob 1 -> direction 1, blob 2 -> direction 2
    losses = probes.fit(x, labels, steps=100)
    assert losses[-1] < 0.1 * losses[0]
    assert torch.equal(probes.probs(x).argmax(-1), truth[:, None].expand(-1, 2))
    with pytest.raises(ConfigError, match=r"labels: classes must be in \[0, 2\]"):
        probes.fit(x, truth + 1)
    with pytest.raises(ConfigError, match=r"labels: expected shape \(90,\) or \(90, 2\)"):
        probes.fit(x, truth[:10])
    with pytest.raises(ConfigError, match=r"features: expected shape \(N, 16\)"):
        probes.probs(torch.zeros(2, 7))
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        probes.refine(x, truth, steps=0)
    c = {3: torch.zeros(2, 16), 5: torch.zeros(2, 16)}
    with pytest.raises(ConfigError, match="read_layer 4 is after the first steered layer 3"):
        ProbeSteering(c, 4)
    with pytest.raises(ConfigError, match=r"centroids must all be \(K, hidden_size\)"):
        ProbeSteering({3: torch.zeros(2, 16), 5: torch.zeros(3, 16)}, 0)
    with pytest.raises(ConfigError, match="probes are for layers"):
        ProbeSteering(c, 0, probes=Probes([3, 5], k=3, hidden_size=16))
    with pytest.raises(ConfigError, match="min_prob"):
        ProbeSteering(c, 0, min_prob=1.5)
    # a direction is chosen only when its probe is at least min_prob sure of it
    for min_prob, expect in ((0.5, 0), (0.4, 1)):
        iv = ProbeSteering(c, 0, min_prob=min_prob)
        iv.probes.bias[:, 1] = 0.5  # p = (0.27, 0.45, 0.27) for any input
        assert iv.choose(torch.zeros(2, 16))[0].tolist() == [[expect] * 2] * 2


# ---- on SmolLM2 ------------------------------------------------------------------------------


@pytest.fixture
def lm(smollm2: Any) -> Iterator[Any]:
    yield smollm2
    smollm2.clear_interventions()


def req(text: str, *refs: InterventionRef, max_tokens: int = TOKENS) -> GenerateRequest:
    r = GenerateRequest.chat(text, max_tokens=max_tokens, temperature=0.0)
    return r.model_copy(update={"interventions": refs})


@pytest.fixture(scope="module")
async def gact(smollm2: Any) -> ProbeSteering:
    """Directions JavaScript-vs-plain from the train tasks; probes steer plain tasks and leave
    alone those that already name a language. (SmolLM2 answers plain "Write a function" tasks
    in Python 12 times out of 12, so steering toward Python could show nothing: the target is
    the language it does not pick by itself.)"""
    train = code_tasks(split="train")
    return await fit_gact(
        smollm2,
        [(f"{t} Use {TARGET}.", t) for t in train],
        LAYERS,
        K,
        READ,
        leave_alone=[f"{t} Use Python." for t in train],
        scale=SCALE,
    )


@pytest.mark.slow
async def test_the_probes_choice_steers_like_steering_with_that_centroid(lm: Any) -> None:
    g = torch.Generator().manual_seed(0)
    centroids = {i: torch.randn(K, lm.hidden_size, generator=g) * 3 for i in (8, 11)}
    iv = ProbeSteering(centroids, 5, scale=0.5)
    # random probes: which direction wins depends on the prompt's features; never "none"
    iv.probes.weight = torch.randn(iv.probes.weight.shape, generator=g) * 0.01
    iv.probes.bias[:, 0] = -1e4
    text = "Write a function that reverses a string."
    z = await prompt_features(lm, [text], 5)
    expect, probs = iv.choose(z)
    assert bool((expect > 0).all())
    lm.attach("gact", iv)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        [[out]] = await lm.generate([req(text, InterventionRef(name="gact", scale=2.0))])
    [ev] = [e for e in events if e.type == "backend.intervention"]
    note = ev.payload["decisions"]["gact"]
    # the features seen at prefill are the ones prompt_features reads
    assert note["choice"] == {"8": int(expect[0, 0]), "11": int(expect[0, 1])}
    assert note["probs"]["8"] == pytest.approx(probs[0, 0].tolist(), abs=1e-3)
    vec = {i: centroids[i][int(c) - 1] for i, c in zip((8, 11), expect[0], strict=True)}
    lm.attach("fixed", Steering(vec, scale=1.0))  # 0.5 * 2.0
    [[ref]] = await lm.generate([req(text, InterventionRef(name="fixed"))])
    assert out.token_ids == ref.token_ids
    [[plain]] = await lm.generate([req(text)])
    assert out.token_ids != plain.token_ids


@pytest.mark.slow
async def test_steering_raises_the_share_of_answers_in_the_target_language(
    lm: Any, gact: ProbeSteering
) -> None:
    # this can fail: it measures the model, not the code
    test = code_tasks(split="test")[:12]
    lm.attach("gact", gact)
    plain = await lm.generate([req(t) for t in test])
    steered = await lm.generate([req(t, InterventionRef(name="gact")) for t in test])
    for lang in ("javascript", "python"):
        base = sum(code_language(g[0].text) == lang for g in plain) / len(test)
        share = sum(code_language(g[0].text) == lang for g in steered) / len(test)
        print(f"\n{lang} share on {len(test)} held-out tasks: plain {base:.2f}, G-ACT {share:.2f}")
        if lang == "javascript":
            assert share > base
    z = await prompt_features(lm, test + [f"{t} Use Python." for t in test], READ)
    chosen, _ = gact.choose(z)
    on_plain = float((chosen[: len(test)] > 0).float().mean())
    on_named = float((chosen[len(test) :] > 0).float().mean())
    print(f"probes steer {on_plain:.2f} of plain tasks, {on_named:.2f} of 'Use Python.' ones")
    assert on_plain > on_named


@pytest.mark.slow
async def test_refine_moves_the_probes_toward_new_labels(lm: Any, gact: ProbeSteering) -> None:
    tasks = code_tasks(split="test")[12:]
    z = await prompt_features(lm, tasks, READ)
    before, p_before = gact.choose(z)
    # new evidence: steering these tasks did not help, so "none" (0) is their label now
    keep = (gact.probes.weight.clone(), gact.probes.bias.clone())
    try:
        losses = gact.refine(z, torch.zeros(len(tasks), dtype=torch.long), steps=20, lr=0.1)
        after, p_after = gact.choose(z)
    finally:
        gact.probes.weight, gact.probes.bias = keep  # the module's other tests share it
    assert losses[-1] < losses[0]
    assert bool((p_after[..., 0] > p_before[..., 0]).all())
    assert int((after == 0).sum()) > int((before == 0).sum())


@pytest.mark.slow
async def test_save_and_load_round_trip(lm: Any, gact: ProbeSteering, tmp_path: Path) -> None:
    path = gact.save(tmp_path / "gact.safetensors")
    back = ProbeSteering.load(path)
    assert back.layers == gact.layers and back.read_layer == READ and back.k == K
    assert back.scale == gact.scale
    for i in gact.layers:
        assert torch.equal(back.centroids[i], gact.centroids[i])
    z = await prompt_features(lm, code_tasks(split="test")[:4], READ)
    assert torch.equal(back.probes.probs(z), gact.probes.probs(z))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(ConfigError, match="is not a safetensors file"):
        ProbeSteering.load(bad)
    with pytest.raises(ConfigError, match="no G-ACT file"):
        ProbeSteering.load(tmp_path / "missing.safetensors")
    with pytest.raises(ConfigError, match=r"layers \[30\] are outside"):
        lm.attach("bad", ProbeSteering({30: torch.zeros(2, lm.hidden_size)}, 0))
    with pytest.raises(ConfigError, match="hidden size 576"):
        lm.attach("bad", ProbeSteering({3: torch.zeros(2, 7)}, 0))
    with pytest.raises(ConfigError, match=r"k must be in \[1, 2\]"):
        await fit_gact(lm, [("a Use Python.", "a"), ("b Use Python.", "b")], [3], 3, 0)
