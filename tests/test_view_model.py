"""The viewer's model without a browser: tree layout and marks, run summaries, the diff of two
runs, timelines and the incremental reading of a growing file, on the recorded runs in
tests/data/view (real runs of the embedded model, see its README) and on hand-made events."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agentic.core import ConfigError, Event, TraceFormatError
from agentic.runtime.plot import budget_points
from agentic.view import Library, Recording, RunState, diff, layout
from agentic.view.curves import curves

DATA = Path(__file__).parent / "data" / "view"
PF, DIRECT, EPF, BEAM = (DATA / f"{n}_run.jsonl" for n in ("pf", "direct", "epf", "beam"))


def raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load(path: Path) -> RunState:
    state = RunState(str(path))
    for i, e in enumerate(raw(path), start=1):
        state.add(Event.model_validate(e), i)
    return state


def ev(type_: str, span: str, up: str | None = None, ts: float = 0.0, **payload: Any) -> Event:
    return Event(type=type_, span_id=span, parent_id=up, ts=ts, payload=payload)


def fold(events: list[Event]) -> RunState:
    state = RunState("mem")
    for i, e in enumerate(events, start=1):
        state.add(e, i)
    return state


# ------------------------------------------------------------------------------------ layout


def test_layout_puts_leaves_in_order_and_parents_over_their_children() -> None:
    kids = {0: [1, 2], 1: [3, 4, 5], 2: [6], 4: [7, 8]}
    pos, leaves, depth = layout(kids)
    assert (leaves, depth) == (5, 3)
    # leaves left to right in depth-first order: 3, 7, 8, 5, 6
    assert [pos[n][0] for n in (3, 7, 8, 5, 6)] == [0, 1, 2, 3, 4]
    assert pos[4] == (1.5, 2) and pos[1] == (1.5, 1) and pos[2] == (4, 1)
    assert pos[0] == ((1.5 + 4) / 2, 0)
    # a single child sits right above its parent... and its parent right above it
    assert pos[6][0] == pos[2][0]


def test_layout_of_a_deep_chain_needs_no_recursion() -> None:
    kids = {i: [i + 1] for i in range(5000)}
    pos, leaves, depth = layout(kids)
    assert leaves == 1 and depth == 5000 and pos[0] == (0.0, 0)


# ---------------------------------------------------------------------- marks on real searches


def _searches(path: Path) -> dict[str, dict[str, Any]]:
    """What the recording says about each search, read straight from its lines."""
    out: dict[str, dict[str, Any]] = {}
    events = raw(path)
    for e in events:
        p = e["payload"]
        if e["type"] == "search":
            out[e["span_id"]] = {"nodes": {}, "rounds": [], "look": set(), "parent": e["parent_id"]}
        elif e["type"] == "search.node":
            out[e["parent_id"]]["nodes"][p["node"]] = p
        elif e["type"] == "search.round":
            out[e["parent_id"]]["rounds"].append(p)
        elif e["type"] == "search.lookahead":
            out[e["parent_id"]]["look"].add(p["node"])
        elif e["type"] == "search.result":
            s = next(s for s in out.values() if s["parent"] == e["parent_id"] and "chosen" not in s)
            s["chosen"] = p["chosen"]
    return out


def _trees(state: RunState) -> dict[str, Any]:
    return {s.span: s.view() for t in state.tasks.values() for s in t.searches.values()}


def test_particle_filter_marks_resampled_pruned_and_the_chosen_path() -> None:
    state, truth = load(PF), _searches(PF)
    trees = _trees(state)
    assert set(trees) == set(truth) and len(trees) == 4
    resampled_somewhere = False
    for span, tree in trees.items():
        t = truth[span]
        nodes = {n.id: n for n in tree.nodes}
        assert set(nodes) == {0, *t["nodes"]}
        copies = Counter[int]()
        for r in t["rounds"]:
            for n, c in Counter(r["particles"]).items():
                copies[n] = max(copies[n], c)
        assert {n for n in nodes if nodes[n].resampled} == {n for n, c in copies.items() if c > 1}
        resampled_somewhere |= any(c > 1 for c in copies.values())
        # pruned: unfinished, childless, not a survivor of the last round
        parents = {p["parent"] for p in t["nodes"].values()}
        survivors = set(t["rounds"][-1]["particles"])
        want = {
            n
            for n, p in t["nodes"].items()
            if not p["done"] and n not in parents and n not in survivors
        }
        assert {n for n in nodes if nodes[n].pruned} == want
        # the chosen answer's path runs from the root to search.result's chosen node
        path, at = [], t["chosen"]
        while at:
            path.append(at)
            at = t["nodes"][at]["parent"]
        assert {n for n in nodes if nodes[n].chosen} == {0, *path}
        assert [n.id for n in tree.nodes if n.answer] == [t["chosen"]]
        # scores as recorded; positions: a parent is centred over its children
        for n in tree.nodes:
            kids = [k for k in tree.nodes if k.parent == n.id]
            if kids:
                assert n.x == (min(k.x for k in kids) + max(k.x for k in kids)) / 2
                assert all(k.y == n.y + 1 for k in kids)
    assert resampled_somewhere, "the fixture should hold a resampling round"


def test_beam_prunes_what_its_rounds_pruned() -> None:
    state, truth = load(BEAM), _searches(BEAM)
    for span, tree in _trees(state).items():
        pruned = {n for r in truth[span]["rounds"] for n in r["pruned"]}
        assert pruned and {n.id for n in tree.nodes if n.pruned} == pruned


def test_entropic_filter_marks_its_look_ahead_nodes_and_never_prunes_them() -> None:
    state, truth = load(EPF), _searches(EPF)
    for span, tree in _trees(state).items():
        look = {n.id for n in tree.nodes if n.lookahead}
        assert look == truth[span]["look"] and look
        assert not any(n.pruned for n in tree.nodes if n.lookahead)


def test_a_node_of_the_round_in_progress_is_not_pruned_yet() -> None:
    head = [
        ev("task", "t", task_id="x"),
        ev("search", "s", "t", algorithm="ParticleFilter"),
        *(
            ev("search.node", f"n{i}", "s", node=i, parent=0, step=f"s{i}", done=False)
            for i in (1, 2)
        ),
    ]
    state = fold(head)
    assert not any(n.pruned for n in state.tasks["t"].searches["s"].view().nodes)
    state.add(ev("search.round", "r1", "s", round=1, resampled=True, particles=[1, 1]), 9)
    state.add(ev("search.node", "n3", "s", node=3, parent=1, step="a", done=False), 10)
    view = {n.id: n for n in state.tasks["t"].searches["s"].view().nodes}
    assert view[2].pruned and view[1].resampled and view[1].copies == 2
    assert not view[3].pruned  # made after the last round closed: its round is still running


# --------------------------------------------------------------------------- usage, timeline


def test_each_node_carries_the_usage_of_the_request_that_made_it() -> None:
    state = load(PF)
    batches = {e["payload"]["batch"] for e in raw(PF) if e["type"] == "backend.generate"}
    for tree in _trees(state).values():
        made = [n for n in tree.nodes if n.id]
        assert all(n.usage is not None for n in made)
        assert all(n.usage and n.usage.batch in batches for n in made)
        assert all(n.usage and n.usage.completion_tokens == n.tokens for n in made)


def test_the_timeline_draws_one_bar_per_batch_and_one_per_reward_call() -> None:
    state = load(PF)
    events = raw(PF)
    for key in state.tasks:
        spans = {key} | {e["span_id"] for e in events if e["parent_id"] == key}
        spans |= {e["span_id"] for e in events if e["parent_id"] in spans}
        gens = [e for e in events if e["type"] == "backend.generate" and e["parent_id"] in spans]
        rewards = [e for e in events if e["type"] == "reward" and e["parent_id"] in spans]
        detail = state.task(0, key)
        assert detail is not None
        items = detail.timeline.items
        bars = [i for i in items if i.kind == "generate"]
        assert len(bars) == len({e["payload"]["batch"] for e in gens})
        for bar in bars:
            size = next(
                e["payload"]["batch_size"] for e in gens if e["payload"]["batch"] == bar.batch
            )
            assert len(bar.calls) == size and bar.label == f"generate ×{size}"
            assert 0 <= bar.start <= bar.end
        assert len([i for i in items if i.kind == "reward"]) == len(rewards)
        assert [i.kind for i in items].count("search") == 1
        assert any(i.label == "search.round" for i in items)
        # no two bars of one lane overlap
        for lane in range(len(detail.timeline.lanes)):
            spans_in = sorted(
                (i.start, i.end) for i in items if i.lane == lane and i.kind != "event"
            )
            assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans_in))


def test_events_of_other_controllers_are_ticks_with_their_payload() -> None:
    state = fold(
        [
            ev("task", "t", task_id="x", ts=10.0),
            ev("router.decision", "d", "t", ts=11.0, mode="reasoning", text="y" * 1000),
        ]
    )
    detail = state.task(0, "t")
    assert detail is not None
    [tick] = detail.timeline.items
    assert (tick.kind, tick.label, tick.start) == ("event", "router.decision", 1.0)
    assert tick.detail["payload"]["mode"] == "reasoning"
    assert len(tick.detail["payload"]["text"]) < 400  # trimmed for the page


# ------------------------------------------------------------------------- summaries and diff


def test_a_run_summary_agrees_with_the_recording() -> None:
    events = raw(PF)
    state = load(PF)
    s = state.summary(0, str(PF), PF.name)
    end = next(e["payload"] for e in events if e["type"] == "run.end")
    start = next(e["payload"] for e in events if e["type"] == "run.start")
    outcomes = [e["payload"]["outcome"] for e in events if e["type"] == "task.outcome"]
    assert s.accuracy == pytest.approx(end["accuracy"])
    assert s.usage.completion_tokens == end["usage"]["completion_tokens"]
    assert s.usage.model_calls == end["usage"]["model_calls"]
    assert (s.done, s.planned, s.solved) == (len(outcomes), start["tasks"], 1)
    assert s.controller == start["config"]["controller"] and s.controller_label.startswith("pf ")
    assert s.finished and s.stopped is None and s.suite == "basic_arithmetic"


def test_budget_stops_are_counted_for_the_run_and_its_searches() -> None:
    outcome = {"task_id": "a", "output": "4", "score": 1.0, "info": {"stopped": "token budget"}}
    state = fold(
        [
            ev("run.start", "r", suite={"name": "s"}, tasks=3, config={}),
            ev("task", "t", task_id="a"),
            ev("task.outcome", "o", "t", outcome=outcome),
            ev("run.end", "e", accuracy=1.0, not_run=2, stopped="max_tokens=10 exceeded"),
        ]
    )
    s = state.summary(0, "f", "f")
    assert (s.stopped, s.not_run, s.task_stops, s.planned, s.done) == (
        "max_tokens=10 exceeded",
        2,
        1,
        3,
        1,
    )


def _run(outcomes: dict[str, tuple[str, float]]) -> RunState:
    events = [ev("run.start", "r", suite={"name": "s", "seed": 0}, tasks=len(outcomes), config={})]
    for i, (task_id, (output, score)) in enumerate(outcomes.items()):
        events.append(ev("task", f"t{i}", task_id=task_id))
        out = {"task_id": task_id, "output": output, "score": score}
        events.append(ev("task.outcome", f"o{i}", f"t{i}", outcome=out))
    return fold(events)


def test_diff_lists_the_tasks_where_two_runs_differ() -> None:
    a = _run({"1": ("4", 1.0), "2": ("5", 0.0), "3": ("6", 0.0), "4": ("7", 1.0), "5": ("x", 0.5)})
    b = _run({"1": ("4", 1.0), "2": ("5", 1.0), "3": ("9", 0.0), "4": ("8", 0.0), "6": ("y", 0.0)})
    a.add(ev("task", "t9", task_id="5b"), 99)  # a task with no outcome counts nowhere
    view = diff(a, a.summary(0, "a", "a"), b, b.summary(1, "b", "b"))
    kinds = {r.task_id: r.kind for r in view.rows}
    assert kinds == {
        "2": "only_b_solved",
        "3": "output",
        "4": "only_a_solved",
        "5": "only_a",
        "6": "only_b",
    }
    assert view.same == 1 and view.note is None


def test_diff_of_the_recorded_runs_pairs_tasks_by_id() -> None:
    pf, direct = load(PF), load(DIRECT)
    view = diff(pf, pf.summary(0, "", ""), direct, direct.summary(1, "", ""))
    out_a, out_b = (
        {
            o["task_id"]: o
            for o in (e["payload"]["outcome"] for e in raw(f) if e["type"] == "task.outcome")
        }
        for f in (PF, DIRECT)
    )
    differ = {
        t
        for t in out_a
        if (out_a[t]["output"], out_a[t]["score"]) != (out_b[t]["output"], out_b[t]["score"])
    }
    assert {r.task_id for r in view.rows} == differ and view.same == len(out_a) - len(differ)


def test_curves_are_the_points_of_agentic_plot_budget() -> None:
    files = [PF, DIRECT, EPF, BEAM]
    c = curves({f: i for i, f in enumerate(files)}, "completion_tokens", [])
    want = budget_points(files)
    got = sorted((line.label, p.x, p.accuracy) for line in c.lines for p in line.points)
    assert got == sorted((p.label, p.x, p.accuracy) for p in want)
    assert all(p.run == files.index(Path(p.file)) for line in c.lines for p in line.points)
    assert c.ticks[0] == 0 and c.ticks[-1] <= c.x_max and not c.log_x
    with pytest.raises(ConfigError, match="unknown --x"):
        curves({PF: 0}, "dollars", [])


# ---------------------------------------------------------------------- reading, bad input


def test_a_growing_file_is_read_by_offset_complete_lines_only(tmp_path: Path) -> None:
    lines = PF.read_bytes().splitlines(keepends=True)
    path = tmp_path / "run.jsonl"
    path.write_bytes(lines[0] + lines[1][:20])  # run.start and half of the next line
    rec = Recording(path, 0)
    assert rec.refresh()
    assert rec.state.events == 1 and rec.line == 1 and rec.summary().status == "ok"
    with path.open("ab") as f:
        f.write(lines[1][20:] + b"".join(lines[2:10]))
    assert rec.refresh() and rec.state.events == 10
    assert not rec.refresh()  # nothing new
    # the file replaced by a shorter one (`--overwrite`): read afresh
    path.write_bytes(lines[0])
    assert rec.refresh() and rec.state.events == 1


def test_a_bad_line_in_the_middle_is_named_and_stops_the_reading(tmp_path: Path) -> None:
    lines = PF.read_bytes().splitlines(keepends=True)
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"".join(lines[:3]) + b"{not json\n" + b"".join(lines[3:6]))
    rec = Recording(path, 0)
    rec.refresh()
    s = rec.summary()
    assert s.status == "error" and s.message and f"{path}:4: not a valid event" in s.message


def test_a_known_event_with_a_bad_payload_names_line_and_field() -> None:
    state = RunState("rec.jsonl")
    state.add(ev("task", "t", task_id="x"), 1)
    state.add(ev("search", "s", "t", algorithm="PF"), 2)
    with pytest.raises(TraceFormatError, match=r"rec.jsonl:3: a search.node event .*node"):
        state.add(ev("search.node", "n", "s", parent=0, step="a"), 3)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"hello world\nthis is text\n", "line 1 is not an event"),
        (b'{"name": "a config", "values": [1, 2]}', "line 1 is not an event (type: Field"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a recording"),
        (b"", "no events"),
        (
            b'{"type": "mystery", "ts": 1, "span_id": "a", "payload": {}}\n',
            "no run.start event: not a recording of `agentic run`",
        ),
    ],
)
def test_files_that_are_not_recordings_are_refused(
    content: bytes, needle: str, tmp_path: Path
) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    with pytest.raises((TraceFormatError, ConfigError), match=needle.replace("(", r"\(")):
        Library.open([path], live=False)


def test_a_torn_last_line_is_ignored_and_said_so(tmp_path: Path) -> None:
    data = PF.read_bytes()
    path = tmp_path / "killed.jsonl"
    path.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 30])  # run.end cut off
    [rec] = Library.open([path], live=False).recordings
    s = rec.summary()
    assert s.status == "ok" and s.torn_tail and not s.finished and s.done == 4


def test_a_folder_shows_its_bad_files_beside_the_good_ones(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(DIRECT.read_bytes())
    (tmp_path / "b.jsonl").write_text("garbage\n")
    gen = next(line for line in DIRECT.read_text().splitlines() if "backend.generate" in line)
    (tmp_path / "c.jsonl").write_text(gen + "\n")  # the gateway's plain completion
    lib = Library.open([tmp_path], live=False)
    status = {r.path.name: r.summary().status for r in lib.recordings}
    assert status == {"a.jsonl": "ok", "b.jsonl": "error", "c.jsonl": "plain"}
    with pytest.raises(ConfigError, match="no such file"):
        Library.open([tmp_path / "missing.jsonl"], live=False)


def test_live_waits_for_a_file_a_run_has_not_made_yet(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    lib = Library.open([path], live=True)
    [rec] = lib.recordings
    assert rec.summary().status == "waiting" and "waiting for the file" in str(
        rec.summary().message
    )
    path.write_bytes(DIRECT.read_bytes())
    lib.refresh()
    assert rec.summary().status == "ok" and lib.version == 1
    with pytest.raises(ConfigError, match="no such file"):
        Library.open([tmp_path / "nowhere" / "run.jsonl"], live=True)
