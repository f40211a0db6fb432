"""The SQLite memory store: files it must refuse (and leave as they were), its pragmas,
reopening, rollback, and two processes incrementing one counter without losing an update."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import sqlite3
from pathlib import Path

import pytest

from agentic.core import StoreError
from memory.store import BUSY_TIMEOUT_MS, FORMAT, VERSION, open_store, write_txn


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file in `folder` with its bytes: a refused open must leave this unchanged."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def make_store(path: Path, rows: int = 400) -> None:
    conn = open_store(path)
    with write_txn(conn):
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany(
            "INSERT INTO notes (body) VALUES (?)", [(f"note {i} " * 20,) for i in range(rows)]
        )
    conn.close()  # the last connection checkpoints the WAL into the file


def refuse(path: Path, match: str) -> None:
    before = snapshot(path.parent)
    with pytest.raises(StoreError, match=match) as err:
        open_store(path)
    assert str(path) in str(err.value)
    assert snapshot(path.parent) == before  # no byte changed, no -wal/-shm left behind


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("dear diary\n" * 100)
    refuse(path, "not an SQLite file")


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_refuses_an_sqlite_file_of_another_program(tmp_path: Path, journal: str) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")
    conn.commit()
    conn.close()
    refuse(path, r"written by another program \(tables: users\)")


@pytest.mark.parametrize(
    ("offset", "match"),
    [(100, "corrupt or unreadable"), (2 * 4096, "integrity check")],
    ids=["schema-page", "data-page"],
)
def test_refuses_a_corrupt_store(tmp_path: Path, offset: int, match: str) -> None:
    path = tmp_path / "mem.db"
    make_store(path)
    data = bytearray(path.read_bytes())
    assert len(data) > offset + 4096
    data[offset : offset + 300] = b"\xa5" * 300
    path.write_bytes(bytes(data))
    refuse(path, match)


def test_refuses_a_store_of_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "mem.db"
    make_store(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE agentic_meta SET value = ? WHERE key = 'version'", (str(VERSION + 1),))
    conn.commit()
    conn.close()
    refuse(path, f"newer agentic \\(store version {VERSION + 1}, this one reads up to {VERSION}\\)")


def test_refuses_a_directory_and_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path)
    missing = tmp_path / "nowhere" / "mem.db"
    with pytest.raises(StoreError, match=f"folder {missing.parent} does not exist"):
        open_store(missing)
    assert not missing.parent.exists()


def test_reopen_keeps_data_and_marks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mem.db"
    path.touch()  # an empty file is a new database, not a refusal
    make_store(path, rows=3)
    conn = open_store(path)
    assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 3
    meta = dict(conn.execute("SELECT key, value FROM agentic_meta").fetchall())
    assert meta == {"format": FORMAT, "version": str(VERSION)}
    conn.close()


def test_pragmas_wal_synchronous_and_busy_timeout(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert conn.isolation_level is None  # autocommit: transactions only through write_txn
    durable = open_store(tmp_path / "b.db", durable=True)
    assert durable.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    conn.close()
    durable.close()
    private = open_store(":memory:")
    assert private.execute("SELECT value FROM agentic_meta WHERE key='format'").fetchone() == (
        FORMAT,
    )


def test_write_txn_rolls_back_on_error(tmp_path: Path) -> None:
    conn = open_store(tmp_path / "mem.db")
    with write_txn(conn):
        conn.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError, match="boom"), write_txn(conn):
        conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    with write_txn(conn):  # the connection is usable again
        conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT x FROM t").fetchall() == [(2,)]
    conn.close()


def _increment(path: str, times: int, together: multiprocessing.synchronize.Barrier) -> None:
    conn = open_store(path)
    together.wait()  # both begin at once, so their transactions really interleave
    for _ in range(times):
        with write_txn(conn):  # read-modify-write: safe only because the lock is taken first
            (value,) = conn.execute("SELECT value FROM counter WHERE id = 1").fetchone()
            conn.execute("UPDATE counter SET value = ? WHERE id = 1", (value + 1,))
    conn.close()


def test_two_processes_lose_no_increment(tmp_path: Path) -> None:
    path = tmp_path / "mem.db"
    conn = open_store(path)
    with write_txn(conn):
        conn.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
    ctx = multiprocessing.get_context("spawn")
    together = ctx.Barrier(2)
    procs = [ctx.Process(target=_increment, args=(str(path), 300, together)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert conn.execute("SELECT value FROM counter WHERE id = 1").fetchone()[0] == 600
    conn.close()
