"""A recording folded into what the page shows: a run's summary, its tasks, a task's timeline and
search trees, and the tasks where two runs differ.

`RunState.add` takes the events one at a time, in file order, so a recording that grows (a run
in progress) is folded as it is read and never re-read. Every event is filed under the task span
it ran in (a `task` span's id is its Outcome's trace_id), found by walking `parent_id` up; events
outside any task (`run.start`, `run.end`, a gateway's plain completion) belong to the run. The
views (`summary`, `rows`, `task`) are computed when asked for.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from agentic.core import Event
from agentic.view import timeline
from agentic.view.payloads import (
    BackendCall,
    Cost,
    NodeRef,
    Outcome,
    RewardResult,
    RewardStart,
    RunEnd,
    RunStart,
    SearchNode,
    SearchResult,
    SearchRound,
    SearchScore,
    SearchStart,
    TaskOutcome,
    TaskStart,
    check,
)
from agentic.view.tree import SearchState, TreeView

Status = Literal["ok", "waiting", "plain", "error"]
# the controller settings worth a place in a run's one-line label (its size, mostly)
_LABEL_FIELDS = ("samples", "width", "k", "n", "max_tokens", "reward")


class RunSummary(BaseModel):
    """One recording, as the runs list and the run panel show it."""

    id: int
    file: str
    name: str
    status: Status
    message: str | None = None
    suite: str | None = None
    suite_config: dict[str, Any] = {}
    backend: str | None = None
    controller: dict[str, Any] = {}
    controller_label: str = ""
    gateway: dict[str, Any] | None = None
    planned: int | None = None  # tasks the run set out to solve
    done: int = 0
    running: int = 0  # tasks started with no outcome (yet, or ever: an interrupted run)
    accuracy: float | None = None  # mean score over scored outcomes, as `agentic run` says
    solved: int = 0
    errors: int = 0
    usage: Cost = Cost()
    stopped: str | None = None  # why the run stopped early (its budget)
    not_run: int = 0
    task_stops: int = 0  # tasks whose search stopped early (their budget) and answered anyway
    finished: bool = False  # run.end after the last run.start / run.resume
    resumed: int = 0
    runs_in_file: int = 0
    seconds: float = 0.0  # first event to last
    events: int = 0
    torn_tail: bool = False  # the last line was cut off mid-write and is ignored


class TaskRow(BaseModel):
    key: str  # the task span id
    task_id: str
    output: str | None
    score: float | None
    solved: bool
    error: str | None
    stopped: str | None
    usage: Cost | None
    searches: int
    nodes: int


class RunDetail(BaseModel):
    summary: RunSummary
    tasks: list[TaskRow]
    other: dict[str, int]  # events outside any task, by type


class TaskDetail(BaseModel):
    run: int
    row: TaskRow
    timeline: timeline.Timeline
    trees: list[TreeView]


class DiffRow(BaseModel):
    task_id: str
    kind: Literal["only_a_solved", "only_b_solved", "score", "output", "only_a", "only_b"]
    why: str
    a: TaskRow | None
    b: TaskRow | None


class DiffView(BaseModel):
    a: RunSummary
    b: RunSummary
    same: int  # tasks in both with the same output and score
    rows: list[DiffRow]
    note: str | None


@dataclass
class TaskState:
    key: str
    task_id: str
    ts: float
    outcome: Outcome | None = None
    entries: list[tuple[Event, Any]] = field(default_factory=list)
    searches: dict[str, SearchState] = field(default_factory=dict)

    def row(self) -> TaskRow:
        o = self.outcome
        return TaskRow(
            key=self.key,
            task_id=self.task_id,
            output=o.output if o else None,
            score=o.score if o else None,
            solved=bool(o and o.score is not None and o.score >= 1.0),
            error=o.error if o else None,
            stopped=_stop(o),
            usage=o.usage if o else None,
            searches=len(self.searches),
            nodes=sum(len(s.nodes) - 1 for s in self.searches.values()),
        )


class RunState:
    """The events of one recording, folded as they arrive (`add`)."""

    def __init__(self, name: str) -> None:
        self.name = name  # the file, for messages
        self.starts: list[RunStart] = []
        self.resumes = 0
        self.end: RunEnd | None = None
        self.tasks: dict[str, TaskState] = {}
        self.loose: Counter[str] = Counter()
        self.types: Counter[str] = Counter()
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._searches: dict[str, SearchState] = {}
        # for every span seen: the task span and the search span it ran in, if any
        self._task_of: dict[str, str | None] = {}
        self._search_of: dict[str, str | None] = {}

    @property
    def events(self) -> int:
        return sum(self.types.values())

    def add(self, event: Event, line: int) -> None:
        """Fold one event in; `line` (its line in the file) names it in errors."""
        where = f"{self.name}:{line}"
        t, parent = event.type, event.parent_id
        task_key = self._task_of.get(parent) if parent else None
        search_key = self._search_of.get(parent) if parent else None
        search = self._searches.get(search_key) if search_key else None
        payload: Any = None
        if t == "run.start":
            payload = check(RunStart, event, where)
            self.starts.append(payload)
            self.end = None
        elif t == "run.resume":
            self.resumes += 1
            self.end = None
        elif t == "run.end":
            self.end = payload = check(RunEnd, event, where)
        elif t == "task":
            payload = check(TaskStart, event, where)
            task_key = event.span_id
            self.tasks[task_key] = TaskState(task_key, payload.task_id, event.ts)
        elif t == "task.outcome":
            payload = check(TaskOutcome, event, where)
            if task_key is not None:
                self.tasks[task_key].outcome = payload.outcome
        elif t == "search":
            payload = check(SearchStart, event, where)
            search = SearchState(event.span_id, parent, payload.algorithm, event.ts)
            self._searches[event.span_id] = search
            search_key = event.span_id
            if task_key is not None:
                self.tasks[task_key].searches[event.span_id] = search
        elif t == "search.result":
            payload = check(SearchResult, event, where)
            # written after its span closed, beside it: the latest search of that parent
            # still without a result
            done = next(
                (
                    s
                    for s in reversed(self._searches.values())
                    if s.parent == parent and s.result is None
                ),
                None,
            )
            if done is not None:
                done.result, done.end_ts = payload, event.ts
        elif t in ("backend.generate", "backend.score"):
            payload = check(BackendCall, event, where)
            if t == "backend.generate" and parent in self._searches:
                self._searches[parent].called(payload.results, payload.batch)
        elif t == "reward":
            payload = check(RewardStart, event, where)
        elif t == "reward.result":
            payload = check(RewardResult, event, where)
        elif search is not None:
            payload = self._search_event(search, event, where)
        self._task_of[event.span_id] = task_key
        self._search_of[event.span_id] = search_key
        if search is not None and t != "search":
            search.end_ts = max(search.end_ts or event.ts, event.ts)
        if task_key is not None:
            self.tasks[task_key].entries.append((event, payload))
        else:
            self.loose[t] += 1
        self.types[t] += 1
        self.first_ts = event.ts if self.first_ts is None else min(self.first_ts, event.ts)
        self.last_ts = event.ts if self.last_ts is None else max(self.last_ts, event.ts)

    @staticmethod
    def _search_event(search: SearchState, event: Event, where: str) -> Any:
        t = event.type
        if t == "search.node":
            node = check(SearchNode, event, where)
            search.add(node)
            return node
        if t == "search.score":
            score = check(SearchScore, event, where)
            search.score(score.node, score.score)
            return score
        if t == "search.round":
            r = check(SearchRound, event, where)
            search.rounds.append(r)
            return r
        if t in ("search.lookahead", "search.expand"):
            ref = check(NodeRef, event, where)
            search.mark(ref.node, lookahead=t == "search.lookahead", expanded=t == "search.expand")
            return ref
        return None

    # ------------------------------------------------------------------------------ the views

    def outcomes(self) -> dict[str, tuple[TaskState, Outcome]]:
        """The first outcome of each task id (a resumed run keeps the first, as `agentic plot`
        does), in the order tasks started."""
        out: dict[str, tuple[TaskState, Outcome]] = {}
        for task in self.tasks.values():
            if task.outcome is not None:
                out.setdefault(task.task_id, (task, task.outcome))
        return out

    def summary(self, rid: int, file: str, name: str) -> RunSummary:
        start = self.starts[0] if self.starts else RunStart()
        outcomes = [o for _, o in self.outcomes().values()]
        scores = [o.score for o in outcomes if o.score is not None]
        config = start.config
        controller = config.get("controller") if isinstance(config.get("controller"), dict) else {}
        gateway = config.get("gateway")
        return RunSummary(
            id=rid,
            file=file,
            name=name,
            status="ok",
            suite=str(start.suite.get("name")) if start.suite.get("name") is not None else None,
            suite_config=start.suite,
            backend=str(config.get("backend_name") or config.get("backend") or "") or None,
            controller=controller or {},
            controller_label=controller_label(controller or {}),
            gateway=gateway if isinstance(gateway, dict) else None,
            planned=start.tasks,
            done=len(outcomes),
            running=sum(1 for t in self.tasks.values() if t.outcome is None),
            accuracy=sum(scores) / len(scores) if scores else None,
            solved=sum(1 for s in scores if s >= 1.0),
            errors=sum(1 for o in outcomes if o.error),
            usage=sum((o.usage for o in outcomes), Cost()),
            stopped=self.end.stopped if self.end else None,
            not_run=self.end.not_run if self.end else 0,
            task_stops=sum(1 for o in outcomes if _stop(o)),
            finished=self.end is not None,
            resumed=self.resumes,
            runs_in_file=len(self.starts),
            seconds=(self.last_ts or 0.0) - (self.first_ts or 0.0),
            events=self.events,
        )

    def rows(self) -> list[TaskRow]:
        return [t.row() for t in self.tasks.values()]

    def detail(self, summary: RunSummary) -> RunDetail:
        return RunDetail(summary=summary, tasks=self.rows(), other=dict(self.loose))

    def task(self, rid: int, key: str) -> TaskDetail | None:
        task = self.tasks.get(key)
        if task is None:
            return None
        searches = list(task.searches.values())
        return TaskDetail(
            run=rid,
            row=task.row(),
            timeline=timeline.build(task.ts, task.entries, searches),
            trees=[s.view() for s in searches],
        )


def controller_label(controller: dict[str, Any]) -> str:
    """`pf samples=6 reward=value`: the type and the settings that size it."""
    if not controller:
        return "?"
    bits = [f"{k}={controller[k]}" for k in _LABEL_FIELDS if controller.get(k) is not None]
    return " ".join([str(controller.get("type", "?")), *bits])


def _stop(o: Outcome | None) -> str | None:
    stopped = (o.info or {}).get("stopped") if o else None
    return str(stopped) if stopped else None


def diff(a: RunState, sa: RunSummary, b: RunState, sb: RunSummary) -> DiffView:
    """The tasks (by task id) where runs `a` and `b` differ: solved by one only, another score,
    another output, or run by one only. Tasks of neither outcome count nowhere."""
    oa, ob = a.outcomes(), b.outcomes()
    rows: list[DiffRow] = []
    same = 0
    for task_id in [*oa, *(t for t in ob if t not in oa)]:
        ta, tb = oa.get(task_id), ob.get(task_id)
        ra, rb = (ta[0].row() if ta else None), (tb[0].row() if tb else None)
        if ra is None or rb is None:
            kind: Any = "only_a" if rb is None else "only_b"
            why = f"only run {'A' if rb is None else 'B'} has an outcome"
        elif ra.solved != rb.solved:
            kind = "only_a_solved" if ra.solved else "only_b_solved"
            why = f"solved by {'A' if ra.solved else 'B'} only"
        elif ra.score != rb.score:
            kind, why = "score", f"score {_num(ra.score)} vs {_num(rb.score)}"
        elif ra.output != rb.output:
            kind, why = "output", "different answers, same score"
        else:
            same += 1
            continue
        rows.append(DiffRow(task_id=task_id, kind=kind, why=why, a=ra, b=rb))
    note = None
    # the same generator, seed and settings make the same tasks (a larger `n` only adds some)
    ident = ("name", "seed", "config")
    if any(sa.suite_config.get(k) != sb.suite_config.get(k) for k in ident):
        note = "the runs solved different suites or suite settings: tasks are matched by id"

    return DiffView(a=sa, b=sb, same=same, rows=rows, note=note)


def _num(v: float | None) -> str:
    return "none" if v is None else f"{v:g}"
