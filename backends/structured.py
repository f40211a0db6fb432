"""`generate_structured`: a typed value from any backend, validated, with one corrective retry.

The request gets `response_format` from the output type's JSON schema when the backend can
enforce it (`capabilities.structured_output`); otherwise the schema is written into the prompt
and only validation stands behind it. Enforcement fixes the syntax but not everything a type
checks (validators, cross-field rules, lengths the engine does not track), so the answer is
parsed and validated with pydantic; when that fails, the bad answer and the validation errors
(field by field) are fed back as a follow-up turn and the model tries again. What still fails
raises `StructuredOutputError` naming the fields and showing the last output.
"""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from agentic.core import (
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    ResponseFormat,
    StructuredOutputError,
    Usage,
)
from backends.base import Backend

T = TypeVar("T")

_SHOWN = 300  # characters of the last output quoted in the error


class Structured(BaseModel, Generic[T]):
    """The validated value, the generation it came from, and every attempt's generation."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    value: T
    generation: Generation
    attempts: int
    generations: tuple[Generation, ...]

    @property
    def usage(self) -> Usage:
        """What every attempt cost together."""
        return Usage.total(g.usage for g in self.generations)


def describe_errors(e: ValidationError) -> str:
    """One clause per failing field: `pet.age: Input should be less than or equal to 30`."""
    parts = []
    for err in e.errors(include_url=False):
        where = ".".join(str(x) for x in err["loc"]) or "(whole output)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _schema_hint(schema: dict[str, Any]) -> str:
    return (
        "\n\nReply with only a JSON value matching this JSON schema, no other text:\n"
        + json.dumps(schema)
    )


def _with_hint(request: GenerateRequest, hint: str) -> GenerateRequest:
    """The request with `hint` appended to its last user turn (or to a raw prompt)."""
    if request.messages is None:
        return request.model_copy(update={"prompt": (request.prompt or "") + hint})
    msgs = list(request.messages)
    last = max((i for i, m in enumerate(msgs) if m.role == "user"), default=None)
    if last is None:
        msgs.append(Message(role="user", content=hint.strip()))
    else:
        msgs[last] = msgs[last].model_copy(update={"content": msgs[last].content + hint})
    return request.model_copy(update={"messages": tuple(msgs)})


def _follow_up(request: GenerateRequest, output: str, errors: str) -> GenerateRequest:
    """The conversation so far, the bad answer, and a user turn saying what is wrong with it."""
    fix = (
        f"That output is not valid: {errors}. Reply again with the corrected JSON only, "
        "keeping every field valid."
    )
    if request.messages is None:
        # a raw prompt has no turns: the exchange continues as plain text
        prompt = f"{request.prompt or ''}{output}\n\n{fix}\n"
        return request.model_copy(update={"prompt": prompt, "prefix": ""})
    msgs = (
        *request.messages,
        Message(role="assistant", content=output),
        Message(role="user", content=fix),
    )
    return request.model_copy(update={"messages": msgs})


async def generate_structured(
    backend: Backend,
    request: GenerateRequest,
    output_type: type[T],
    *,
    retries: int = 1,
) -> Structured[T]:
    """Generate and validate a `output_type` (a pydantic model or any type pydantic validates).

    A request that already has a `response_format` keeps it. After a failed validation the
    error is fed back and the model tries again, `retries` times; then `StructuredOutputError`.
    Each attempt is one ordinary `backend.generate` call, so budgets, tracing and replay see it.
    """
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    if request.params.n != 1:
        raise ConfigError(f"generate_structured takes n=1, got n={request.params.n}")
    adapter: TypeAdapter[T] = TypeAdapter(output_type)
    name = getattr(output_type, "__name__", "output")
    if request.response_format is None:
        schema = adapter.json_schema()
        if backend.capabilities.structured_output:
            fmt = ResponseFormat(type="json_schema", json_schema=schema, name=name)
            request = request.model_copy(update={"response_format": fmt})
        else:
            request = _with_hint(request, _schema_hint(schema))
    gens: list[Generation] = []
    while True:
        [[gen]] = await backend.generate([request])
        gens.append(gen)
        output = request.prefix + gen.text
        try:
            value = adapter.validate_json(output)
        except ValidationError as e:
            errors = describe_errors(e)
            if gen.finish_reason == "length":
                errors += f" (the output was cut at max_tokens={request.params.max_tokens})"
            if len(gens) > retries:
                shown = output if len(output) <= _SHOWN else output[:_SHOWN] + "…"
                raise StructuredOutputError(
                    f"{backend.name}: output is not a valid {name} after {len(gens)} "
                    f"attempt(s): {errors}. Last output: {shown!r}"
                ) from None
            request = _follow_up(request, output, errors)
            continue
        return Structured[T](value=value, generation=gen, attempts=len(gens), generations=gens)
