"""Real-model behaviour of `TransformersBackend` (SmolLM2-135M-Instruct, fp32, CPU).

These tests pin the contracts that search and controllers rely on: batching is invisible
(greedy and seeded sampling give the same tokens alone or batched), `score()` agrees with
`generate()`, `prefix` continues a turn exactly, stop strings cut exactly, and streaming
yields the same text as `generate()`.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from pydantic import ValidationError

from agentic.core import (
    Budget,
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    SamplingParams,
    ScoreRequest,
)

pytestmark = pytest.mark.slow

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain recursion briefly.",
    "List three primary colors.",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "Who wrote Hamlet?",
    "Describe a cat in one sentence.",
)

# a prompt whose greedy answer runs past 32 tokens without EOS (checked where it matters)
LONG_PROMPT = "Explain recursion briefly."


def chat(user: str, **params: Any) -> GenerateRequest:
    return GenerateRequest.chat(user, **params)


async def one(backend: Any, req: GenerateRequest) -> Generation:
    [[gen]] = await backend.generate([req])
    return gen


# ---- 1. batching is invisible ------------------------------------------------------------


async def test_batched_greedy_equals_unbatched(smollm2: Any, monkeypatch: Any) -> None:
    reqs = [chat(p, temperature=0.0, max_tokens=24) for p in PROMPTS]
    alone = [await one(smollm2, r) for r in reqs]

    sizes: list[int] = []
    original = smollm2.forwards.prefill

    def recording(rows: list[Any]) -> Any:
        sizes.append(len(rows))
        return original(rows)

    monkeypatch.setattr(smollm2.forwards, "prefill", recording)
    together = await asyncio.gather(*(smollm2.generate([r]) for r in reqs))

    assert max(sizes) > 1, f"concurrent requests were not batched: batch sizes {sizes}"
    assert sum(sizes) == len(reqs)
    for prompt, a, [[b]] in zip(PROMPTS, alone, together, strict=True):
        assert b.token_ids == a.token_ids, f"batched greedy diverged for {prompt!r}"
        assert b.text == a.text
        assert b.finish_reason == a.finish_reason
    assert len({a.token_ids for a in alone}) == len(reqs), "prompts should give distinct outputs"


# ---- 2. score agrees with generate ------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"temperature": 0.0},
        {"temperature": 0.8, "seed": 7},
    ],
    ids=["greedy", "sampled"],
)
async def test_score_matches_generate_logprobs(smollm2: Any, params: dict[str, Any]) -> None:
    req = chat(LONG_PROMPT, max_tokens=24, logprobs=0, **params)
    gen = await one(smollm2, req)
    assert gen.token_logprobs is not None
    assert len(gen.token_logprobs) == len(gen.token_ids) > 0
    assert gen.top_logprobs is None  # logprobs=0: chosen tokens only

    [res] = await smollm2.score(
        [ScoreRequest(messages=req.messages, continuation=tuple(gen.token_ids))]
    )
    assert res.token_ids == gen.token_ids
    assert len(res.token_logprobs) == len(gen.token_logprobs)
    for i, (s, g) in enumerate(zip(res.token_logprobs, gen.token_logprobs, strict=True)):
        assert s == pytest.approx(g, abs=1e-4), f"token {i}: score {s} vs generate {g}"
    assert res.logprob == pytest.approx(gen.logprob, abs=1e-3)
    assert res.usage.prompt_tokens == gen.usage.prompt_tokens + len(gen.token_ids)


async def test_score_text_continuation_matches_token_ids(smollm2: Any) -> None:
    req = chat(LONG_PROMPT, temperature=0.0, max_tokens=16, logprobs=0)
    gen = await one(smollm2, req)
    by_ids, by_text = await smollm2.score(
        [
            ScoreRequest(messages=req.messages, continuation=tuple(gen.token_ids)),
            ScoreRequest(messages=req.messages, continuation=gen.text, top_logprobs=2),
        ]
    )
    assert by_text.token_ids == by_ids.token_ids == gen.token_ids
    assert by_text.token_logprobs == pytest.approx(by_ids.token_logprobs, abs=1e-4)
    assert by_ids.top_logprobs is None
    assert by_text.top_logprobs is not None and len(by_text.top_logprobs) == len(gen.token_ids)
    # greedy: the top-1 alternative is the chosen token
    for tid, alts in zip(gen.token_ids, by_text.top_logprobs, strict=True):
        assert len(alts) == 2 and alts[0].token_id == tid


# ---- 3. prefix continues the turn exactly -----------------------------------------------


async def test_prefix_continuation_equals_full_generation(smollm2: Any) -> None:
    max_tokens, k = 32, 5
    full = await one(smollm2, chat(LONG_PROMPT, temperature=0.0, max_tokens=max_tokens))
    assert full.finish_reason == "length" and len(full.token_ids) == max_tokens

    tok = smollm2.tokenizer
    prefix = tok.decode(list(full.token_ids[:k]), skip_special_tokens=True)
    # precondition: the prefix re-tokenizes to exactly the generated tokens (token boundary)
    assert tok(prefix, add_special_tokens=False).input_ids == list(full.token_ids[:k])

    base = chat(LONG_PROMPT, temperature=0.0, max_tokens=max_tokens - k)
    req = base.model_copy(update={"prefix": prefix})
    assert smollm2.render(req) == smollm2.render(base) + list(full.token_ids[:k])

    cont = await one(smollm2, req)
    assert cont.token_ids == full.token_ids[k:]
    assert not cont.text.startswith(prefix), "the continuation must not repeat the prefix"
    assert prefix + cont.text == full.text


# ---- 4. stop strings ----------------------------------------------------------------------


async def test_stop_string_cuts_exactly(smollm2: Any) -> None:
    full = await one(smollm2, chat(LONG_PROMPT, temperature=0.0, max_tokens=32))
    assert full.finish_reason == "length" and full.stop_reason is None
    words = full.text.split()
    stop = " " + words[len(words) // 2]
    at = full.text.find(stop)
    assert at > 0

    cut = await one(smollm2, chat(LONG_PROMPT, temperature=0.0, max_tokens=32, stop=(stop,)))
    assert cut.text == full.text[:at]
    assert cut.finish_reason == "stop"
    assert cut.stop_reason == stop
    assert stop not in cut.text
    assert len(cut.token_ids) < len(full.token_ids)
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]
    assert cut.usage.completion_tokens == len(cut.token_ids)

    # of several stop strings, the one that occurs first in the text ends the generation
    later = " " + words[-2]
    assert full.text.find(later) > at
    both = await one(smollm2, chat(LONG_PROMPT, temperature=0.0, max_tokens=32, stop=(later, stop)))
    assert both.text == full.text[:at] and both.stop_reason == stop

    never = await one(
        smollm2, chat(LONG_PROMPT, temperature=0.0, max_tokens=32, stop=("zqxj-never",))
    )
    assert never.text == full.text
    assert never.finish_reason == "length" and never.stop_reason is None


# ---- 5. seeds ---------------------------------------------------------------------------


async def test_seed_reproduces_sampling_alone_and_batched(smollm2: Any) -> None:
    def seeded(seed: int) -> GenerateRequest:
        return chat(LONG_PROMPT, temperature=1.0, seed=seed, max_tokens=24)

    a = await one(smollm2, seeded(123))
    b = await one(smollm2, seeded(123))
    c = await one(smollm2, seeded(124))
    assert a.token_ids == b.token_ids and a.text == b.text
    assert a.token_ids != c.token_ids, "different seeds gave the same sample"

    others = [chat(p, temperature=0.0, max_tokens=16) for p in PROMPTS[:3]] + [
        chat(PROMPTS[3], temperature=1.0, seed=5, max_tokens=24)
    ]
    results = await asyncio.gather(*(smollm2.generate([r]) for r in [*others, seeded(123)]))
    in_batch = results[-1][0][0]
    assert in_batch.token_ids == a.token_ids, "seeded sample changed inside a batch"


# ---- 6. n samples -------------------------------------------------------------------------


async def test_n_samples_and_usage(smollm2: Any) -> None:
    req = chat(LONG_PROMPT, temperature=1.0, seed=11, n=4, max_tokens=16)
    [gens] = await smollm2.generate([req])
    assert len(gens) == 4
    assert len({g.token_ids for g in gens}) > 1, "n samples with one seed must not all coincide"

    prompt_tokens = smollm2.count_tokens(req.messages)
    assert gens[0].usage.prompt_tokens == prompt_tokens
    assert gens[0].usage.model_calls == 1
    for g in gens[1:]:
        assert g.usage.prompt_tokens == 0 and g.usage.model_calls == 0
    for g in gens:
        assert 0 < len(g.token_ids) <= 16
        assert g.usage.completion_tokens == len(g.token_ids)

    # the n samples are reproducible and sample j does not depend on n
    [again] = await smollm2.generate([req])
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]
    single = req.model_copy(update={"params": req.params.model_copy(update={"n": 1})})
    [[first]] = await smollm2.generate([single])
    assert first.token_ids == gens[0].token_ids


# ---- 7. logprobs / top_logprobs / entropies ---------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{"temperature": 0.0}, {"temperature": 1.0, "seed": 3}],
    ids=["greedy", "sampled"],
)
async def test_top_logprobs_shape(smollm2: Any, params: dict[str, Any]) -> None:
    gen = await one(smollm2, chat(LONG_PROMPT, max_tokens=16, logprobs=3, **params))
    n = len(gen.token_ids)
    assert n > 0
    assert gen.token_logprobs is not None and len(gen.token_logprobs) == n
    assert gen.top_logprobs is not None and len(gen.top_logprobs) == n
    assert gen.entropies is not None and len(gen.entropies) == n
    for i, (tid, lp, alts, ent) in enumerate(
        zip(gen.token_ids, gen.token_logprobs, gen.top_logprobs, gen.entropies, strict=True)
    ):
        assert len(alts) == 3
        values = [a.logprob for a in alts]
        assert values == sorted(values, reverse=True), f"position {i} not sorted: {values}"
        assert all(v <= 0.0 for v in values)
        assert lp <= values[0] + 1e-6
        assert ent >= 0.0
        if params["temperature"] == 0.0:
            assert alts[0].token_id == tid
            assert lp == pytest.approx(values[0], abs=1e-6)
        else:
            present = [a.logprob for a in alts if a.token_id == tid]
            if present:
                assert lp == pytest.approx(present[0], abs=1e-6)
    # entropies are exact local values, not zero everywhere
    assert max(gen.entropies) > 0.0

    plain = await one(smollm2, chat(LONG_PROMPT, max_tokens=16, **params))
    assert plain.token_ids == gen.token_ids, "asking for logprobs changed the sample"
    assert plain.token_logprobs is None and plain.top_logprobs is None


# ---- 8. streaming -------------------------------------------------------------------------


async def test_stream_equals_generate(smollm2: Any) -> None:
    req = chat(LONG_PROMPT, temperature=0.0, max_tokens=24)
    gen = await one(smollm2, req)
    chunks = [c async for c in smollm2.stream(req)]
    assert len(chunks) > 1, "stream() yielded everything at once"
    assert all(chunks)
    assert "".join(chunks) == gen.text

    words = gen.text.split()
    stop = " " + words[len(words) // 2]
    stop_req = chat(LONG_PROMPT, temperature=0.0, max_tokens=24, stop=(stop,))
    cut = await one(smollm2, stop_req)
    streamed = "".join([c async for c in smollm2.stream(stop_req)])
    assert stop not in streamed
    assert streamed == cut.text == gen.text[: gen.text.find(stop)]

    with pytest.raises(ConfigError, match="n=1"):
        async for _ in smollm2.stream(chat(LONG_PROMPT, n=2, max_tokens=4)):
            pass


# ---- 9. bad input -------------------------------------------------------------------------


async def test_bad_input_errors(smollm2: Any) -> None:
    with pytest.raises(ConfigError, match="empty"):
        await smollm2.generate([])
    with pytest.raises(ConfigError, match="single request"):
        await smollm2.generate(chat("hi", max_tokens=2))
    with pytest.raises(ConfigError, match="expected GenerateRequest"):
        await smollm2.generate(["hi"])
    with pytest.raises(ConfigError, match="empty"):
        await smollm2.score([])
    with pytest.raises(ValidationError, match="max_tokens"):
        SamplingParams(max_tokens=-1)
    with pytest.raises(ValidationError, match="exactly one of"):
        GenerateRequest()
    with pytest.raises(ValidationError, match="exactly one of"):
        GenerateRequest(messages=(Message(role="user", content="hi"),), prompt="hi")
    with pytest.raises(ValidationError, match="stop strings must be non-empty"):
        SamplingParams(stop=("",))

    # a raw prompt (completion mode) works and continues the text
    req = GenerateRequest(
        prompt="The capital of France is", params=SamplingParams(temperature=0.0, max_tokens=8)
    )
    gen = await one(smollm2, req)
    assert gen.text.strip()
    assert 0 < len(gen.token_ids) <= 8
    assert gen.usage.prompt_tokens == len(smollm2.render(req)) > 0

    # the backend still serves requests after the errors
    ok = await one(smollm2, chat("Who wrote Hamlet?", temperature=0.0, max_tokens=4))
    assert len(ok.token_ids) == 4


# ---- 10. count_tokens ---------------------------------------------------------------------


async def test_count_tokens_matches_usage(smollm2: Any) -> None:
    n_text = smollm2.count_tokens("Hello, world! How are you today?")
    assert isinstance(n_text, int) and n_text > 0
    assert smollm2.count_tokens("Hello, world! How are you today? Fine.") > n_text

    msgs = [
        Message(role="system", content="You are terse."),
        Message(role="user", content="Name a prime number."),
    ]
    n_msgs = smollm2.count_tokens(msgs)
    assert isinstance(n_msgs, int) and n_msgs > n_text
    gen = await one(
        smollm2,
        GenerateRequest(messages=tuple(msgs), params=SamplingParams(temperature=0.0, max_tokens=4)),
    )
    assert gen.usage.prompt_tokens == n_msgs
    assert gen.usage.completion_tokens == len(gen.token_ids)


async def test_abandoned_stream_stops_decoding_and_is_charged(smollm2: Any) -> None:
    req = GenerateRequest.chat("Explain recursion in detail.", temperature=0.0, max_tokens=200)
    with Budget() as budget:
        agen = smollm2.stream(req)
        async for _ in agen:
            break
        await agen.aclose()
        for _ in range(200):  # the decode notices the cancel on its next step
            if budget.spent.model_calls:
                break
            await asyncio.sleep(0.05)
    assert budget.spent.model_calls == 1
    assert 1 <= budget.spent.completion_tokens < 200


async def test_cancelled_caller_frees_its_rows(smollm2: Any) -> None:
    long = GenerateRequest.chat("Tell me a long story.", temperature=0.0, max_tokens=300)
    short = GenerateRequest.chat("Say hi.", temperature=0.0, max_tokens=4)
    sizes: list[int] = []
    original = smollm2.sampler.finish

    def spy(row: Any) -> None:
        original(row)
        sizes.append(len(row.out_ids))

    smollm2.sampler.finish = spy
    try:
        task = asyncio.ensure_future(smollm2.generate([long]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        [[g]] = await smollm2.generate([short])
    finally:
        del smollm2.sampler.finish
    assert g.text
    # the cancelled row stopped long before its 300 tokens
    assert max(sizes) < 300


async def test_request_arriving_mid_batch_joins_it_and_matches_alone(smollm2: Any) -> None:
    long = GenerateRequest.chat(
        "Describe the ocean.", temperature=0.0, max_tokens=96, ignore_eos=True
    )
    late = GenerateRequest.chat("What is 2 + 2?", temperature=0.0, max_tokens=12)
    [[long_alone]] = await smollm2.generate([long])
    [[late_alone]] = await smollm2.generate([late])

    order: list[str] = []

    async def run(name: str, req: GenerateRequest, delay: float) -> Generation:
        await asyncio.sleep(delay)
        [[g]] = await smollm2.generate([req])
        order.append(name)
        return g

    long_g, late_g = await asyncio.gather(run("long", long, 0.0), run("late", late, 0.5))
    # the late request joined the running batch instead of waiting for it to finish
    assert order == ["late", "long"]
    assert late_g.token_ids == late_alone.token_ids
    assert long_g.token_ids == long_alone.token_ids


async def test_hidden_states_match_the_model_and_run_beside_generation(smollm2: Any) -> None:
    import torch

    reqs = [GenerateRequest(messages=(Message(role="user", content=p),)) for p in PROMPTS[:3]]
    alone = smollm2.render(reqs[1])
    with torch.inference_mode():
        out = smollm2.model(torch.tensor([alone]), output_hidden_states=True)
    expect = out.hidden_states[6][0, -1].float()
    greedy = GenerateRequest(
        messages=reqs[0].messages, params=SamplingParams(max_tokens=24, temperature=0.0)
    )
    [[before]] = await smollm2.generate([greedy])
    # a forward for hidden states in the middle of a decode must not disturb it
    gen, states = await asyncio.gather(
        smollm2.generate([greedy]), smollm2.hidden_states(reqs, layer=6)
    )
    assert gen[0][0].token_ids == before.token_ids
    assert states.states.shape == (3, smollm2.hidden_size)
    assert states.prompt_tokens == sum(len(smollm2.render(r)) for r in reqs)
    torch.testing.assert_close(states.states[1], expect, atol=1e-4, rtol=0)
    for layer in (smollm2.num_layers + 1, -(smollm2.num_layers + 2)):
        with pytest.raises(ConfigError, match="layer"):
            await smollm2.hidden_states(reqs, layer=layer)


async def test_layer_states_stack_layers_and_pool_over_real_tokens(smollm2: Any) -> None:
    import torch

    reqs = [GenerateRequest(messages=(Message(role="user", content=p),)) for p in PROMPTS[:3]]
    alone = smollm2.render(reqs[2])
    with torch.inference_mode():
        out = smollm2.model(torch.tensor([alone]), output_hidden_states=True)
    last = await smollm2.layer_states(reqs, [3, 6, -1])
    assert last.states.shape == (3, 3, smollm2.hidden_size)
    torch.testing.assert_close(last.states[2, 1], out.hidden_states[6][0, -1], atol=1e-4, rtol=0)
    torch.testing.assert_close(last.states[2, 2], out.hidden_states[-1][0, -1], atol=1e-4, rtol=0)
    # the mean covers the prompt's tokens only, not the left padding of its batch
    mean = await smollm2.layer_states(reqs, [6], pool="mean")
    torch.testing.assert_close(
        mean.states[2, 0], out.hidden_states[6][0].mean(0), atol=1e-4, rtol=0
    )
    with pytest.raises(ConfigError, match="layers is empty"):
        await smollm2.layer_states(reqs, [])
    with pytest.raises(ConfigError, match="pool"):
        await smollm2.layer_states(reqs, [1], pool="max")  # type: ignore[arg-type]


async def test_generate_sync_inside_a_running_loop_leaves_no_orphaned_scheduler(
    smollm2: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A notebook mixes `await generate` and `generate_sync`: each loop gets its own scheduler,
    and the one left behind is cancelled, not dropped while pending (asyncio would log "Task
    was destroyed but it is pending")."""
    ask = chat("Say hi.", max_tokens=4, temperature=0.0)
    [[first]] = await smollm2.generate([ask])  # a scheduler on this loop
    [[synced]] = smollm2.generate_sync([ask])  # another, on a fresh loop in a worker thread
    [[again]] = await smollm2.generate([ask])  # and back on this loop
    await asyncio.sleep(0)
    gc.collect()
    assert first.text == synced.text == again.text
    assert "Task was destroyed" not in caplog.text
