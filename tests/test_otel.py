"""OpenTelemetry export (`agentic.core.otel`): the span tree, timing and attributes on the SDK's
in-memory exporter, then real runs exported to Arize Phoenix (venv `.venv-phoenix`,
`make phoenix-env`) and read back through Phoenix's own REST API: `agentic run --otel` on the
embedded SmolLM2, and `agentic serve --otel` with a backend whose URI carries a key."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import REPO, free_port, start_gateway, stub_server

import agentic
from agentic.core import (
    Budget,
    ConfigError,
    Event,
    OTelSink,
    Task,
    TaskSuite,
    Tracer,
    read_events,
    span,
)
from agentic.core.otel import otel_endpoint, traces_url
from agentic.runtime.runner import run_suite
from agentic.server.config import GatewayConfig
from agentic.server.service import open_otel
from backends.testing import ScriptedBackend
from controllers import Direct
from search.base import StepGenerator
from search.particle_filter import ParticleFilter
from search.testing import ScriptedReward

PHOENIX = REPO / ".venv-phoenix" / "bin" / "phoenix"
SECRET = "SECRET-7f3a"
TOKENS = ("prompt_tokens", "completion_tokens")


# ---- helpers ----------------------------------------------------------------------------------


def memory_sink(**kwargs: Any) -> tuple[OTelSink, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return OTelSink(exporter=exporter, **kwargs), exporter


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(spans: list[ReadableSpan], s: ReadableSpan) -> ReadableSpan | None:
    if s.parent is None:
        return None
    return next(p for p in spans if p.context.span_id == s.parent.span_id)


def generate_event(ts: float, seconds: float, **request: Any) -> Event:
    request = {"messages": [{"role": "user", "content": "What is 2+2?"}], **request}
    request.setdefault("params", {"max_tokens": 8, "temperature": 0.7, "top_p": 0.9, "n": 2})
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "seconds": seconds, "cost_usd": 0.01}
    return Event(
        type="backend.generate",
        ts=ts,
        payload={
            "backend": "embedded:smollm2",
            "batch": "b1",
            "batch_size": 1,
            "key": "k1",
            "request": request,
            "results": [
                {"text": "4", "finish_reason": "stop", "usage": usage},
                {"text": "four", "finish_reason": "length", "usage": usage},
            ],
        },
    )


class Sums(TaskSuite):
    name = "sums"

    def __init__(self) -> None:
        self._tasks = [Task(id=f"t{i}", input=f"{i} + 1?", answer=str(i + 1)) for i in range(2)]

    @property
    def tasks(self) -> list[Task]:
        return self._tasks

    async def check(self, task: Task, output: str) -> float:
        return float(output.strip() == task.answer)


def tiny_pf() -> ParticleFilter:
    backend = ScriptedBackend(lambda prefix, j: ("step\n\n", prefix.count("step") >= 1))
    return ParticleFilter(
        StepGenerator(backend, max_steps=2), ScriptedReward(lambda t: 0.5), n=2, seed=0
    )


# ---- unit: the span tree, timing, attributes ---------------------------------------------------


async def test_a_run_is_one_trace_run_task_search_reward_and_model_calls() -> None:
    sink, exporter = memory_sink()
    events: list[Event] = []
    with Tracer([events.append, sink]).activate():
        result = await run_suite(Sums(), tiny_pf(), budget=Budget(max_tokens=100_000))
    sink.close()
    spans = list(exporter.get_finished_spans())

    [run] = by_name(spans, "run")
    assert run.parent is None and run.attributes["agentic.suite.name"] == "sums"
    assert run.attributes["agentic.usage.prompt_tokens"] == result.usage.prompt_tokens
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}
    tasks = by_name(spans, "task")
    assert len(tasks) == 2 and all(parent_of(spans, t) is run for t in tasks)
    searches = by_name(spans, "search")
    assert {parent_of(spans, s).name for s in searches} == {"task"}  # type: ignore[union-attr]
    rewards = by_name(spans, "reward")
    assert rewards and {parent_of(spans, r).name for r in rewards} == {"search"}  # type: ignore[union-attr]
    # reward.result is folded into its reward span; a budget with a token limit shows what is left
    for r in rewards:
        assert r.attributes["agentic.result.scores"] == (0.5,) * r.attributes["agentic.items"]
        assert r.attributes["openinference.span.kind"] == "EVALUATOR"
        assert 0 <= r.attributes["agentic.budget.remaining.tokens"] <= 100_000
        assert "agentic.budget.spent.tokens" in r.attributes
    calls = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    assert len(calls) == sum(e.type == "backend.generate" for e in events)
    assert {parent_of(spans, c).name for c in calls} == {"search"}  # type: ignore[union-attr]
    assert (
        sum(c.attributes["gen_ai.usage.input_tokens"] for c in calls) == result.usage.prompt_tokens
    )
    assert (
        sum(c.attributes["gen_ai.usage.output_tokens"] for c in calls)
        == result.usage.completion_tokens
    )
    # a search's nodes and scores are events on its span, not spans
    assert not by_name(spans, "search.node") and not by_name(spans, "reward.result")
    node_events = [e for s in searches for e in s.events if e.name == "search.node"]
    assert len(node_events) == sum(e.type == "search.node" for e in events)
    # decisions are short child spans; each span lies within its parent
    assert by_name(spans, "search.round") and by_name(spans, "task.outcome")
    for s in spans:
        p = parent_of(spans, s)
        if p is not None and not s.attributes.get("gen_ai.operation.name"):
            assert p.start_time <= s.start_time <= s.end_time <= p.end_time, s.name
    # every span names the event it came from, to find it in a recording
    recorded = {e.span_id for e in events}
    assert {s.attributes["agentic.span_id"] for s in spans} <= recorded


def test_a_model_call_span_starts_usage_seconds_before_its_event() -> None:
    sink, exporter = memory_sink()
    sink(generate_event(ts=1_000.0, seconds=2.5))
    sink(generate_event(ts=2_000.0, seconds=1.0, prompt="2+2=", messages=None))
    sink(
        Event(
            type="backend.score",
            ts=3_000.0,
            payload={
                "backend": "openai:http://127.0.0.1:8000/v1#judge",
                "request": {"prompt": "Is it right?", "continuation": " Yes"},
                "results": [{"usage": {"prompt_tokens": 4, "seconds": 0.5}}],
            },
        )
    )
    sink.close()
    chat, completion, score = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)

    assert chat.start_time == pytest.approx(997.5e9, abs=1e3) and chat.end_time == 1_000 * 10**9
    assert chat.name == "chat smollm2"
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "embedded",
        "gen_ai.system": "embedded",
        "gen_ai.request.model": "smollm2",
        "gen_ai.request.max_tokens": 8,
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.choice.count": 2,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 6,
        "gen_ai.response.finish_reasons": ("stop", "length"),
        "agentic.usage.cost_usd": 0.02,
    }.items() <= dict(chat.attributes).items()
    assert chat.kind.name == "INTERNAL"  # an in-process model
    assert completion.name == "text_completion smollm2"
    assert score.name == "score judge" and score.kind.name == "CLIENT"
    assert score.attributes["gen_ai.provider.name"] == "openai"
    assert score.start_time == pytest.approx(2_999.5e9, abs=1e3)
    # no text by default
    for s in (chat, completion, score):
        assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for k in s.attributes)


def test_text_is_exported_only_when_asked() -> None:
    def spans_of(capture: bool) -> list[ReadableSpan]:
        sink, exporter = memory_sink(capture_text=capture)
        sink(generate_event(ts=10.0, seconds=1.0))
        sink(Event(type="search.result", ts=11.0, payload={"answer": "forty-two", "score": 1.0}))
        sink.close()
        return list(exporter.get_finished_spans())

    hidden, shown = spans_of(False), spans_of(True)
    for text in ("What is 2+2?", "forty-two", "four"):
        assert text not in "".join(s.to_json() for s in hidden)
        assert text in "".join(s.to_json() for s in shown)
    assert by_name(hidden, "search.result")[0].attributes["agentic.score"] == 1.0
    [chat] = by_name(shown, "chat smollm2")
    assert json.loads(chat.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}
    ]
    assert json.loads(chat.attributes["gen_ai.output.messages"])[1] == {
        "role": "assistant",
        "parts": [{"type": "text", "content": "four"}],
        "finish_reason": "length",
    }


def test_end_span_ends_a_span_and_its_open_children_at_the_right_time() -> None:
    sink, exporter = memory_sink()
    with Tracer([sink]).activate():
        with span("plugin.phase", step=1):  # a type the sink knows nothing about
            agentic.emit("plugin.choice", option="b")
            with span("plugin.inner"):
                time.sleep(0.01)
            sink.flush()
            opened = {s.name for s in exporter.get_finished_spans()}
            assert opened == {"plugin.inner"}  # the outer span and its decision are still open
            time.sleep(0.01)
    sink.flush()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    phase, choice, inner = spans["plugin.phase"], spans["plugin.choice"], spans["plugin.inner"]
    assert parent_of(list(spans.values()), choice) is phase
    assert choice.end_time == choice.start_time  # a decision is a point in time
    assert inner.end_time - inner.start_time >= 10**7
    assert phase.end_time >= inner.end_time + 10**7  # ended when its block exited, not before
    assert sink._open == {}
    sink.close()


def test_spans_never_ended_end_with_their_last_child_and_close_ends_the_rest() -> None:
    """Events forwarded from another process (Ray) come without span ends."""
    sink, exporter = memory_sink()
    sink(Event(type="run.start", ts=100.0, span_id="r", payload={"tasks": 1}))
    sink(Event(type="task", ts=101.0, span_id="t", payload={"task_id": "a"}))
    sink(Event(type="search", ts=102.0, span_id="s", parent_id="t"))
    sink(generate_event(ts=105.0, seconds=1.0).model_copy(update={"parent_id": "s"}))
    sink(Event(type="run.end", ts=110.0, span_id="e", payload={"accuracy": 1.0}))
    sink(Event(type="search", ts=120.0, span_id="lone"))  # after the run: open until close
    sink.flush()
    assert len(exporter.get_finished_spans()) == 4
    sink.close()
    spans = {s.attributes["agentic.span_id"]: s for s in exporter.get_finished_spans()}
    assert spans["t"].end_time == spans["s"].end_time == 105 * 10**9
    assert spans["r"].end_time == 110 * 10**9 and spans["r"].attributes["agentic.accuracy"] == 1.0
    assert spans["lone"].parent is None and spans["lone"].end_time == 120 * 10**9


def test_no_key_reaches_an_attribute_a_name_or_a_status() -> None:
    sink, exporter = memory_sink(capture_text=True)
    keyed = f"openai:http://user:{SECRET}@127.0.0.1:8000/v1#m"
    sink(
        Event(
            type="run.start",
            span_id="r",
            payload={"config": {"backend": keyed, "backends": {keyed: keyed}}, "uris": [keyed]},
        )
    )
    sink(Event(type="task", span_id="t", payload={"task_id": "a"}))
    event = generate_event(ts=time.time(), seconds=0.1, prompt=f"see https://{SECRET}@h/x")
    sink(event.model_copy(update={"payload": {**event.payload, "backend": keyed}}))
    sink(
        Event(
            type="task.outcome",
            parent_id="t",
            payload={"outcome": {"error": f"GET http://h/v1?api_key={SECRET} failed", "score": 0}},
        )
    )
    sink(
        Event(
            type="pool.failover",
            payload={"replica": keyed, "error": f"GET http://h/v1?token={SECRET}: 401"},
        )
    )
    sink.close()
    spans = exporter.get_finished_spans()
    dump = "".join(s.to_json() for s in spans)
    assert SECRET not in dump
    assert "***" in dump and "user:***@127.0.0.1" in dump
    [task] = by_name(list(spans), "task")
    assert task.status.status_code.name == "ERROR" and "api_key=***" in task.status.description


def test_endpoints_from_flags_and_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert traces_url("http://127.0.0.1:6006") == "http://127.0.0.1:6006/v1/traces"
    assert traces_url("http://127.0.0.1:6006/") == "http://127.0.0.1:6006/v1/traces"
    assert traces_url("https://c:4318/v1/traces") == "https://c:4318/v1/traces"
    with pytest.raises(ConfigError, match="not an http"):
        traces_url("127.0.0.1:6006")
    with pytest.raises(ConfigError, match=r"\*\*\*"):
        traces_url(f"ftp://u:{SECRET}@h")
    for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    assert otel_endpoint() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
    assert otel_endpoint() == "http://c:4318/v1/traces"
    assert otel_endpoint("http://x:1") == "http://x:1/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")
    assert otel_endpoint() == "http://c:4318/custom"  # the signal's own variable: as it is
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert otel_endpoint() is None and otel_endpoint("http://x:1") == "http://x:1/v1/traces"


def test_a_dead_endpoint_costs_one_warning_line_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1")
    caplog.set_level(logging.DEBUG)
    sink = OTelSink(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    started = time.monotonic()
    for batch in range(3):
        for i in range(20):
            sink(Event(type="search.round", payload={"round": i, "batch": batch}))
        sink.flush(timeout_s=10)
    sink.close()
    assert time.monotonic() - started < 15
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name == "agentic.otel" and "failed" in warnings[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_agentic_run_takes_an_otel_sink_or_endpoint() -> None:
    sink, exporter = memory_sink()
    outcome = agentic.run(Direct(ScriptedBackend(["4"])), "2 + 2?", otel=sink)
    assert outcome.output == "4"
    [call] = exporter.get_finished_spans()  # flushed before run returned
    assert call.name == "chat scripted"
    sink.close()
    with pytest.raises(ConfigError, match="not an http"):
        agentic.run(Direct(ScriptedBackend(["4"])), "2 + 2?", otel="localhost:6006")


def test_gateway_otel_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    assert open_otel(GatewayConfig()) is None
    with pytest.raises(ConfigError, match="otel: no endpoint"):
        open_otel(GatewayConfig(otel={}))
    with pytest.raises(ConfigError, match=r"otel\.endpoint"):
        GatewayConfig.load(None, otel={"endpoint": "phoenix:6006"})
    export = open_otel(GatewayConfig(otel={"endpoint": "http://127.0.0.1:6006"}))
    assert export is not None and export.url == "http://127.0.0.1:6006/v1/traces"
    export.close()


def test_a_bad_otel_url_is_one_line_before_the_model_loads() -> None:
    cmd = [sys.executable, "-m", "agentic.cli", "run", "--n", "1", "--otel", "localhost:6006"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert "is not an http(s) URL" in proc.stderr and "Traceback" not in proc.stderr
    assert "loading" not in proc.stderr


def test_importing_agentic_does_not_load_the_sdk() -> None:
    code = (
        "import sys, agentic, agentic.core.otel; "
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'SDK imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


# ---- real: exported to Phoenix, read back through its REST API --------------------------------


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Phoenix on 127.0.0.1, free ports, a fresh working dir, no telemetry; its base URL."""
    if not PHOENIX.exists():
        pytest.fail(f"{PHOENIX} is missing: run `make phoenix-env` (make test does)")
    root = tmp_path_factory.mktemp("phoenix")
    port = free_port()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_WORKING_DIR": str(root),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = root / "phoenix.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [str(PHOENIX), "serve"], stdout=f, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # ~70 s on two busy cores: it migrates a database
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phoenix exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix not up after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def phoenix_spans(url: str, project: str, want: int, timeout: float = 60) -> list[dict[str, Any]]:
    """The project's spans once at least `want` have arrived (Phoenix ingests asynchronously)."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while True:
        r = httpx.get(f"{url}/v1/projects/{project}/spans", params={"limit": 1000}, timeout=10)
        if r.status_code == 200:
            spans = r.json()["data"]
            if len(spans) >= want:
                return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(spans)} of {want} spans in {project}: {r.text[:500]}")
        time.sleep(0.5)


def tree(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["context"]["span_id"]: s for s in spans}


@pytest.mark.slow
@pytest.mark.xdist_group("phoenix")
def test_agentic_run_exports_to_phoenix(phoenix: str, tmp_path: Path) -> None:
    record = tmp_path / "run.jsonl"
    cmd = [
        sys.executable, "-m", "agentic.cli", "run", "--suite", "basic_arithmetic", "--n", "2",
        # the confidence verifier reads the policy's logprobs: every token the run spends is a
        # model call's, so the spans must add up to the run's usage (the value model's own
        # forward passes are charged without a model-call event)
        "--controller", "pf", "--samples", "2", "--max-steps", "2", "--reward", "confidence",
        "--record", str(record), "--otel", phoenix,
    ]  # fmt: skip
    env = {**os.environ, "OTEL_RESOURCE_ATTRIBUTES": "openinference.project.name=agentic-run"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exporting OpenTelemetry spans to" in proc.stderr

    events = list(read_events(record))
    folded = {"search.node", "search.score", "reward.result", "run.end"}  # into other spans
    want = sum(e.type not in folded for e in events)
    spans = phoenix_spans(phoenix, "agentic-run", want)
    print(f"\nPhoenix received {len(spans)} spans from `agentic run` ({len(events)} events)")
    assert len(spans) == want
    ids = tree(spans)

    def parent(s: dict[str, Any]) -> str | None:
        return ids[s["parent_id"]]["name"] if s["parent_id"] else None

    [run] = [s for s in spans if s["name"] == "run"]
    assert run["parent_id"] is None and len({s["context"]["trace_id"] for s in spans}) == 1
    assert {parent(s) for s in spans if s["name"] == "task"} == {"run"}
    assert {parent(s) for s in spans if s["name"] == "search"} == {"task"}
    assert {parent(s) for s in spans if s["name"] == "reward"} == {"search"}
    # model calls: the policy's steps under the search, the verifier's scoring under its reward
    calls = [s for s in spans if "gen_ai.operation.name" in s["attributes"]]
    model_events = [e for e in events if e.type.startswith("backend.")]
    assert len(calls) == len(model_events)
    assert {(s["name"], parent(s)) for s in calls} == {
        ("chat smollm2", "search"),
        ("score smollm2", "reward"),
    }
    assert {s["span_kind"] for s in calls if s["name"] == "chat smollm2"} == {"LLM"}
    # token counts: each span has its recorded call's, and together the run's usage
    recorded = {
        e.span_id: [sum(r["usage"][k] for r in e.payload["results"]) for k in TOKENS]
        for e in model_events
    }
    for s in calls:
        counts = [s["attributes"][f"gen_ai.usage.{k}_tokens"] for k in ("input", "output")]
        assert counts == recorded[s["attributes"]["agentic.span_id"]]
    [end] = [e for e in events if e.type == "run.end"]
    usage = end.payload["usage"]
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in calls) == usage[TOKENS[0]]
    assert sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in calls) == usage[TOKENS[1]]
    assert run["attributes"]["agentic.usage.prompt_tokens"] == usage["prompt_tokens"]
    search = next(s for s in spans if s["name"] == "search")
    assert {e["name"] for e in search["events"]} == {"search.node", "search.score"}
    # no prompt or completion text left the process
    dump = json.dumps(spans)
    for e in events:
        if e.type == "backend.generate":
            assert e.payload["request"]["messages"][0]["content"] not in dump


@pytest.mark.slow
@pytest.mark.xdist_group("phoenix")
def test_gateway_exports_each_request_without_its_keys(phoenix: str, tmp_path: Path) -> None:
    with stub_server() as stub:
        keyed = stub.url.replace("http://", f"http://user:{SECRET}@")
        config = {
            "models": {"smollm2": "embedded:smollm2", "keyed": f"openai:{keyed}#m"},
            "otel": {"capture_text": False},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        saved = dict(os.environ)
        os.environ.update(
            {
                "OTEL_RESOURCE_ATTRIBUTES": "openinference.project.name=agentic-gateway",
                "OTEL_BSP_SCHEDULE_DELAY": "200",  # export within a fraction of a second
            }
        )
        try:
            gateway = start_gateway(path, tmp_path / "gateway.log", "--otel", phoenix)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            question = [{"role": "user", "content": "What is 3 + 4?"}]
            for body in (
                {"model": "keyed", "messages": question, "max_tokens": 4},
                {
                    "model": "smollm2",
                    "messages": question,
                    "max_tokens": 4,
                    "agentic": {"controller": {"type": "direct", "max_tokens": 4}},
                },
            ):
                r = httpx.post(f"{gateway.url}/chat/completions", json=body, timeout=300)
                assert r.status_code == 200, r.text
            spans = phoenix_spans(phoenix, "agentic-gateway", want=5)
        finally:
            gateway.stop()
    log = gateway.log.read_text()
    assert "Traceback" not in log and "OpenTelemetry export" not in log, log[-3000:]
    print(f"\nPhoenix received {len(spans)} spans from `agentic serve`")
    ids = tree(spans)
    [keyed_call] = [s for s in spans if s["name"] == "chat m"]
    assert keyed_call["parent_id"] is None  # a pass-through request is one model call
    assert keyed_call["attributes"]["gen_ai.provider.name"] == "openai"
    assert keyed_call["attributes"]["gen_ai.usage.input_tokens"] == 3  # the stub's usage
    [run] = [s for s in spans if s["name"] == "run"]
    [task] = [s for s in spans if s["name"] == "task"]
    [call] = [s for s in spans if s["name"] == "chat smollm2"]
    assert ids[task["parent_id"]] is run and ids[call["parent_id"]] is task
    assert run["attributes"]["agentic.config.gateway.model"] == "direct@smollm2"
    assert SECRET not in json.dumps(spans) and "user:***@" in json.dumps(spans)
    assert "What is 3 + 4?" not in json.dumps(spans)
