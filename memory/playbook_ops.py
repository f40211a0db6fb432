"""The values of an ACE playbook and its deterministic merge: bullets, delta operations, the
operations log, and rendering under a token budget. `memory/playbook.py` holds `Playbook`, which
applies these to a stored playbook; the mapping to the paper (Zhang et al. 2025, "Agentic Context
Engineering") is in that module's docstring.

- `Bullet`: id (section prefix + a counter never reused, `str-00012`), section, content,
  helpful / harmful / neutral counters, created and updated times (UTC), provenance (ids merged
  into it, sources of its insights).
- `DeltaOp`: the discriminated union (on `op`) of `AddOp`, `UpdateOp`, `MergeOp`, `DeleteOp`,
  `TagOp`; `parse_ops` validates a batch given as models or dicts.
- `apply_ops`: a pure function of (bullets, ops, time, source): the same inputs always give the
  same bullets, ids and order. The first invalid op raises `PlaybookOpError` naming its index
  and the bullet id, before anything is kept.
- `render_bullets`: most useful first (helpful - harmful, ties by recency), grouped by section,
  one line per bullet with its id, trimmed until the whole text fits `max_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import groupby
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from agentic.core import ConfigError

DEFAULT_SECTIONS: dict[str, str] = {
    "strategies": "str",
    "formulas": "frm",
    "mistakes": "err",
    "others": "oth",
}
_SECTION = re.compile(r"[a-z][a-z0-9_]{0,39}")
_PREFIX = re.compile(r"[a-z][a-z0-9]{0,7}")

Content = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
BulletId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
TagName = Literal["helpful", "harmful", "neutral"]
Effect = Literal["added", "deduplicated", "updated", "merged", "deleted", "tagged"]


def _op_required(schema: dict[str, Any]) -> None:
    # `op` has a default for Python callers, but a model writing JSON must always name it
    required = schema.setdefault("required", [])
    if "op" not in required:
        required.insert(0, "op")


class _Op(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_op_required)


class AddOp(_Op):
    """A new bullet in `section` (or, when it duplicates one there, a merge into that one)."""

    op: Literal["ADD"] = "ADD"
    section: str
    content: Content


class UpdateOp(_Op):
    op: Literal["UPDATE"] = "UPDATE"
    id: BulletId
    content: Content


class MergeOp(_Op):
    """`ids[0]` survives with `content` and the summed counters; the others are deleted."""

    op: Literal["MERGE"] = "MERGE"
    ids: list[BulletId] = Field(min_length=2, max_length=16)
    content: Content


class DeleteOp(_Op):
    op: Literal["DELETE"] = "DELETE"
    id: BulletId


class TagOp(_Op):
    op: Literal["TAG"] = "TAG"
    id: BulletId
    tag: TagName


AnyOp = AddOp | UpdateOp | MergeOp | DeleteOp | TagOp
DeltaOp = Annotated[AnyOp, Field(discriminator="op")]
_OPS: TypeAdapter[list[DeltaOp]] = TypeAdapter(list[DeltaOp])


def parse_ops(ops: Iterable[AnyOp | Mapping[str, Any]]) -> list[AnyOp]:
    """Validate a batch given as op models or dicts (`{"op": "ADD", ...}`)."""
    if isinstance(ops, BaseModel | Mapping | str):
        raise ConfigError(f"ops must be a list of delta operations, got one {type(ops).__name__}")
    try:
        return list(_OPS.validate_python(list(ops)))
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in err["loc"])
        raise ConfigError(f"ops{where}: {err['msg']}") from None


class Bullet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    section: str
    content: str
    helpful: int = Field(default=0, ge=0)
    harmful: int = Field(default=0, ge=0)
    neutral: int = Field(default=0, ge=0)
    created_at: datetime
    updated_at: datetime
    merged_from: tuple[str, ...] = Field(default=(), description="ids merged into this one")
    sources: tuple[str, ...] = Field(default=(), description="where its insights came from")

    @property
    def score(self) -> int:
        return self.helpful - self.harmful

    def line(self) -> str:
        """The bullet as one prompt line, id first so a generator can cite it."""
        text = " ".join(self.content.split())
        return f"[{self.id}] (helpful {self.helpful}, harmful {self.harmful}) {text}"


class LogEntry(BaseModel):
    """One applied operation: what was asked, what it did, to which bullet, when, from where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(ge=1, description="position in the playbook's operations log")
    batch: int = Field(ge=1, description="the playbook version this operation's apply() made")
    op: DeltaOp
    effect: Effect
    bullet_id: str = Field(description="the bullet created, changed, removed or merged into")
    similarity: float | None = Field(default=None, description="for a deduplicated ADD")
    source: str | None = None
    at: datetime


