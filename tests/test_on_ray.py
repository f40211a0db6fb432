"""Runs on a real Ray cluster on 127.0.0.1: a head and a second node process, one CPU each,
started and stopped here (`ray start`), with the embedded SmolLM2 loaded in each worker actor.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import REPO, free_port

from agentic.core import ConfigError, Event, Outcome, Tracer
from agentic.runtime.on_ray import RayExecutor
from agentic.runtime.runner import run_suite
from agentic.runtime.suites import load_suite
from agentic.specs.registry import BuildContext

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

RAY = str(Path(sys.executable).with_name("ray"))
AGENTIC = str(Path(sys.executable).with_name("agentic"))
SPEC = {"type": "sc", "n": 2, "max_tokens": 24, "temperature": 0.8, "seed": 0}
# the workers import this checkout, whatever the venv's editable install points at; no token
# auth, which a token file left in ~/.ray by any earlier local Ray would otherwise switch on for
# the head and not for the second node
ENV = {
    **os.environ,
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "PYTHONPATH": str(REPO),
}


def _ray(*args: str) -> None:
    res = subprocess.run([RAY, *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process's driver, as the nodes
    port = free_port()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--include-dashboard=false", *common)  # fmt: skip
    try:
        _ray("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *common)
        yield f"127.0.0.1:{port}"
    finally:
        import ray

        ray.shutdown()  # this process's driver first, so the nodes stop without a complaint
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=ENV, timeout=120)


@pytest.fixture(scope="module")
def suite() -> Any:
    return load_suite("basic_arithmetic", n=6, seed=0)


@pytest.fixture(scope="module")
def local(suite: Any, smollm2: Any) -> list[Outcome]:
    # one task at a time, as each of the two Ray workers gets at concurrency 2: the same batches
    controller = BuildContext(smollm2, suite).build(SPEC)
    return asyncio.run(run_suite(suite, controller, concurrency=1)).outcomes


def _same(a: list[Outcome], b: list[Outcome]) -> None:
    assert [(o.task_id, o.output, o.score) for o in a] == [
        (o.task_id, o.output, o.score) for o in b
    ]
    assert [o.usage.total_tokens for o in a] == [o.usage.total_tokens for o in b]


def test_a_suite_on_two_ray_nodes_equals_the_local_run(
    cluster: str, suite: Any, local: list[Outcome]
) -> None:
    events: list[Event] = []
    executor = RayExecutor(cluster, backend="embedded:smollm2", workers=2)
    nodes: set[str] = set()

    async def go() -> Any:
        with Tracer([events.append]).activate():
            remote = await executor.controller(SPEC, suite)
            nodes.update(i["node"] for i in remote.info)
            await remote.aclose()
            return await run_suite(suite, SPEC, concurrency=2, executor=executor)

    result = asyncio.run(go())
    assert len(nodes) == 2  # one worker on each node
    _same(result.outcomes, local)
    # the workers' events came back into the driver's trace, under each task's span
    spans = {e.span_id: e.payload["task_id"] for e in events if e.type == "task"}
    generated = [e for e in events if e.type == "backend.generate"]
    assert {spans[e.parent_id] for e in generated if e.parent_id in spans} == set(spans.values())
    assert sum(e.type == "task.outcome" for e in events) == len(suite.tasks)


def test_killing_a_worker_reruns_only_its_unfinished_tasks(
    cluster: str, suite: Any, local: list[Outcome]
) -> None:
    executor = RayExecutor(cluster, backend="embedded:smollm2", workers=2)
    events: list[Event] = []
    killed: list[int] = []

    async def go() -> Any:
        remote = await executor.controller(SPEC, suite)

        def kill_once(outcome: Outcome) -> None:
            if not killed:  # the first answer is in, the other worker is mid-task
                busy = max(range(2), key=lambda i: remote.busy[i])
                killed.append(remote.pids[busy])
                os.kill(remote.pids[busy], signal.SIGKILL)

        try:
            with Tracer([events.append]).activate():
                result = await run_suite(suite, remote, concurrency=2, on_outcome=kill_once)
            # the killed worker was restarted: a new process answers for that actor
            now = [(await a.describe.remote())["pid"] for a in remote.actors]
            assert killed[0] not in now and len(now) == 2
            return result
        finally:
            await remote.aclose()

    result = asyncio.run(go())
    assert killed
    # exactly one outcome per task, none failed, the same answers as the local run
    _same(result.outcomes, local)
    assert sum(e.type == "task.outcome" for e in events) == len(suite.tasks)
    assert all(o.error is None for o in result.outcomes)


def test_the_cli_records_a_ray_run_that_replays_and_resumes(cluster: str, tmp_path: Path) -> None:
    rec = tmp_path / "run.jsonl"
    args = ["run", "--n", "4", "--max-tokens", "24", "--ray", cluster, "--concurrency", "2"]
    res = subprocess.run(
        [AGENTIC, *args, "--record", str(rec)], capture_output=True, text=True, env=ENV, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    replay = subprocess.run(
        [AGENTIC, "replay", str(rec)], capture_output=True, text=True, env=ENV, timeout=300
    )
    assert replay.returncode == 0 and "identical" in replay.stdout, replay.stdout + replay.stderr
    # a driver killed mid-run resumes on Ray and solves only the tasks it had not finished
    killed = tmp_path / "killed.jsonl"
    driver = subprocess.Popen(
        [AGENTIC, *args, "--record", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    deadline = time.monotonic() + 300
    while '"task.outcome"' not in (killed.read_text() if killed.exists() else ""):
        assert driver.poll() is None and time.monotonic() < deadline, "no task finished"
        time.sleep(0.1)
    driver.kill()
    driver.wait()
    before = killed.read_text().count('"task.outcome"')
    assert before < 4, "the driver finished before it was killed"
    res = subprocess.run(
        [AGENTIC, *args, "--resume", str(killed)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    events = [json.loads(ln) for ln in killed.read_text().splitlines()]
    solved = [e["payload"]["outcome"]["task_id"] for e in events if e["type"] == "task.outcome"]
    assert len(solved) == len(set(solved)) == 4  # each task once: none lost, none solved twice
    assert sum(e["type"] == "run.resume" for e in events) == 1


def test_bad_ray_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'not an address' is not HOST:PORT"):
        RayExecutor("not an address", backend="embedded:smollm2")
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        RayExecutor("local", backend="embedded:smollm2", workers=0)
    port = free_port()  # nothing listens there
    res = subprocess.run(
        [AGENTIC, "run", "--n", "1", "--ray", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], res.stderr[-2000:]
