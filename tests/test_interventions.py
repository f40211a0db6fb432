"""Per-request interventions on the real SmolLM2: steering, layer and FFN skipping, activity
tracing, dynamic (prefill-decided) plans, and their errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from agentic.core import (
    ConfigError,
    GenerateRequest,
    InterventionRef,
    NotSupported,
    Tracer,
)
from backends.interventions.base import Intervention, SlotPlan
from backends.interventions.static import ActivityTrace, LayerRepeat, LayerSkip, Steering

pytestmark = pytest.mark.slow

SHORT = "Name a color."
LONG = "Write one sentence about the sea, the sky, and the mountains in the early morning."


@pytest.fixture
def lm(smollm2: Any) -> Iterator[Any]:
    yield smollm2
    smollm2.clear_interventions()


def req(text: str, *refs: InterventionRef, max_tokens: int = 12) -> GenerateRequest:
    r = GenerateRequest.chat(text, max_tokens=max_tokens, temperature=0.0, logprobs=0)
    return r.model_copy(update={"interventions": refs})


async def both(lm: Any, a: GenerateRequest, b: GenerateRequest) -> tuple[Any, Any]:
    """Two requests decoded in one batch (the scheduler coalesces concurrent calls)."""
    ga, gb = await asyncio.gather(lm.generate([a]), lm.generate([b]))
    return ga[0][0], gb[0][0]


def greedy_without_cache(lm: Any, text: str, steps: int) -> list[int]:
    """Reference decode: the whole sequence re-run every step, no KV cache, no batch."""
    ids = lm.render(req(text))
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = lm.model(torch.tensor([ids + out]), use_cache=False).logits
            out.append(int(logits[0, -1].argmax()))
    return out


async def test_unsteered_rows_are_bit_identical_beside_a_steered_row(lm: Any) -> None:
    g = torch.Generator().manual_seed(0)
    vec = {10: torch.randn(lm.hidden_size, generator=g) * 8.0}
    [[long_alone]] = await lm.generate([req(LONG)])
    plain_long, plain_short = await both(lm, req(LONG), req(SHORT))
    lm.attach("push", Steering(vec))
    steered_long, steered_short = await both(
        lm, req(LONG), req(SHORT, InterventionRef(name="push"))
    )
    # the steered request changed; its unsteered neighbour did not move by a single bit
    assert steered_short.token_ids != plain_short.token_ids
    assert steered_long.token_ids == plain_long.token_ids
    assert steered_long.token_logprobs == plain_long.token_logprobs
    assert steered_long.token_ids == long_alone.token_ids
    assert lm.interventions.open_slots() == 0  # every request's slot was freed


async def test_steering_matches_adding_the_vector_by_hand(lm: Any) -> None:
    layer, vec = 6, torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(1)) * 4
    lm.attach("push", Steering({layer: vec}, scale=0.5))
    [[out]] = await lm.generate([req(SHORT, InterventionRef(name="push", scale=2.0))])

    def add(_m: Any, _i: Any, output: Any) -> Any:
        return output + vec  # 0.5 * 2.0

    lm.clear_interventions()
    handle = lm.model.model.layers[layer].register_forward_hook(add)
    try:
        expect = greedy_without_cache(lm, SHORT, len(out.token_ids))
    finally:
        handle.remove()
    assert list(out.token_ids) == expect


@pytest.mark.parametrize("skip", [{0}, {0, 1, 14}])
async def test_layer_skip_keeps_the_cache_consistent_under_left_padding(
    lm: Any, skip: set[int]
) -> None:
    lm.attach("skip", LayerSkip(skip))
    long, short = await both(lm, req(LONG), req(SHORT, InterventionRef(name="skip")))
    lm.clear_interventions()
    layers = lm.model.model.layers
    kept = torch.nn.ModuleList([x for i, x in enumerate(layers) if i not in skip])
    lm.model.model.layers = kept
    try:
        expect = greedy_without_cache(lm, SHORT, len(short.token_ids))
    finally:
        lm.model.model.layers = layers
    assert list(short.token_ids) == expect
    [[long_alone]] = await lm.generate([req(LONG)])
    assert long.token_ids == long_alone.token_ids


async def test_layer_repeat_matches_a_model_with_those_layers_twice(lm: Any) -> None:
    lm.attach("again", LayerRepeat({2, 11}))
    again = InterventionRef(name="again")
    long, short = await both(lm, req(LONG), req(SHORT, again))

    async def late(r: GenerateRequest) -> Any:
        await asyncio.sleep(0.5)
        [[g]] = await lm.generate([r])
        return g

    # the repeating request joins a running batch, and a plain one joins a repeating batch
    _, joined = await asyncio.gather(
        lm.generate([req(LONG, max_tokens=40)]), late(req(SHORT, again))
    )
    first, plain = await asyncio.gather(
        lm.generate([req(LONG, again, max_tokens=40)]), late(req(SHORT))
    )
    lm.clear_interventions()
    layers = lm.model.model.layers
    doubled = [x for i, x in enumerate(layers) for _ in range(2 if i in (2, 11) else 1)]
    lm.model.model.layers = torch.nn.ModuleList(doubled)
    lm.model.config.num_hidden_layers += 2
    try:
        expect = greedy_without_cache(lm, SHORT, len(short.token_ids))
        expect_long = greedy_without_cache(lm, LONG, len(first[0][0].token_ids))
    finally:
        lm.model.model.layers = layers
        lm.model.config.num_hidden_layers -= 2
    assert list(short.token_ids) == expect == list(joined.token_ids)
    assert list(first[0][0].token_ids) == expect_long
    [[short_alone]] = await lm.generate([req(SHORT)])
    [[long_alone]] = await lm.generate([req(LONG)])
    assert long.token_ids == long_alone.token_ids
    assert plain.token_ids == short_alone.token_ids


async def test_ffn_skip_matches_a_model_without_those_blocks(lm: Any) -> None:
    lm.attach("noffn", LayerSkip(ffn_layers={3, 17}))
    _, short = await both(lm, req(LONG), req(SHORT, InterventionRef(name="noffn")))
    lm.clear_interventions()
    mlps = {i: lm.model.model.layers[i].mlp for i in (3, 17)}

    class Zero(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    for i in mlps:
        lm.model.model.layers[i].mlp = Zero()
    try:
        expect = greedy_without_cache(lm, SHORT, len(short.token_ids))
    finally:
        for i, m in mlps.items():
            lm.model.model.layers[i].mlp = m
    assert list(short.token_ids) == expect


async def test_activity_trace_measures_each_layers_change(lm: Any) -> None:
    trace = ActivityTrace()
    lm.attach("trace", trace)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        [[out]] = await lm.generate([req(SHORT, InterventionRef(name="trace"))])
    [report] = trace.reports
    n = lm.num_layers
    prompt = lm.render(req(SHORT))
    assert report.prefill_tokens == len(prompt)
    assert report.decode_tokens == len(out.token_ids) - 1  # the last token is never run
    assert len(report.prefill_delta) == len(report.decode_relative) == n
    with torch.inference_mode():
        hs = lm.model(torch.tensor([prompt]), output_hidden_states=True).hidden_states
    for i in (0, 7, n - 2):  # the last entry of hidden_states is after the final norm
        direct = (hs[i + 1][0] - hs[i][0]).norm(dim=-1).mean()
        assert report.prefill_delta[i] == pytest.approx(float(direct), rel=1e-3)
    [ev] = [e for e in events if e.type == "backend.intervention"]
    assert ev.payload["interventions"][0]["kind"] == "activity_trace"
    assert len(ev.payload["activity"]["prefill_delta"]) == n


class SkipIfLoud(Intervention):
    """Reads layer 4's prompt activations and skips layer 20 when their norm is large."""

    kind = "test_router"
    reads = frozenset({4})

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.seen: list[int] = []

    def before_layer(self, layer: int, hidden: torch.Tensor, plan: SlotPlan) -> None:
        self.seen.append(hidden.shape[0])
        norm = float(hidden.norm(dim=-1).mean())
        plan.notes["norm"] = norm
        if norm > self.threshold:
            plan.skip.add(20)


