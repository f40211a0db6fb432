"""Structured output and `logit_bias`: constrained decoding in `TransformersBackend` (xgrammar),
the request fields each server gets, and `generate_structured`'s validate-and-retry loop.

Mechanics run on stand-ins; every feature also runs on the real SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError, field_validator

from agentic.core import (
    ConfigError,
    GenerateRequest,
    JSONLSink,
    Message,
    NotSupported,
    ResponseFormat,
    SamplingParams,
    StructuredOutputError,
    Tracer,
    read_events,
)
from backends import Structured, generate_structured
from backends.base import Capabilities
from backends.openai.wire import structured_body
from backends.replay import ReplayBackend
from backends.testing import ScriptedBackend


class Color(StrEnum):
    red = "red"
    green = "green"
    blue = "blue"


class Pet(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    legs: int = Field(ge=0, le=8)


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=24)
    age: int = Field(ge=1, le=99)
    favorite: Color
    pet: Pet


class Ticket(BaseModel):
    """A rule no JSON schema states: constrained decoding cannot enforce it."""

    code: str = Field(max_length=12)

    @field_validator("code")
    @classmethod
    def _magic(cls, v: str) -> str:
        if v != "ZQX-7731":
            raise ValueError("code must be the issued code ZQX-7731")
        return v


def chat(user: str, **params: Any) -> GenerateRequest:
    return GenerateRequest.chat(user, **params)


def constrained(req: GenerateRequest, fmt: ResponseFormat) -> GenerateRequest:
    return req.model_copy(update={"response_format": fmt})


# ---- request keys and SamplingParams.logit_bias ---------------------------------------------


def test_keys_of_requests_without_the_new_fields_are_unchanged() -> None:
    # computed before response_format and logit_bias existed: old recordings must still replay
    assert GenerateRequest.chat("hi").key() == "a1c1e4c3b48795e710e9970d51dcd5e3"
    r = GenerateRequest.chat("hi", logit_bias={})
    assert r.key() == "a1c1e4c3b48795e710e9970d51dcd5e3"
    biased = GenerateRequest.chat("hi", logit_bias={5: 1.0})
    formatted = constrained(GenerateRequest.chat("hi"), ResponseFormat.pattern("a+"))
    assert len({r.key(), biased.key(), formatted.key()}) == 3


def test_logit_bias_is_canonical_hashable_and_round_trips() -> None:
    a = SamplingParams(logit_bias={"7": -5, 3: 2.5})  # OpenAI JSON writes ids as strings
    b = SamplingParams(logit_bias=[(3, 2.5), (7, -5.0)])
    assert a.logit_bias == ((3, 2.5), (7, -5.0))
    assert a == b and hash(a) == hash(b)
    assert SamplingParams.model_validate_json(a.model_dump_json()) == a


@pytest.mark.parametrize(
    ("bias", "words"),
    [
        ({1: 100.5}, "outside [-100, 100]"),
        ({-1: 1.0}, "must be >= 0"),
        ({"x": 1.0}, "need an int id"),
        ([(1, 1.0), (1, 2.0)], "twice"),
    ],
)
def test_logit_bias_rejects_bad_values(bias: Any, words: str) -> None:
    with pytest.raises(ValidationError) as ei:
        SamplingParams(logit_bias=bias)
    assert "logit_bias" in str(ei.value) and words in str(ei.value)


# ---- what each server is sent ----------------------------------------------------------------

SCHEMA = ResponseFormat.from_model(Pet)
REGEX = ResponseFormat.pattern(r"\d{3}-\d{4}")
GRAMMAR = ResponseFormat.ebnf('root ::= "yes" | "no"')


def test_vllm_server_gets_response_format_and_structured_outputs() -> None:
    body = structured_body(SCHEMA, "vllm", True, "s")
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == Pet.model_json_schema()
    assert body["response_format"]["json_schema"]["name"] == "Pet"
    assert structured_body(SCHEMA, "vllm", False, "s") == body  # /completions takes it too
    assert structured_body(REGEX, "vllm", False, "s") == {
        "structured_outputs": {"regex": r"\d{3}-\d{4}"}
    }
    assert structured_body(GRAMMAR, "vllm", True, "s") == {
        "structured_outputs": {"grammar": 'root ::= "yes" | "no"'}
    }


def test_llamacpp_server_gets_its_own_dialect_or_not_supported() -> None:
    assert structured_body(SCHEMA, "llama.cpp", True, "s") == {
        "response_format": {"type": "json_object", "schema": Pet.model_json_schema()}
    }
    assert structured_body(GRAMMAR, "llama.cpp", False, "s") == {"grammar": 'root ::= "yes" | "no"'}
    with pytest.raises(NotSupported, match="no regex option"):
        structured_body(REGEX, "llama.cpp", True, "s")
    with pytest.raises(NotSupported, match="only on /chat/completions"):
        structured_body(SCHEMA, "llama.cpp", False, "s")


def test_other_servers_get_json_schema_on_chat_only() -> None:
    assert structured_body(SCHEMA, "openai", True, "s")["response_format"]["type"] == "json_schema"
    for fmt, chat_route in ((REGEX, True), (GRAMMAR, True), (SCHEMA, False)):
        with pytest.raises(NotSupported, match="OpenAI API takes only a JSON schema"):
            structured_body(fmt, "openai", chat_route, "s")


# ---- generate_structured on a scripted stand-in ----------------------------------------------


def canned(answers: Sequence[str], structured: bool) -> ScriptedBackend:
    """Answers each call with the next canned text and keeps the requests it got."""
    caps = Capabilities(structured_output=structured)
    return ScriptedBackend(answers, name="canned", capabilities=caps)


async def test_retry_feeds_the_field_errors_back_and_then_succeeds() -> None:
    backend = canned(['{"name": "Rex", "legs": 12}', '{"name": "Rex", "legs": 4}'], True)
    out = await generate_structured(backend, chat("A dog as JSON."), Pet)
    assert isinstance(out, Structured)
    assert out.value == Pet(name="Rex", legs=4) and out.attempts == 2
    assert out.usage.model_calls == 2
    first, second = backend.requests
    assert first.response_format == ResponseFormat.from_model(Pet)
    assert second.messages is not None and first.messages is not None
    assert second.messages[: len(first.messages)] == first.messages
    assert second.messages[-2] == Message(role="assistant", content='{"name": "Rex", "legs": 12}')
    assert second.messages[-1].role == "user"
    assert "legs: Input should be less than or equal to 8" in second.messages[-1].content


async def test_a_backend_without_enforcement_gets_the_schema_in_the_prompt() -> None:
    backend = canned(['{"name": "Tom", "legs": 4}'], False)
    out = await generate_structured(backend, chat("A cat as JSON."), Pet)
    assert out.value.legs == 4 and out.attempts == 1
    [req] = backend.requests
    assert req.response_format is None
    assert req.messages is not None and '"legs"' in req.messages[-1].content


async def test_unparseable_output_after_the_retries_names_what_failed() -> None:
    backend = canned(["not json", '{"name": "", "legs": 4}', '{"legs": 4}'], True)
    with pytest.raises(StructuredOutputError) as ei:
        await generate_structured(backend, chat("A pet."), Pet, retries=2)
    msg = str(ei.value)
    assert "after 3 attempt(s)" in msg and "name: Field required" in msg and '{"legs": 4}' in msg
    with pytest.raises(ConfigError, match="n=1"):
        await generate_structured(backend, chat("A pet.", n=2), Pet)


# ---- the real model ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_json_schema_output_validates_for_several_seeds(smollm2: Any) -> None:
    req = constrained(
        chat(
            "Describe a person and their pet as JSON.",
            max_tokens=120,
            temperature=0.7,
            seed=1,
            n=3,
        ),
        ResponseFormat.from_model(Person),
    )
    [gens] = await smollm2.generate([req])
    assert len(gens) == 3
    for g in gens:
        assert g.finish_reason == "stop", g.text
        Person.model_validate_json(g.text)  # raises if the constraint leaked
    assert len({g.text for g in gens}) > 1


@pytest.mark.slow
async def test_regex_and_grammar_are_obeyed(smollm2: Any) -> None:
    phone = constrained(chat("Give me a phone number.", max_tokens=20, temperature=0.0), REGEX)
    grammar = ResponseFormat.ebnf('root ::= ("yes" | "no") ", because " [a-z ]+ "."')
    why = constrained(
        chat("Is the sky blue? Explain.", max_tokens=30, temperature=0.7, seed=1), grammar
    )
    [[p], [w]] = await smollm2.generate([phone, why])
    assert re.fullmatch(r"\d{3}-\d{4}", p.text) and p.finish_reason == "stop", p.text
    assert re.fullmatch(r"(yes|no), because [a-z ]+\.", w.text) and w.finish_reason == "stop", (
        w.text
    )


@pytest.mark.slow
async def test_unconstrained_rows_are_identical_alone_and_beside_constrained_ones(
    smollm2: Any,
) -> None:
    greedy = chat("Name three fruits.", max_tokens=24, temperature=0.0, logprobs=2)
    seeded = chat("Write a short poem.", max_tokens=24, temperature=1.0, seed=5)
    alone = [g for [g] in await smollm2.generate([greedy, seeded])]
    json_req = constrained(chat("A pet as JSON.", max_tokens=40, temperature=1.0, seed=2), SCHEMA)
    biased = chat("Name three fruits.", max_tokens=24, temperature=0.0, logit_bias={0: 5.0})
    mixed = await smollm2.generate([json_req, greedy, constrained(biased, REGEX), seeded])
    assert mixed[1][0].token_ids == alone[0].token_ids
    # padding and batch shape move the float sums a little, never the tokens
    assert mixed[1][0].token_logprobs == pytest.approx(alone[0].token_logprobs, abs=1e-4)
    assert mixed[3][0].token_ids == alone[1].token_ids
    Pet.model_validate_json(mixed[0][0].text)
    assert re.fullmatch(r"\d{3}-\d{4}", mixed[2][0].text)


@pytest.mark.slow
async def test_prefix_is_replayed_through_the_format(smollm2: Any) -> None:
    prefix = '{"name": "Biscuit", "legs": '
    req = chat("A dog as JSON.", max_tokens=30, temperature=0.0)
    [[g]] = await smollm2.generate([constrained(req.model_copy(update={"prefix": prefix}), SCHEMA)])
    pet = Pet.model_validate_json(prefix + g.text)
    assert pet.name == "Biscuit"
    with pytest.raises(ConfigError, match="prefix does not follow response_format"):
        await smollm2.generate([constrained(req.model_copy(update={"prefix": "Sure!"}), SCHEMA)])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "words"),
    [
        (ResponseFormat.pattern("(ab"), "invalid regex: Regex parsing error"),
        (
            ResponseFormat.from_model({"type": "objectx"}),
            'invalid json schema: Unsupported type "objectx"',
        ),
        (ResponseFormat.ebnf("root ::= item"), 'Rule "item" is not defined'),
    ],
)
async def test_an_invalid_format_is_a_config_error(
    smollm2: Any, fmt: ResponseFormat, words: str
) -> None:
    with pytest.raises(ConfigError) as ei:
        await smollm2.generate([constrained(chat("hi", max_tokens=4), fmt)])
    assert str(ei.value).startswith("response_format: ") and words in str(ei.value)


@pytest.mark.slow
def test_grammars_are_cached_and_padding_ids_never_allowed(smollm2: Any) -> None:
    import torch

    from backends.hf.grammar import Grammars

    tok = smollm2.tokenizer
    width = len(tok) + 64  # a padded embedding matrix: logits wider than the tokenizer
    grammars = Grammars(tok, width, smollm2.sampler.eos_ids)
    a = grammars.compile(ResponseFormat.from_model(Pet))
    assert grammars.compile(REGEX) is not a
    assert grammars.compile(ResponseFormat.from_model(Pet)) is a
    row = grammars.matcher(ResponseFormat.pattern(r"[a-z ]*"))
    logits = torch.zeros((1, width))
    row.steer(logits)
    assert torch.isinf(logits[0, len(tok) :]).all()
    letter = tok("a", add_special_tokens=False).input_ids[0]
    digit = tok("7", add_special_tokens=False).input_ids[0]
    assert logits[0, letter] == 0 and torch.isinf(logits[0, digit])


@pytest.mark.slow
async def test_logit_bias_moves_the_greedy_choice(smollm2: Any) -> None:
    req = chat("What is the capital of France?", max_tokens=1, temperature=0.0, logprobs=0)
    [[base]] = await smollm2.generate([req])
    top = base.token_ids[0]
    banned = req.model_copy(
        update={"params": req.params.model_copy(update={"logit_bias": ((top, -100.0),)})}
    )
    forced_id = smollm2.tokenizer(" Banana", add_special_tokens=False).input_ids[0]
    forced = req.model_copy(
        update={"params": req.params.model_copy(update={"logit_bias": ((forced_id, 100.0),)})}
    )
    [[b]], [[f]] = await smollm2.generate([banned]), await smollm2.generate([forced])
    assert b.token_ids[0] != top
    assert f.token_ids[0] == forced_id != top
    # logprobs stay the model's own: the forced token was unlikely before the bias
    assert base.token_logprobs is not None and f.token_logprobs is not None
    assert f.token_logprobs[0] < base.token_logprobs[0] - 1.0
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        await smollm2.generate([chat("hi", logit_bias={10**7: 1.0})])


@pytest.mark.slow
async def test_generate_structured_retries_with_the_error_and_then_fails(
    smollm2: Any, tmp_path: Path
) -> None:
    sink = JSONLSink(tmp_path / "run.jsonl")
    req = chat("Give me a ticket as JSON.", max_tokens=30, temperature=0.0)
    with Tracer([sink]).activate(), pytest.raises(StructuredOutputError) as ei:
        await generate_structured(smollm2, req, Ticket)
    sink.close()
    msg = str(ei.value)
    assert "after 2 attempt(s)" in msg and "code: Value error, code must be the issued code" in msg
    calls = [e for e in read_events(tmp_path / "run.jsonl") if e.type == "backend.generate"]
    assert len(calls) == 2
    first, second = (GenerateRequest.model_validate(e.payload["request"]) for e in calls)
    assert first.response_format == second.response_format == ResponseFormat.from_model(Ticket)
    assert second.messages is not None and first.messages is not None
    assert second.messages[-2].content == calls[0].payload["results"][0]["text"]
    assert "code must be the issued code ZQX-7731" in second.messages[-1].content
    replay = ReplayBackend(tmp_path / "run.jsonl")
    # the whole exchange replays offline, retry included, to the same error
    with pytest.raises(StructuredOutputError) as again:
        await generate_structured(replay, req, Ticket)
    assert str(again.value).partition(": ")[2] == msg.partition(": ")[2]


@pytest.mark.slow
async def test_generate_structured_returns_a_validated_value(smollm2: Any) -> None:
    req = chat("Describe a person and their pet as JSON.", max_tokens=90, temperature=0.0)
    out = await generate_structured(smollm2, req, Person)
    assert isinstance(out.value, Person) and out.attempts >= 1
    assert out.generation.finish_reason == "stop"
