"""Event payloads as OpenTelemetry attributes: `agentic.*` for any payload, `gen_ai.*` (the GenAI
semantic conventions) for model calls, `agentic.budget.*` for the current budget.

Payload values map to attributes as they can: scalars as they are, dicts with plain keys as
dotted names, short lists of one scalar type as lists, anything else as JSON. Every string goes
through `redact_uri` and is cut to MAX_STRING characters; text fields (TEXT_KEYS) are left out
unless text is captured.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentic.core.budget import Budget
from agentic.core.events import Event
from agentic.core.redact import redact_uri

# payload fields that hold model or task text; exported only with capture_text
TEXT_KEYS = frozenset(
    {
        "text",
        "step",
        "answer",
        "output",
        "final_answer",
        "thought",
        "plan",
        "feedback",
        "reasoning",
        "reflection",
        "content",
        "messages",
        "prompt",
        "prefix",
        "input",
        "continuation",
    }
)
MAX_STRING = 2048  # characters of one string attribute (a JSON-encoded list or dict included)
MAX_LIST = 64  # longer lists are exported as a (truncated) JSON string
MAX_DEPTH = 3  # dicts nest as dotted names this deep, then as JSON
# a dict whose keys are not all such names (URIs, say, which may hold a key) goes as JSON
_NAME = re.compile(r"[A-Za-z0-9_-]+")
# model calls to a server are CLIENT spans; in-process models are INTERNAL (as the conventions
# allow for models running in the same process)
REMOTE_SCHEMES = frozenset({"openai"})
# OpenInference span kinds, which Phoenix shows (it derives LLM for model calls from gen_ai.*);
# other spans are CHAIN
KINDS = {"reward": "EVALUATOR", "agent": "AGENT", "cyberv": "EVALUATOR"}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def event_ids(event: Event) -> dict[str, Any]:
    """Where the span came from: its event type and ids, to find it in a recording."""
    ids = {"agentic.event": event.type, "agentic.span_id": event.span_id}
    if event.parent_id is not None:
        ids["agentic.parent_id"] = event.parent_id
    return ids


def budget_attributes() -> dict[str, Any]:
    """The current budget's spending and, for each limited unit, what is left of it (in it
    and every enclosing budget)."""
    b = Budget.current()
    if b is None:
        return {}
    s = b.spent
    out: dict[str, Any] = {
        "agentic.budget.spent.tokens": s.total_tokens,
        "agentic.budget.spent.model_calls": s.model_calls,
        "agentic.budget.spent.reward_calls": s.reward_calls,
        "agentic.budget.spent.seconds": round(b.elapsed, 6),
        "agentic.budget.spent.cost_usd": s.cost_usd,
    }
    left = b.remaining()
    for unit in ("tokens", "model_calls", "reward_calls", "seconds", "cost_usd"):
        value = getattr(left, f"max_{unit}")
        if value is not None:
            out[f"agentic.budget.remaining.{unit}"] = value
    return out


def _text(value: str) -> str:
    return redact_uri(value)[:MAX_STRING]


def _scrub(value: Any, capture_text: bool) -> Any:
    """`value` without its text fields (at any depth) unless text is captured."""
    if capture_text:
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, False) for k, v in value.items() if k not in TEXT_KEYS}
    if isinstance(value, list | tuple):
        return [_scrub(v, False) for v in value]
    return value


def _json(value: Any, capture_text: bool) -> str:
    return _text(json.dumps(_scrub(value, capture_text), default=str))


def payload_attributes(
    payload: dict[str, Any], capture_text: bool, prefix: str = "agentic."
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in payload.items():
        _flatten(out, prefix + key, value, capture_text, 1)
    return out


def _flatten(out: dict[str, Any], name: str, value: Any, capture_text: bool, depth: int) -> None:
    """Set attribute `name` (and `name.key` for a dict's keys) from a payload value: scalars as
    they are, short lists of one scalar type as lists, anything else as JSON; strings redacted
    and cut to MAX_STRING."""
    key = name.rsplit(".", 1)[-1]
    if value is None or (not capture_text and key in TEXT_KEYS):
        return
    if isinstance(value, bool | int | float):
        out[name] = value
    elif isinstance(value, str):
        out[name] = _text(value)
    elif isinstance(value, dict) and depth < MAX_DEPTH and all(map(_plain, value)):
        for k, v in value.items():
            _flatten(out, f"{name}.{k}", v, capture_text, depth + 1)
    elif isinstance(value, list | tuple) and _homogeneous(value):
        out[name] = [_text(v) if isinstance(v, str) else v for v in value]
    else:
        out[name] = _json(value, capture_text)


def _plain(key: Any) -> bool:
    return isinstance(key, str) and _NAME.fullmatch(key) is not None


def _homogeneous(items: list[Any] | tuple[Any, ...]) -> bool:
    """A list OpenTelemetry takes as it is: short, non-empty, all of one scalar type."""
    if not 0 < len(items) <= MAX_LIST:
        return False
    kinds = {type(v) for v in items}
    return len(kinds) == 1 and kinds <= {bool, int, float, str}


def provider_and_model(backend: str) -> tuple[str, str]:
    """`gen_ai.provider.name` and `gen_ai.request.model` from a backend name: its URI scheme and
    the model (`openai:http://h/v1#m` -> openai, m; `embedded:smollm2` -> embedded, smollm2)."""
    scheme, sep, rest = redact_uri(backend).partition(":")
    if not sep:
        return scheme, scheme
    if "#" in rest:
        return scheme, rest.rsplit("#", 1)[1]
    return scheme, rest


# SamplingParams field -> its gen_ai.request.* attribute
_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "min_p": "agentic.request.min_p",
}


def model_attributes(event: Event, capture_text: bool) -> dict[str, Any]:
    p = event.payload
    request = p.get("request") or {}
    params = request.get("params") or {}
    results = [r for r in p.get("results") or [] if isinstance(r, dict)]
    provider, model = provider_and_model(str(p.get("backend", "backend")))
    if event.type == "backend.score":
        operation = "score"  # logprobs of a given continuation: no conventional name exists
    else:
        operation = "text_completion" if request.get("prompt") is not None else "chat"
    usage = [r.get("usage") or {} for r in results]
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the name before semantic conventions 1.37, still read
        "gen_ai.request.model": _text(model),
        "gen_ai.usage.input_tokens": int(sum(_number(u.get("prompt_tokens")) for u in usage)),
        "gen_ai.usage.output_tokens": int(sum(_number(u.get("completion_tokens")) for u in usage)),
        "agentic.backend": _text(str(p.get("backend", ""))),
        "agentic.usage.seconds": max((_number(u.get("seconds")) for u in usage), default=0.0),
        "agentic.usage.cost_usd": sum(_number(u.get("cost_usd")) for u in usage),
        "agentic.results": len(results),
        "openinference.span.kind": "LLM",
    }
    for field_name, attr in _PARAMS.items():
        if isinstance(params.get(field_name), int | float):
            attrs[attr] = params[field_name]
    if params.get("stop"):
        attrs["gen_ai.request.stop_sequences"] = [_text(str(s)) for s in params["stop"]]
    if isinstance(params.get("n"), int) and params["n"] != 1:
        attrs["gen_ai.request.choice.count"] = params["n"]
    reasons = [str(r["finish_reason"]) for r in results if r.get("finish_reason")]
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    for key in ("batch", "batch_size", "key"):
        if isinstance(p.get(key), str | int):
            attrs[f"agentic.{key}"] = p[key]
    if capture_text:
        attrs["gen_ai.input.messages"] = _text(json.dumps(_input_messages(request)))
        if event.type == "backend.generate":
            attrs["gen_ai.output.messages"] = _text(json.dumps(_output_messages(results)))
    return attrs


def _part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def _input_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request in the conventions' message shape; a prefix is the assistant turn it
    continues, a scored continuation the assistant text being scored."""
    if request.get("prompt") is not None:
        messages = [{"role": "user", "parts": [_part(str(request["prompt"]))]}]
    else:
        messages = [
            {"role": m.get("role", "user"), "parts": [_part(str(m.get("content") or ""))]}
            for m in request.get("messages") or []
        ]
    tail = str(request.get("prefix") or "") + str(request.get("continuation") or "")
    if tail:
        messages.append({"role": "assistant", "parts": [_part(tail)]})
    return messages


def _output_messages(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "parts": [_part(str(r.get("text") or ""))],
            "finish_reason": r.get("finish_reason") or "stop",
        }
        for r in results
    ]
