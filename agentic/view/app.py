"""The viewer's web app (FastAPI): the page and its assets from `static/`, and a small JSON API
the page polls.

GET /api/state?since=V      the runs (summaries and problems); `changed: false` while the
                            version is still V, so a poll each second costs a few bytes
GET /api/runs/{id}          a run: summary and tasks
GET /api/runs/{id}/tasks/{key}   a task: timeline and search trees (key: the task span id)
GET /api/diff?a=ID&b=ID     the tasks where two runs differ
GET /api/curves?x=NAME      accuracy against cost, one point per run (as `agentic plot budget`)

Served on 127.0.0.1 only; the Host check refuses a page on another site that rebinds its own
name to 127.0.0.1 to read the recordings (which hold every prompt).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.middleware.trustedhost import TrustedHostMiddleware

from agentic.core import AgenticError
from agentic.view.curves import Curves, curves
from agentic.view.follow import Library, Recording
from agentic.view.model import DiffView, RunDetail, RunSummary, TaskDetail, diff

STATIC = Path(__file__).with_name("static")


class State(BaseModel):
    version: int
    live: bool
    changed: bool
    runs: list[RunSummary]


def create_app(library: Library) -> FastAPI:
    app = FastAPI(title="agentic view", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def run_of(rid: int) -> Recording:
        rec = library.get(rid)
        if rec is None:
            raise HTTPException(404, f"no run {rid}")
        return rec

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    # plain `def` endpoints: FastAPI runs them in its thread pool, where reading files and the
    # library's lock do not hold up the event loop
    @app.get("/api/state")
    def state(since: int = -1) -> State:
        library.refresh()
        with library.lock:
            if since == library.version:
                return State(version=since, live=library.live, changed=False, runs=[])
            return State(
                version=library.version,
                live=library.live,
                changed=True,
                runs=[r.summary() for r in library.recordings],
            )

    @app.get("/api/runs/{rid}")
    def run(rid: int) -> RunDetail:
        with library.lock:
            rec = run_of(rid)
            return rec.state.detail(rec.summary())

    @app.get("/api/runs/{rid}/tasks/{key}")
    def task(rid: int, key: str) -> TaskDetail:
        with library.lock:
            found = run_of(rid).state.task(rid, key)
        if found is None:
            raise HTTPException(404, f"run {rid} has no task {key}")
        return found

    @app.get("/api/diff")
    def compare(a: int, b: int) -> DiffView:
        with library.lock:
            ra, rb = run_of(a), run_of(b)
            return diff(ra.state, ra.summary(), rb.state, rb.summary())

    @app.get("/api/curves")
    def curves_of(x: str = "completion_tokens") -> Curves:
        with library.lock:
            runs: dict[Path, int] = {}
            skipped: list[str] = []
            for r in library.recordings:
                s = r.summary()
                if s.status != "ok":
                    continue
                if s.runs_in_file > 1:
                    skipped.append(f"{s.name}: holds {s.runs_in_file} runs")
                elif not s.done:
                    skipped.append(f"{s.name}: no task finished yet")
                else:
                    runs[r.path] = r.id
        try:
            # outside the lock: budget_points reads the files again, which may take a while
            return curves(runs, x, skipped)
        except AgenticError as e:  # an unknown x, or a file that went bad since the poll
            raise HTTPException(400, str(e)) from None

    return app
