"""The ACE controller (controllers/ace.py): Generator, Reflector and Curator on scripted stand-ins
for the mechanics (growth, tagging, invented ids, online learning in the background, budgets),
and on the real SmolLM2-135M-Instruct for offline training and online serving."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from agentic.core import Budget, Context, Event, SamplingParams, Task, Tracer
from agentic.runtime.suites import load_suite
from backends.base import Capabilities
from backends.testing import ScriptedBackend
from controllers.ace import ACE
from memory.playbook import Playbook

WIDE = SamplingParams(temperature=0.0, max_tokens=4000)  # scripted text: one token a char


def scripted(make: Callable[[], dict[str, Any]]) -> ScriptedBackend:
    """A backend answering every call with `make()` as JSON."""
    return ScriptedBackend(lambda prefix, j: (json.dumps(make()), True))


class Roles:
    """Three scripted roles over one playbook: the generator answers "4" citing every bullet
    and an invented id; the reflector tags every bullet helpful (and an invented id); the
    curator adds one numbered lesson and updates an invented id."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook, self.lessons = playbook, 0
        ids = lambda: [b.id for b in playbook.bullets]  # noqa: E731
        self.generator = scripted(
            lambda: {"reasoning": "2 + 2", "bullet_ids": [*ids(), "str-09999"], "final_answer": "4"}
        )
        self.reflector = scripted(
            lambda: {
                "error_identification": "none",
                "root_cause": "none",
                "correct_approach": "add",
                "key_insight": "add the units",
                "bullet_tags": [{"id": i, "tag": "helpful"} for i in [*ids(), "ghost-7"]],
            }
        )
        self.curator = scripted(self._curate)

    def _curate(self) -> dict[str, Any]:
        self.lessons += 1
        return {
            "operations": [
                {"op": "ADD", "section": "strategies", "content": f"lesson number {self.lessons}"},
                {"op": "UPDATE", "id": "nope-1", "content": "x"},
            ]
        }

    def ace(self, **kw: Any) -> ACE:
        return ACE(
            self.generator,
            self.playbook,
            reflector=self.reflector,
            curator=self.curator,
            generator_params=WIDE,
            reflector_params=WIDE,
            curator_params=WIDE,
            **kw,
        )


async def exact(task: Task, output: str) -> float:
    return float(output.strip() == task.answer)


TASKS = [Task(id=f"t{i}", input="What is 2 + 2?", answer="4" if i != 1 else "5") for i in range(3)]


async def test_offline_training_grows_the_playbook_and_tags_the_cited_bullets() -> None:
    roles = Roles(Playbook(dedup_threshold=None))
    ace = roles.ace(checker=exact)
    events: list[Event] = []
    with Tracer([events.append]).activate():
        reports = await ace.train(TASKS, epochs=2)
    assert [(r.epoch, r.tasks, r.bullets) for r in reports] == [(1, 3, 3), (2, 3, 6)]
    assert [r.mean_score for r in reports] == [pytest.approx(2 / 3)] * 2
    assert all(r.usage.model_calls == 9 and r.stopped is None for r in reports)  # 3 roles x 3
    pb = roles.playbook
    # the bullet added after task k is cited and tagged helpful by each of the 6 - k later ones
    assert [(b.content, b.helpful) for b in pb.bullets] == [
        (f"lesson number {k}", 6 - k) for k in range(1, 7)
    ]
    assert {b.sources for b in pb.bullets} == {("t0",), ("t1",), ("t2",)}
    unknown = [e.payload for e in events if e.type == "ace.unknown_bullets"]
    assert {(u["role"], tuple(u["ids"])) for u in unknown} == {
        ("generator", ("str-09999",)),
        ("reflector", ("ghost-7",)),
        ("curator", ("nope-1",)),
    }
    assert "str-09999" not in pb and all(b.id.startswith("str-") for b in pb.bullets)
    types = {e.type for e in events}
    assert {"ace.epoch", "ace.generator", "ace.reflector", "ace.curator", "ace.applied"} <= types


async def test_generator_prompt_holds_the_rendered_playbook_and_the_schema_is_capped() -> None:
    roles = Roles(Playbook(dedup_threshold=None))
    roles.generator.capabilities = Capabilities(prefix=True, structured_output=True)
    roles.curator.capabilities = Capabilities(prefix=True, structured_output=True)
    ace = roles.ace(max_chars=40, max_ops=2)
    await ace.train(TASKS[:2])
    request = roles.generator.requests[-1]
    assert request.messages is not None
    assert "[str-00001] (helpful 0, harmful 0) lesson number 1" in request.messages[0].content
    assert request.response_format is not None and request.response_format.json_schema
    props = request.response_format.json_schema["properties"]
    assert props["reasoning"]["maxLength"] == 40
    assert props["bullet_ids"]["items"]["enum"] == ["str-00001"]  # only ids the model was shown
    curator = roles.curator.requests[-1].response_format
    assert curator is not None and curator.json_schema is not None
    text = json.dumps(curator.json_schema)
    assert '"enum": ["strategies", "formulas", "mistakes", "others"]' in text
    assert '"maxItems": 2' in text and "oneOf" not in text


