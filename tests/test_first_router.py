"""FiRST prefill-decided layer routers (`backends.interventions.first`) on the real SmolLM2:
the hooks do exactly what `LayerSkip` does for the routed request and nothing to its batch
neighbour; the router reads its own prompt's layer input; a router trained by self-distillation
on standard-library docstrings skips layers on held-out docstrings at a lower KL and perplexity
than random skip sets of the same size; save/load; bad input."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import random
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from agentic.core import ConfigError, GenerateRequest, InterventionRef, Tracer
from backends.interventions.base import ModelShape
from backends.interventions.first import PrefillRouter, routing_report
from backends.interventions.first_training import train_routers
from backends.interventions.static import LayerSkip

SHORT = "Name a color."
LONG = "Write one sentence about the sea, the sky, and the mountains in the early morning."
# real English offline: docstrings of standard-library modules and functions (>= 300 chars each)
SOURCES = sorted(
    "argparse ast collections csv difflib ftplib functools.lru_cache getopt heapq json "
    "json.dumps optparse os.walk pickle pprint random re.sub sched shutil.copytree smtplib "
    "socketserver statistics subprocess.run tempfile".split()
)


def stdlib_texts() -> tuple[list[str], list[str]]:
    """(train, held-out): every third source is held out."""
    texts = []
    for name in SOURCES:
        module, _, attr = name.partition(".")
        obj = importlib.import_module(module)
        doc = inspect.getdoc(getattr(obj, attr) if attr else obj) or ""
        texts.append(" ".join(doc.split()))
    assert all(len(t) >= 300 for t in texts)
    return [t for i, t in enumerate(texts) if i % 3 != 2], texts[2::3]


@pytest.fixture
def lm(smollm2: Any) -> Iterator[Any]:
    yield smollm2
    smollm2.clear_interventions()


def req(text: str, *refs: InterventionRef, max_tokens: int = 10) -> GenerateRequest:
    r = GenerateRequest.chat(text, max_tokens=max_tokens, temperature=0.0, logprobs=0)
    return r.model_copy(update={"interventions": refs})


def forced(layers: dict[int, float], **kw: Any) -> PrefillRouter:
    """A router whose p_l is sigmoid(bias) whatever the prompt (weights zero)."""
    return PrefillRouter(layers, 576, bias=torch.tensor(list(layers.values())), **kw)


@pytest.mark.slow
async def test_a_router_forced_to_skip_equals_layer_skip_and_spares_its_neighbour(
    lm: Any,
) -> None:
    [[long_alone]] = await lm.generate([req(LONG)])
    [[long_plain]], [[short_plain]] = await asyncio.gather(
        lm.generate([req(LONG)]), lm.generate([req(SHORT)])
    )
    lm.attach("router", forced({5: -30.0, 9: -30.0, 12: 30.0}))
    events: list[Any] = []
    with Tracer([events.append]).activate():
        [[long]], [[short]] = await asyncio.gather(
            lm.generate([req(LONG)]), lm.generate([req(SHORT, InterventionRef(name="router"))])
        )
    [ev] = [e for e in events if e.type == "backend.intervention"]
    assert ev.payload["skip"] == [5, 9] == ev.payload["decisions"]["router_skip"]
    p = ev.payload["decisions"]["router_p"]
    assert p[5] < 1e-9 and p[9] < 1e-9 and p[12] > 1 - 1e-9
    # the unrouted neighbour in the same batch did not move by a single bit
    assert long.token_ids == long_plain.token_ids == long_alone.token_ids
    assert long.token_logprobs == long_plain.token_logprobs
    lm.attach("skip", LayerSkip({5, 9}))
    [[fixed]] = await lm.generate([req(SHORT, InterventionRef(name="skip"))])
    assert short.token_ids == fixed.token_ids != short_plain.token_ids


@pytest.mark.slow
async def test_the_router_reads_its_prompts_layer_input_and_caps_skips_in_layer_order(
    lm: Any,
) -> None:
    g = torch.Generator().manual_seed(0)
    router = PrefillRouter([7], 576, weight=torch.randn(1, 576, generator=g) * 0.05)
    caps = forced({3: -30.0, 4: -30.0, 6: -30.0}, max_skip=2)
    lm.attach("read", router)
    lm.attach("cap", caps)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        await lm.generate([req(SHORT, InterventionRef(name="read"), max_tokens=2)])
        await lm.generate([req(SHORT, InterventionRef(name="cap"), max_tokens=2)])
    read, cap = [e.payload for e in events if e.type == "backend.intervention"]
    with torch.inference_mode():
        ids = torch.tensor([lm.render(req(SHORT))])
        h7 = lm.model(ids, output_hidden_states=True).hidden_states[7][0]  # layer 7's input
    expect = router.probability(7, h7)
    assert read["decisions"]["router_p"][7] == pytest.approx(expect, abs=1e-4)
    assert 0.02 < expect < 0.98  # the weights, not the bias, decided
    assert cap["skip"] == [3, 4]  # greedy in layer order: 6 came after the cap was reached
    assert cap["decisions"]["router_p"][6] < 1e-9


@pytest.mark.slow
async def test_trained_routers_skip_layers_and_beat_random_skip_sets(
    lm: Any, tmp_path: Path
) -> None:
    train, held = stdlib_texts()
    started = time.monotonic()
    router = await train_routers(lm, train, lam=3.0, epochs=4, batch_size=2, seed=0)
    seconds = time.monotonic() - started
    assert router.info["kl_last"] < router.info["kl_first"]  # distillation made progress
    routed = await routing_report(lm, held, router)
    k = round(routed.mean_skipped)
    assert 1 <= k < len(router.layers) // 2
    assert routed.ppl_full < routed.ppl_routed < float("inf")
    rng = random.Random(0)
    randoms = [await routing_report(lm, held, rng.sample(router.layers, k)) for _ in range(3)]
    print(
        f"\ntrain {seconds:.0f}s on {len(train)} texts; held-out {len(held)} texts: skip "
        f"{routed.skipped}; KL {routed.kl:.3f} ppl full {routed.ppl_full:.1f} routed "
        f"{routed.ppl_routed:.1f}; random {k}-sets: "
        + ", ".join(f"{r.skipped[0]} KL {r.kl:.3f} ppl {r.ppl_routed:.1f}" for r in randoms)
    )
    for r in randoms:  # the trained choice beats every random set of the same size
        assert routed.kl < r.kl and routed.ppl_routed < r.ppl_routed

    # the backend's prefill decides exactly as the evaluation path did for the same prompt
    text = lm.tokenizer.decode(lm.tokenizer(held[0], add_special_tokens=False).input_ids[:32])
    [alone] = (await routing_report(lm, [text], router, max_tokens=64, batch_size=1)).skipped
    lm.attach("first", router)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        await lm.generate([req(text, InterventionRef(name="first"), max_tokens=1)])
    [ev] = [e for e in events if e.type == "backend.intervention"]
    assert ev.payload["skip"] == alone == routed.skipped[0]

    path = router.save(tmp_path / "router.safetensors")
    loaded = PrefillRouter.load(path)
    assert loaded.layers == router.layers and loaded.info == router.info
    for a, b in ((loaded.weight, router.weight), (loaded.bias, router.bias)):
        assert torch.equal(a, b)
    assert torch.equal(loaded.center, router.center)


def test_bad_input_is_refused_with_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="layers is empty"):
        PrefillRouter([], 576)
    with pytest.raises(ConfigError, match="repeat"):
        PrefillRouter([3, 3], 576)
    with pytest.raises(ConfigError, match=r"threshold must be in \(0, 1\), got 1.5"):
        PrefillRouter([3], 576, threshold=1.5)
    with pytest.raises(ConfigError, match="max_skip must be >= 0"):
        PrefillRouter([3], 576, max_skip=-1)
    with pytest.raises(ConfigError, match=r"weight has shape \(1, 7\), expected \(1, 576\)"):
        PrefillRouter([3], 576, weight=torch.zeros(1, 7))
    with pytest.raises(ConfigError, match="bias has non-finite"):
        PrefillRouter([3], 576, bias=torch.tensor([float("nan")]))
    with pytest.raises(ConfigError, match=r"layers \[30\] are outside"):
        PrefillRouter([30], 576).check(ModelShape("m", 30, 576))
    with pytest.raises(ConfigError, match=r"hidden size 576.*hidden size 64"):
        PrefillRouter([3], 576).check(ModelShape("m", 30, 64))
    with pytest.raises(ConfigError, match="no prefill router file"):
        PrefillRouter.load(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(ConfigError, match="without prefill router settings"):
        PrefillRouter.load(other)
    (tmp_path / "junk.safetensors").write_text("junk")
    with pytest.raises(ConfigError, match="not a safetensors file"):
        PrefillRouter.load(tmp_path / "junk.safetensors")
    fake = SimpleNamespace(name="fake", model=None, tokenizer=None, num_layers=30, hidden_size=576)
    with pytest.raises(ConfigError, match="not a local transformers model"):
        asyncio.run(train_routers(SimpleNamespace(name="remote"), ["text"]))
    with pytest.raises(ConfigError, match=r"lam=-1\.0 is out of range"):
        asyncio.run(train_routers(fake, ["text"], lam=-1.0))
    with pytest.raises(ConfigError, match="epochs=0 is out of range"):
        asyncio.run(train_routers(fake, ["text"], epochs=0))
    with pytest.raises(ConfigError, match=r"train_routers: layers \[30\]"):
        asyncio.run(train_routers(fake, ["text"], layers=[30]))
    with pytest.raises(ConfigError, match="texts must be a non-empty list"):
        asyncio.run(train_routers(fake, []))
    with pytest.raises(ConfigError, match="texts must be a non-empty list"):
        asyncio.run(train_routers(fake, "one string"))
    with pytest.raises(ConfigError, match=r"route must be a router or layer ids"):
        asyncio.run(routing_report(fake, ["text"], ["a"]))  # type: ignore[list-item]