async def test_a_dynamic_plan_is_decided_at_prefill_on_the_requests_own_tokens(lm: Any) -> None:
    router = SkipIfLoud(threshold=0.0)
    lm.attach("router", router)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        _, short = await both(lm, req(LONG), req(SHORT, InterventionRef(name="router")))
    assert router.seen == [len(lm.render(req(SHORT)))]  # its real tokens, not the padding
    [ev] = [e for e in events if e.type == "backend.intervention"]
    assert ev.payload["skip"] == [20] and ev.payload["decisions"]["norm"] > 0
    lm.attach("skip20", LayerSkip({20}))
    [[fixed]] = await lm.generate([req(SHORT, InterventionRef(name="skip20"))])
    assert short.token_ids == fixed.token_ids


async def test_bad_interventions_are_refused_with_names(lm: Any) -> None:
    with pytest.raises(ConfigError, match=r"size 7.*hidden size 576"):
        lm.attach("bad", Steering({3: torch.zeros(7)}))
    with pytest.raises(ConfigError, match=r"layers \[30\]"):
        lm.attach("bad", LayerSkip({30}))
    lm.attach("ok", LayerSkip({1}))
    with pytest.raises(ConfigError, match=r"'nope' is not attached.*attached: ok"):
        await lm.generate([req(SHORT, InterventionRef(name="nope"))])
    with pytest.raises(ConfigError, match="no intervention 'nope'"):
        lm.detach("nope")
    with pytest.raises(ConfigError, match="not an Intervention"):
        lm.attach("x", object())


