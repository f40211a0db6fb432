"""Prefix KV reuse: a prompt that starts like one encoded before encodes only the rest, and the
output is the same as without reuse."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from agentic.core import ConfigError, GenerateRequest
from backends import TransformersBackend
from backends.hf.prefix_cache import PrefixCache


def _kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    t = torch.arange(n, dtype=torch.float32).reshape(1, 1, n, 1)
    return [(t, -t)]


def test_longest_common_prefix_leaves_the_last_token_to_encode() -> None:
    pc = PrefixCache(max_tokens=100)
    assert pc.longest([1, 2, 3]) == (0, None)
    pc.add([1, 2, 3, 4], _kv(4))
    pc.add([1, 2, 9], _kv(3))
    m, kv = pc.longest([1, 2, 3, 4, 5, 6])
    assert m == 4 and kv is not None and kv[0][0].shape[2] == 4
    m, kv = pc.longest([1, 2, 3, 4])  # the same prompt again: all but its last token
    assert m == 3 and kv is not None and kv[0][0].flatten().tolist() == [0.0, 1.0, 2.0]
    assert pc.longest([1, 2, 7])[0] == 2
    assert pc.longest([5, 6])[0] == 0


def test_least_recently_used_goes_first_within_the_token_bound() -> None:
    pc = PrefixCache(max_tokens=8)
    pc.add([1, 1, 1], _kv(3))
    pc.add([2, 2, 2], _kv(3))
    pc.longest([1, 1, 1, 5])  # touches the first
    pc.add([3, 3, 3], _kv(3))
    assert len(pc) == 2 and pc.tokens == 6
    assert pc.longest([2, 2, 2, 5])[0] == 0 and pc.longest([1, 1, 1, 5])[0] == 3
    pc.add(list(range(20)), _kv(20))  # larger than the whole bound: not kept
    assert len(pc) == 2


@pytest.fixture(scope="module")
def pair(smollm2: Any) -> tuple[TransformersBackend, TransformersBackend]:
    """The same weights with and without prefix reuse, each with a fresh cache."""
    return (
        TransformersBackend(smollm2.model, smollm2.tokenizer, prefix_cache_tokens=4096),
        TransformersBackend(smollm2.model, smollm2.tokenizer, prefix_cache_tokens=0),
    )


@pytest.mark.slow
async def test_step_wise_prefixes_encode_only_what_is_new(pair: Any) -> None:
    reuse, plain = pair
    base = GenerateRequest.chat(
        "What is 17 + 25? Think step by step.", max_tokens=12, temperature=0.0, logprobs=0
    )
    prefix, encoded, prompts = "", [], []
    for _ in range(3):  # a search growing one answer by a step at a time
        r = base.model_copy(update={"prefix": prefix})
        before = reuse.forwards.encoded_tokens
        [[a]] = await reuse.generate([r])
        [[b]] = await plain.generate([r])
        encoded.append(reuse.forwards.encoded_tokens - before)
        prompts.append(a.usage.prompt_tokens)
        assert a.text == b.text and a.token_ids == b.token_ids
        assert a.token_logprobs is not None and b.token_logprobs is not None
        for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True):
            assert math.isclose(x, y, abs_tol=1e-4)
        assert a.usage.prompt_tokens == b.usage.prompt_tokens  # the bill counts the whole prompt
        prefix += a.text
    first = encoded[0]
    assert first == reuse.count_tokens(list(base.messages or ()))
    # later steps encode about the previous step's text, not the whole prompt again
    assert all(e <= 14 for e in encoded[1:]), encoded
    assert sum(encoded[1:]) < 0.5 * sum(prompts[1:]), (encoded, prompts)


@pytest.mark.slow
async def test_n_samples_encode_their_prompt_once_and_sample_as_without_reuse(pair: Any) -> None:
    reuse, plain = pair
    r = GenerateRequest.chat("Name a fruit.", max_tokens=8, temperature=1.0, n=4, seed=5)
    fresh = TransformersBackend(reuse.model, reuse.tokenizer)
    [a] = await fresh.generate([r])
    assert fresh.forwards.encoded_tokens == len(fresh.render(r))  # once, not four times
    [b] = await plain.generate([r])
    assert [g.text for g in a] == [g.text for g in b]
    await fresh.aclose()


def test_negative_bound_is_refused(smollm2: Any) -> None:
    with pytest.raises(ConfigError, match="prefix_cache_tokens"):
        TransformersBackend(smollm2.model, smollm2.tokenizer, prefix_cache_tokens=-1)


@pytest.mark.slow
async def test_scoring_reuses_prefixes_and_gives_the_same_logprobs(pair: Any) -> None:
    from agentic.core import Message, ScoreRequest

    _, plain = pair
    reuse = TransformersBackend(plain.model, plain.tokenizer)  # an empty prefix cache
    question = "Question: what is 6 * 7?\n\nPartial answer:\n6 * 7 = 42"
    reqs = [
        ScoreRequest(
            messages=(Message(role="user", content=question + tail),),
            continuation=answer,
            top_logprobs=2,
        )
        for tail in ("", "\n\nSo the answer is 42.")
        for answer in ("Yes", "No")
    ]
    before = reuse.forwards.encoded_tokens
    first = await reuse.score(reqs[:2])
    cold = reuse.forwards.encoded_tokens - before
    before = reuse.forwards.encoded_tokens
    second = await reuse.score(reqs[2:])  # shares the question with the first two
    warm = reuse.forwards.encoded_tokens - before
    assert warm < 0.5 * cold, (cold, warm)
    expected = await plain.score(reqs)
    for got, want in zip(first + second, expected, strict=True):
        assert got.token_ids == want.token_ids
        for x, y in zip(got.token_logprobs, want.token_logprobs, strict=True):
            assert math.isclose(x, y, abs_tol=1e-4)
        assert got.top_logprobs is not None and want.top_logprobs is not None
        assert [t.token_id for t in got.top_logprobs[0]] == [
            t.token_id for t in want.top_logprobs[0]
        ]
