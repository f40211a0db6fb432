"""One suite, every backend: the `Backend` contract holds whatever produces the tokens.

Backends (choose with `--conformance`): `hf` (TransformersBackend on the embedded SmolLM2),
`llama.cpp` and `vllm-server` (OpenAIBackend against real servers on 127.0.0.1, see
tests/servers.py), `replay` (each call answered by hf, recorded, and served back from the
recording by ReplayBackend), and `vllm` (the in-process VLLMBackend; it needs vllm, so it runs
inside .venv-vllm: tests/test_vllm_backend.py starts that run).

Where servers differ, `QUIRKS` says how, and the tests assert the documented behaviour instead
of skipping.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentic.core import (
    GenerateRequest,
    Generation,
    JSONLSink,
    Message,
    NotSupported,
    ScoreRequest,
    ScoreResult,
    Tracer,
)
from backends.base import BaseBackend

pytestmark = pytest.mark.slow

# documented differences between backends
QUIRKS: dict[str, dict[str, Any]] = {
    # llama.cpp's OpenAI server returns token strings but not token ids, ignores `n` (the
    # backend sends one request per extra sample), does not say which stop string matched, and
    # its echo logprobs are shifted by one position, so it cannot score continuations.
    # A seed reproduces a sample only once the prompt is in its cache: the first request for a
    # prompt samples differently from the later ones with the same seed.
    "llama.cpp": {"token_ids": False, "stop_reason": False, "score": False, "cold_seed": True},
    "vllm-server": {"token_ids": True, "stop_reason": True, "score": True},
    "hf": {"token_ids": True, "stop_reason": True, "score": True},
    "replay": {"token_ids": True, "stop_reason": True, "score": True},
    "vllm": {"token_ids": True, "stop_reason": True, "score": True},
}


class RecordThenReplay(BaseBackend):
    """Answers each call with `inner`, records it, and returns what a `ReplayBackend` reading
    that recording serves back (asserting it equals the live answer)."""

    def __init__(self, inner: Any, folder: Path) -> None:
        self.inner, self.folder, self.calls = inner, folder, 0
        self.name = "replay"
        # replay serves whole recorded generations: it does not stream token by token
        self.capabilities = inner.capabilities.model_copy(update={"streaming": False})

    async def _through_recording(self, method: str, requests: list[Any]) -> list[Any]:
        from backends.replay import ReplayBackend

        self.calls += 1
        path = self.folder / f"call{self.calls}.jsonl"
        sink = JSONLSink(path)
        with Tracer([sink]).activate():
            live = await getattr(self.inner, method)(requests)
        sink.close()
        served = await getattr(ReplayBackend(path), method)(requests)
        assert served == live
        return list(served)

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        return await self._through_recording("generate", requests)

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return await self._through_recording("score", requests)

    def count_tokens(self, text_or_messages: Any) -> int:
        return int(self.inner.count_tokens(text_or_messages))


@pytest.fixture(scope="session")
async def conformance_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[str, Any]]:
    name = request.param
    if name == "hf":
        yield name, request.getfixturevalue("smollm2")
        return
    if name == "replay":
        folder = tmp_path_factory.mktemp("replay")
        yield name, RecordThenReplay(request.getfixturevalue("smollm2"), folder)
        return
    from backends.embedded import ensure_local

    if name == "vllm":
        import os

        from backends.vllm.backend import VLLMBackend

        # vLLM's CPU backend otherwise reserves most of the machine's memory for its KV cache
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        backend: Any = VLLMBackend.from_pretrained(
            ensure_local("smollm2"), enforce_eager=True, distributed_executor_backend="uni"
        )
    else:
        from backends.openai.backend import OpenAIBackend

        server = request.getfixturevalue({"llama.cpp": "llamacpp_server"}.get(name, "vllm_server"))
        # llama.cpp's server has no continue_final_message: prefixes need the template locally
        tokenizer = ensure_local("smollm2") if name == "llama.cpp" else None
        backend = OpenAIBackend(server.url, "smollm2", tokenizer=tokenizer)
    yield name, backend
    await backend.aclose()


def _chat(text: str, **params: Any) -> GenerateRequest:
    return GenerateRequest.chat(text, **params)


async def _one(backend: Any, req: GenerateRequest) -> Generation:
    return (await backend.generate([req]))[0][0]


async def test_greedy_is_deterministic_alone_and_batched(conformance_backend: Any) -> None:
    _, backend = conformance_backend
    r = _chat("Name three colors.", max_tokens=16, temperature=0.0)
    other = _chat("What is the capital of France?", max_tokens=16, temperature=0.0)
    alone = await _one(backend, r)
    batched = await backend.generate([r, other, r])
    assert alone.text
    assert batched[0][0].text == alone.text == batched[2][0].text
    assert batched[0][0].token_ids == alone.token_ids


async def test_stop_string_cuts_where_it_first_appears(conformance_backend: Any) -> None:
    name, backend = conformance_backend
    base = await _one(backend, _chat("Count from 1 to 10.", max_tokens=40, temperature=0.0))
    words = base.text.split()
    assert len(words) >= 4, base.text
    stop = words[2]
    expected = base.text[: base.text.find(stop)]
    cut = await _one(
        backend, _chat("Count from 1 to 10.", max_tokens=40, temperature=0.0, stop=stop)
    )
    assert cut.text == expected
    assert cut.finish_reason == "stop"
    assert cut.stop_reason == (stop if QUIRKS[name]["stop_reason"] else None)


async def test_logprobs_are_present_and_consistent(conformance_backend: Any) -> None:
    name, backend = conformance_backend
    g = await _one(backend, _chat("What is 2+3?", max_tokens=12, temperature=0.0, logprobs=3))
    assert g.token_logprobs is not None and g.top_logprobs is not None
    n = g.usage.completion_tokens
    assert len(g.token_logprobs) == len(g.top_logprobs) == n > 0
    assert len(g.token_ids) == (n if QUIRKS[name]["token_ids"] else 0)
    for chosen, tops in zip(g.token_logprobs, g.top_logprobs, strict=True):
        assert chosen <= 1e-6
        assert 1 <= len(tops) <= 3
        values = [t.logprob for t in tops]
        assert values == sorted(values, reverse=True)
        # greedy picks the most likely token
        assert math.isclose(chosen, values[0], abs_tol=1e-4)
    assert g.entropies is not None and len(g.entropies) == n
    assert all(e >= 0 for e in g.entropies)
    plain = await _one(backend, _chat("What is 2+3?", max_tokens=12, temperature=0.0))
    assert plain.token_logprobs is None and plain.top_logprobs is None
    assert plain.text == g.text


async def test_prefix_continues_the_assistant_turn(conformance_backend: Any) -> None:
    _, backend = conformance_backend
    r = _chat("What is 2+3?", max_tokens=16, temperature=0.0)
    base = await _one(backend, r)
    cut = base.text.index(" ", 1)  # the first word of the answer becomes the prefix
    prefix = base.text[:cut]
    assert prefix
    cont = await _one(backend, r.model_copy(update={"prefix": prefix}))
    # greedy: prefix + continuation retraces the answer the model gave without a prefix
    assert (prefix + cont.text)[: cut + 3] == base.text[: cut + 3]
    assert cont.usage.prompt_tokens > base.usage.prompt_tokens


async def test_n_samples_seeded(conformance_backend: Any) -> None:
    name, backend = conformance_backend
    r = _chat("Write one word.", max_tokens=8, temperature=1.0, n=3, seed=11)
    if QUIRKS[name].get("cold_seed"):
        await backend.generate([r])
    first = (await backend.generate([r]))[0]
    again = (await backend.generate([r]))[0]
    assert len(first) == 3
    assert [g.text for g in first] == [g.text for g in again]
    assert len({g.text for g in first}) >= 2, [g.text for g in first]
    assert sum(g.usage.model_calls for g in first) >= 1
    assert all(g.usage.completion_tokens > 0 for g in first)


async def test_min_p_one_samples_the_greedy_answer(conformance_backend: Any) -> None:
    _, backend = conformance_backend
    haiku = "Write a haiku about the sea."
    greedy = await _one(backend, _chat(haiku, max_tokens=16, temperature=0.0))
    free = _chat(haiku, max_tokens=16, temperature=1.0, n=3, seed=5)
    only_top = free.model_copy(update={"params": free.params.model_copy(update={"min_p": 1.0})})
    [wander, top] = await backend.generate([free, only_top])
    # without min_p the same samples leave the greedy answer: the backend has to honour it
    assert any(g.text != greedy.text for g in wander), greedy.text
    assert [g.text for g in top] == [greedy.text] * 3


async def test_usage_counts_prompt_and_completion(conformance_backend: Any) -> None:
    name, backend = conformance_backend
    msgs = (Message(role="user", content="Say hello."),)
    g = await _one(
        backend, GenerateRequest(messages=msgs, params={"max_tokens": 8, "temperature": 0})
    )
    assert g.usage.prompt_tokens == backend.count_tokens(list(msgs)) > 0
    assert g.usage.model_calls == 1
    assert 0 < g.usage.completion_tokens <= 8
    if QUIRKS[name]["token_ids"]:
        assert g.usage.completion_tokens == len(g.token_ids)
    assert g.finish_reason in ("stop", "length")


async def test_score_agrees_with_generation_or_says_not_supported(conformance_backend: Any) -> None:
    name, backend = conformance_backend
    r = _chat("What is 2+3?", max_tokens=8, temperature=0.0, logprobs=0)
    g = await _one(backend, r)
    if not QUIRKS[name]["score"]:
        assert backend.capabilities.score is False
        with pytest.raises(NotSupported, match="score"):
            await backend.score([ScoreRequest(messages=r.messages, continuation=g.text)])
        return
    assert backend.capabilities.score is True
    s = (
        await backend.score(
            [ScoreRequest(messages=r.messages, continuation=g.token_ids, top_logprobs=2)]
        )
    )[0]
    assert s.token_ids == g.token_ids
    assert g.token_logprobs is not None
    for a, b in zip(s.token_logprobs, g.token_logprobs, strict=True):
        assert math.isclose(a, b, abs_tol=2e-2), (s.token_logprobs, g.token_logprobs)
    assert s.top_logprobs is not None and all(len(t) == 2 for t in s.top_logprobs)


async def test_stream_pieces_add_up_to_the_greedy_answer(conformance_backend: Any) -> None:
    _, backend = conformance_backend
    r = _chat("Name three colors.", max_tokens=16, temperature=0.0, logprobs=1)
    whole = await _one(backend, r)
    events: list[Any] = []
    with Tracer([events.append]).activate():
        pieces = [p async for p in backend.stream(r)]
    assert pieces and "".join(pieces) == whole.text
    if backend.capabilities.streaming:
        assert len(pieces) > 1  # token by token, not the whole text at the end
    # the streamed call is recorded (and charged) as the same generation
    [recorded] = [
        e for e in events if e.type == "backend.generate" and e.payload["backend"] == backend.name
    ]
    g = Generation.model_validate(recorded.payload["results"][0])
    assert (g.text, g.token_ids, g.finish_reason) == (whole.text, whole.token_ids, "stop")
    assert g.usage.prompt_tokens == whole.usage.prompt_tokens
    assert g.usage.completion_tokens == whole.usage.completion_tokens
    assert g.token_logprobs is not None and whole.token_logprobs is not None
    assert len(g.token_logprobs) == len(whole.token_logprobs)
