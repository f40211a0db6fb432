"""`agentic view` as a user runs it: a real subprocess serving 127.0.0.1, driven by a real
headless Chromium (Debian's /usr/bin/chromium, through playwright), on recordings of real runs of
the embedded model (tests/data/view, see its README).

The page is checked against the recordings themselves: the step text and score of a clicked tree
node, the tasks where two runs differ, a point per run on the curves. Live mode is checked by
appending to a recording and to a folder while the page is open, without reloading it. Bad input
gets one line and exit 2 from the command, or a message on the page. Screenshots are kept under
test-artifacts/viewer/ (docs/img/ holds copies). The browser tests fail, not skip, without
Chromium: `make test` installs it.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data" / "view"
PF, DIRECT, EPF, BEAM = (DATA / f"{n}_run.jsonl" for n in ("pf", "direct", "epf", "beam"))
ARTIFACTS = REPO / "test-artifacts" / "viewer"
AGENTIC = str(Path(sys.executable).with_name("agentic"))
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# one browser for the module's tests, so they share an xdist worker
browser_group = pytest.mark.xdist_group("viewer")


def raw(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def agentic(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [AGENTIC, *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


@contextmanager
def viewer(*args: str | Path) -> Iterator[str]:
    """`agentic view ARGS --port 0` running; yields its URL (the line it prints)."""
    proc = subprocess.Popen(
        [AGENTIC, "view", *map(str, args), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 30)
        line = proc.stderr.readline() if ready else ""
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"agentic view printed no URL: {line!r} (exit {proc.poll()})"
        yield found.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def get(url: str, host: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


# ---------------------------------------------------------------------- the command, no browser


BAD = {
    "notes.txt": b"some notes\nnot a recording at all\n",
    "config.json": b'{"model": "smollm2", "layers": [1, 2, 3]}\n',
    "empty.jsonl": b"",
    "unknown.jsonl": b'{"type": "mystery.event", "ts": 1.0, "span_id": "a", "payload": {}}\n',
}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["notes.txt"], "notes.txt: not a recording of agentic events: line 1 is not an event"),
        (["config.json"], "config.json: not a recording of agentic events"),
        (["missing.jsonl"], "missing.jsonl: no such file or directory"),
        (["torn.jsonl"], "torn.jsonl:5: not a valid event"),
        (["empty.jsonl"], "empty.jsonl"),
        (["unknown.jsonl"], "unknown.jsonl has no run.start event: not a recording of"),
        (["--live", "unknown.jsonl"], "unknown.jsonl has no run.start event"),
        (["emptydir"], "emptydir holds no .jsonl recordings"),
        ([str(PF), "--port", "70000"], "--port must be 0-65535"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    for name, data in BAD.items():
        (tmp_path / name).write_bytes(data)
    lines = PF.read_bytes().splitlines(keepends=True)
    # a line torn in the middle of the file: a damaged recording, not a killed run
    (tmp_path / "torn.jsonl").write_bytes(b"".join(lines[:4]) + lines[4][:40] + b"\n" + lines[5])
    (tmp_path / "emptydir").mkdir()
    res = agentic("view", *args, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


def test_without_the_server_extra_it_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None; "
        f"sys.argv = ['agentic', 'view', {str(PF)!r}]; "
        "from agentic.cli import main; main()"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "needs the server extra (uvicorn is missing): pip install 'agentic[server]'" in (
        res.stderr
    )


def test_a_killed_runs_recording_is_served_and_only_127_0_0_1_is_answered(tmp_path: Path) -> None:
    data = PF.read_bytes()
    killed = tmp_path / "killed.jsonl"
    killed.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 25])  # run.end cut off
    with viewer(killed) as url:
        status, state = get(url + "api/state")
        assert status == 200
        [run] = state["runs"]
        assert run["status"] == "ok" and run["torn_tail"] and not run["finished"]
        # a page elsewhere that rebinds its name to 127.0.0.1 is refused (DNS rebinding)
        assert get(url + "api/state", host="attacker.example")[0] == 400
        assert get(url + "api/runs/7")[0] == 404
        assert get(url + "api/curves?x=dollars")[0] == 400


# ------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs it "
            "(apt-get install -y --no-install-recommends chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that may load nothing but 127.0.0.1 (no CDN, no network) and must raise
    no script error."""
    ctx = browser.new_context(viewport={"width": 1360, "height": 900})
    outside: list[str] = []
    errors: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_local)
    pg = ctx.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(15_000)
    yield pg
    ctx.close()
    assert not outside, f"the page fetched from outside 127.0.0.1: {outside}"
    assert not errors, errors


