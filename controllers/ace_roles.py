"""The three roles of ACE (`controllers/ace.py`; Zhang et al. 2025, "Agentic Context
Engineering"): their prompts and structured output types, and what learning reports.

- Generator -> `GeneratorOutput {reasoning, bullet_ids, final_answer}`; `Answer` is what
  `ACE.answer` returns.
- Reflector -> `Reflection {error_identification, root_cause, correct_approach, key_insight,
  bullet_tags: [{id, tag}]}`.
- Curator -> `CuratorOutput {operations: [ADD | UPDATE | MERGE | DELETE]}`, the delta operations
  of `memory.playbook` (TAGs come from the Reflector).
- `ask`: one structured call. `capped_schema` (with the patches `id_enum`, `id_list`) is the
  JSON schema it sends to a backend that enforces one: free text capped so that a small
  model's output fits its `max_tokens`, bullet ids limited to those the model was shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from agentic.core import GenerateRequest, ResponseFormat, SamplingParams, Usage, task_messages
from backends import Backend, generate_structured
from memory.playbook import AddOp, DeleteOp, LogEntry, MergeOp, UpdateOp

T = TypeVar("T", bound=BaseModel)


class GeneratorOutput(BaseModel):
    reasoning: str
    bullet_ids: list[str] = Field(max_length=8)
    final_answer: str


class BulletTag(BaseModel):
    id: str
    tag: Literal["helpful", "harmful", "neutral"]


class Reflection(BaseModel):
    error_identification: str
    root_cause: str
    correct_approach: str
    key_insight: str
    bullet_tags: list[BulletTag] = Field(max_length=8)


CuratorOp = Annotated[AddOp | UpdateOp | MergeOp | DeleteOp, Field(discriminator="op")]


class CuratorOutput(BaseModel):
    operations: list[CuratorOp] = Field(max_length=16)


class CuratorAdds(BaseModel):
    """The Curator's output type while the playbook is empty: nothing to update yet."""

    operations: list[AddOp] = Field(max_length=16)


class Answer(BaseModel):
    """The Generator's answer to one task (`output` is its final answer)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    output: str
    reasoning: str = ""
    bullet_ids: tuple[str, ...] = ()
    playbook_version: int = 0
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None


class Lesson(BaseModel):
    """What learning from one answer did."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    score: float | None = None
    reflection: Reflection | None = None
    applied: list[LogEntry] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None


class EpochReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    epoch: int
    tasks: int
    mean_score: float | None = Field(description="the checker's mean; None without a checker")
    bullets: int
    usage: Usage
    stopped: str | None = Field(default=None, description="why the epoch ended early")


GENERATOR_SYSTEM = (
    "Solve the task. The playbook below holds lessons from earlier tasks; each line starts with "
    "a bullet id in brackets. Use the lessons that apply."
)
GENERATOR_FORMAT = (
    "Reply as JSON: reasoning (short), bullet_ids (the ids of playbook lines you used, [] if "
    "none), final_answer (the answer only)."
)
REFLECTOR_PROMPT = """Review a model's answer to a task.

Task: {task}
Model's reasoning: {reasoning}
Model's final answer: {answer}
Feedback: {feedback}
Playbook bullets the model used:
{bullets}

Reply as JSON: error_identification (what went wrong, or "none"), root_cause (why),
correct_approach (how to solve it), key_insight (a short rule in words for similar tasks),
bullet_tags (for each bullet used: its id and whether it was helpful, harmful or neutral)."""
CURATOR_PROMPT = """You maintain a playbook of lessons for solving tasks.

Current playbook:
{playbook}

Reflection on a recent task ({task}):
- error: {error}
- correct approach: {approach}
- key insight: {insight}

Reply as JSON with at most {max_ops} operations: ADD a lesson the playbook lacks (section: one of
{sections}), UPDATE or MERGE bullets by id, DELETE a wrong one. Reply {{"operations": []}} if the
playbook already has the lesson."""


_SHOWN_ID = re.compile(r"^\[([^\]]+)\]", re.M)


def id_enum(ids: Sequence[str]) -> dict[str, Any]:
    """Schema patch: a string that is one of `ids` (nothing valid when there are none)."""
    return {"enum": list(ids)} if ids else {"maxLength": 0}


def id_list(ids: Sequence[str], most: int) -> dict[str, Any]:
    """Schema patch: a list of at most `most` of `ids` (empty when there are none)."""
    if not ids:
        return {"maxItems": 0}
    return {"items": {"type": "string", "enum": list(ids)}, "maxItems": min(most, len(ids))}


def shown_ids(rendered: str) -> list[str]:
    """The bullet ids in a rendered playbook, in order."""
    return _SHOWN_ID.findall(rendered)


def capped_schema(model: type[BaseModel], max_chars: int, **patches: Any) -> dict[str, Any]:
    """`model`'s JSON schema with every free string capped at `max_chars`; `patches` set keys
    of named properties (`section={"enum": [...]}`)."""
    schema = model.model_json_schema()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties", {})
            for prop, extra in patches.items():
                if isinstance(props.get(prop), dict):
                    props[prop].update(extra)
            if "oneOf" in node:  # the ops' `op` constants are disjoint: anyOf is the same here
                node["anyOf"] = node.pop("oneOf")
                node.pop("discriminator", None)
            if node.get("type") == "string" and "const" not in node and "enum" not in node:
                node["maxLength"] = min(node.get("maxLength", max_chars), max_chars)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


async def ask(
    backend: Backend,
    prompt: str,
    params: SamplingParams,
    out: type[T],
    *,
    max_chars: int,
    retries: int,
    system: str | None = None,
    shape: type[BaseModel] | None = None,
    **patches: dict[str, Any],
) -> tuple[T, Usage]:
    """`out` parsed from `backend`'s answer to `prompt`. Where the backend enforces a schema,
    it is `shape`'s (default `out`'s), capped at `max_chars` and with `patches` applied."""
    fmt = None
    if backend.capabilities.structured_output:
        schema = capped_schema(shape or out, max_chars, **patches)
        fmt = ResponseFormat(type="json_schema", json_schema=schema, name=out.__name__)
    request = GenerateRequest(
        messages=task_messages(prompt, system), params=params, response_format=fmt
    )
    result = await generate_structured(backend, request, out, retries=retries)
    return result.value, result.usage
