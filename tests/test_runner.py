"""Runs on the real model: budgets stop a run within one batch; recordings replay identically."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentic.core import (
    Budget,
    GenerateRequest,
    JSONLSink,
    Message,
    ReplayMiss,
    SamplingParams,
    Tracer,
    read_events,
)
from agentic.runtime.runner import run_suite
from agentic.runtime.suites import load_suite
from backends.replay import ReplayBackend
from controllers import Direct

pytestmark = pytest.mark.slow

PARAMS = SamplingParams(temperature=0.0, max_tokens=32)


async def test_budget_stops_within_one_batch_and_keeps_best_so_far(smollm2: object) -> None:
    suite = load_suite("basic_arithmetic", n=12, seed=1)
    concurrency, limit = 4, 150
    budget = Budget(max_tokens=limit)
    result = await run_suite(
        suite, Direct(smollm2, params=PARAMS), concurrency=concurrency, budget=budget
    )
    prompt_max = max(smollm2.count_tokens(list(_chat(t.input))) for t in suite.tasks)  # type: ignore[attr-defined]
    one_batch = concurrency * (prompt_max + PARAMS.max_tokens)
    spent = budget.spent.total_tokens
    assert limit <= spent <= limit + one_batch
    assert result.stopped is not None and "tokens" in result.stopped
    assert 1 <= len(result.outcomes) < len(suite.tasks)
    assert len(result.outcomes) + len(result.not_run) == len(suite.tasks)
    # best-so-far: every finished task kept its output, score and exact usage
    assert all(o.score is not None and o.output for o in result.outcomes if not o.error)
    assert result.usage.total_tokens == spent


def _chat(text: str) -> tuple[Message, ...]:
    return (Message(role="user", content=text),)


async def test_recorded_run_replays_identically_without_a_model(
    smollm2: object, tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    suite = load_suite("basic_arithmetic", n=5, seed=2)
    sink = JSONLSink(path)
    with Tracer([sink]).activate():
        live = await run_suite(suite, Direct(smollm2, params=PARAMS), concurrency=5)
    sink.close()
    kinds = [e.type for e in read_events(path)]
    assert kinds.count("backend.generate") == 5 and kinds.count("task.outcome") == 5

    replay = ReplayBackend(path)
    assert replay.recorded_backends == ["embedded:smollm2"]
    again = await run_suite(suite, Direct(replay, params=PARAMS), concurrency=2)
    assert [o.model_dump(exclude={"trace_id"}) for o in again.outcomes] == [
        o.model_dump(exclude={"trace_id"}) for o in live.outcomes
    ]
    assert again.usage == live.usage

    # a request the recording never saw is named in the error
    other = GenerateRequest.chat("What is 9 + 9?", temperature=0.0, max_tokens=32)
    with pytest.raises(ReplayMiss, match="What is 9"):
        await ReplayBackend(path).generate([other])
    # asking more often than recorded is an error too, not a silent repeat
    first = Direct(ReplayBackend(path), params=PARAMS)
    task = suite.tasks[0]
    assert not (await first(task)).error
    with pytest.raises(ReplayMiss, match="more often"):
        await first.backend.generate([GenerateRequest(messages=_chat(task.input), params=PARAMS)])