@pytest.fixture(scope="module")
def recorded() -> Iterator[str]:
    with viewer(PF, DIRECT, EPF, BEAM) as url:
        yield url


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _tree_of(path: Path, task_id: str) -> dict[str, Any]:
    """The nodes, rounds and chosen node of `task_id`'s search, from the recording's lines."""
    events = raw(path)
    task = next(e for e in events if e["type"] == "task" and e["payload"]["task_id"] == task_id)
    search = next(e for e in events if e["type"] == "search" and e["parent_id"] == task["span_id"])
    of = [e for e in events if e["parent_id"] == search["span_id"]]
    nodes = {e["payload"]["node"]: e["payload"] for e in of if e["type"] == "search.node"}
    for e in of:
        if e["type"] == "search.score":
            nodes[e["payload"]["node"]]["score"] = e["payload"]["score"]
    result = next(
        e for e in events if e["type"] == "search.result" and e["parent_id"] == task["span_id"]
    )
    gens = [e for e in of if e["type"] == "backend.generate"]
    return {
        "nodes": nodes,
        "rounds": [e["payload"] for e in of if e["type"] == "search.round"],
        "chosen": result["payload"]["chosen"],
        "batches": len({e["payload"]["batch"] for e in gens}),
    }


@browser_group
def test_a_particle_filter_run_its_task_timeline_and_tree(page: Any, recorded: str) -> None:
    end = next(e["payload"] for e in raw(PF) if e["type"] == "run.end")
    page.goto(recorded)
    page.wait_for_selector("tr.task")
    assert page.inner_text("#tab-run .accuracy") == f"{end['accuracy']:.1%}"
    assert page.locator("#tasks tr.task").count() == 4
    assert page.locator("#run-list li.run").count() == 4
    shot(page, "run")

    task_id = "basic_arithmetic/0/3"  # the task whose particles were resampled most
    truth = _tree_of(PF, task_id)
    page.click(f'tr.task[data-task="{task_id}"]')
    page.wait_for_selector("#tree g.node")
    assert page.locator("#tree g.node").count() == len(truth["nodes"]) + 1  # and the root
    assert page.locator("#timeline g.kind-generate").count() == truth["batches"]
    copies: dict[int, int] = {}
    for r in truth["rounds"]:
        for n in set(r["particles"]):
            copies[n] = max(copies.get(n, 0), r["particles"].count(n))
    resampled = sorted(n for n, c in copies.items() if c > 1)
    assert resampled
    marked = page.locator("#tree g.node.resampled").evaluate_all(
        "gs => gs.map(g => Number(g.dataset.node))"
    )
    assert sorted(marked) == resampled
    assert page.locator("#tree g.node.pruned").count() > 0

    # a click on a node shows its step and score, exactly as recorded
    for node in (truth["chosen"], resampled[0]):
        page.click(f'#tree g.node[data-node="{node}"]')
        page.wait_for_selector(f'#node-detail h4:text-is("node #{node}")')
        assert page.inner_text("#node-detail pre.step") == truth["nodes"][node]["step"].strip()
        want = truth["nodes"][node]["score"]
        assert page.inner_text("#node-detail .score") == f"{want:.4f}"
        assert float(page.get_attribute("#node-detail .score", "data-score")) == want
    assert "resampled ×" in page.inner_text("#node-detail .marks")
    page.click(f'#tree g.node[data-node="{truth["chosen"]}"]')
    assert "the chosen answer" in page.inner_text("#node-detail .marks")
    shot(page, "task")
    # the node's batch is lit on the timeline; a click on a bar lists its requests
    assert page.locator("#timeline g.item.linked").count() == 1
    page.click("#timeline g.kind-generate >> nth=0")
    assert "request 1:" in page.inner_text("#call-detail")
    shot(page, "timeline")


@browser_group
def test_two_runs_side_by_side_list_the_tasks_that_differ(page: Any, recorded: str) -> None:
    def outcomes(path: Path) -> dict[str, tuple[str, float]]:
        return {
            o["task_id"]: (o["output"], o["score"])
            for o in (e["payload"]["outcome"] for e in raw(path) if e["type"] == "task.outcome")
        }

    a, b = outcomes(PF), outcomes(DIRECT)
    differ = sorted(t for t in a if a[t] != b[t])
    page.goto(recorded)
    page.wait_for_selector("tr.task")
    page.click('#tabs button[data-tab="compare"]')
    page.wait_for_selector("#diff")
    listed = page.locator("#diff tr.diff").evaluate_all("rs => rs.map(r => r.dataset.task)")
    assert sorted(listed) == differ and differ
    assert f"{len(a) - len(differ)} the same" in page.inner_text("#compare-body h3")
    shot(page, "compare")
    # a task of run B opens from the table
    page.click(f'#diff tr.diff[data-task="{differ[0]}"] td.clickable >> nth=1')
    page.wait_for_selector("#task-title")
    assert differ[0] in page.inner_text("#task-title")
    assert "direct_run.jsonl" in page.inner_text("#task-title")


