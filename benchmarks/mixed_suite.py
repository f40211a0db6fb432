"""A mixed suite for routing between instant, reasoning and agentic modes.

Three kinds of task, in equal numbers, with fixed train and test splits:
- `trivial`: short fact questions written here (a capital, a count, a colour): answer directly;
- `calculator`: products and sums of large numbers (seeded): a calculator gets them right, a
  135M model alone almost never does;
- `reasoning`: reasoning-gym `basic_arithmetic` with three one-digit terms (seeded): small
  enough to work out, hard enough that the model alone often slips.
The checker reads the answer as `agentic.runtime.suites.extract_answer` does and compares numbers by
value and words case-insensitively.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, Literal

from agentic.core import ConfigError, Task, TaskSuite, extract_answer
from agentic.runtime.suites import ANSWER_INSTRUCTION

TRIVIAL: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "8"),
    ("What colour is grass?", "green"),
    ("How many days are in a week?", "7"),
    ("What is the opposite of hot?", "cold"),
    ("What is 2 + 2?", "4"),
    ("What is the capital of Italy?", "Rome"),
    ("How many wheels does a bicycle have?", "2"),
    ("What is the largest planet in the solar system?", "Jupiter"),
    ("What colour is the sky on a clear day?", "blue"),
    ("How many months are in a year?", "12"),
    ("What is 10 - 3?", "7"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What do bees make?", "honey"),
    ("How many hours are in a day?", "24"),
    ("What is the freezing point of water in degrees Celsius?", "0"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is 3 * 3?", "9"),
    ("What animal says meow?", "cat"),
    ("How many sides does a triangle have?", "3"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the opposite of up?", "down"),
    ("How many minutes are in an hour?", "60"),
    ("What colour are bananas when ripe?", "yellow"),
    ("What is 5 + 5?", "10"),
    ("What is the capital of England?", "London"),
    ("How many legs does a dog have?", "4"),
    ("What gas do humans breathe in to live?", "oxygen"),
    ("How many sides does a square have?", "4"),
    ("What is 6 / 2?", "3"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the opposite of day?", "night"),
    ("What is the boiling point of water in degrees Celsius?", "100"),
    ("What colour is snow?", "white"),
    ("How many continents are there?", "7"),
    ("What is 1 + 1?", "2"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What do cows drink?", "water"),
    ("How many eyes does a person have?", "2"),
    ("What is 9 - 4?", "5"),
]

Kind = Literal["trivial", "calculator", "reasoning"]
KINDS: tuple[Kind, ...] = ("trivial", "calculator", "reasoning")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _calculator_task(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(101, 999), rng.randint(11, 99)
    if rng.random() < 0.5:
        return f"What is {a} * {b}?", str(a * b)
    c = rng.randint(1001, 9999)
    return f"What is {c} + {a * b}?", str(c + a * b)


class MixedSuite(TaskSuite):
    def __init__(self, *, split: Literal["train", "test"] = "test", per_kind: int = 20) -> None:
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
        if not 1 <= per_kind <= len(TRIVIAL) // 2:
            raise ConfigError(f"per_kind must be in 1..{len(TRIVIAL) // 2}, got {per_kind}")
        import reasoning_gym

        self.name, self.split, self.per_kind = "mixed", split, per_kind
        offset = 0 if split == "train" else len(TRIVIAL) // 2
        rng = random.Random(f"mixed-{split}")
        hard = reasoning_gym.create_dataset(
            "basic_arithmetic",
            seed=1000 if split == "train" else 2000,
            size=per_kind,
            min_terms=3,
            max_terms=3,
            min_digits=1,
            max_digits=1,
        )
        tasks: list[Task] = []
        for i in range(per_kind):
            q, a = TRIVIAL[offset + i]
            tasks.append(self._task("trivial", i, q, a))
            q, a = _calculator_task(rng)
            tasks.append(self._task("calculator", i, q, a))
            entry = hard[i]
            tasks.append(self._task("reasoning", i, entry["question"], str(entry["answer"])))
        self._tasks = tasks

    def _task(self, kind: Kind, i: int, question: str, answer: str) -> Task:
        return Task(
            id=f"mixed/{self.split}/{kind}/{i}",
            input=f"{question}\n{ANSWER_INSTRUCTION}",
            answer=answer,
            metadata={"kind": kind},
        )

    @property
    def tasks(self) -> Sequence[Task]:
        return self._tasks

    async def check(self, task: Task, output: str) -> float:
        if task.answer is None:
            raise ConfigError(f"task {task.id!r} has no answer")
        got = extract_answer(output, task.answer)
        if _NUMBER.fullmatch(task.answer):
            nums = _NUMBER.findall(got)
            return float(bool(nums) and float(nums[-1]) == float(task.answer))
        return float(re.search(rf"\b{re.escape(task.answer)}\b", got, re.I) is not None)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "per_kind": self.per_kind}
