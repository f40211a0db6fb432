"""Unit tests for the contracts in agentic.core: values, budgets, events, tasks and errors."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentic.core import (
    AgenticError,
    BackendUnavailable,
    Budget,
    BudgetExceeded,
    ConfigError,
    Event,
    GenerateRequest,
    Generation,
    JSONLSink,
    Message,
    ModelNotInstalled,
    NotSupported,
    Outcome,
    ReplayMiss,
    SamplingParams,
    ScoreRequest,
    Task,
    TaskSuite,
    TopLogprob,
    TraceFormatError,
    Tracer,
    Usage,
    charge_budget,
    check_budget,
    emit,
    read_events,
    span,
    task_messages,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------- Usage


def _distinct_usage(offset: int) -> Usage:
    """A Usage with a different value in every field (so a forgotten field in `+` shows)."""
    values = {}
    for i, (name, field) in enumerate(Usage.model_fields.items()):
        v = (i + 1) * 10 + offset
        values[name] = float(v) + 0.25 if field.annotation in (float, "float") else v
    return Usage(**values)


def test_usage_addition_sums_every_field() -> None:
    a, b = _distinct_usage(1), _distinct_usage(2)
    c = a + b
    assert set(Usage.model_fields) >= {
        "prompt_tokens",
        "completion_tokens",
        "model_calls",
        "reward_calls",
        "seconds",
        "cost_usd",
    }
    for name in Usage.model_fields:
        assert getattr(c, name) == pytest.approx(getattr(a, name) + getattr(b, name)), name
    # values: neither operand changes
    assert a == _distinct_usage(1) and b == _distinct_usage(2)


def test_usage_total_and_total_tokens() -> None:
    items = [_distinct_usage(k) for k in range(3)]
    total = Usage.total(items)
    assert total == items[0] + items[1] + items[2]
    assert Usage.total(iter(items)) == total  # any iterable, including a one-shot generator
    assert Usage.total([]) == Usage()
    u = Usage(prompt_tokens=7, completion_tokens=5)
    assert u.total_tokens == 12
    assert Usage().total_tokens == 0


def test_usage_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Usage().prompt_tokens = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------ SamplingParams


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": -0.2}, "top_p"),
        ({"stop": ""}, "stop"),
        ({"stop": ["\n\n", ""]}, "stop"),
        ({"top_k": -1}, "top_k"),
        ({"n": 0}, "n"),
        ({"logprobs": -1}, "logprobs"),
        ({"logprobs": 21}, "logprobs"),
    ],
)
def test_sampling_params_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValidationError) as ei:
        SamplingParams(**kwargs)
    assert field in str(ei.value)
    assert ei.value.errors()[0]["loc"][0] == field


def test_sampling_params_accepts_edges_and_normalises_stop() -> None:
    p = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=1, logprobs=0)
    assert p.temperature == 0.0 and p.top_p == 1.0
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")
    assert SamplingParams().stop == ()
    with pytest.raises(ValidationError):
        SamplingParams(bogus=1)  # extra fields are rejected


# ------------------------------------------------------------------ GenerateRequest/ScoreRequest


def test_request_needs_exactly_one_of_messages_or_prompt() -> None:
    msgs = [Message(role="user", content="hi")]
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest()
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest(messages=msgs, prompt="hi")
    with pytest.raises(ValidationError, match="exactly one"):
        ScoreRequest(messages=msgs, prompt="hi", continuation="x")
    with pytest.raises(ValidationError, match="exactly one"):
        ScoreRequest(continuation="x")
    assert GenerateRequest(messages=msgs).messages == (Message(role="user", content="hi"),)
    assert GenerateRequest(prompt="hi").prompt == "hi"


def test_request_rejects_empty_messages_prompt_and_continuation() -> None:
    with pytest.raises(ValidationError, match="`messages` is empty"):
        GenerateRequest(messages=[])
    with pytest.raises(ValidationError, match="`messages` is empty"):
        ScoreRequest(messages=[], continuation="x")
    with pytest.raises(ValidationError, match="`prompt` is empty"):
        GenerateRequest(prompt="")
    # an empty prompt is fine when a prefix is being continued
    assert GenerateRequest(prompt="", prefix="Step 1:").prefix == "Step 1:"
    with pytest.raises(ValidationError, match="continuation"):
        ScoreRequest(prompt="q", continuation="")
    with pytest.raises(ValidationError, match="continuation"):
        ScoreRequest(prompt="q", continuation=())
    assert ScoreRequest(prompt="q", continuation=[1, 2]).continuation == (1, 2)


def _req() -> GenerateRequest:
    return GenerateRequest(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="What is 2+3? ünïcode ✓"),
        ],
        prefix="The answer",
        params=SamplingParams(max_tokens=16, temperature=0.7, stop=["\n\n"], seed=3, logprobs=2),
    )


_REQ_SRC = textwrap.dedent(
    """
    from agentic.core import GenerateRequest, Message, SamplingParams, ScoreRequest
    r = GenerateRequest(
        messages=[
            Message(role="system", content="Be brief."),
            Message(role="user", content="What is 2+3? \\u00fcn\\u00efcode \\u2713"),
        ],
        prefix="The answer",
        params=SamplingParams(max_tokens=16, temperature=0.7, stop=["\\n\\n"], seed=3, logprobs=2),
    )
    s = ScoreRequest(prompt="q", continuation=(1, 2, 3))
    print(r.key())
    print(s.key())
    """
)


def test_request_key_is_stable_and_discriminating(tmp_path: Path) -> None:
    r = _req()
    assert r.key() == _req().key()
    assert isinstance(r.key(), str) and len(r.key()) >= 16
    # equal requests written differently (list vs tuple, int vs float) hash equally
    assert GenerateRequest(prompt="p", params=SamplingParams(temperature=1)).key() == (
        GenerateRequest(prompt="p", params=SamplingParams(temperature=1.0)).key()
    )
    assert GenerateRequest.chat("x", system="s").key() == (
        GenerateRequest(
            messages=(Message(role="system", content="s"), Message(role="user", content="x"))
        ).key()
    )
    # anything that changes what is generated changes the key
    different = [
        r.model_copy(update={"prefix": "The answer is"}),
        r.model_copy(update={"prefix": ""}),
        r.model_copy(update={"params": r.params.model_copy(update={"temperature": 0.8})}),
        r.model_copy(update={"params": r.params.model_copy(update={"seed": 4})}),
        r.model_copy(update={"params": r.params.model_copy(update={"stop": ("\n",)})}),
        GenerateRequest(prompt="What is 2+3?"),
    ]
    keys = {r.key(), *(d.key() for d in different)}
    assert len(keys) == len(different) + 1
    # a score request and a generate request over the same prompt do not collide
    s = ScoreRequest(prompt="q", continuation=(1, 2, 3))
    assert s.key() != ScoreRequest(prompt="q", continuation=(1, 2, 4)).key()
    assert s.key() != ScoreRequest(prompt="q", continuation="abc").key()

    # the same keys in a fresh interpreter (different hash seed, no shared state)
    out = subprocess.run(
        [sys.executable, "-c", _REQ_SRC],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=120,
    ).stdout.split()
    assert out == [r.key(), s.key()]


# ---------------------------------------------------------------------------------- Generation


def test_generation_derives_entropy_from_top_logprobs() -> None:
    top = (
        (
            TopLogprob(token="a", logprob=math.log(0.5)),
            TopLogprob(token="b", logprob=math.log(0.25)),
        ),
        (TopLogprob(token="c", logprob=math.log(0.9)),),
        (
            TopLogprob(token="d", logprob=math.log(0.2)),
            TopLogprob(token="e", logprob=math.log(0.2)),
            TopLogprob(token="f", logprob=math.log(0.2)),
        ),
    )
    g = Generation(
        text="x", token_ids=(1, 2, 3), token_logprobs=(-0.7, -0.1, -1.6), top_logprobs=top
    )
    # renormalised: (2/3, 1/3); a single alternative -> 0; three equal -> ln 3
    expected0 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert g.entropies is not None
    assert g.entropies == pytest.approx((expected0, 0.0, math.log(3)))
    assert g.logprob == pytest.approx(-2.4)


def test_generation_keeps_given_entropies_and_none_without_logprobs() -> None:
    top = ((TopLogprob(token="a", logprob=-0.1), TopLogprob(token="b", logprob=-3.0)),)
    g = Generation(text="x", token_ids=(1,), top_logprobs=top, entropies=(1.234,))
    assert g.entropies == (1.234,)
    plain = Generation(text="x")
    assert plain.entropies is None and plain.logprob is None
    # survives a JSON round trip (how replay reads it back)
    again = Generation.model_validate_json(g.model_dump_json())
    assert again == g


# -------------------------------------------------------------------------------------- Budget


def test_budget_current_is_none_outside() -> None:
    assert Budget.current() is None
    check_budget()  # no budget: nothing to check
    charge_budget(Usage(model_calls=1))  # and nothing to charge


def test_budget_nesting_charges_both_and_restores() -> None:
    with Budget(max_tokens=100) as outer:
        assert Budget.current() is outer
        with Budget() as inner:
            assert Budget.current() is inner
            charge_budget(Usage(prompt_tokens=3, completion_tokens=4, model_calls=1))
            check_budget()
        assert Budget.current() is outer
        charge_budget(Usage(reward_calls=2))
    assert Budget.current() is None
    assert inner.spent == Usage(prompt_tokens=3, completion_tokens=4, model_calls=1)
    assert outer.spent == Usage(prompt_tokens=3, completion_tokens=4, model_calls=1, reward_calls=2)


def test_budget_tighter_inner_limit_raises_naming_unit() -> None:
    with Budget(max_tokens=1000), Budget(max_model_calls=2):
        charge_budget(Usage(model_calls=1, prompt_tokens=10))
        check_budget()
        charge_budget(Usage(model_calls=1, prompt_tokens=10))
        with pytest.raises(BudgetExceeded, match="model_calls") as ei:
            check_budget()
    err = ei.value
    assert (err.unit, err.limit, err.spent) == ("model_calls", 2, 2)
    assert isinstance(err, AgenticError)


def test_budget_tighter_outer_limit_raises_naming_unit() -> None:
    with Budget(max_cost_usd=0.01), Budget(max_tokens=10_000):
        charge_budget(Usage(cost_usd=0.02, prompt_tokens=1))
        with pytest.raises(BudgetExceeded, match="cost_usd") as ei:
            check_budget()
    assert ei.value.unit == "cost_usd"


def test_unlimited_inner_budget_under_exhausted_outer_raises() -> None:
    with Budget(max_tokens=5) as outer:
        charge_budget(Usage(completion_tokens=5))
        with Budget() as inner:
            assert inner.spent == Usage()
            with pytest.raises(BudgetExceeded, match="tokens") as ei:
                check_budget()
    assert ei.value.unit == "tokens" and ei.value.spent == 5
    assert outer.spent.total_tokens == 5


def test_budget_reward_calls_limit() -> None:
    with Budget(max_reward_calls=1):
        charge_budget(Usage(reward_calls=1))
        with pytest.raises(BudgetExceeded, match="reward_calls"):
            check_budget()


async def test_budget_shared_across_gathered_tasks() -> None:
    async def worker(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        check_budget()
        charge_budget(Usage(model_calls=1, completion_tokens=i))
        return i

    with Budget(max_model_calls=100) as b:
        results = await asyncio.gather(*(worker(i) for i in range(10)))
    assert results == list(range(10))
    assert b.spent.model_calls == 10
    assert b.spent.completion_tokens == sum(range(10))

    # once spent, every task started inside the `with` sees the same exhausted budget
    async def one_call() -> None:
        check_budget()
        await asyncio.sleep(0)
        charge_budget(Usage(model_calls=1))

    with Budget(max_model_calls=3) as b2:
        outcomes = []
        for _ in range(3):
            outcomes += await asyncio.gather(
                *(one_call() for _ in range(2)), return_exceptions=True
            )
    assert b2.spent.model_calls == 4  # two batches of two ran, then the limit stopped both
    assert sum(isinstance(o, BudgetExceeded) for o in outcomes) == 2


def test_budget_max_seconds() -> None:
    with Budget(max_seconds=0.05) as b:
        check_budget()
        time.sleep(0.08)
        with pytest.raises(BudgetExceeded, match="seconds") as ei:
            check_budget()
    assert ei.value.unit == "seconds" and ei.value.spent >= 0.05
    assert b.elapsed >= 0.08


def test_budget_clock_starts_when_entered_not_when_made() -> None:
    # a budget made up front (a CLI flag, a controller's default) is entered much later: time
    # before entering must not count against max_seconds
    b = Budget(max_seconds=0.1)
    time.sleep(0.15)
    with b:
        check_budget()
        assert b.elapsed < 0.1


@pytest.mark.parametrize(
    "field", ["max_tokens", "max_model_calls", "max_reward_calls", "max_seconds", "max_cost_usd"]
)
def test_budget_negative_limit_is_config_error_naming_field(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        Budget(**{field: -1})
    Budget(**{field: 0})  # zero is a valid (already used up) limit


def _run_with_timeout(src: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(src)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_reentering_the_same_budget_does_not_hang() -> None:
    """Re-entering an active Budget once made it its own parent and `charge()` looped forever.
    Either it works or it is refused with a ConfigError; it must never hang."""
    src = """
        from agentic.core import Budget, ConfigError, Usage, charge_budget
        b = Budget(max_model_calls=5)
        with b:
            try:
                with b:
                    charge_budget(Usage(model_calls=1))
            except ConfigError as e:
                print("refused", e)
            else:
                print("ok", b.spent.model_calls)
        """
    try:
        proc = _run_with_timeout(src, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("charge_budget() hung after re-entering the same Budget")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused") or proc.stdout.strip() == "ok 1", proc.stdout


async def test_same_budget_entered_by_concurrent_tasks() -> None:
    b = Budget(max_model_calls=10)

    async def work(start: float, hold: float) -> None:
        await asyncio.sleep(start)
        with b:
            await asyncio.sleep(hold)
            charge_budget(Usage(model_calls=1))

    # either both tasks share it, or the second entry is refused with a clear ConfigError;
    # a stray ValueError about contextvar tokens is the bug
    outcomes = await asyncio.gather(work(0.0, 0.05), work(0.01, 0.2), return_exceptions=True)
    for o in outcomes:
        if isinstance(o, BaseException) and not isinstance(o, ConfigError):
            raise o
    assert b.spent.model_calls == sum(o is None for o in outcomes) >= 1


# -------------------------------------------------------------------------------------- Events


def test_tracer_with_list_sink_collects_events() -> None:
    events: list[Event] = []
    tracer = Tracer([events.append])
    assert Tracer.current() is None
    with tracer.activate() as t:
        assert t is tracer and Tracer.current() is tracer
        e1 = emit("backend.generate", backend="x", n=2)
        e2 = emit("controller.decision", choice="beam")
    assert Tracer.current() is None
    assert events == [e1, e2]
    assert e1 is not None and e1.type == "backend.generate"
    assert e1.payload == {"backend": "x", "n": 2}
    assert e1.parent_id is None and e1.span_id != e2.span_id  # type: ignore[union-attr]
    assert e1.ts <= e2.ts  # type: ignore[union-attr]


def test_tracer_fans_out_to_every_sink() -> None:
    a: list[Event] = []
    b: list[Event] = []
    with Tracer([a.append, b.append]).activate():
        emit("x")
    assert len(a) == len(b) == 1 and a[0] is b[0]


def test_span_nesting_sets_parent_id() -> None:
    events: list[Event] = []
    with Tracer([events.append]).activate():
        with span("controller.run", name="outer") as outer_id:
            emit("leaf1")
            with span("search.step", depth=1) as mid_id:
                emit("leaf2")
            emit("leaf3")
        emit("after")
    by_type = {e.type: e for e in events}
    assert by_type["controller.run"].span_id == outer_id
    assert by_type["controller.run"].parent_id is None
    assert by_type["controller.run"].payload == {"name": "outer"}
    assert by_type["leaf1"].parent_id == outer_id
    assert by_type["search.step"].span_id == mid_id
    assert by_type["search.step"].parent_id == outer_id
    assert by_type["leaf2"].parent_id == mid_id
    assert by_type["leaf3"].parent_id == outer_id
    assert by_type["after"].parent_id is None


async def test_spans_in_concurrent_tasks_do_not_leak() -> None:
    events: list[Event] = []

    async def branch(name: str) -> str:
        with span("branch", name=name) as sid:
            await asyncio.sleep(0.001)
            emit("inside", name=name)
            return sid

    with Tracer([events.append]).activate():
        with span("root") as root:
            ids = await asyncio.gather(branch("a"), branch("b"))
    inside = {e.payload["name"]: e for e in events if e.type == "inside"}
    assert inside["a"].parent_id == ids[0] and inside["b"].parent_id == ids[1]
    assert all(e.parent_id == root for e in events if e.type == "branch")


def test_emit_without_tracer_returns_none() -> None:
    assert Tracer.current() is None
    assert emit("anything", x=1) is None
    with span("s") as sid:  # a span without a tracer still yields an id and emits nothing
        assert isinstance(sid, str) and sid
        assert emit("inner") is None


def test_jsonl_sink_writes_and_flushes_each_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trace.jsonl"  # parent folder is created
    sink = JSONLSink(path)
    try:
        with Tracer([sink]).activate():
            e1 = emit("a", text="line one\nline two", n=1)
            # flushed: visible to another reader before close
            content = path.read_text(encoding="utf-8")
            assert content.endswith("\n") and content.count("\n") == 1
            e2 = emit("b", nested={"k": [1, 2.5, None]})
            lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == 2
        assert json.loads(lines[0])["payload"] == {"text": "line one\nline two", "n": 1}
        assert json.loads(lines[1])["type"] == "b"
        assert [json.loads(x)["span_id"] for x in lines] == [e1.span_id, e2.span_id]  # type: ignore[union-attr]
    finally:
        sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sink(Event(type="late"))
    # append mode: a second sink adds to the file
    sink2 = JSONLSink(path)
    sink2(Event(type="c"))
    sink2.close()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3


def test_read_events_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    sink = JSONLSink(path)
    events: list[Event] = []
    with Tracer([sink, events.append]).activate():
        with span("run", suite="arith"):
            emit("backend.generate", key="abc", results=[{"text": "5"}], ratio=0.1 + 0.2)
            emit("unicode", text="naïve — ✓ 你好")
    sink.close()
    back = list(read_events(path))
    assert back == events
    assert back[1].payload["ratio"] == 0.1 + 0.2  # floats survive exactly


def _write_events(path: Path, n: int) -> list[str]:
    lines = [Event(type=f"e{i}", payload={"i": i}).model_dump_json() for i in range(n)]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


def test_read_events_malformed_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken-trace.jsonl"
    lines = _write_events(path, 3)
    path.write_text(f"{lines[0]}\n{{not json\n{lines[2]}\n", encoding="utf-8")
    with pytest.raises(TraceFormatError) as ei:
        list(read_events(path))
    msg = str(ei.value)
    assert "broken-trace.jsonl" in msg and ":2" in msg
    assert isinstance(ei.value, ValueError)

    # valid JSON but not an event (missing `type`) on line 3
    path.write_text(f"{lines[0]}\n{lines[1]}\n{json.dumps({'ts': 1.0})}\n", encoding="utf-8")
    with pytest.raises(TraceFormatError, match=r"broken-trace\.jsonl:3"):
        list(read_events(path))


def test_read_events_ignores_truncated_final_line(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    lines = _write_events(path, 2)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(Event(type="e2").model_dump_json()[:25])  # killed mid-write: no newline
    assert [e.type for e in read_events(path)] == ["e0", "e1"]
    # blank lines are skipped
    path.write_text(f"{lines[0]}\n\n{lines[1]}\n", encoding="utf-8")
    assert [e.type for e in read_events(path)] == ["e0", "e1"]


def test_read_events_malformed_final_line_with_newline_raises(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = _write_events(path, 1)
    path.write_text(f"{lines[0]}\n{{garbage\n", encoding="utf-8")
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:2"):
        list(read_events(path))


def test_read_events_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        list(read_events(missing))


def test_read_events_payload_with_unicode_line_separators(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    sink = JSONLSink(path)
    events: list[Event] = []
    with Tracer([sink, events.append]).activate():
        emit("a", text="one\u2028two")
        emit("b", text="three\x85four")
    sink.close()
    assert list(read_events(path)) == events


# ------------------------------------------------------------------------------- Tasks, errors


def test_task_and_outcome_values() -> None:
    t = Task(id="t1", input="2+3?", answer="5")
    assert t.metadata == {} and t.answer == "5"
    with pytest.raises(ValidationError):
        Task(id="t1", input="x", unknown=1)
    with pytest.raises(ValidationError):
        t.input = "y"  # type: ignore[misc]
    o = Outcome(task_id="t1", output="5", score=1.0)
    assert o.usage == Usage() and o.error is None and o.trace_id is None
    assert Outcome.model_validate_json(o.model_dump_json()) == o


async def test_task_suite_is_abstract_and_subclassable() -> None:
    with pytest.raises(TypeError):
        TaskSuite()  # type: ignore[abstract]

    class Suite(TaskSuite):
        name = "tiny"

        @property
        def tasks(self) -> list[Task]:
            return [Task(id="a", input="1+1", answer="2")]

        async def check(self, task: Task, output: str) -> float:
            return float(output.strip() == task.answer)

    s = Suite()
    assert s.config()["name"] == "tiny"
    assert await s.check(s.tasks[0], " 2 ") == 1.0
    assert await s.check(s.tasks[0], "3") == 0.0


def test_error_hierarchy() -> None:
    for cls in (
        ConfigError,
        NotSupported,
        BackendUnavailable,
        ModelNotInstalled,
        ReplayMiss,
        TraceFormatError,
        BudgetExceeded,
    ):
        assert issubclass(cls, AgenticError), cls
    assert issubclass(ConfigError, ValueError)
    assert issubclass(TraceFormatError, ValueError)


def test_console_sink_prints_selected_event_types(capsys: pytest.CaptureFixture[str]) -> None:
    from agentic.core import ConsoleSink

    with Tracer([ConsoleSink(types={"task.outcome"})]).activate():
        emit("task.outcome", task_id="t7", score=1.0)
        emit("backend.generate", backend="hidden")
    err = capsys.readouterr().err
    assert "task.outcome" in err and "t7" in err
    assert "hidden" not in err


def test_task_messages_builds_the_system_and_user_turns() -> None:
    task = Task(id="t", input="What is 2+3?")
    user = Message(role="user", content="What is 2+3?")
    assert task_messages(task) == task_messages("What is 2+3?") == (user,)
    assert task_messages(task, "") == (user,)  # an empty system prompt is left out
    assert task_messages(task, "Be brief.") == (Message(role="system", content="Be brief."), user)
