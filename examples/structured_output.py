"""Structured output on the embedded SmolLM2-135M: a pydantic model and a regular expression.

`generate_structured` turns the model's JSON schema into a `response_format`, so the local
backend can only emit tokens that keep the JSON valid; pydantic then checks what the schema
cannot (here: the bounds), and a failed check is fed back once for a corrected answer.
A `ResponseFormat.pattern` request constrains free text to a regular expression instead.

.venv/bin/python examples/structured_output.py
"""

import asyncio
import re
from enum import StrEnum

from pydantic import BaseModel, Field

from agentic import GenerateRequest, ResponseFormat, load_backend
from backends import generate_structured


class Species(StrEnum):
    cat = "cat"
    dog = "dog"
    parrot = "parrot"


class Pet(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    species: Species
    age: int = Field(ge=0, le=30)


DATE = r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d)"


async def main() -> None:
    backend = load_backend("embedded:smollm2")

    request = GenerateRequest.chat(
        "Invent a pet. Give its name, species and age as JSON.", temperature=0.0, max_tokens=60
    )
    pet = await generate_structured(backend, request, Pet)
    print(f"pet: {pet.value!r}")
    tokens = pet.usage.total_tokens
    print(f"  raw text {pet.generation.text!r}: {pet.attempts} attempt(s), {tokens} tokens")

    dated = GenerateRequest.chat(
        "On what date did the first person walk on the Moon? Answer as YYYY-MM-DD.",
        temperature=0.0,
        max_tokens=12,
    ).model_copy(update={"response_format": ResponseFormat.pattern(DATE)})
    [[date]] = await backend.generate([dated])
    print(f"date: {date.text!r} (matches the pattern: {bool(re.fullmatch(DATE, date.text))})")
    await backend.aclose()


asyncio.run(main())
