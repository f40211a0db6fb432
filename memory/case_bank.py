"""`CaseBank`: the episodic case memory of AgentFly (Zhou et al. 2025, "AgentFly: Fine-tuning
LLM Agents without Fine-tuning LLMs", also published as Memento), kept in the shared SQLite store.

The paper's symbols in this file:
- a case c_i = (s_i, a_i, r_i): `Case(task=s_i, plan=a_i, reward=r_i)`; `label` is whether the
  episode succeeded (the paper's binary reward), `trajectory` a short record of how it went.
- the case bank M: the `case_cases` rows of one bank name (a store may hold several banks).
- Write(s_t, a_t, r_t, M): `await bank.add(case)`; the task text is embedded once, here, and
  the vector is stored with the case.
- the non-parametric Read, TopK_{c_i in M} sim(enc(s), enc(s_i)): `await bank.retrieve(s, k)`,
  cosine similarity through `VectorIndex`, enc being the bank's `Embedder`. The query is
  embedded once; the bank is never re-embedded. Positive and negative cases sit in two indexes,
  so `label=True` / `label=False` (the planner's "worked before" / "avoid") filters exactly.
The parametric Read (a learned Q over candidates) is `memory.case_policy.CasePolicy`.

Persistence: each `add`/`delete` is one `write_txn` that changes `case_cases` and appends to
`case_log`; `memory.case_index.CaseIndex` replays that log before every search, so writes from
other processes show up, and loads a snapshot on open instead of rebuilding when it can. The
embedder's name and dimension are recorded per bank in `case_banks`, so a bank is never searched
with vectors of another embedder. JSON export/import: `memory.cases`.

One `threading.Lock` guards the connection and the indexes; blocking work runs in
`asyncio.to_thread`. Hand a bank its own connection (a path does that): sharing one connection
with another component that uses it from other threads at the same time would mix transactions.
"""

from __future__ import annotations

# Over 400 lines on purpose: `CaseBank` is one class, each async method beside the SQLite
# half it runs off the event loop, over one schema; the case rows and exports are in cases.py,
# the in-memory indexes in case_index.py, the shared store in store.py.
import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agentic.core import ConfigError
from memory.case_index import CaseIndex, Vector, blob_vector
from memory.cases import (
    Case,
    CaseHit,
    case_from_export,
    case_from_row,
    case_row,
    decode_vector,
    read_export,
    write_export,
)
from memory.embedders import Embedder
from memory.store import open_store, write_txn

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS case_banks (bank TEXT PRIMARY KEY, embedder TEXT NOT NULL,"
    " dim INTEGER NOT NULL, created TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS case_cases (key INTEGER PRIMARY KEY AUTOINCREMENT,"
    " bank TEXT NOT NULL, id TEXT NOT NULL, task TEXT NOT NULL, plan TEXT NOT NULL,"
    " trajectory TEXT NOT NULL, reward REAL NOT NULL, label INTEGER NOT NULL,"
    " metadata TEXT NOT NULL, created TEXT NOT NULL, vector BLOB NOT NULL, UNIQUE (bank, id))",
    "CREATE TABLE IF NOT EXISTS case_log (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " bank TEXT NOT NULL, op TEXT NOT NULL CHECK (op IN ('add', 'delete')),"
    " case_key INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS case_log_bank_seq ON case_log (bank, seq)",
    "CREATE TABLE IF NOT EXISTS case_snapshots (bank TEXT PRIMARY KEY, seq INTEGER NOT NULL,"
    " positive BLOB NOT NULL, negative BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS case_blobs (bank TEXT NOT NULL, key TEXT NOT NULL,"
    " data BLOB NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (bank, key))",
)
_COLUMNS = "id, task, plan, trajectory, reward, label, metadata, created"


