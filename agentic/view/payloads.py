"""The payloads of the events the viewer reads, checked at the boundary.

A recording is read by a program newer or older than the one that wrote it, so these models
take only the fields the viewer draws and ignore the rest (`extra="ignore"`, unlike the frozen
core values, which forbid extras): a field added to an event later does not make an old viewer
refuse the file. A field the viewer needs that is missing or of the wrong type is an error
naming the file, the line, the event type and the field (`check`).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentic.core import Event, TraceFormatError


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Cost(_Payload):
    """`agentic.core.Usage` as recorded, read leniently. Not `Usage` itself: that model forbids
    unknown fields, and the viewer must open recordings written by other versions (a field
    added later, or one a plugin backend records) rather than refuse them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    reward_calls: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(**{k: getattr(self, k) + getattr(other, k) for k in Cost.model_fields})


class RunStart(_Payload):
    suite: dict[str, Any] = Field(default_factory=dict)
    tasks: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)


class RunEnd(_Payload):
    accuracy: float | None = None
    usage: Cost = Field(default_factory=Cost)
    not_run: int = 0
    stopped: str | None = None


class TaskStart(_Payload):
    task_id: str


class Outcome(_Payload):
    task_id: str
    output: str = ""
    score: float | None = None
    usage: Cost = Field(default_factory=Cost)
    error: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class TaskOutcome(_Payload):
    outcome: Outcome


class SearchStart(_Payload):
    algorithm: str = "?"


class SearchNode(_Payload):
    node: int
    parent: int
    step: str = ""
    done: bool = False
    tokens: int = 0


class SearchScore(_Payload):
    node: int
    score: float | None = None


class SearchRound(_Payload):
    """Particle filters: `particles` (node ids after resampling), `resampled`, `finished` a
    count; beam search: `kept`, `pruned` and `finished` as node ids."""

    round: int
    ess: float | None = None
    live: int | None = None
    resampled: bool = False
    finished: int | list[int] | None = None
    particles: list[int] | None = None
    kept: list[int] | None = None
    pruned: list[int] | None = None


class NodeRef(_Payload):
    """`search.lookahead` and `search.expand`: an event about one node."""

    node: int


class SearchResult(_Payload):
    algorithm: str = "?"
    answer: str = ""
    score: float | None = None
    chosen: int | None = None
    nodes: int = 0
    finished: int = 0
    usage: Cost = Field(default_factory=Cost)
    stopped: str | None = None


class CallResult(_Payload):
    """One result of a backend request: a generation (text) or a score (logprobs)."""

    text: str = ""
    usage: Cost = Field(default_factory=Cost)
    finish_reason: str | None = None


class BackendCall(_Payload):
    backend: str = "?"
    batch: str | None = None  # recordings made before batches had ids hold none
    batch_size: int | None = None
    key: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    results: list[CallResult] = Field(default_factory=list)


class RewardStart(_Payload):
    reward: str = "?"
    kind: str = "?"
    items: int = 0


class RewardResult(_Payload):
    scores: list[float | None] = Field(default_factory=list)
    seconds: float | None = None


P = TypeVar("P", bound=_Payload)


def check(model: type[P], event: Event, where: str) -> P:
    """`event.payload` as `model`, or `TraceFormatError` naming `where` (FILE:LINE), the event
    type and the first field at fault."""
    try:
        return model.model_validate(event.payload)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err.get("loc", ())) or "payload"
        raise TraceFormatError(
            f"{where}: a {event.type} event with a bad payload: {field}: {err.get('msg')}"
        ) from None
