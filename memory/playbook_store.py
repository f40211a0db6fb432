"""The SQLite tables behind `memory.playbook.Playbook`, on the shared store of `memory.store`.
Several named playbooks (and other components) may share one file.

- `playbook_meta`: one row per playbook: its sections, the id counter (ids are never reused),
  `version` (bumped by every committed change, so a reader knows when to reload) and `seq` (the
  last entry of its operations log).
- `playbook_bullets`: the current bullets as JSON; `pos` keeps their creation order.
- `playbook_ops`: the append-only operations log, one `LogEntry` per applied operation.

Everything here blocks: callers run it in a worker thread, holding `conn_lock(conn)` so one
thread at a time uses the connection, and write inside `memory.store.write_txn`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from agentic.core import ConfigError, StoreError
from memory.playbook_ops import Bullet, LogEntry

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS playbook_meta (playbook TEXT PRIMARY KEY, sections TEXT NOT NULL,"
    " next_id INTEGER NOT NULL, version INTEGER NOT NULL, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS playbook_bullets (playbook TEXT NOT NULL, id TEXT NOT NULL,"
    " pos INTEGER NOT NULL, section TEXT NOT NULL, data TEXT NOT NULL,"
    " PRIMARY KEY (playbook, id))",
    "CREATE TABLE IF NOT EXISTS playbook_ops (playbook TEXT NOT NULL, seq INTEGER NOT NULL,"
    " batch INTEGER NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (playbook, seq))",
)


class Meta(BaseModel):
    model_config = ConfigDict(frozen=True)

    sections: dict[str, str]
    next_id: int
    version: int
    seq: int


@dataclass(frozen=True)
class State:
    """One committed state of a playbook: bullets in creation order, and its meta row."""

    bullets: dict[str, Bullet]
    meta: Meta


_CONN_LOCKS: dict[int, threading.Lock] = {}
_REGISTRY = threading.Lock()


def conn_lock(conn: sqlite3.Connection) -> threading.Lock:
    """The lock of `conn`, shared by every playbook using that connection (connections take no
    weak references, hence the registry by id)."""
    with _REGISTRY:
        return _CONN_LOCKS.setdefault(id(conn), threading.Lock())


def create(conn: sqlite3.Connection, name: str, sections: Mapping[str, str]) -> State:
    """Make the tables and the playbook's row unless they exist; its current state."""
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT OR IGNORE INTO playbook_meta VALUES (?, ?, 1, 0, 0)",
        (name, json.dumps(list(sections.items()))),
    )
    return load_state(conn, name)


def read_meta(conn: sqlite3.Connection, name: str) -> Meta:
    row = conn.execute(
        "SELECT sections, next_id, version, seq FROM playbook_meta WHERE playbook = ?", (name,)
    ).fetchone()
    if row is None:
        raise StoreError(f"playbook {name!r} is missing from the store (was it deleted?)")
    return Meta(sections=dict(json.loads(row[0])), next_id=row[1], version=row[2], seq=row[3])


def load_state(conn: sqlite3.Connection, name: str) -> State:
    meta = read_meta(conn, name)
    rows = conn.execute(
        "SELECT data FROM playbook_bullets WHERE playbook = ? ORDER BY pos", (name,)
    ).fetchall()
    bullets = (Bullet.model_validate_json(r[0]) for r in rows)
    return State({b.id: b for b in bullets}, meta)


def read_log(conn: sqlite3.Connection, name: str) -> list[LogEntry]:
    rows = conn.execute(
        "SELECT entry FROM playbook_ops WHERE playbook = ? ORDER BY seq", (name,)
    ).fetchall()
    return [LogEntry.model_validate_json(r[0]) for r in rows]


def commit(
    conn: sqlite3.Connection,
    name: str,
    old: State,
    new: State,
    entries: Sequence[LogEntry],
) -> None:
    """Write what changed from `old` to `new` (bullets compared by identity: `apply_ops` copies
    only what it changes), the log entries and the new meta row."""
    gone = [(name, bid) for bid in old.bullets if bid not in new.bullets]
    conn.executemany("DELETE FROM playbook_bullets WHERE playbook = ? AND id = ?", gone)
    # a new bullet's position is its id counter (`apply_ops` makes every new id); existing
    # bullets keep theirs
    rows = [
        (
            name,
            bid,
            0 if bid in old.bullets else int(bid.rsplit("-", 1)[1]),
            b.section,
            b.model_dump_json(),
        )
        for bid, b in new.bullets.items()
        if old.bullets.get(bid) is not b
    ]
    conn.executemany(
        "INSERT INTO playbook_bullets VALUES (?, ?, ?, ?, ?) ON CONFLICT (playbook, id)"
        " DO UPDATE SET section = excluded.section, data = excluded.data",
        rows,
    )
    _append_log(conn, name, entries)
    _write_meta(conn, name, new.meta)


def import_state(conn: sqlite3.Connection, name: str, new: State, log: Sequence[LogEntry]) -> None:
    """Fill an empty playbook with `new` and `log` (an import of a JSON export)."""
    meta = read_meta(conn, name)
    held = conn.execute(
        "SELECT COUNT(*) FROM playbook_bullets WHERE playbook = ?", (name,)
    ).fetchone()[0]
    if held or meta.seq:
        raise ConfigError(
            f"playbook {name!r} is not empty ({held} bullets, {meta.seq} logged operations): "
            "import into a new playbook name"
        )
    rows = [
        (name, b.id, k, b.section, b.model_dump_json()) for k, b in enumerate(new.bullets.values())
    ]
    conn.executemany("INSERT INTO playbook_bullets VALUES (?, ?, ?, ?, ?)", rows)
    _append_log(conn, name, log)
    _write_meta(conn, name, new.meta)


def _append_log(conn: sqlite3.Connection, name: str, entries: Sequence[LogEntry]) -> None:
    conn.executemany(
        "INSERT INTO playbook_ops VALUES (?, ?, ?, ?)",
        [(name, e.seq, e.batch, e.model_dump_json()) for e in entries],
    )


def _write_meta(conn: sqlite3.Connection, name: str, meta: Meta) -> None:
    conn.execute(
        "UPDATE playbook_meta SET sections = ?, next_id = ?, version = ?, seq = ?"
        " WHERE playbook = ?",
        (json.dumps(list(meta.sections.items())), meta.next_id, meta.version, meta.seq, name),
    )
