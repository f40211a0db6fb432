"""Values that cross every boundary: messages, sampling parameters, requests, generations, usage.

All are pydantic v2 models; the ones that are values are frozen so they can be hashed, cached
and recorded. Field names follow vLLM / OpenAI where those exist (`max_tokens`, `top_p`, `stop`,
`n`, `logprobs`), so a user of either reads them without a glossary.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from agentic.core.tasks import Task

Role = Literal["system", "user", "assistant", "tool"]


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Value):
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Message(_Value):
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] | None = None


HISTORY = "messages"
"""`Task.metadata` key of the turns before the task's input (a list of `Message` dicts)."""


def task_messages(task_or_text: Task | str, system: str | None = None) -> tuple[Message, ...]:
    """The chat a task starts from: `system` as a system message (left out when None or
    empty), the earlier turns a chat task carries (`metadata["messages"]`), then the task's
    input (or the text itself) as the user message."""
    history: tuple[Message, ...] = ()
    if isinstance(task_or_text, str):
        text = task_or_text
    else:
        # a chat task (the gateway's) carries the turns before its last user message
        text = task_or_text.input
        history = tuple(Message.model_validate(m) for m in task_or_text.metadata.get(HISTORY, ()))
    head = (Message(role="system", content=system),) if system else ()
    return (*head, *history, Message(role="user", content=text))


