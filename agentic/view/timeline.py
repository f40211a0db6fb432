"""A task's timeline: its searches, model calls (one bar per batch), reward calls and every other
event, in seconds from the task's start, each bar in a lane where it overlaps no other.

A backend event is written when its call returns, one per request, the requests of one call
sharing a `batch` id; so a batch's bar ends at its events' time and starts that long before,
the longest of its results' `usage.seconds`. A reward call is the `reward` span (its start) and
the `reward.result` under it (its end). Events of controllers the viewer knows nothing about
(router.decision, psr.*, agent.*) are ticks with their payload, trimmed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from agentic.core import Event
from agentic.view.payloads import BackendCall, RewardResult, RewardStart
from agentic.view.tree import SearchState

# drawn elsewhere (the tree, the task's header) or as part of a bar
_NOT_TICKS = {
    "task",
    "search",
    "search.node",
    "search.score",
    "search.lookahead",
    "search.result",
    "backend.generate",
    "backend.score",
    "reward",
    "reward.result",
}
_GROUPS = ("search", "model", "reward", "events")
_CUT = 400  # characters of a text shown in a call's detail


class Call(BaseModel):
    """One request of a batch."""

    prompt: str  # the last message, or the raw prompt
    prefix: str  # the partial answer it continued (its end)
    texts: list[str]
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish: list[str | None]


class Item(BaseModel):
    id: int
    kind: Literal["search", "generate", "score", "reward", "event"]
    lane: int
    start: float
    end: float
    label: str
    batch: str | None = None
    search: str | None = None  # the search span it served, if it ran directly under one
    calls: list[Call] = []
    detail: dict[str, Any] = {}
    flip: bool = False  # a tick whose label goes to its left (near the end of the timeline)


class Lane(BaseModel):
    group: str
    name: str


class Timeline(BaseModel):
    duration: float
    lanes: list[Lane]
    items: list[Item]


def build(t0: float, entries: list[tuple[Event, Any]], searches: list[SearchState]) -> Timeline:
    """The timeline of one task: `entries` are its events with their checked payloads (None for
    types the viewer does not read), `t0` the task's start."""
    bars: list[tuple[str, Item]] = []
    for s in searches:
        end = s.end_ts if s.end_ts is not None else s.ts
        bars.append(("search", _item("search", s.ts - t0, end - t0, f"search {s.algorithm}")))
        bars[-1][1].search = s.span
    spans = {s.span for s in searches}
    batches: dict[str, Item] = {}
    rewards: dict[str, Item] = {}
    for n, (event, payload) in enumerate(entries):
        rel = event.ts - t0
        if isinstance(payload, BackendCall):
            kind: Literal["generate", "score"] = (
                "score" if event.type == "backend.score" else "generate"
            )
            took = max((r.usage.seconds for r in payload.results), default=0.0)
            key = f"{event.type}/{payload.batch or event.span_id}"
            item = batches.get(key)
            if item is None:
                item = _item(kind, rel - took, rel, "")
                item.batch = payload.batch
                item.search = event.parent_id if event.parent_id in spans else None
                item.detail = {"backend": payload.backend}
                batches[key] = item
                bars.append(("model", item))
            item.start, item.end = min(item.start, rel - took), max(item.end, rel)
            item.calls.append(_call(payload))
            noun = "generate" if kind == "generate" else "score"
            item.label = f"{noun} ×{len(item.calls)}"
        elif isinstance(payload, RewardStart):
            item = _item("reward", rel, rel, f"{payload.reward} ×{payload.items}")
            item.detail = {"reward": payload.reward, "kind": payload.kind, "items": payload.items}
            rewards[event.span_id] = item
            bars.append(("reward", item))
        elif isinstance(payload, RewardResult) and event.parent_id in rewards:
            item = rewards[event.parent_id]
            item.end = max(item.start, rel)
            item.detail["scores"] = payload.scores
        elif event.type not in _NOT_TICKS:
            item = _item("event", rel, rel, event.type)
            item.detail = {"type": event.type, "payload": trim(event.payload), "n": n}
            bars.append(("events", item))
    duration = max((i.end for _, i in bars), default=0.0)
    return _lay_out(bars, duration)


def _item(kind: Any, start: float, end: float, label: str) -> Item:
    return Item(id=0, kind=kind, lane=0, start=start, end=max(start, end), label=label)


def _call(p: BackendCall) -> Call:
    req = p.request
    messages = req.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    prompt = str(req.get("prompt") or last.get("content") or "")
    prefix = str(req.get("prefix") or "")
    return Call(
        prompt=prompt[:_CUT],
        prefix=prefix[-_CUT:],
        texts=[r.text[:_CUT] for r in p.results],
        prompt_tokens=sum(r.usage.prompt_tokens for r in p.results),
        completion_tokens=sum(r.usage.completion_tokens for r in p.results),
        seconds=max((r.usage.seconds for r in p.results), default=0.0),
        finish=[r.finish_reason for r in p.results],
    )


def _lay_out(bars: list[tuple[str, Item]], duration: float) -> Timeline:
    """Lanes by greedy interval partitioning within each group, the groups stacked in `_GROUPS`
    order. A tick (no length) takes the room of its label on a timeline about 900 pixels wide,
    at 6.5 pixels a character, so labels in one lane do not run into each other; a label that
    would run past the end goes to the left of its tick (`flip`)."""
    per_px = max(duration, 1e-3) / 900
    lanes: list[Lane] = []
    items: list[Item] = []
    for group in _GROUPS:
        room: list[tuple[float, float, Item]] = []
        for g, item in bars:
            if g != group:
                continue
            if item.kind == "event":
                width = per_px * (16 + 6.5 * len(item.label))
                item.flip = item.start + width > duration
                lo, hi = (
                    (item.start - width, item.start)
                    if item.flip
                    else (item.start, item.start + width)
                )
            else:
                lo, hi = item.start, item.end
            room.append((lo, hi, item))
        ends: list[float] = []  # where each lane of this group is free from
        first = len(lanes)
        for lo, hi, item in sorted(room, key=lambda r: (r[0], r[1])):
            free = next((k for k, e in enumerate(ends) if e <= lo), None)
            if free is None:
                ends.append(hi)
                free = len(ends) - 1
                lanes.append(Lane(group=group, name=f"{group} {free + 1}" if free else group))
            else:
                ends[free] = hi
            item.lane = first + free
            item.id = len(items)
            items.append(item)
    return Timeline(duration=duration, lanes=lanes, items=items)


def trim(value: Any, depth: int = 0) -> Any:
    """A payload cut down for the page: strings to 300 characters, lists to 20 items, four
    levels deep (a backend payload holds whole prompts and token lists)."""
    if isinstance(value, str):
        return value if len(value) <= 300 else value[:300] + "…"
    if depth >= 4:
        return "…"
    if isinstance(value, dict):
        return {str(k): trim(v, depth + 1) for k, v in list(value.items())[:40]}
    if isinstance(value, list | tuple):
        out = [trim(v, depth + 1) for v in value[:20]]
        return [*out, f"… {len(value) - 20} more"] if len(value) > 20 else out
    return value
