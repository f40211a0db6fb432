"""`SamplingParams.min_p`: keep the tokens whose probability after temperature is at least min_p
times the top token's. The filter in `TransformersBackend` on known logits and on the embedded
SmolLM2, request keys of recordings made before the field existed, and the body `OpenAIBackend`
sends (real servers honour it: tests/test_conformance.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from agentic.core import GenerateRequest, SamplingParams
from backends.hf.sampling import Row, Sampler
from backends.openai.backend import OpenAIBackend

# probabilities at temperature 1; the last token is 0.1 of the top one, 0.32 of it at temperature 2
PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])
SEEDS = range(500)


def draws(**params: Any) -> Counter[int]:
    """Tokens `pick` samples from PROBS, one per seed, in a batch beside an unfiltered row."""
    sampler = Sampler(tokenizer=None, eos_ids=set())
    logits = PROBS.log().repeat(2, 1)
    seen: Counter[int] = Counter()
    for seed in SEEDS:
        rows = [
            Row([], SamplingParams(**params), torch.Generator().manual_seed(seed)),
            Row([], SamplingParams(temperature=1.0), torch.Generator().manual_seed(seed)),
        ]
        seen[int(sampler.pick(rows, logits)[0])] += 1
    return seen


def test_min_p_never_samples_below_the_threshold() -> None:
    assert set(draws(temperature=1.0, min_p=0.0)) == {0, 1, 2, 3}
    # 0.15 >= 0.2 * 0.5 stays, 0.05 does not
    assert set(draws(temperature=1.0, min_p=0.2)) == {0, 1, 2}
    assert set(draws(temperature=1.0, min_p=1.0)) == {0}
    # after temperature: at 2 the last token is 0.32 of the top one, so 0.2 keeps it
    assert set(draws(temperature=2.0, min_p=0.2)) == {0, 1, 2, 3}
    assert set(draws(temperature=2.0, min_p=0.4)) == {0, 1, 2}


def test_min_p_composes_with_top_k_and_leaves_greedy_alone() -> None:
    assert set(draws(temperature=1.0, top_k=2, min_p=0.2)) == {0, 1}
    assert set(draws(temperature=1.0, top_k=3, min_p=0.5)) == {0, 1}
    assert draws(temperature=0.0, min_p=0.9) == Counter({0: len(SEEDS)})


def test_min_p_zero_samples_exactly_as_before() -> None:
    assert draws(temperature=1.0, min_p=0.0) == draws(temperature=1.0)


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_min_p_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(ValidationError) as ei:
        SamplingParams(min_p=bad)
    assert ei.value.errors()[0]["loc"] == ("min_p",)


def test_request_keys_without_min_p_are_unchanged() -> None:
    # pinned before min_p existed (tests/test_structured.py): old recordings must still replay
    assert GenerateRequest.chat("hi", min_p=0.0).key() == "a1c1e4c3b48795e710e9970d51dcd5e3"
    assert GenerateRequest.chat("hi", min_p=0.1).key() != "a1c1e4c3b48795e710e9970d51dcd5e3"


@pytest.mark.parametrize("server", ["vllm", "llama.cpp", "openai"])
async def test_openai_body_carries_min_p_only_when_set(server: Any) -> None:
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "m", server=server)
    try:
        _, body = backend._route(GenerateRequest.chat("hi", min_p=0.25), 1, None)
        assert body["min_p"] == 0.25
        # stock OpenAI rejects parameters it does not know
        _, body = backend._route(GenerateRequest.chat("hi"), 1, None)
        assert "min_p" not in body
    finally:
        await backend.aclose()


@pytest.mark.slow
async def test_high_min_p_on_smollm2_samples_the_greedy_answer(smollm2: Any) -> None:
    def ask(**params: Any) -> GenerateRequest:
        return GenerateRequest.chat("Explain recursion briefly.", max_tokens=24, **params)

    [[greedy]] = await smollm2.generate([ask(temperature=0.0)])
    # one batch: each row filters with its own min_p
    only_top, strict, plain = await smollm2.generate(
        [ask(temperature=1.0, min_p=m, n=4, seed=7) for m in (1.0, 0.9, 0.0)]
    )
    assert all(g.token_ids == greedy.token_ids for g in only_top)
    # 0.9 still keeps a near tie with the top token, should one come up
    assert sum(g.token_ids == greedy.token_ids for g in strict) >= 3, [g.text for g in strict]
    assert all(g.token_ids != greedy.token_ids for g in plain), [g.text for g in plain]
