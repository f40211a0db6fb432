"""The in-memory search index of one `CaseBank`, kept in step with its SQLite tables.

A bank's cases live in `case_cases`; every add and delete also appends `(seq, op, case_key)` to
`case_log` in the same transaction (`case_key` is the row's integer key, never reused, and the
case's id in the `VectorIndex`). `CaseIndex` remembers the last seq it applied; `sync` reads
the log past it and, for each key touched, adds the stored vector if the row still exists or
removes the key if not, so writes by other processes show up before the next search. All reads
of one sync happen in one read transaction, so the log head and the rows agree.

Opening loads the snapshot in `case_snapshots` (two serialised `VectorIndex`es tagged with the
seq they reflect) and syncs past it; with no usable snapshot, or when the result disagrees with
the row count, it rebuilds from the stored vectors. `snapshot` writes the current state back.
Positive and negative cases sit in separate indexes so a label filter is exact, not post hoc.

Not thread-safe by itself: `CaseBank` calls it under its lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agentic.core import ConfigError, StoreError
from memory.store import read_txn, write_txn

if TYPE_CHECKING:
    from memory.vector_index import VectorIndex

Vector = npt.NDArray[np.float32]


def blob_vector(blob: bytes, dim: int) -> Vector:
    """A stored vector (little-endian float32 bytes) as an array, checked against `dim`."""
    v = np.frombuffer(blob, dtype="<f4")
    if v.shape != (dim,):
        raise ConfigError(f"a stored case vector has {v.size} values, expected {dim}")
    return v.astype(np.float32)


class CaseIndex:
    def __init__(self, conn: sqlite3.Connection, bank: str, dim: int) -> None:
        self.conn, self.bank, self.dim = conn, bank, dim
        self.indexes: dict[bool, VectorIndex] = self._empty()
        self.seq = 0  # the last case_log seq applied
        self.snapshot_seq = -1  # the seq of the snapshot in the store, -1: none known

    def _empty(self) -> dict[bool, VectorIndex]:
        from memory.vector_index import VectorIndex

        return {True: VectorIndex(self.dim), False: VectorIndex(self.dim)}

    def __len__(self) -> int:
        return sum(len(i) for i in self.indexes.values())

    def load(self) -> None:
        """From the stored snapshot plus the newer log; a full rebuild when that fails."""
        from memory.vector_index import VectorIndex

        snap = self.conn.execute(
            "SELECT seq, positive, negative FROM case_snapshots WHERE bank = ?", (self.bank,)
        ).fetchone()
        if snap is not None:
            try:
                loaded = {
                    True: VectorIndex.from_bytes(snap[1]),
                    False: VectorIndex.from_bytes(snap[2]),
                }
            except Exception:  # the snapshot is only a cache: an unreadable one means rebuild
                loaded = {}
            if loaded and all(i.dim == self.dim for i in loaded.values()):
                self.indexes, self.seq = loaded, int(snap[0])
                self.snapshot_seq = self.seq
                if self.sync(check_count=True):
                    return
        self.rebuild()

    def _head(self, c: sqlite3.Connection) -> int:
        row = c.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM case_log WHERE bank = ?", (self.bank,)
        ).fetchone()
        return int(row[0])

    def rebuild(self) -> None:
        self.indexes = self._empty()
        with read_txn(self.conn) as c:
            head = self._head(c)
            rows = c.execute(
                "SELECT key, label, vector FROM case_cases WHERE bank = ?", (self.bank,)
            ).fetchall()
        self._apply(rows)
        self.seq = head

    def sync(self, *, check_count: bool = False) -> bool:
        """Apply the log entries newer than the last seen. With `check_count`, return whether
        the indexes then hold exactly as many cases as the table (else always True)."""
        with read_txn(self.conn) as c:
            head = self._head(c)
            rows: list[Any] = []
            if head > self.seq:
                rows = c.execute(
                    "SELECT l.case_key, c.label, c.vector FROM (SELECT DISTINCT case_key"
                    " FROM case_log WHERE bank = ? AND seq > ? AND seq <= ?) AS l"
                    " LEFT JOIN case_cases AS c ON c.key = l.case_key",
                    (self.bank, self.seq, head),
                ).fetchall()
            count = None
            if check_count:
                count = c.execute(
                    "SELECT COUNT(*) FROM case_cases WHERE bank = ?", (self.bank,)
                ).fetchone()[0]
        if head < self.seq:  # the log is behind the snapshot: it describes another store
            return False
        self._apply(rows)
        self.seq = head
        return count is None or count == len(self)

    def _apply(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of (key, label, vector); a None label means the case is gone."""
        add: dict[bool, tuple[list[int], list[Vector]]] = {True: ([], []), False: ([], [])}
        gone: list[int] = []
        for key, label, blob in rows:
            if label is None:
                gone.append(int(key))
            else:
                add[bool(label)][0].append(int(key))
                add[bool(label)][1].append(blob_vector(blob, self.dim))
        for index in self.indexes.values():
            if gone:
                index.remove(gone)
        for label, (keys, vecs) in add.items():
            if keys:
                self.indexes[label].add(keys, np.stack(vecs))

    def search(self, query: Vector, k: int, label: bool | None) -> list[tuple[int, float]]:
        """(case_key, cosine) of the `k` nearest cases, best first, after a sync."""
        self.sync()
        found: list[tuple[int, float]] = []
        for lab in (True, False) if label is None else (label,):
            if len(self.indexes[lab]):
                found += self.indexes[lab].search(query[None, :], k)[0]
        return sorted(found, key=lambda h: -h[1])[:k]

    def verify(self) -> None:
        """Raise `StoreError` unless, after a sync, the indexes hold exactly the table's keys
        (meaningful while no other process writes to the bank)."""
        self.sync()
        indexed = {int(k) for i in self.indexes.values() for k in i.ids()}
        rows = self.conn.execute("SELECT key FROM case_cases WHERE bank = ?", (self.bank,))
        stored = {int(r[0]) for r in rows}
        if indexed != stored:
            raise StoreError(
                f"case bank {self.bank!r}: the index holds {len(indexed)} cases, the table "
                f"{len(stored)} ({len(indexed ^ stored)} differ)"
            )

    def snapshot(self) -> None:
        """Store the indexes, tagged with their seq, unless the store has a newer snapshot."""
        if self.seq == self.snapshot_seq:
            return
        blobs = (self.indexes[True].to_bytes(), self.indexes[False].to_bytes())
        with write_txn(self.conn) as c:
            c.execute(
                "INSERT INTO case_snapshots VALUES (?, ?, ?, ?) ON CONFLICT (bank) DO"
                " UPDATE SET seq = excluded.seq, positive = excluded.positive,"
                " negative = excluded.negative WHERE excluded.seq > case_snapshots.seq",
                (self.bank, self.seq, *blobs),
            )
        self.snapshot_seq = self.seq
