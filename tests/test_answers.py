"""One answer, read one way: what a selector chooses is what the checker grades."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentic.core import Task, extract_answer
from agentic.runtime.suites import load_suite
from agentic.specs.registry import BuildContext
from backends.testing import ScriptedBackend


def test_the_rule_tag_then_first_line_then_its_last_number() -> None:
    assert extract_answer("blah <answer> 12 </answer> 7", "12") == "12"
    assert extract_answer("<answer>\nso 3 + 4 = 7\n</answer>", "7") == "7"
    assert extract_answer("3 + 4 = 7\n\nSeven is a number 9", "7") == "7"
    assert extract_answer("\n  The answer is -3.\nmore", "-3") == "-3"
    assert extract_answer("Paris\nis the capital", "Paris") == "Paris"
    assert extract_answer("3 + 4 = 7", None) == "3 + 4 = 7"
    assert extract_answer("", "1") == ""


@settings(max_examples=300, deadline=None)
@given(st.text(), st.sampled_from(["12", "-3.5", "Paris", None]))
def test_the_rule_is_idempotent(text: str, expected: str | None) -> None:
    once = extract_answer(text, expected)
    assert extract_answer(once, expected) == once


def _suite_and_texts() -> tuple[object, Task, list[str]]:
    suite = load_suite("basic_arithmetic", n=1, seed=0)
    task = suite.tasks[0]
    right = int(task.answer or "0")
    # the first line and the last number disagree: a vote that read the last number of the
    # whole text would pick `right` and then be graded on the first line
    texts = [f"{right + 1}\n\nso it is {right}", f"{right + 1}", f"{right}\n\n{right + 2}"]
    return suite, task, texts


async def test_self_consistency_is_graded_on_the_answer_it_voted_for() -> None:
    suite, task, texts = _suite_and_texts()
    backend = ScriptedBackend(lambda prefix, j: (texts[j % 3], True))
    sc = BuildContext(backend, suite).build({"type": "sc", "n": 3})  # type: ignore[arg-type]
    outcome = await sc(task)
    voted = outcome.info["answer"]
    assert voted == str(int(task.answer or "0") + 1)  # two first lines say right + 1
    assert suite.extract(task, outcome.output) == voted  # type: ignore[attr-defined]
    assert await suite.check(task, outcome.output) == 0.0  # type: ignore[attr-defined]


async def test_weighted_vote_is_graded_on_the_answer_it_voted_for() -> None:
    suite, task, texts = _suite_and_texts()
    backend = ScriptedBackend(lambda prefix, j: (texts[j % 3], True))
    spec = {"type": "bon", "samples": 3, "reward": "checker", "select": "weighted_majority"}
    bon = BuildContext(backend, suite).build(spec)  # type: ignore[arg-type]
    outcome = await bon(task)
    # the oracle weighs only the text whose first line is right: its answer wins and is graded 1
    assert suite.extract(task, outcome.output) == task.answer  # type: ignore[attr-defined]
    assert await suite.check(task, outcome.output) == 1.0  # type: ignore[attr-defined]
