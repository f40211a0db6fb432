"""The SQLite file that playbooks and case banks persist to.

One file can hold several components (a playbook and a case bank, or several named playbooks):
each creates its own tables on first use. What every component gets from here:

- `open_store(path)`: a connection in WAL mode with a busy timeout, so several processes can
  read while one writes and writers queue instead of failing. Before anything is written, an
  existing file is checked: it must be SQLite, readable (not corrupt), and either empty or
  marked as an agentic memory store of a version this code understands. Otherwise `StoreError`
  names the file and the reason, and the file is not modified.
- `write_txn(conn)`: one `BEGIN IMMEDIATE` transaction. Taking the write lock at the start means
  a read-modify-write inside it sees the latest committed state, so two processes applying
  updates to one store serialise and lose nothing. A transaction that raises is rolled back.
- `read_txn(conn)`: several reads that see one committed state.

Durability: WAL with `synchronous=NORMAL` keeps every committed transaction through a crash of
the process (`kill -9`); only a power loss can drop the last few. Pass `durable=True` for
`synchronous=FULL`, which keeps them through power loss too at the cost of an fsync per commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentic.core import StoreError

FORMAT = "agentic-memory"
VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 60_000


def _check_existing(path: Path) -> None:
    """Raise `StoreError` unless `path` is a usable store; reads only."""
    # A read-only look at a WAL-mode file creates its -wal and -shm files and cannot remove
    # them; on refusal, remove the ones it created, so a refused file's folder is as it was.
    # (A -wal that did not exist means no connection had the file open.)
    created = [q for q in (Path(f"{path}-wal"), Path(f"{path}-shm")) if not q.exists()]
    try:
        _check_readonly(path)
    except StoreError:
        for q in created:
            q.unlink(missing_ok=True)
        raise


def _check_readonly(path: Path) -> None:
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return  # an empty file: SQLite treats it as a new database
    if head != SQLITE_HEADER:
        raise StoreError(f"{path} is not an agentic memory store: not an SQLite file")
    try:
        ro = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return
            if "agentic_meta" not in tables:
                raise StoreError(
                    f"{path} is an SQLite file written by another program "
                    f"(tables: {', '.join(sorted(tables))}); refusing to modify it"
                )
            meta = dict(ro.execute("SELECT key, value FROM agentic_meta").fetchall())
            check = ro.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            ro.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path} is corrupt or unreadable as SQLite: {e}") from None
    if check != "ok":
        raise StoreError(f"{path} failed SQLite's integrity check: {check}")
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("version", "0")) > VERSION:
        raise StoreError(
            f"{path} was written by a newer agentic (store version {meta['version']}, "
            f"this one reads up to {VERSION})"
        )


def open_store(path: str | Path, *, durable: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the memory store at `path`; ":memory:" gives a private one.
    The connection is in autocommit mode: group writes with `write_txn`."""
    if str(path) != ":memory:":
        p = Path(path)
        if p.is_dir():
            raise StoreError(f"{p} is a directory, expected a store file")
        if p.exists():
            _check_existing(p)
        elif not p.parent.exists():
            raise StoreError(f"cannot create store {p}: folder {p.parent} does not exist")
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        with write_txn(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS agentic_meta"
                " (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            conn.execute(
                "INSERT OR IGNORE INTO agentic_meta VALUES ('format', ?), ('version', ?)",
                (FORMAT, str(VERSION)),
            )
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot open store {path}: {e}") from None
    return conn


@contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction holding the database's write lock from its first statement."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextmanager
def read_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Several SELECTs that see one committed state (a WAL read snapshot)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
