"""Which model calls belong together. The runner opens `affinity(task.id)` around each task, so
every call a controller makes for that task (its samples, particles, beams, look-aheads, judge
calls) carries the same key, and a replica pool (`backends.pool`) can send them all to the
replica whose prefix cache already holds the task's prompt. Outside a task the key is None."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_key: ContextVar[str | None] = ContextVar("agentic_affinity", default=None)


@contextmanager
def affinity(key: str) -> Iterator[str]:
    """Calls made inside share `key` (nested: the innermost wins)."""
    token = _key.set(key)
    try:
        yield key
    finally:
        _key.reset(token)


def affinity_key() -> str | None:
    """The key of the calls being made now, or None outside any `affinity` block."""
    return _key.get()