@browser_group
def test_the_curves_panel_puts_each_run_on_accuracy_against_cost(page: Any, recorded: str) -> None:
    page.goto(recorded)
    page.wait_for_selector("tr.task")
    page.click('#tabs button[data-tab="curves"]')
    page.wait_for_selector("#curves circle.point")
    assert page.locator("#curves circle.point").count() == 4
    assert page.locator("#curves polyline.curve").count() == 4  # one line per controller
    assert "generated (completion) tokens per task" in page.inner_text("#curves")
    shot(page, "curves")
    page.select_option("#curve-x", "seconds")
    page.wait_for_selector('#curves text:has-text("seconds per task")')


@browser_group
def test_live_follows_a_growing_recording_without_reload(page: Any, tmp_path: Path) -> None:
    lines = PF.read_bytes().splitlines(keepends=True)
    path = tmp_path / "run.jsonl"
    half = len(lines) // 2
    path.write_bytes(b"".join(lines[:half]))
    task_id = "basic_arithmetic/0/3"
    final = len(_tree_of(PF, task_id)["nodes"]) + 1
    with viewer("--live", path) as url:
        page.goto(url)
        page.wait_for_selector("#live-badge:not([hidden])")
        page.wait_for_selector("#run-list .badge.running")
        page.click(f'tr.task[data-task="{task_id}"]')
        page.wait_for_selector("#tree g.node")
        before = page.locator("#tree g.node").count()
        assert before < final
        page.evaluate("window.keptAcrossUpdates = 42")
        # the rest arrives in two writes, the first ending mid-line
        rest = b"".join(lines[half:])
        with path.open("ab") as f:
            f.write(rest[:-100])
        with path.open("ab") as f:
            f.write(rest[-100:])
        page.wait_for_function(f"document.querySelectorAll('#tree g.node').length === {final}")
        page.wait_for_selector("#run-list .badge.finished")
        assert page.evaluate("window.keptAcrossUpdates") == 42  # no reload
        shot(page, "live")
        # the recording turns bad: the page says where
        with path.open("ab") as f:
            f.write(b"{this is not an event\n")
        page.wait_for_selector(".problem")
        assert f"{path}:{len(lines) + 1}: not a valid event" in page.inner_text("#problems")


@browser_group
def test_live_follows_a_folder_of_gateway_recordings(page: Any, tmp_path: Path) -> None:
    with viewer("--live", tmp_path) as url:
        page.goto(url)
        page.wait_for_selector('.problem:has-text("waiting for recordings")')
        (tmp_path / "req-1.jsonl").write_bytes(DIRECT.read_bytes())
        page.wait_for_selector('#run-list li.run.status-ok:has-text("req-1.jsonl")')
        page.wait_for_selector("tr.task")  # the first run opens by itself
        gen = next(line for line in DIRECT.read_text().splitlines() if "backend.generate" in line)
        (tmp_path / "req-2.jsonl").write_text(gen + "\n")  # a plain completion: no controller
        (tmp_path / "req-3.jsonl").write_text("<html>not a recording</html>\n")
        page.wait_for_selector('#run-list li.run.status-plain:has-text("req-2.jsonl")')
        page.wait_for_selector('.problem:has-text("req-3.jsonl: not a recording")')
        assert page.locator("#run-list li.run").count() == 3


@pytest.mark.slow  # loads the embedded model and the value model: about half a minute
@browser_group
def test_live_follows_a_real_run_from_before_its_file_exists(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with viewer("--live", path) as url:
        page.goto(url)
        page.wait_for_selector('#run-list li.run.status-waiting:has-text("waiting for the file")')
        page.evaluate("window.keptAcrossUpdates = 7")
        args = "--suite basic_arithmetic --n 2 --controller pf --samples 3 --tokens-per-step 8"
        run = subprocess.Popen(
            [AGENTIC, "run", *args.split(), "--record", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        try:
            page.wait_for_selector("#tasks tr.task", timeout=240_000)
            assert run.wait(300) == 0
        finally:
            if run.poll() is None:
                run.kill()
        page.wait_for_selector("#run-list .badge.finished")
        outcomes = [e["payload"]["outcome"] for e in raw(path) if e["type"] == "task.outcome"]
        rows = page.locator("#tasks tr.task").evaluate_all("rs => rs.map(r => r.dataset.task)")
        assert sorted(rows) == sorted(o["task_id"] for o in outcomes) and len(rows) == 2
        assert page.evaluate("window.keptAcrossUpdates") == 7  # no reload