async def test_backends_without_interventions_refuse_requests_naming_one() -> None:
    from backends.base import BaseBackend

    class Remote(BaseBackend):
        name = "remote"
        called = False

        async def _generate(self, requests: list[GenerateRequest]) -> Any:
            self.called = True

        def count_tokens(self, text_or_messages: Any) -> int:
            return 0

    backend = Remote()
    with pytest.raises(NotSupported, match=r"requests\[0\] names intervention 'push'.*'remote'"):
        await backend.generate([req(SHORT, InterventionRef(name="push"))])
    assert not backend.called


async def test_void_skip_skips_the_quietest_prompt_layers_while_decoding(lm: Any) -> None:
    from backends.interventions.voids import VoidSkip

    prompt = lm.render(req(SHORT))
    with torch.inference_mode():
        hs = lm.model(torch.tensor([prompt]), output_hidden_states=True).hidden_states
    n = lm.num_layers
    # layer n-1's output is hidden_states[n] only before the final norm; measure the others
    ratio = {
        i: float(((hs[i + 1][0] - hs[i][0]).norm(dim=-1) / hs[i][0].norm(dim=-1)).mean())
        for i in range(n - 1)
    }
    threshold = sorted(ratio.values())[4]  # four layers below it
    lm.attach("voids", VoidSkip(threshold, max_skip=3))
    trace = ActivityTrace()
    lm.attach("trace", trace)
    events: list[Any] = []
    refs = (InterventionRef(name="voids"), InterventionRef(name="trace"))
    with Tracer([events.append]).activate():
        await lm.generate([req(SHORT, *refs)])
    [ev] = [e for e in events if e.type == "backend.intervention"]
    quiet = sorted(i for i in ratio if ratio[i] < threshold and i != 0)
    expect = sorted(sorted(quiet, key=ratio.__getitem__)[:3])
    assert ev.payload["decisions"]["voids"] == expect == ev.payload["skip"]
    [report] = trace.reports
    for i in range(n):
        # skipped layers leave the stream unchanged while decoding, and only then
        assert (report.decode_delta[i] == 0.0) == (i in expect)
        assert report.prefill_delta[i] > 0.0
    with pytest.raises(ConfigError, match="threshold"):
        VoidSkip(0.0)
