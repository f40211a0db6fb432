"""Issue #19 fixes kept fixed: credentials out of URIs, bounded suite settings, config parsing
that either succeeds or says what is wrong (property-based), malformed 200 answers, torn
recordings, per-attempt deadlines, a retried probe and readable transport failures. Servers are
`servers.stub_server` on 127.0.0.1: no model is loaded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import COMPLETION, MODELS, Reply, stub_server
from test_cli import agentic

from agentic.cli.commands import _resumable
from agentic.cli.spec import parse_config
from agentic.core import (
    BackendUnavailable,
    ConfigError,
    Event,
    GenerateRequest,
    JSONLSink,
    RequestRejected,
    Tracer,
    read_events,
    redact_uri,
)
from agentic.runtime.runner import run_suite
from agentic.runtime.suites import load_suite
from backends.openai.backend import OpenAIBackend
from backends.testing import ScriptedBackend
from controllers import Direct

# fast retries: these tests are about what happens, not how long the backoff waits
FAST: dict[str, Any] = {"backoff": 0.001, "backoff_max": 0.01}


@pytest.mark.parametrize(
    ("uri", "secret"),
    [
        ("openai:http://u:KEY123@127.0.0.1:8000/v1#m", "KEY123"),
        ("openai:http://TOKEN9@127.0.0.1:8000/v1#m", "TOKEN9"),
        ("openai:http://127.0.0.1:8000/v1?api_key=KEY123#m", "KEY123"),
        ("error talking to http://127.0.0.1:1/v1?token=abc&x=1", "abc"),
    ],
)
def test_secrets_are_masked_and_the_rest_kept(uri: str, secret: str) -> None:
    shown = redact_uri(uri)
    assert secret not in shown and "***" in shown
    assert "127.0.0.1" in shown


def test_a_uri_without_secrets_is_unchanged() -> None:
    uri = "openai:http://127.0.0.1:8000/v1?stream=1#smollm2"
    assert redact_uri(uri) == uri


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"max_terms": 99999999}, "max_terms"),
        ({"max_digits": 1e400}, "max_digits"),
        ({"max_digits": 5.0}, "max_digits"),
    ],
)
def test_absurd_settings_are_refused_before_generating(config: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_suite("basic_arithmetic", n=2, config=config)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_config_parsing_succeeds_or_says_why(pairs: list[str]) -> None:
    try:
        parsed = parse_config(pairs)
    except ConfigError as e:
        assert "KEY=VALUE" in str(e) or "nested" in str(e)
        return
    assert set(parsed) <= {p.partition("=")[0] for p in pairs}


# ---- item 1: a 200 answer without `choices` ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"{}", "no 'choices'"),
        (b"null", "got null"),
        (b"[]", "got list"),
        (b'{"error": {"message": "overloaded"}}', "overloaded"),
    ],
)
async def test_a_200_without_choices_is_retried_then_named(body: bytes, said: str) -> None:
    with stub_server(post=body) as stub:
        backend = OpenAIBackend(stub.url, max_retries=2, **FAST)
        try:
            with pytest.raises(BackendUnavailable) as info:
                await backend.generate([GenerateRequest(prompt="1+1=")])
        finally:
            await backend.aclose()
    message = str(info.value)
    assert f"{stub.url}/completions" in message
    assert "3 attempts" in message and "malformed body" in message and said in message
    assert len(stub.posts) == 3  # retried, and not one silent extra request


async def test_a_run_against_a_server_without_choices_records_an_error_per_task() -> None:
    suite = load_suite("basic_arithmetic", n=3, seed=0)
    with stub_server(post=b"{}") as stub:
        backend = OpenAIBackend(stub.url, "m", server="openai", max_retries=1, **FAST)
        try:
            result = await run_suite(suite, Direct(backend), concurrency=2)
        finally:
            await backend.aclose()
    assert sorted(o.task_id for o in result.outcomes) == sorted(t.id for t in suite.tasks)
    assert result.errors == 3 and result.not_run == []
    for o in result.outcomes:
        assert o.error is not None and o.error.startswith("BackendUnavailable")
        assert f"{stub.url}/chat/completions" in o.error and "no 'choices'" in o.error
    assert len(stub.posts) == 6  # each task's request, retried once


# ---- item 2: a recording torn inside a multibyte character ---------------------------------------

# what a kill inside the "é" of "café" leaves at the end of a recording
TORN = b'{"type":"task.outcome","payload":{"o":"caf\xc3'


def test_read_events_drops_a_final_line_torn_inside_a_character(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    whole = Event(type="task.outcome", payload={"o": "café"})
    path.write_bytes(whole.model_dump_json().encode() + b"\n" + TORN)
    assert [e.payload for e in read_events(path)] == [{"o": "café"}]


async def _recorded_run(path: Path) -> tuple[dict, dict]:
    """A real `run_suite` recording (scripted model): its suite settings and run config."""
    suite = load_suite("basic_arithmetic", n=3, seed=0)
    config = {"backend": "scripted:", "controller": {"type": "direct"}}
    sink = JSONLSink(path)
    try:
        with Tracer([sink]).activate():
            await run_suite(
                suite, Direct(ScriptedBackend(lambda p, j: ("café", True))), config=config
            )
    finally:
        sink.close()
    return suite.config(), config


async def test_resume_cuts_a_line_torn_inside_a_character(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    suite, config = await _recorded_run(path)
    whole = path.read_bytes()
    path.write_bytes(whole + TORN)
    done = _resumable(path, suite, config)
    assert len(done) == 3 and {o.output for o in done} == {"café"}
    # the torn line is cut, so what the resumed run appends starts on a line of its own
    assert path.read_bytes() == whole


# ---- item 5: timeouts, the probe, what a reset is called ---------------------------------------


async def test_a_trickling_server_cannot_hold_an_attempt_past_its_deadline() -> None:
    # one byte every 0.05 s: each read comes well within read_timeout, the whole body takes ~8 s
    with stub_server(post=Reply(COMPLETION, trickle=0.05)) as stub:
        backend = OpenAIBackend(
            stub.url, "m", server="openai", read_timeout=2, attempt_timeout=0.5, max_retries=1
        )
        t0 = time.monotonic()
        try:
            with pytest.raises(BackendUnavailable) as info:
                # the guard turns a regression into a failure rather than an 8 s success
                await asyncio.wait_for(backend.generate([GenerateRequest(prompt="1+1=")]), 4)
        finally:
            await backend.aclose()
    assert time.monotonic() - t0 < 3
    assert "attempt_timeout=0.5" in str(info.value) and "2 attempts" in str(info.value)


def test_the_probe_keeps_its_deadline_too() -> None:
    with stub_server(models=Reply(MODELS, trickle=0.05)) as stub:
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match=r"attempt_timeout=0\.3"):
            OpenAIBackend(stub.url, read_timeout=2, attempt_timeout=0.3, max_retries=0)
    assert time.monotonic() - t0 < 2


async def test_the_models_probe_is_retried_like_any_request() -> None:
    answers = iter([Reply(b'{"error": "loading"}', status=503), Reply(MODELS)])
    events: list[Event] = []
    with stub_server(models=lambda path, body: next(answers)) as stub:
        # built inside a running loop, as async code does: the probe must not need the loop
        with Tracer([events.append]).activate():
            backend = OpenAIBackend(stub.url, max_retries=2, **FAST)
        await backend.aclose()
    assert backend.model == "m"
    assert [s.method for s in stub.seen] == ["GET", "GET"]
    [retry] = [e for e in events if e.type == "backend.retry"]
    assert retry.payload["status"] == 503 and retry.payload["url"] == f"{stub.url}/models"


async def test_a_reset_is_said_in_words() -> None:
    with stub_server(post=Reply(reset=True)) as stub:
        backend = OpenAIBackend(stub.url, "m", server="openai", max_retries=1, **FAST)
        try:
            with pytest.raises(BackendUnavailable) as info:
                await backend.generate([GenerateRequest(prompt="1+1=")])
        finally:
            await backend.aclose()
    message = str(info.value)
    assert "ReadError ()" not in message and "Error ()" not in message
    # httpx reports the reset as a ReadError, or as a RemoteProtocolError when it reads EOF
    assert "connection was reset" in message or "closed the connection" in message, message


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (404, 1), (429, 3), (503, 3)])
async def test_only_429_and_5xx_are_retried(status: int, attempts: int) -> None:
    with stub_server(post=Reply(b'{"error": "no"}', status=status)) as stub:
        backend = OpenAIBackend(stub.url, "m", server="openai", max_retries=2, **FAST)
        try:
            with pytest.raises(RequestRejected if status < 429 else BackendUnavailable) as info:
                await backend.generate([GenerateRequest(prompt="1+1=")])
        finally:
            await backend.aclose()
    assert len(stub.posts) == attempts
    assert f"HTTP {status}" in str(info.value) and f"{stub.url}/completions" in str(info.value)


def test_a_models_body_that_is_not_json_is_one_line() -> None:
    with stub_server(models=b"<html>starting</html>") as stub:
        with pytest.raises(BackendUnavailable) as info:
            OpenAIBackend(stub.url, max_retries=1, **FAST)
    message = str(info.value)
    assert f"{stub.url}/models" in message and "not valid JSON" in message
    assert "\n" not in message


# ---- item 7: a key in the backend URI reaches neither the recording nor the screen -------------


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_a_key_in_the_backend_uri_is_never_written(where: str, tmp_path: Path) -> None:
    key = "sk-KEY-4f7a9c"
    with stub_server() as stub:
        host = stub.url.removeprefix("http://")
        url = f"http://u:{key}@{host}" if where == "userinfo" else f"{stub.url}?api_key={key}"
        res = agentic(
            "run", "--backend", f"openai:{url}#m", "--n", "1", "--record", "r.jsonl", cwd=tmp_path
        )
    assert res.returncode == 0, res.stderr
    # the key was used (basic auth or the query): the check below means something
    sent = [s.headers.get("Authorization", "") + s.target for s in stub.seen]
    assert stub.posts and all(key in s or "Basic " in s for s in sent), sent
    recording = (tmp_path / "r.jsonl").read_text()
    for name, text in {"recording": recording, "stdout": res.stdout, "stderr": res.stderr}.items():
        assert key not in text, name
    assert "run.start" in recording and "***" in recording  # the URI is recorded, masked


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
SPEC_KEYS = st.sampled_from(
    ["type", "n", "samples", "reward", "inner", "reasoning", "temperature", "max_tokens", "select"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(SPEC_KEYS, JSON, max_size=5)
    | st.dictionaries(SPEC_KEYS, st.sampled_from(["sc", "bon", "pf", "psr", "router", "x"]))
    | JSON
)
def test_any_spec_validates_or_names_what_is_wrong(data: Any) -> None:
    from agentic.specs.registry import parse_controller_spec

    try:
        parse_controller_spec(data, files=False)
    except ConfigError as e:
        assert "controller" in str(e) and "\n" not in str(e).strip()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=60) | JSON.map(lambda v: __import__("json").dumps(v).encode()),
                max_size=5))  # fmt: skip
def test_any_trace_file_reads_or_names_its_line(tmp_path_factory: Any, lines: list[bytes]) -> None:
    from agentic.core import TraceFormatError, read_events

    path = tmp_path_factory.mktemp("fuzz") / "t.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        list(read_events(path))
    except TraceFormatError as e:
        assert "t.jsonl" in str(e)
