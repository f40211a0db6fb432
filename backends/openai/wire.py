"""The OpenAI wire format's answers, parsed into agentic's token-level data.

Chat and completion endpoints lay logprobs out differently (a list of token records vs. parallel
lists), and a streamed answer arrives in chunks; these helpers turn each into the same thing.
`structured_body` goes the other way: a `ResponseFormat` in each server's own request fields.
`answer_choices`, `model_list` and `token_list` check a body's shape before anyone reads it: a
body without what the endpoint promises raises `MalformedBody` saying what is missing, which the
client retries like a garbled body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from agentic.core import Message, NotSupported, ResponseFormat, TopLogprob
from backends.openai.http_client import MalformedBody

# what a body's parser may raise on data of the wrong shape deep inside (pydantic's
# ValidationError is a ValueError); each becomes a MalformedBody naming where it happened
SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def shape_problem(e: Exception, where: str = "") -> MalformedBody:
    """One line saying what a body's parser tripped on, at `where` in the body."""
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        what = f"{loc}: {first.get('msg', 'invalid')}" if loc else first.get("msg", "invalid")
    else:
        what = f"{type(e).__name__}: {e}"
    return MalformedBody(" ".join(f"{where}{': ' if where else ''}{what}".split())[:200])


def answer_choices(data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The choices (in index order) and usage of a /completions or /chat/completions answer."""
    if not isinstance(data, dict):
        raise MalformedBody(f"expected a JSON object with 'choices', got {_kind(data)}")
    choices = data.get("choices")
    if choices is None:
        said = f"; the server said: {str(data['error'])[:200]}" if "error" in data else ""
        raise MalformedBody(f"no 'choices' in the answer{said}")
    if not isinstance(choices, list):
        raise MalformedBody(f"'choices' is {_kind(choices)}, not a list")
    if not choices:
        raise MalformedBody("'choices' is an empty list")
    for i, c in enumerate(choices):
        if not isinstance(c, dict):
            raise MalformedBody(f"choices[{i}] is {_kind(c)}, not an object")
    usage = data.get("usage") or {}
    if not isinstance(usage, dict):
        raise MalformedBody(f"'usage' is {_kind(usage)}, not an object")
    return sorted(choices, key=lambda c: c.get("index", 0)), usage


def model_list(data: Any) -> list[dict[str, Any]]:
    """The entries of a `GET /models` answer, each with an `id`."""
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise MalformedBody("expected a JSON object with a 'data' list of models")
    for i, d in enumerate(entries):
        if not isinstance(d, dict) or "id" not in d:
            raise MalformedBody(f"data[{i}] is not a model object with an 'id'")
    return entries


def token_list(data: Any) -> list[int]:
    """The token ids of a vLLM `/tokenize` answer."""
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
        raise MalformedBody("expected a JSON object with a 'tokens' list of integers")
    return tokens


def messages_json(msgs: Sequence[Message]) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json", exclude_none=True) for m in msgs]


# vLLM writes tokens as "token_id:123" when asked, which is how ids survive the JSON
_ID_PREFIX = "token_id:"


def _token_id(token: str) -> int | None:
    return int(token[len(_ID_PREFIX) :]) if token.startswith(_ID_PREFIX) else None


def _top(token: str, logprob: float) -> TopLogprob:
    tid = _token_id(token)
    return TopLogprob(token_id=tid, token=token if tid is None else "", logprob=logprob)


class Parsed:
    """Token-level data of one choice, from either endpoint's logprobs layout."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.tops: list[tuple[TopLogprob, ...]] = []


def chat_logprobs(lp: dict[str, Any] | None, k: int) -> Parsed:
    out = Parsed()
    for item in (lp or {}).get("content") or []:
        tid = _token_id(item["token"])
        if tid is not None:
            out.ids.append(tid)
        out.logprobs.append(float(item["logprob"]))
        alts = item.get("top_logprobs") or []
        out.tops.append(tuple(_top(a["token"], float(a["logprob"])) for a in alts[:k]))
    return out


def completion_logprobs(lp: dict[str, Any] | None, k: int) -> Parsed:
    out = Parsed()
    if not lp:
        return out
    tops = lp.get("top_logprobs") or []
    for i, (token, logprob) in enumerate(zip(lp["tokens"], lp["token_logprobs"], strict=True)):
        tid = _token_id(token)
        if tid is not None:
            out.ids.append(tid)
        out.logprobs.append(float(logprob))
        alts = sorted((tops[i] or {}).items(), key=lambda kv: -kv[1]) if i < len(tops) else []
        out.tops.append(tuple(_top(t, float(v)) for t, v in alts[:k]))
    return out


class StreamedChoice:
    """One choice assembled from streamed chunks, in the layout of a non-streamed answer."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.text = ""
        self.pieces = 0
        self.ids: list[int] = []
        self.chat_logprobs: list[Any] = []
        self.completion_logprobs: dict[str, list[Any]] = {
            "tokens": [],
            "token_logprobs": [],
            "top_logprobs": [],
        }
        self.last: dict[str, Any] = {}
        self.usage: dict[str, Any] = {}

    def add(self, event: dict[str, Any]) -> str:
        self.usage = event.get("usage") or self.usage
        piece = ""
        for c in event.get("choices") or []:
            piece += ((c.get("delta") or {}).get("content") if self.chat else c.get("text")) or ""
            self.ids += c.get("token_ids") or []
            lp = c.get("logprobs") or {}
            if self.chat:
                self.chat_logprobs += lp.get("content") or []
            else:
                for key, items in self.completion_logprobs.items():
                    items += lp.get(key) or []
            if c.get("finish_reason"):
                self.last = c
        self.text += piece
        self.pieces += bool(piece)
        return piece

    def choice(self) -> dict[str, Any]:
        has_lp = bool(self.chat_logprobs or self.completion_logprobs["tokens"])
        logprobs: Any = None
        if has_lp:
            logprobs = (
                {"content": self.chat_logprobs} if self.chat else dict(self.completion_logprobs)
            )
        return {
            "message": {"content": self.text},
            "text": self.text,
            "logprobs": logprobs,
            "token_ids": self.ids,
            "finish_reason": self.last.get("finish_reason", "length"),
            "stop_reason": self.last.get("stop_reason"),
        }


def structured_body(fmt: ResponseFormat, server: str, chat: bool, name: str) -> dict[str, Any]:
    """The request fields that ask `server` for output in `fmt`, in that server's own dialect;
    `NotSupported` (before anything is sent) where it has none."""
    what = {"json_schema": "a JSON schema", "regex": "a regex", "grammar": "a grammar"}[fmt.type]
    if server == "llama.cpp":
        if fmt.type == "grammar":
            return {"grammar": fmt.grammar}  # GBNF, on both endpoints
        if fmt.type == "json_schema" and chat:
            # llama-cpp-python's dialect: type json_object with the schema beside it
            return {"response_format": {"type": "json_object", "schema": fmt.json_schema}}
        why = (
            "has no regex option (write the pattern as a GBNF grammar: ResponseFormat.ebnf)"
            if fmt.type == "regex"
            else "takes a JSON schema only on /chat/completions, and a raw prompt or a prefix "
            "rendered locally goes to /completions (give a GBNF grammar instead)"
        )
        raise NotSupported(f"{name}: response_format with {what}: llama.cpp's server {why}")
    if fmt.type == "json_schema" and (chat or server == "vllm"):
        # no "strict": OpenAI's strict mode rejects ordinary pydantic schemas (defaults,
        # optional fields); the caller validates the answer either way
        schema = {"name": fmt.name, "schema": fmt.json_schema}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if server == "vllm":
        return {"structured_outputs": {fmt.type: getattr(fmt, fmt.type)}}
    raise NotSupported(
        f"{name}: response_format with {what}: the OpenAI API takes only a JSON schema, and only "
        "on /chat/completions"
    )