class SamplingParams(_Value):
    """How to sample. `temperature=0` is greedy. `logprobs=None` returns no logprobs,
    `0` the chosen tokens' logprobs only, `k>0` also the top-k alternatives per position."""

    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="0 disables top-k filtering")
    min_p: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Min-p filtering (vLLM / transformers `min_p`): keep only the tokens whose "
        "probability, after temperature, is at least min_p times the top token's; 0 disables.",
    )
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = Field(default=1, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    ignore_eos: bool = Field(default=False, description="keep going past EOS (benchmarks)")
    logit_bias: tuple[tuple[int, float], ...] = Field(
        default=(),
        description="Added to the logits of these token ids before sampling (OpenAI / vLLM "
        "`logit_bias`): give {token_id: bias}, bias in [-100, 100]. Kept as sorted pairs so the "
        "params stay hashable; logprobs still report the unbiased distribution.",
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_tuple(cls, v: Any) -> Any:
        if isinstance(v, str):
            return (v,)
        return tuple(v) if isinstance(v, list) else v

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _bias_pairs(cls, v: Any) -> Any:
        pairs = list(v.items()) if isinstance(v, dict) else v
        if not isinstance(pairs, list | tuple):
            return v
        out: dict[int, float] = {}
        for pair in pairs:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ValueError(f"logit_bias takes {{token_id: bias}}, got the item {pair!r}")
            tid, bias = pair
            try:  # OpenAI's JSON writes the ids as strings
                tid, bias = int(tid), float(bias)
            except (TypeError, ValueError):
                raise ValueError(
                    f"logit_bias[{tid!r}] = {bias!r}: need an int id and a number"
                ) from None
            if tid < 0:
                raise ValueError(f"logit_bias token id must be >= 0, got {tid}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"logit_bias[{tid}] = {bias} is outside [-100, 100]")
            if tid in out:
                raise ValueError(f"logit_bias gives token id {tid} twice")
            out[tid] = bias
        return tuple(sorted(out.items()))

    @field_validator("stop")
    @classmethod
    def _stop_nonempty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must be non-empty")
        return v


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Prompted(_Value):
    """A chat (`messages`) or a raw completion (`prompt`), optionally continued by `prefix`."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    prefix: str = Field(
        default="",
        description="Text the assistant turn already starts with; generation continues it "
        "(vLLM: continue_final_message).",
    )

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        if self.messages is not None and not self.messages:
            raise ValueError("`messages` is empty")
        if self.prompt is not None and not self.prompt and not self.prefix:
            raise ValueError("`prompt` is empty")
        return self

    def key(self) -> str:
        """Stable hash of the request: equal requests hash equally across processes. Fields
        added later are left out while unset, so recordings made before them still replay."""
        data = self.model_dump(mode="json")
        if data.get("response_format", 0) is None:
            del data["response_format"]
        if "params" in data and not data["params"]["logit_bias"]:
            del data["params"]["logit_bias"]
        if "params" in data and not data["params"]["min_p"]:
            del data["params"]["min_p"]
        if data.get("interventions", 0) == []:
            del data["interventions"]
        return hashlib.sha256(_canonical(data).encode()).hexdigest()[:32]


class ResponseFormat(_Value):
    """Constrain the output to a JSON schema, a regular expression or a grammar (EBNF, as
    xgrammar and llama.cpp's GBNF read it). Local backends enforce it token by token; remote
    ones pass it to the server's own structured-output option."""

    type: Literal["json_schema", "regex", "grammar"]
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    grammar: str | None = None
    name: str = Field(default="output", description="schema name sent to OpenAI-style servers")

    @model_validator(mode="after")
    def _matches_type(self) -> Self:
        given = {
            k for k in ("json_schema", "regex", "grammar") if getattr(self, k) not in (None, "", {})
        }
        if given != {self.type}:
            raise ValueError(
                f"response_format of type {self.type!r} needs exactly the field "
                f"{self.type!r}; got {sorted(given) or 'none'}"
            )
        return self

    @classmethod
    def from_model(cls, model: builtins.type[BaseModel] | dict[str, Any]) -> ResponseFormat:
        """JSON matching a pydantic model (or a JSON schema given as a dict)."""
        if isinstance(model, dict):
            return cls(type="json_schema", json_schema=model)
        return cls(type="json_schema", json_schema=model.model_json_schema(), name=model.__name__)

    @classmethod
    def pattern(cls, regex: str) -> ResponseFormat:
        return cls(type="regex", regex=regex)

    @classmethod
    def ebnf(cls, grammar: str) -> ResponseFormat:
        return cls(type="grammar", grammar=grammar)


class InterventionRef(_Value):
    """Names an intervention attached to a local backend (`backend.interventions.attach`) for
    one request: other requests in the same batch are not touched by it."""

    name: str = Field(min_length=1)
    scale: float = Field(default=1.0, description="multiplies a steering intervention's vectors")


class GenerateRequest(_Prompted):
    params: SamplingParams = Field(default_factory=SamplingParams)
    response_format: ResponseFormat | None = None
    interventions: tuple[InterventionRef, ...] = ()

    @classmethod
    def chat(cls, user: str, *, system: str | None = None, **params: Any) -> GenerateRequest:
        return cls(messages=task_messages(user, system), params=SamplingParams(**params))


class ScoreRequest(_Prompted):
    """Logprobs of `continuation` (text, or exact token ids) after the prompt and prefix."""

    continuation: str | tuple[int, ...]
    top_logprobs: int = Field(default=0, ge=0, le=20)

    @field_validator("continuation")
    @classmethod
    def _nonempty(cls, v: str | tuple[int, ...]) -> str | tuple[int, ...]:
        if len(v) == 0:
            raise ValueError("`continuation` is empty")
        return v


class Usage(_Value):
    """What a piece of work cost. Addable: `a + b` sums every field."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    reward_calls: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            model_calls=self.model_calls + other.model_calls,
            reward_calls=self.reward_calls + other.reward_calls,
            seconds=self.seconds + other.seconds,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    @classmethod
    def total(cls, items: Any) -> Usage:
        out = cls()
        for u in items:
            out = out + u
        return out


class TopLogprob(_Value):
    token_id: int | None = None
    token: str
    logprob: float


def _entropy_from_top(alts: tuple[TopLogprob, ...]) -> float:
    """Entropy of the top-k alternatives renormalised: a lower bound estimate when only
    top-k is known (remote servers); local backends report the exact value instead."""
    ps = [math.exp(a.logprob) for a in alts]
    z = sum(ps)
    return -sum(p / z * math.log(p / z) for p in ps if p > 0) if z > 0 else 0.0


class Generation(_Value):
    """One sampled completion. Token-level lists are aligned with `token_ids`."""

    text: str
    token_ids: tuple[int, ...] = ()
    token_logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[tuple[TopLogprob, ...], ...] | None = None
    entropies: tuple[float, ...] | None = Field(
        default=None,
        description="Per-token entropy (nats) of the next-token distribution; exact for local "
        "backends, derived from top-k logprobs otherwise.",
    )
    finish_reason: Literal["stop", "length"] = "stop"
    stop_reason: str | None = Field(default=None, description="the stop string that ended it")
    usage: Usage = Field(default_factory=Usage)

    @model_validator(mode="after")
    def _derive_entropy(self) -> Self:
        if self.entropies is None and self.top_logprobs:
            object.__setattr__(
                self, "entropies", tuple(_entropy_from_top(a) for a in self.top_logprobs)
            )
        return self

    @property
    def logprob(self) -> float | None:
        return sum(self.token_logprobs) if self.token_logprobs is not None else None


class ScoreResult(_Value):
    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    top_logprobs: tuple[tuple[TopLogprob, ...], ...] | None = None
    usage: Usage = Field(default_factory=Usage)

    @property
    def logprob(self) -> float:
        return sum(self.token_logprobs)
