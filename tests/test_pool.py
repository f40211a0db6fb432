"""The replica pool (`backends/pool.py`): routing, affinity, bounded load and failover.

The mechanics run on test doubles (`FunctionBackend` replicas that record what they were sent);
the evidence runs on two real llama.cpp servers on 127.0.0.1, one of them killed mid-run.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from agentic.core import (
    BackendUnavailable,
    ConfigError,
    Event,
    GenerateRequest,
    Message,
    RequestRejected,
    SamplingParams,
    Tracer,
    affinity,
)
from backends import load_backend
from backends.pool import ReplicaPool, request_key
from backends.testing import FunctionBackend


def _ask(question: str, n: int = 1) -> GenerateRequest:
    return GenerateRequest(
        messages=(Message(role="user", content=question),), params=SamplingParams(n=n)
    )


def _replicas(k: int, fail: set[int] = frozenset()) -> list[FunctionBackend]:  # type: ignore[assignment]
    def answer(i: int) -> Any:
        def fn(request: GenerateRequest) -> str:
            if i in fail:
                raise BackendUnavailable(f"replica{i}: connection refused")
            return f"r{i}"

        return fn

    return [FunctionBackend(answer(i), name=f"replica{i}") for i in range(k)]


async def test_calls_of_one_task_share_a_replica_and_tasks_spread() -> None:
    pool = ReplicaPool(_replicas(4), load_slack=100.0)  # pure affinity: no load bound
    homes: dict[str, set[str]] = collections.defaultdict(set)
    for t in range(400):
        with affinity(f"task-{t}"):
            for q in range(2):  # different prompts, same task
                [[g]] = await pool.generate([_ask(f"step {q} of task {t}")])
                homes[f"task-{t}"].add(g.text)
    assert all(len(h) == 1 for h in homes.values())
    spread = collections.Counter(next(iter(h)) for h in homes.values())
    assert len(spread) == 4 and min(spread.values()) >= 60  # 400 tasks, 100 expected each
    # the same key finds the same home in a fresh pool (rendezvous hashing has no state)
    again = ReplicaPool(_replicas(4), load_slack=100.0)
    with affinity("task-7"):
        [[g]] = await again.generate([_ask("anything")])
    assert {g.text} == homes["task-7"]
    await pool.aclose()
    await again.aclose()


async def test_without_a_task_the_prompt_is_the_key() -> None:
    pool = ReplicaPool(_replicas(3), load_slack=100.0)
    texts = {(await pool.generate([_ask("same question")]))[0][0].text for _ in range(5)}
    assert len(texts) == 1
    assert request_key(_ask("a")) != request_key(_ask("b"))
    await pool.aclose()


async def test_bounded_load_moves_a_hot_task_off_its_busy_home() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    def replica(i: int) -> FunctionBackend:
        async def fn(request: GenerateRequest) -> str:
            seen.append(f"r{i}")
            await release.wait()
            return f"r{i}"

        return FunctionBackend(fn, name=f"replica{i}")

    pool = ReplicaPool([replica(i) for i in range(2)], load_slack=0.0)
    with affinity("hot"):
        calls = [asyncio.ensure_future(pool.generate([_ask("q")])) for _ in range(6)]
        await asyncio.sleep(0.05)
    # cap = ceil(m / 2): the home takes its share, the rest goes to the other replica
    assert collections.Counter(seen) == {"r0": 3, "r1": 3}
    release.set()
    await asyncio.gather(*calls)
    # least-loaded without affinity: concurrent calls alternate
    pool.affinity = False
    seen.clear()
    release.clear()
    calls = [asyncio.ensure_future(pool.generate([_ask(f"q{i}")])) for i in range(4)]
    await asyncio.sleep(0.05)
    assert collections.Counter(seen) == {"r0": 2, "r1": 2}
    release.set()
    await asyncio.gather(*calls)
    await pool.aclose()


async def test_a_dead_replica_fails_over_once_and_is_charged_once() -> None:
    reps = _replicas(3, fail={0, 1})
    pool = ReplicaPool(reps, load_slack=100.0)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        for t in range(12):
            with affinity(f"t{t}"):
                [[g]] = await pool.generate([_ask("q")])
                assert g.text == "r2"
    failed = [e.payload["replica"] for e in events if e.type == "pool.failover"]
    # each dead replica failed once, then was marked down and skipped
    assert sorted(failed) == ["replica0", "replica1"]
    # one backend.generate per call: the pool charged it, the replicas did not charge again
    assert len([e for e in events if e.type == "backend.generate"]) == 12
    assert [s["up"] for s in pool.stats()] == [False, False, True]
    everyone = ReplicaPool(_replicas(2, fail={0, 1}))
    with pytest.raises(BackendUnavailable, match="every replica failed the call") as e:
        await everyone.generate([_ask("q")])
    assert "replica0: connection refused" in str(e.value)
    assert "replica1: connection refused" in str(e.value)
    await pool.aclose()


async def test_the_health_check_takes_a_replica_out_and_brings_it_back() -> None:
    answering = {"replica0": True, "replica1": True}

    class Pingable(FunctionBackend):
        async def ping(self) -> bool:
            return answering[self.name]

    reps = [Pingable(lambda r, i=i: f"r{i}", name=f"replica{i}") for i in range(2)]
    pool = ReplicaPool(reps, health_interval=0.05)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        await pool.generate([_ask("q")])  # starts the health loop on this event loop
        answering["replica1"] = False
        await asyncio.sleep(0.2)
        assert [s["up"] for s in pool.stats()] == [True, False]
        texts = {(await pool.generate([_ask(f"q{i}")]))[0][0].text for i in range(8)}
        assert texts == {"r0"}  # nothing is sent to the replica that does not answer
        answering["replica1"] = True
        await asyncio.sleep(0.2)
        assert [s["up"] for s in pool.stats()] == [True, True]
    changes = [(e.payload["replica"], e.payload["up"]) for e in events if e.type == "pool.health"]
    assert changes == [("replica1", False), ("replica1", True)]
    await pool.aclose()


async def test_a_refused_request_is_not_retried_elsewhere() -> None:
    def refuse(request: GenerateRequest) -> str:
        raise RequestRejected("HTTP 400: bad request")

    reps = [FunctionBackend(refuse, name=f"replica{i}") for i in range(2)]
    pool = ReplicaPool(reps)
    with pytest.raises(RequestRejected):
        await pool.generate([_ask("q")])
    assert sum(len(r.requests) for r in reps) == 1
    await pool.aclose()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pool:", "pool:"),
        ("pool:openai:#m", "names no replica"),
        ("pool:nonsense", "is not pool:SCHEME"),
        ("pool:missing.yaml", "pool file not found: missing.yaml"),
        ("pool:openai:http://a/v1,http://a/v1#m", "twice"),
        ("pool:pool:openai:http://a/v1#m", "cannot be a pool"),
    ],
)
def test_bad_pool_uris_are_one_line_errors(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        load_backend(uri)
    assert "\n" not in str(e.value)


def test_a_pool_file_names_its_fields(tmp_path: Path) -> None:
    bad = tmp_path / "pool.yaml"
    bad.write_text("replicas: [openai:http://127.0.0.1:9/v1#m]\nweights: [1]\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['weights'\]"):
        load_backend(f"pool:{bad}")
    bad.write_text("- just a list\n")
    with pytest.raises(ConfigError, match=r"needs `replicas: \[URI, \.\.\.\]`"):
        load_backend(f"pool:{bad}")


# ---- two real llama.cpp servers ------------------------------------------------------------


@pytest.mark.slow
def test_two_llamacpp_replicas_keep_tasks_home_and_survive_a_kill(tmp_path: Path) -> None:
    from servers import start_llamacpp

    from agentic.runtime.runner import run_suite
    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext

    spec = {"type": "sc", "n": 3, "max_tokens": 24, "temperature": 0.8, "seed": 0}
    suite = load_suite("basic_arithmetic", n=8, seed=0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = start_llamacpp(tmp_path / "a")
    b = start_llamacpp(tmp_path / "b")
    try:

        async def run(uri: str, kill: Any = None) -> tuple[Any, list[Event], Any]:
            backend = load_backend(uri, **({"health_interval": 0.5} if "pool:" in uri else {}))
            controller = BuildContext(backend, suite).build(spec)
            events: list[Event] = []
            with Tracer([events.append]).activate():
                job = asyncio.ensure_future(run_suite(suite, controller, concurrency=4))
                if kill is not None:
                    await kill(backend)
                result = await job
            await backend.aclose()
            return result, events, backend

        pool_uri = f"pool:openai:{a.url},{b.url}#smollm2"
        alone, _, _ = asyncio.run(run(a.uri))
        pooled, events, pool = asyncio.run(run(pool_uri))
        # the same seeds give the same answers whichever replica served them
        assert [o.output for o in pooled.outcomes] == [o.output for o in alone.outcomes]
        homes = collections.defaultdict(set)
        for e in events:
            if e.type == "pool.route":
                homes[e.payload["task"]].add(e.payload["replica"])
        assert set(homes) == {t.id for t in suite.tasks}
        assert all(len(h) == 1 for h in homes.values())  # every call of a task on its home
        assert {next(iter(h)) for h in homes.values()} == {r["name"] for r in pool.stats()}

        async def kill_b_mid_call(pool: Any) -> None:
            b_replica = next(r for r in pool.replicas if b.url in r.name)
            for _ in range(6000):  # polled: nothing signals "a call is in flight on b"
                if b_replica.in_flight and b_replica.calls >= 2:
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("replica b never had a second call in flight")
            b.proc.kill()

        survived, events, pool = asyncio.run(run(pool_uri, kill_b_mid_call))
        assert [o.task_id for o in survived.outcomes] == [t.id for t in suite.tasks]
        assert all(o.error is None for o in survived.outcomes)
        assert [o.output for o in survived.outcomes] == [o.output for o in alone.outcomes]
        failed = [e for e in events if e.type == "pool.failover"]
        assert failed and all(b.url in e.payload["replica"] for e in failed)
        assert [r["up"] for r in pool.stats() if b.url in r["name"]] == [False]
    finally:
        a.stop()
        b.stop()