class PlaybookSnapshot(BaseModel):
    """The JSON export: bullets in order, the id counter, and optionally the operations log."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["agentic-playbook"] = "agentic-playbook"
    name: str
    sections: dict[str, str]
    next_id: int = Field(ge=1)
    bullets: list[Bullet]
    log: list[LogEntry] | None = None


class PlaybookOpError(ConfigError):
    """An operation of a batch is invalid; nothing of the batch was applied."""

    def __init__(self, index: int, op: BaseModel, bullet_id: str | None, reason: str) -> None:
        kind = getattr(op, "op", type(op).__name__)
        super().__init__(f"op {index} ({kind}): {reason}; nothing of this batch was applied")
        self.index, self.op, self.bullet_id = index, op, bullet_id


def normalise_sections(sections: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """{section name: id prefix}; a list of names takes each name's first three letters."""
    if sections is None:
        return dict(DEFAULT_SECTIONS)
    if isinstance(sections, str):
        raise ConfigError("sections must be a list of names or a {name: prefix} map, not a str")
    pairs = (
        list(sections.items())
        if isinstance(sections, Mapping)
        else [(s, s[:3] if isinstance(s, str) else s) for s in sections]
    )
    if not pairs:
        raise ConfigError("sections is empty: a playbook needs at least one section")
    for name, prefix in pairs:
        if not isinstance(name, str) or not _SECTION.fullmatch(name):
            raise ConfigError(f"section name {name!r} must match {_SECTION.pattern}")
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"id prefix {prefix!r} of section {name!r} must match {_PREFIX.pattern}"
            )
    prefixes = [p for _, p in pairs]
    if len(set(prefixes)) != len(prefixes):
        raise ConfigError(f"sections' id prefixes must be distinct, got {prefixes}")
    return dict(pairs)


Nearest = Callable[[str, Sequence[Bullet]], tuple[str, float] | None]


