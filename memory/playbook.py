"""ACE playbooks: an evolving context of itemised strategy bullets, changed by delta operations.

After Zhang et al. 2025, "Agentic Context Engineering: Evolving Contexts for Self-Improving
Language Models" (ACE). The paper's pieces and where they live:

- the context as a collection of itemised *bullets*, each with a unique identifier and metadata
  counting how often it was marked helpful or harmful -> `Bullet` (memory/playbook_ops.py);
- *incremental delta updates*: the Curator emits compact delta items and a deterministic,
  non-LLM step merges them in -> `DeltaOp` (ADD, UPDATE, MERGE, DELETE, TAG), `apply_ops`, and
  `Playbook.apply` here, which applies a batch all-or-nothing in one transaction;
- *grow-and-refine*: new bullets are appended with fresh ids, existing ones are updated in place
  (counters), and redundancy is pruned by comparing bullet embeddings -> an ADD whose embedding
  (`embedder`) has cosine >= `dedup_threshold` with a bullet of the same section is merged into
  that bullet instead (provenance kept; the log records the similarity);
- the Generator reads the playbook and cites bullets by id -> `Playbook.render`.

The Reflector and Curator, the model calls that produce the operations, are in
`controllers/ace.py`.

Persistence (tables in `memory/playbook_store.py`): each `apply` is one write transaction
(`memory.store.write_txn`) that re-reads the stored state first when another process or
connection changed it, so processes sharing a store serialise and lose no update, and a process
killed mid-update leaves the last committed state. Every applied operation is appended to an
operations log (`LogEntry`); `replay` turns a log back into the same playbook. An in-memory
playbook is the same code on a private ":memory:" store. Blocking work runs in
`asyncio.to_thread`.
"""

from __future__ import annotations

# Just over 400 lines: `Playbook` is one class, the state it caches, the transaction every
# batch of operations goes through and the embeddings its dedup keeps; the bullet and operation
# types are in playbook_ops.py, the SQLite tables in playbook_store.py.
import asyncio
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any, Self

import numpy as np
from pydantic import ValidationError

from agentic.core import ConfigError
from memory import playbook_store as db
from memory.embedders import Embedder
from memory.playbook_ops import (
    DEFAULT_SECTIONS,
    AddOp,
    AnyOp,
    Bullet,
    DeleteOp,
    DeltaOp,
    LogEntry,
    MergeOp,
    Nearest,
    PlaybookOpError,
    PlaybookSnapshot,
    TagOp,
    UpdateOp,
    apply_ops,
    estimate_tokens,
    normalise_sections,
    parse_ops,
    render_bullets,
)
from memory.store import open_store, read_txn, write_txn

__all__ = [
    "DEFAULT_SECTIONS",
    "AddOp",
    "Bullet",
    "DeleteOp",
    "DeltaOp",
    "LogEntry",
    "MergeOp",
    "Playbook",
    "PlaybookOpError",
    "PlaybookSnapshot",
    "TagOp",
    "UpdateOp",
]

Sections = Mapping[str, str] | Sequence[str]
_COUNTER = re.compile(r"[a-z0-9]+-(\d+)")