async def test_online_answers_at_once_and_learns_in_the_background() -> None:
    gate = asyncio.Event()

    class SlowReflector(ScriptedBackend):
        async def _generate(self, requests: list[Any]) -> list[list[Any]]:
            await gate.wait()
            return await super()._generate(requests)

    roles = Roles(Playbook(dedup_threshold=None))
    slow = SlowReflector(roles.reflector.rule)
    ace = ACE(
        roles.generator,
        roles.playbook,
        reflector=slow,
        curator=roles.curator,
        checker=exact,
        generator_params=WIDE,
        reflector_params=WIDE,
        curator_params=WIDE,
    )
    # were learning on the serving path, this would wait for the gate and time out
    out = await asyncio.wait_for(ace(TASKS[0], Context()), timeout=10)
    assert out.output == "4" and out.error is None and out.info["playbook_version"] == 0
    second = await asyncio.wait_for(ace(TASKS[2], Context()), timeout=10)
    assert second.output == "4" and ace.pending == 2 and len(roles.playbook) == 0
    gate.set()
    await ace.drain()
    assert ace.pending == 0 and len(roles.playbook) == 2 and slow.requests
    third = await ace(TASKS[0], Context())
    assert third.info["bullet_ids"] == ["str-00001", "str-00002"]
    await ace.aclose()
    assert len(roles.playbook) == 3 and ace._worker is None
    frozen = roles.ace(learn=False)  # serves with the playbook as it is
    assert (await frozen(TASKS[0], Context())).output == "4" and frozen.pending == 0
    await frozen.drain()
    assert len(roles.playbook) == 3


async def test_budget_stops_learning_and_training_without_crashing() -> None:
    roles = Roles(Playbook(dedup_threshold=None))
    ace = roles.ace(checker=exact)
    events: list[Event] = []
    with Tracer([events.append]).activate(), Budget(max_model_calls=1):
        out = await ace(TASKS[0], Context())
        await ace.drain()  # the learning ran in this call's context, so under its budget
    assert out.output == "4" and len(roles.playbook) == 0
    assert [e.payload["reason"] for e in events if e.type == "ace.learn_skipped"] == [
        "budget exceeded: model_calls spent 1 of limit 1"
    ]
    with Budget(max_model_calls=4):
        reports = await ace.train(TASKS, epochs=3)
    assert len(reports) == 1 and reports[0].stopped is not None and reports[0].tasks == 2
    await ace.aclose()


async def test_unparseable_outputs_are_reported_not_raised() -> None:
    roles = Roles(Playbook(dedup_threshold=None))
    await roles.playbook.apply([{"op": "ADD", "section": "mistakes", "content": "carry"}])
    roles.curator.rule = lambda prefix, j: ("no json here", True)
    ace = roles.ace(checker=exact, retries=0)
    lesson = await ace.learn(TASKS[0], await ace.answer(TASKS[0]))
    # the curator failed; the reflector's tags still count
    assert lesson.error is None and [e.effect for e in lesson.applied] == ["tagged"]
    roles.generator.rule = lambda prefix, j: ('{"reasoning": "cut', True)
    out = await ace(TASKS[0], Context())
    assert out.output == "" and out.error is not None and "GeneratorOutput" in out.error
    assert ace.pending == 0  # nothing to learn from
    reports = await ace.train(TASKS[:2])
    assert reports[0].mean_score == 0.0 and reports[0].bullets == 1


@pytest.mark.slow
async def test_ace_on_smollm2_learns_offline_and_serves_online(smollm2: Any) -> None:
    suite = load_suite("basic_arithmetic", n=3, seed=0)
    pb = Playbook()
    ace = ACE(
        smollm2,
        pb,
        checker=suite.check,
        # the caps bound every output below max_tokens even at one character a token, so each
        # structured output is complete JSON however the model rambles
        max_chars=16,
        max_ops=1,
        generator_params=SamplingParams(temperature=0.0, max_tokens=96),
        reflector_params=SamplingParams(temperature=0.0, max_tokens=160),
        curator_params=SamplingParams(temperature=0.0, max_tokens=64),
        retries=0,
    )
    events: list[Event] = []
    with Tracer([events.append]).activate():
        [report] = await ace.train(list(suite.tasks[:2]), epochs=1)
        assert report.tasks == 2 and report.mean_score is not None
        assert len(pb) >= 1 and report.bullets == len(pb)
        version = pb.version
        out = await ace(suite.tasks[2], Context())
        await ace.drain()
    await ace.aclose()
    by_type = lambda t: [e.payload for e in events if e.type == t]  # noqa: E731
    # the structured outputs parsed: answers, reflections and curated operations came back
    assert [g for g in by_type("ace.generator") if "error" not in g]
    assert len(by_type("ace.reflector")) >= 1 and by_type("ace.applied")
    assert out.error is None and out.info["playbook_version"] == version
    # the online task was learned from in the background and drain() waited for it
    assert [r for r in by_type("ace.reflector") if r["task_id"] == suite.tasks[2].id]
    assert ace.pending == 0 and pb.version >= version and all(b.content for b in pb.bullets)
    assert report.usage.model_calls == 6 and not by_type("ace.learn_skipped")