def apply_ops(
    bullets: Mapping[str, Bullet],
    ops: Sequence[AnyOp],
    *,
    sections: Mapping[str, str],
    next_id: int,
    at: datetime,
    source: str | None = None,
    nearest: Nearest | None = None,
) -> tuple[dict[str, Bullet], int, list[tuple[Effect, str, float | None]]]:
    """The deterministic merge: new bullets (in order), the next id counter, and per op its
    (effect, bullet id, similarity). `nearest(content, same-section bullets)` finds a duplicate.
    Raises `PlaybookOpError` at the first invalid op; `bullets` is never modified."""
    out = dict(bullets)
    effects: list[tuple[Effect, str, float | None]] = []
    src = (source,) if source else ()

    def need(i: int, op: BaseModel, bid: str) -> Bullet:
        if bid not in out:
            raise PlaybookOpError(i, op, bid, f"no bullet {bid!r} in the playbook")
        return out[bid]

    for i, op in enumerate(ops):
        if isinstance(op, AddOp):
            if op.section not in sections:
                known = ", ".join(sections)
                raise PlaybookOpError(i, op, None, f"unknown section {op.section!r} ({known})")
            same = [b for b in out.values() if b.section == op.section]
            hit = nearest(op.content, same) if nearest is not None and same else None
            if hit is not None:
                bid, sim = hit
                old = out[bid]
                out[bid] = old.model_copy(
                    update={"updated_at": at, "sources": _union(old.sources, src)}
                )
                effects.append(("deduplicated", bid, sim))
                continue
            bid = f"{sections[op.section]}-{next_id:05d}"
            next_id += 1
            out[bid] = Bullet(
                id=bid,
                section=op.section,
                content=op.content,
                created_at=at,
                updated_at=at,
                sources=src,
            )
            effects.append(("added", bid, None))
        elif isinstance(op, UpdateOp):
            old = need(i, op, op.id)
            out[op.id] = old.model_copy(
                update={
                    "content": op.content,
                    "updated_at": at,
                    "sources": _union(old.sources, src),
                }
            )
            effects.append(("updated", op.id, None))
        elif isinstance(op, MergeOp):
            if len(set(op.ids)) != len(op.ids):
                raise PlaybookOpError(i, op, None, f"ids {op.ids} name a bullet twice")
            keep, *rest = (need(i, op, bid) for bid in op.ids)
            for b in rest:
                del out[b.id]
            parts = [keep, *rest]
            out[keep.id] = keep.model_copy(
                update={
                    "content": op.content,
                    "helpful": sum(b.helpful for b in parts),
                    "harmful": sum(b.harmful for b in parts),
                    "neutral": sum(b.neutral for b in parts),
                    "updated_at": at,
                    "merged_from": _union(
                        keep.merged_from, *((b.id, *b.merged_from) for b in rest)
                    ),
                    "sources": _union(*(b.sources for b in parts), src),
                }
            )
            effects.append(("merged", keep.id, None))
        elif isinstance(op, DeleteOp):
            need(i, op, op.id)
            del out[op.id]
            effects.append(("deleted", op.id, None))
        else:
            old = need(i, op, op.id)
            out[op.id] = old.model_copy(update={op.tag: getattr(old, op.tag) + 1, "updated_at": at})
            effects.append(("tagged", op.id, None))
    return out, next_id, effects


def _union(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(x for g in groups for x in g))


def estimate_tokens(text: str) -> int:
    """About four characters per token: the default when no tokenizer is given."""
    return -(-len(text) // 4)


def render_bullets(
    bullets: Iterable[Bullet],
    sections: Sequence[str],
    max_tokens: int,
    count_tokens: Callable[[str], int] = estimate_tokens,
) -> str:
    """The bullets that fit in `max_tokens`, most useful first, as `## section` blocks."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise ConfigError(f"max_tokens must be an int >= 0, got {max_tokens!r}")
    order = {s: k for k, s in enumerate(sections)}
    # newest first among equal scores: creation order breaks ties of equal update times
    indexed = list(enumerate(bullets))
    ranked = [
        b
        for _, b in sorted(
            indexed, key=lambda ib: (-ib[1].score, -ib[1].updated_at.timestamp(), -ib[0])
        )
    ]
    chosen: list[Bullet] = []
    used = 0
    headed: set[str] = set()
    for b in ranked:
        cost = count_tokens(b.line() + "\n")
        if b.section not in headed:
            cost += count_tokens(_header(b.section))
        if used + cost <= max_tokens:
            chosen.append(b)
            used += cost
            headed.add(b.section)
    text = _layout(chosen, order)
    # token counts of pieces need not add up exactly: trim until the whole text fits
    while chosen and count_tokens(text) > max_tokens:
        chosen.pop()
        text = _layout(chosen, order)
    return text


def _header(section: str) -> str:
    return f"## {section}\n"


def _layout(chosen: list[Bullet], order: Mapping[str, int]) -> str:
    rank = {b.id: k for k, b in enumerate(chosen)}
    grouped = sorted(chosen, key=lambda b: (order.get(b.section, len(order)), rank[b.id]))
    blocks = [
        _header(section) + "".join(b.line() + "\n" for b in group)
        for section, group in groupby(grouped, key=lambda b: b.section)
    ]
    return "\n".join(blocks).rstrip("\n")
