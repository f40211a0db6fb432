"""Recordings read as they grow: files by byte offset, complete lines only, and folders whose
new files join as they appear (the gateway's `--record-dir`, one file per request).

A `Recording` remembers how far it has read; `refresh` reads what was appended since and folds
each complete line into its `RunState`. The bytes after the last newline wait for the rest of
their line (a line being written); when the file stops growing for good they are a line cut off
by a kill, which is ignored, as `agentic.core.read_events` ignores it. A bad line anywhere else
stops the reading with a message naming the file and line, until the file is replaced (a new
inode, or shorter than what was read: `agentic run --overwrite`), when it is read afresh.

A `Library` holds the recordings the viewer was given; `refresh` is called by the page's polls
(no thread of its own), at most once per `_MIN_GAP` seconds, under a lock since the web
server answers from a thread pool. `version` grows whenever anything shown may have changed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import ValidationError

from agentic.core import ConfigError, Event, TraceFormatError
from agentic.view.model import RunState, RunSummary

_MIN_GAP = 0.25  # seconds between two reads of the files
# a "line" this long with no newline is no recording being written (a binary or minified file)
_MAX_LINE = 64 * 1024 * 1024


class Recording:
    def __init__(self, path: Path, rid: int) -> None:
        self.path, self.id = path, rid
        self._fresh()

    def _fresh(self) -> None:
        self.state = RunState(str(self.path))
        self.read = 0  # bytes read so far
        self.tail = b""  # read bytes after the last newline
        self.line = 0  # complete lines read
        self.error: str | None = None
        self.torn = False  # the tail was declared a cut-off last line (`settle`)
        self.missing = False  # no file at the path (yet: followed live, before the run starts)
        self._inode: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Read what was appended since the last call; True when anything changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            # `agentic run --record` makes its file once the model is loaded, and --overwrite
            # removes the old one first: wait for it rather than call it an error
            if self.missing:
                return False
            self._fresh()
            self.missing = True
            return True
        except OSError as e:
            gone = f"{self.path}: cannot read it ({e.strerror or e})"
            changed, self.error = self.error != gone, gone
            return changed
        inode = (st.st_dev, st.st_ino)
        changed, self.missing = self.missing, False
        if self._inode is not None and (inode != self._inode or st.st_size < self.read):
            self._fresh()  # replaced or truncated: another recording now lives at this path
            changed = True
        self._inode = inode
        if self.error is not None or st.st_size == self.read:
            return changed
        try:
            with self.path.open("rb") as f:
                f.seek(self.read)
                data = f.read()
        except OSError as e:
            self.error = f"{self.path}: cannot read it ({e.strerror or e})"
            return True
        self.read += len(data)
        self.torn = False
        lines = (self.tail + data).split(b"\n")
        self.tail = lines.pop()
        try:
            for raw in lines:
                self.line += 1
                if raw.strip():
                    self.state.add(self._event(raw, self.line), self.line)
            if self.line == 0 and self.tail.strip() and not self.tail.lstrip().startswith(b"{"):
                raise TraceFormatError(
                    f"{self.path}: not a recording: it does not start with a JSON object"
                )
            if len(self.tail) > _MAX_LINE:
                raise TraceFormatError(f"{self.path}:{self.line + 1}: a line over 64 MiB")
        except TraceFormatError as e:
            self.error = str(e)
        return True

    def settle(self) -> None:
        """The file is complete (not followed live): bytes after its last newline are a line cut
        off mid-write and are ignored, unless they are all the file holds, which must then be
        an event (a one-line file with no newline, or not a recording at all)."""
        if not self.tail.strip() or self.error is not None:
            return
        if self.line == 0:
            try:
                self.state.add(self._event(self.tail, 1), 1)
                self.line, self.tail = 1, b""
            except TraceFormatError as e:
                self.error = str(e)
            return
        self.torn = True

    def _event(self, raw: bytes, line: int) -> Event:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            why = f"not UTF-8 (byte {e.start + 1} of the line)"
        else:
            try:
                return Event.model_validate_json(text)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err.get("loc", ())) or "line"
                why = f"{where}: {err.get('msg', 'invalid')}"
        if line == 1:
            raise TraceFormatError(
                f"{self.path}: not a recording of agentic events: line 1 is not an event ({why})"
            )
        raise TraceFormatError(f"{self.path}:{line}: not a valid event: {why}")

    def summary(self) -> RunSummary:
        base = self.state.summary(self.id, str(self.path), self.path.name)
        base.torn_tail = self.torn
        if self.error is not None:
            base.status, base.message = "error", self.error
        elif self.missing:
            base.status, base.message = "waiting", f"{self.path}: waiting for the file to appear"
        elif not self.state.events:
            base.status, base.message = "waiting", f"{self.path}: no events yet"
        elif not self.state.starts:
            types = sorted(self.state.types)
            if all(t.startswith("backend.") for t in types):
                base.status = "plain"
                base.message = (
                    f"{self.path.name}: a plain completion (no controller ran, no run.start): "
                    "only its model call is recorded"
                )
            else:
                base.status = "error"
                base.message = (
                    f"{self.path} has no run.start event: not a recording of `agentic run` or "
                    f"the gateway (its {self.state.events} events are of types "
                    f"{', '.join(types[:8])}{', ...' if len(types) > 8 else ''})"
                )
        return base


class Library:
    """The recordings given to `agentic view`: files, and folders of `.jsonl` files."""

    def __init__(self, paths: list[Path], live: bool) -> None:
        self.live = live
        self.version = 0
        self.recordings: list[Recording] = []
        self._dirs = [p for p in paths if p.is_dir()]
        self._known: set[Path] = set()
        self._lock = threading.Lock()
        self._last = 0.0
        for p in paths:
            if not p.is_dir():
                self._add(p)
        self._discover()

    @classmethod
    def open(cls, paths: list[Path], live: bool) -> Library:
        """Read `paths` once; raises `ConfigError` / `TraceFormatError` (one line naming the
        file) for a path that does not exist or a file that is not a recording. A folder's bad
        files are shown on the page instead (one bad request must not hide the others); so are,
        when `live`, files with no events yet, or not there yet (in a folder that is)."""
        for p in paths:
            # followed live, a file may come later (a run that is still loading its model)
            if not p.exists() and not (live and p.parent.is_dir()):
                raise ConfigError(f"{p}: no such file or directory")
        lib = cls(paths, live)
        with lib._lock:
            lib._refresh_all()
            for r in lib.recordings:
                if not live:
                    r.settle()
                if r.path in paths:
                    s = r.summary()
                    if s.status == "error" or (s.status != "ok" and not live):
                        raise TraceFormatError(s.message or f"{r.path}: not a recording")
        for d in lib._dirs:
            if not live and not any(r.path.parent == d for r in lib.recordings):
                raise ConfigError(f"{d} holds no .jsonl recordings")
        return lib

    def _add(self, path: Path) -> None:
        self._known.add(path)
        self.recordings.append(Recording(path, len(self.recordings)))

    def _discover(self) -> None:
        for d in self._dirs:
            try:
                found = sorted(
                    (p for p in d.glob("*.jsonl") if p not in self._known and p.is_file()),
                    key=lambda p: (p.stat().st_mtime, p.name),
                )
            except OSError:
                continue  # a file removed between listing and stat: next poll
            for p in found:
                self._add(p)

    def _refresh_all(self) -> bool:
        before = len(self.recordings)
        self._discover()
        changed = [r.refresh() for r in self.recordings]
        return any(changed) or len(self.recordings) != before

    def refresh(self) -> None:
        """Follow the files (live only; a library not followed was read once by `open`)."""
        if not self.live:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last < _MIN_GAP:
                return
            self._last = now
            if self._refresh_all():
                self.version += 1

    @property
    def lock(self) -> threading.Lock:
        """Held while reading the recordings' state: a refresh changes it."""
        return self._lock

    def get(self, rid: int) -> Recording | None:
        return self.recordings[rid] if 0 <= rid < len(self.recordings) else None