class Playbook:
    """An ACE playbook. `Playbook()` lives in memory; `await Playbook.open(path)` lives in a
    store file (or on a connection from `memory.store.open_store`, shared, not closed here).
    `sections` maps section names to id prefixes (default `DEFAULT_SECTIONS`). `embedder` with
    `dedup_threshold` (a cosine; None switches it off) deduplicates ADDs. Reads (`bullets`,
    `render`) use the copy in memory; `refresh()` reloads it when the store changed, and
    `apply` always works on the latest committed state."""

    def __init__(
        self,
        store: sqlite3.Connection | None = None,
        *,
        name: str = "default",
        sections: Sections | None = None,
        embedder: Embedder | None = None,
        dedup_threshold: float | None = 0.9,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ConfigError(f"playbook name must be a non-empty str (<= 200 chars), got {name!r}")
        if dedup_threshold is not None and not -1.0 <= dedup_threshold <= 1.0:
            raise ConfigError(f"dedup_threshold must be in [-1, 1] or None, got {dedup_threshold}")
        self.name = name
        self.embedder = embedder
        self.dedup_threshold = dedup_threshold
        self._owns = store is None
        self._conn = open_store(":memory:") if store is None else store
        self._lock = db.conn_lock(self._conn)
        self._vecs: dict[str, np.ndarray] = {}
        want = None if sections is None else normalise_sections(sections)
        with self._lock, write_txn(self._conn) as conn:
            state = db.create(conn, name, want or DEFAULT_SECTIONS)
        if want is not None and state.meta.sections != want:
            raise ConfigError(
                f"playbook {name!r} already exists with sections {state.meta.sections}, not "
                f"{want}: open it without sections= or choose another name"
            )
        self._state = state

    @classmethod
    async def open(
        cls,
        store: str | Path | sqlite3.Connection,
        *,
        name: str = "default",
        sections: Sections | None = None,
        embedder: Embedder | None = None,
        dedup_threshold: float | None = 0.9,
    ) -> Playbook:
        """The playbook `name` in the store at `store`, created if missing."""
        kw: dict[str, Any] = {"name": name, "sections": sections, "embedder": embedder}

        def build() -> Playbook:
            if isinstance(store, sqlite3.Connection):
                return cls(store, dedup_threshold=dedup_threshold, **kw)
            conn = open_store(store)
            try:
                playbook = cls(conn, dedup_threshold=dedup_threshold, **kw)
            except BaseException:
                conn.close()
                raise
            playbook._owns = True
            return playbook

        return await asyncio.to_thread(build)

    def __repr__(self) -> str:
        return f"Playbook({self.name!r}, {len(self)} bullets, version {self.version})"

    @property
    def sections(self) -> dict[str, str]:
        """{section: id prefix}, in display order."""
        return dict(self._state.meta.sections)

    @property
    def version(self) -> int:
        """Bumped by every committed change, by any process."""
        return self._state.meta.version

    @property
    def bullets(self) -> list[Bullet]:
        """The bullets, in creation order."""
        return list(self._state.bullets.values())

    def get(self, bullet_id: str) -> Bullet | None:
        return self._state.bullets.get(bullet_id)

    def __len__(self) -> int:
        return len(self._state.bullets)

    def __contains__(self, bullet_id: object) -> bool:
        return bullet_id in self._state.bullets

    def render(self, max_tokens: int, *, count_tokens: Callable[[str], int] | None = None) -> str:
        """The playbook as prompt text of at most `max_tokens` by `count_tokens` (default about
        four characters a token; pass `backend.count_tokens` for the model's own count)."""
        state = self._state
        return render_bullets(
            state.bullets.values(),
            list(state.meta.sections),
            max_tokens,
            count_tokens or estimate_tokens,
        )

    async def apply(
        self,
        ops: Iterable[AnyOp | Mapping[str, Any]],
        *,
        source: str | None = None,
        at: datetime | None = None,
    ) -> list[LogEntry]:
        """Apply one batch, all or nothing, in one transaction; returns its log entries.
        `source` (a task id, say) is kept as provenance; `at` defaults to now (UTC)."""
        batch = parse_ops(ops)
        when = _utc(at)
        if not batch:
            return []
        if self._dedup:
            # embed before taking the write lock; bullets that another process adds meanwhile
            # are embedded inside the transaction
            adds = [op.content for op in batch if isinstance(op, AddOp)]
            await self._embed([*adds, *(b.content for b in self.bullets)])
        loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self._apply_sync, batch, source, when, loop)

    @property
    def _dedup(self) -> bool:
        return self.embedder is not None and self.dedup_threshold is not None

    def _apply_sync(
        self, batch: list[AnyOp], source: str | None, at: datetime, loop: asyncio.AbstractEventLoop
    ) -> list[LogEntry]:
        with self._lock:
            with write_txn(self._conn) as conn:
                meta = db.read_meta(conn, self.name)
                if meta.version != self._state.meta.version:
                    self._state = db.load_state(conn, self.name)
                old = self._state
                bullets, next_id, effects = apply_ops(
                    old.bullets,
                    batch,
                    sections=meta.sections,
                    next_id=meta.next_id,
                    at=at,
                    source=source,
                    nearest=self._nearest(loop) if self._dedup else None,
                )
                version = meta.version + 1
                entries = [
                    LogEntry(
                        seq=meta.seq + k,
                        batch=version,
                        op=op,
                        effect=effect,
                        bullet_id=bid,
                        similarity=sim,
                        source=source,
                        at=at,
                    )
                    for k, (op, (effect, bid, sim)) in enumerate(
                        zip(batch, effects, strict=True), 1
                    )
                ]
                update = {"next_id": next_id, "version": version, "seq": meta.seq + len(entries)}
                new = db.State(bullets, meta.model_copy(update=update))
                db.commit(conn, self.name, old, new, entries)
            self._state = new
            if len(self._vecs) > 2 * len(bullets) + 64:  # forget texts no bullet holds any more
                self._vecs = {b.content: self._vecs[b.content] for b in self.bullets}
        return entries

    async def _embed(self, texts: Sequence[str]) -> None:
        assert self.embedder is not None
        missing = list(dict.fromkeys(t for t in texts if t not in self._vecs))
        if not missing:
            return
        vecs = np.asarray(await self.embedder.embed(missing), dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(missing):
            raise ConfigError(
                f"embedder {self.embedder.name!r} gave shape {vecs.shape} for {len(missing)} texts"
            )
        self._vecs.update(zip(missing, vecs, strict=True))

    def _nearest(self, loop: asyncio.AbstractEventLoop) -> Nearest:
        threshold = self.dedup_threshold
        assert threshold is not None

        def nearest(content: str, candidates: Sequence[Bullet]) -> tuple[str, float] | None:
            texts = [content, *(b.content for b in candidates)]
            if any(t not in self._vecs for t in texts):
                # we are in a worker thread and the event loop is free: embed there
                asyncio.run_coroutine_threadsafe(self._embed(texts), loop).result()
            vecs = np.stack([self._vecs[t] for t in texts])
            sims = vecs[1:] @ vecs[0]
            j = int(np.argmax(sims))  # the first best: ties resolve the same way every time
            return (candidates[j].id, float(sims[j])) if sims[j] >= threshold else None

        return nearest

    async def refresh(self) -> bool:
        """Reload from the store if another process or connection changed it; True if so."""
        return await asyncio.to_thread(self._refresh_sync)

    def _refresh_sync(self) -> bool:
        with self._lock, read_txn(self._conn) as conn:
            if db.read_meta(conn, self.name).version == self._state.meta.version:
                return False
            self._state = db.load_state(conn, self.name)
            return True

    async def history(self) -> list[LogEntry]:
        """The operations log, oldest first."""

        def read() -> list[LogEntry]:
            with self._lock:
                return db.read_log(self._conn, self.name)

        return await asyncio.to_thread(read)

    async def replay(self, entries: Iterable[LogEntry]) -> None:
        """Apply a log's batches in order, with their own sources and times: from the state the
        log started at (empty, for a whole log) this rebuilds the playbook that wrote it."""
        for _, group in groupby(entries, key=lambda e: e.batch):
            items = list(group)
            await self.apply([e.op for e in items], source=items[0].source, at=items[0].at)

    async def to_json(self, *, log: bool = True, indent: int | None = None) -> str:
        """A `PlaybookSnapshot` as JSON: bullets, id counter and, with `log`, the whole log."""

        def read() -> PlaybookSnapshot:
            with self._lock, read_txn(self._conn) as conn:
                state = db.load_state(conn, self.name)
                entries = db.read_log(conn, self.name) if log else None
            return PlaybookSnapshot(
                name=self.name,
                sections=state.meta.sections,
                next_id=state.meta.next_id,
                bullets=list(state.bullets.values()),
                log=entries,
            )

        return (await asyncio.to_thread(read)).model_dump_json(indent=indent)

    @classmethod
    def from_json(
        cls,
        data: str | bytes,
        *,
        name: str | None = None,
        embedder: Embedder | None = None,
        dedup_threshold: float | None = 0.9,
    ) -> Playbook:
        """An in-memory playbook from `to_json` output (with its log, when exported)."""
        snap = _parse_snapshot(data)
        playbook = cls(
            name=name or snap.name,
            sections=snap.sections,
            embedder=embedder,
            dedup_threshold=dedup_threshold,
        )
        playbook._import_sync(snap)
        return playbook

    async def import_json(self, data: str | bytes) -> None:
        """Load a `to_json` export into this playbook, which must be empty (no bullets, no log)."""
        snap = _parse_snapshot(data)
        await asyncio.to_thread(self._import_sync, snap)

    def _import_sync(self, snap: PlaybookSnapshot) -> None:
        sections = normalise_sections(snap.sections)
        ids = [b.id for b in snap.bullets]
        if len(set(ids)) != len(ids):
            raise ConfigError("not a playbook export: a bullet id appears twice")
        for b in snap.bullets:
            if b.section not in sections:
                raise ConfigError(f"not a playbook export: bullet {b.id!r} is in unknown section")
        log = snap.log or []
        if any(a.seq >= b.seq for a, b in pairwise(log)):
            raise ConfigError("not a playbook export: the log's seq numbers must increase")
        counters = [int(m.group(1)) for i in ids if (m := _COUNTER.fullmatch(i))]
        # imported bullets take positions 0..n-1; new ones take their counters, so come after
        next_id = max([snap.next_id, len(ids) + 1, *(c + 1 for c in counters)])
        with self._lock:
            with write_txn(self._conn) as conn:
                version = max([db.read_meta(conn, self.name).version, *(e.batch for e in log)])
                meta = db.Meta(
                    sections=sections,
                    next_id=next_id,
                    version=version + 1,
                    seq=log[-1].seq if log else 0,
                )
                new = db.State({b.id: b for b in snap.bullets}, meta)
                db.import_state(conn, self.name, new, log)
            self._state = new

    def close(self) -> None:
        """Close the store connection if this playbook opened it."""
        if self._owns:
            with self._lock:
                self._conn.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        raise ConfigError(f"at={at.isoformat()} has no time zone; give an aware datetime (UTC)")
    return at.astimezone(UTC)


def _parse_snapshot(data: str | bytes) -> PlaybookSnapshot:
    try:
        return PlaybookSnapshot.model_validate_json(data)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"]) or "(document)"
        raise ConfigError(f"not a playbook export: {where}: {err['msg']}") from None