class CaseBank:
    """Cases with their embeddings, searchable by cosine similarity. Open with `CaseBank.open`."""

    def __init__(
        self, conn: sqlite3.Connection, embedder: Embedder | None, name: str, *, owns_conn: bool
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.embedder, self.name = embedder, name
        self._owns_conn = owns_conn
        self._lock = threading.Lock()
        self._index: CaseIndex | None = None  # None until the bank knows its dimension
        self.embedder_name: str | None = None

    @property
    def dim(self) -> int | None:
        return self._index.dim if self._index is not None else None

    @property
    def exists(self) -> bool:
        """Whether the bank has been created in its store (by an embedder or an import)."""
        return self._index is not None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ConfigError(f"case bank {self.name!r} is closed")
        return self._conn

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        store: str | Path | sqlite3.Connection,
        embedder: Embedder | None,
        name: str = "default",
    ) -> CaseBank:
        """Open (creating if needed) bank `name` in `store`: a path, or a connection from
        `memory.store.open_store`. Blocks while it loads the index (snapshot or rebuild).

        `embedder` embeds task texts; a bank records the first embedder's name and dimension
        and refuses another. `None` opens it for reading, listing, deleting and importing cases
        with their vectors; `add` and text `retrieve` then need an embedder."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"bank name must be a non-empty string, got {name!r}")
        owns = not isinstance(store, sqlite3.Connection)
        conn = store if isinstance(store, sqlite3.Connection) else open_store(store)
        bank = cls(conn, embedder, name, owns_conn=owns)
        try:
            bank._setup()
        except BaseException:
            if owns:
                conn.close()
            raise
        return bank

    def _setup(self) -> None:
        want = (self.embedder.name, int(self.embedder.dim)) if self.embedder else None
        with write_txn(self.conn) as c:
            for stmt in _SCHEMA:
                c.execute(stmt)
            row = c.execute(
                "SELECT embedder, dim FROM case_banks WHERE bank = ?", (self.name,)
            ).fetchone()
            if row is None and want is not None:
                row = want
                c.execute(
                    "INSERT INTO case_banks VALUES (?, ?, ?, ?)",
                    (self.name, *want, datetime.now(UTC).isoformat()),
                )
        if row is None:
            return  # no embedder yet: the bank takes the one of its first import
        if want is not None and want != tuple(row):
            raise ConfigError(
                f"case bank {self.name!r} was built with embedder {row[0]!r} ({row[1]}-d); "
                f"got {want[0]!r} ({want[1]}-d): their vectors do not compare"
            )
        self.embedder_name = str(row[0])
        self._index = CaseIndex(self.conn, self.name, int(row[1]))
        self._index.load()

    # ----------------------------------------------------------------------------- writing

    async def _embed(self, texts: list[str]) -> Vector:
        if self.embedder is None:
            raise ConfigError(f"case bank {self.name!r} was opened without an embedder")
        vecs = np.asarray(await self.embedder.embed(texts), dtype=np.float32)
        if vecs.shape != (len(texts), self.dim) or not np.isfinite(vecs).all():
            raise ConfigError(
                f"embedder {self.embedder.name!r} returned shape {vecs.shape} (or non-finite "
                f"values); expected ({len(texts)}, {self.dim})"
            )
        return vecs

    async def embed_query(self, text: str) -> Vector:
        """The query's unit vector: embed once, then `search` with it as often as needed."""
        [vec] = await self._embed([text])
        return vec

    async def add(self, case: Case, *, vector: npt.ArrayLike | None = None) -> Case:
        """Store `case` with its task's embedding: one embedder call (none when `vector`, the
        task's `embed_query`, is given), one transaction. An id already held: `ConfigError`."""
        if vector is None:
            [vec] = await self._embed([case.task])
        else:
            vec = np.asarray(vector, dtype=np.float32)
            if vec.shape != (self.dim,) or not np.isfinite(vec).all():
                raise ConfigError(f"vector has shape {vec.shape}, expected finite ({self.dim},)")
        await asyncio.to_thread(self._insert, [(case, vec)], True)
        return case

    def _insert(self, items: Sequence[tuple[Case, Vector]], strict: bool) -> int:
        added = 0
        with self._lock, write_txn(self.conn) as c:
            for case, vec in items:
                cur = c.execute(
                    f"INSERT OR IGNORE INTO case_cases (bank, {_COLUMNS}, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.name, *case_row(case), np.ascontiguousarray(vec, "<f4").tobytes()),
                )
                if cur.rowcount == 0:
                    if strict:
                        raise ConfigError(f"case id {case.id!r} is already in bank {self.name!r}")
                    continue
                c.execute(
                    "INSERT INTO case_log (bank, op, case_key) VALUES (?, 'add', ?)",
                    (self.name, cur.lastrowid),
                )
                added += 1
        return added

    async def delete(self, ids: Sequence[str]) -> int:
        """Remove the cases with these ids (one transaction); returns how many were there."""
        if isinstance(ids, str):
            raise ConfigError("delete() takes a list of case ids, got a single string")
        return await asyncio.to_thread(self._delete, list(ids))

    def _delete(self, ids: list[str]) -> int:
        n = 0
        with self._lock, write_txn(self.conn) as c:
            for case_id in ids:
                row = c.execute(
                    "DELETE FROM case_cases WHERE bank = ? AND id = ? RETURNING key",
                    (self.name, case_id),
                ).fetchone()
                if row is not None:
                    c.execute(
                        "INSERT INTO case_log (bank, op, case_key) VALUES (?, 'delete', ?)",
                        (self.name, row[0]),
                    )
                    n += 1
        return n

    # ----------------------------------------------------------------------------- reading

    async def retrieve(self, query: str, k: int = 4, *, label: bool | None = None) -> list[CaseHit]:
        """The `k` cases whose tasks are most similar to `query`, best first; `label=True` only
        successes, `label=False` only failures. One embedder call, for the query."""
        _check_k(k)
        return await self.search(await self.embed_query(query), k, label=label)

    async def search(
        self, vector: npt.ArrayLike, k: int = 4, *, label: bool | None = None
    ) -> list[CaseHit]:
        """`retrieve` with a query embedded already (see `embed_query`)."""
        _check_k(k)
        v = np.asarray(vector, dtype=np.float32)
        if self.dim is not None and v.shape != (self.dim,):
            raise ConfigError(f"query vector has shape {v.shape}, expected ({self.dim},)")
        return await asyncio.to_thread(self._search, v, k, label)

    def _search(self, v: Vector, k: int, label: bool | None) -> list[CaseHit]:
        with self._lock:
            if self._index is None:
                return []
            found = self._index.search(v, k, label)
            keys = [key for key, _ in found]
            rows = self.conn.execute(
                f"SELECT key, {_COLUMNS} FROM case_cases WHERE key IN "
                f"({','.join('?' * len(keys))})",
                keys,
            ).fetchall()
        cases = {int(r[0]): case_from_row(r[1:]) for r in rows}
        # a case another process deleted since the sync is left out
        return [CaseHit(case=cases[key], score=s) for key, s in found if key in cases]

    async def vectors(self, ids: Sequence[str]) -> Vector:
        """The stored embeddings of these cases, one row each, in the order given."""
        return await asyncio.to_thread(self._vectors, list(ids))

    def _vectors(self, ids: list[str]) -> Vector:
        if self.dim is None or not ids:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        dim = self.dim
        with self._lock:
            rows = self.conn.execute(
                f"SELECT id, vector FROM case_cases WHERE bank = ? AND id IN "
                f"({','.join('?' * len(ids))})",
                (self.name, *ids),
            ).fetchall()
        found = {r[0]: blob_vector(r[1], dim) for r in rows}
        missing = [i for i in ids if i not in found]
        if missing:
            raise ConfigError(f"case bank {self.name!r} holds no case with id {missing[0]!r}")
        return np.stack([found[i] for i in ids])

    def _query_cases(self, sql: str, args: Sequence[Any]) -> list[Case]:
        with self._lock:
            rows = self.conn.execute(sql, args).fetchall()
        return [case_from_row(r) for r in rows]

    async def get(self, case_id: str) -> Case | None:
        found = await self.list(ids=[case_id])
        return found[0] if found else None

    async def list(
        self,
        *,
        label: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
        ids: Sequence[str] | None = None,
    ) -> list[Case]:
        """Cases in the order they were added; optionally one label only, or the given ids."""
        where, args = ["bank = ?"], [self.name]
        if label is not None:
            where.append(f"label = {int(label)}")
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args += list(ids)
        sql = f"SELECT {_COLUMNS} FROM case_cases WHERE {' AND '.join(where)} ORDER BY key"
        sql += f" LIMIT {-1 if limit is None else int(limit)} OFFSET {int(offset)}"
        return await asyncio.to_thread(self._query_cases, sql, args)

    async def count(self, *, label: bool | None = None) -> int:
        sql = "SELECT COUNT(*) FROM case_cases WHERE bank = ?"
        if label is not None:
            sql += f" AND label = {int(label)}"
        return await asyncio.to_thread(self._scalar, sql)

    def _scalar(self, sql: str) -> int:
        with self._lock:
            return int(self.conn.execute(sql, (self.name,)).fetchone()[0])

    async def verify(self) -> None:
        """Raise `StoreError` unless the search index holds exactly the stored cases."""
        await asyncio.to_thread(self._verify)

    def _verify(self) -> None:
        with self._lock:
            if self._index is not None:
                self._index.verify()

    # -------------------------------------------------------------- blobs (a policy's weights)

    async def put_blob(self, key: str, data: bytes) -> None:
        """Store bytes under `key` beside this bank, for example a case policy's weights."""
        await asyncio.to_thread(self._put_blob, key, bytes(data))

    def _put_blob(self, key: str, data: bytes) -> None:
        with self._lock, write_txn(self.conn) as c:
            c.execute(
                "INSERT OR REPLACE INTO case_blobs VALUES (?, ?, ?, ?)",
                (self.name, key, data, datetime.now(UTC).isoformat()),
            )

    async def get_blob(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get_blob, key)

    def _get_blob(self, key: str) -> bytes | None:
        with self._lock:
            row = self.conn.execute(
                "SELECT data FROM case_blobs WHERE bank = ? AND key = ?", (self.name, key)
            ).fetchone()
        return bytes(row[0]) if row is not None else None

    # -------------------------------------------------------------------------- JSON files

    async def export_json(self, path: str | Path) -> int:
        """Write every case with its vector to a JSON file (`memory.cases`); returns how many."""
        return await asyncio.to_thread(self._export, path)

    def _export(self, path: str | Path) -> int:
        if self.dim is None or self.embedder_name is None:
            raise ConfigError(f"case bank {self.name!r} does not exist yet: nothing to export")
        with self._lock:
            rows = self.conn.execute(
                f"SELECT {_COLUMNS}, vector FROM case_cases WHERE bank = ? ORDER BY key",
                (self.name,),
            ).fetchall()
        records = [(case_from_row(r[:-1]).model_dump(mode="json"), bytes(r[-1])) for r in rows]
        write_export(path, self.name, self.embedder_name, self.dim, records)
        return len(records)

    async def import_json(self, path: str | Path) -> int:
        """Add the cases of an exported file whose ids the bank does not hold yet (one
        transaction); returns how many were added. Vectors are reused when the file was made
        with this bank's embedder; otherwise the tasks are embedded again."""
        export = await asyncio.to_thread(read_export, path)
        cases = [case_from_export(path, i, r.case) for i, r in enumerate(export.cases)]
        if self._index is None and self.embedder is None:
            await asyncio.to_thread(self._adopt, export.embedder, export.dim)
        if (export.embedder, export.dim) == (self.embedder_name, self.dim):
            assert self.dim is not None
            vecs = [
                decode_vector(r.vector, self.dim, f"{path}: cases[{i}]")
                for i, r in enumerate(export.cases)
            ]
        elif self.embedder is None:
            raise ConfigError(
                f"{path} was made with embedder {export.embedder!r} ({export.dim}-d) but bank "
                f"{self.name!r} uses {self.embedder_name!r} ({self.dim}-d): open the bank with "
                "an embedder to embed the tasks again"
            )
        else:
            vecs = list(await self._embed([c.task for c in cases])) if cases else []
        return await asyncio.to_thread(self._insert, list(zip(cases, vecs, strict=True)), False)

    def _adopt(self, embedder: str, dim: int) -> None:
        """Create the bank for an import, with the file's embedder."""
        with self._lock:
            with write_txn(self.conn) as c:
                c.execute(
                    "INSERT OR IGNORE INTO case_banks VALUES (?, ?, ?, ?)",
                    (self.name, embedder, dim, datetime.now(UTC).isoformat()),
                )
                row = c.execute(
                    "SELECT embedder, dim FROM case_banks WHERE bank = ?", (self.name,)
                ).fetchone()
            self.embedder_name = str(row[0])
            self._index = CaseIndex(self.conn, self.name, int(row[1]))
            self._index.load()

    # ----------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Store an index snapshot if the index moved since the last one, and close the store
        if this bank opened it. Blocks; `aclose` runs it in a thread."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if self._index is not None:
                    self._index.snapshot()
            finally:
                if self._owns_conn:
                    self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> CaseBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaseBank({self.name!r}, embedder={self.embedder_name!r}, dim={self.dim})"


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be an int >= 1, got {k!r}")


def known_banks(conn: sqlite3.Connection) -> list[str]:
    """The names of the case banks a store holds."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "case_banks" not in tables:
        return []
    return [str(r[0]) for r in conn.execute("SELECT bank FROM case_banks ORDER BY bank")]
