"""The OpenAI wire format the gateway speaks, and the `agentic` field it adds.

Requests are validated with pydantic: a field the OpenAI API defines but the gateway does not
act on (`presence_penalty`, `user`, `logit_bias`, ...) is accepted and ignored, as vLLM does,
so stock clients work unchanged; a wrong type or value is a 400 naming the field. Responses
and stream chunks are plain dicts in OpenAI's shapes: `usage` keeps OpenAI's three counts and
adds `model_calls`, `reward_calls`, `seconds` and `cost_usd` (clients keep unknown fields), and
the top-level `agentic` field carries what a controller reports (its spec, info, error, trace).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentic.core import Message, SamplingParams, Usage
from agentic.server.config import BudgetLimits


class AgenticOptions(BaseModel):
    """`extra_body={"agentic": {...}}`: how this request spends compute."""

    model_config = ConfigDict(extra="forbid")

    controller: dict[str, Any] | str | None = Field(
        default=None,
        description="a controller spec (as in pipeline files) or a preset name; overrides the "
        "preset the model field names",
    )
    budget: BudgetLimits | None = None
    verifier: str | None = Field(
        default=None, description="the search's reward, e.g. value or 0.7*confidence+0.3*program"
    )
    progress: bool = Field(default=False, description="stream search progress events too")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Request(BaseModel):
    # OpenAI fields that are not listed are accepted and ignored (stock clients send them)
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # vLLM's extra sampling parameters, which its clients send the same way
    top_k: int = Field(default=0, ge=0)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    agentic: AgenticOptions | None = None

    def params(self, default_max_tokens: int = 256) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return SamplingParams(
            max_tokens=self.max_tokens or default_max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            seed=self.seed,
            stop=stop,
            n=self.n,
        )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def message(self) -> Message:
        content = self.content
        if isinstance(content, list):  # content parts: the text ones, joined
            texts = [p.get("text", "") for p in content if p.get("type") == "text"]
            if len(texts) != len(content):
                raise ValueError("only text content parts are supported")
            content = "".join(texts)
        role = "system" if self.role == "developer" else self.role
        return Message(role=role, content=content or "")


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def params(self, default_max_tokens: int = 256) -> SamplingParams:
        p = super().params(default_max_tokens)
        if self.max_completion_tokens is not None and self.max_tokens is None:
            p = p.model_copy(update={"max_tokens": self.max_completion_tokens})
        return p

    def chat(self) -> list[Message]:
        return [m.message() for m in self.messages]


class CompletionRequest(_Request):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("prompt is an empty list")
        return v

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_body(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "model_calls": u.model_calls,
        "reward_calls": u.reward_calls,
        "seconds": round(u.seconds, 6),
        "cost_usd": u.cost_usd,
    }


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class Chunker:
    """OpenAI stream chunks of one response (chat or text completion), as SSE lines."""

    def __init__(self, rid: str, model: str, chat: bool) -> None:
        self.rid, self.model, self.chat = rid, model, chat
        self.created = int(time.time())

    def _wrap(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        import json

        body = {
            "id": self.rid,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def _choice(
        self, text: str | None, finish: str | None, index: int = 0, role: bool = False
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}

    def start(self) -> str:
        return self._wrap([self._choice("", None, role=True)]) if self.chat else ""

    def text(self, piece: str) -> str:
        return self._wrap([self._choice(piece, None)])

    def finish(self, reason: str, agentic: dict[str, Any] | None = None) -> str:
        extra = {"agentic": agentic} if agentic else {}
        return self._wrap([self._choice(None if self.chat else "", reason)], **extra)

    def usage(self, u: Usage) -> str:
        return self._wrap([], usage=usage_body(u))

    def progress(self, event: dict[str, Any]) -> str:
        # an empty delta: stock clients read no text from it; ours read `agentic.progress`
        return self._wrap([self._choice(None, None)], agentic={"progress": event})

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
