"""The one rule that reads a final answer out of free-form text.

Every selector (majority vote, weighted vote, best-of-N, a search's final pick) and every checker
reads answers through a suite's `TaskSuite.extract`, whose default is `read_answer`, so the
answer a vote chose is the answer that is graded. The rule, in order:

1. an `<answer>…</answer>` tag (the first one) wins: the rest reads only its content;
2. the first non-empty line, stripped (the instruction asks for only the final answer, and a
   small model that goes on after its first line is mostly writing a new question);
3. and when the expected answer is a number (the task's `answer` field, when known), the last
   number on that line: "3 + 4 = 7" reads "7".

Only the *form* of the expected answer is used (number or not), never its value. The rule is
idempotent: the answer read from an answer is itself, so grading `extract(output)` and grading
`output` agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentic.core.tasks import Task

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)

AnswerReader = Callable[["Task", str], str]
"""`(task, text) -> answer`: what a selector compares and a checker grades."""


def extract_answer(output: str, expected: str | None = None) -> str:
    """The rule above for a text whose expected answer is `expected` (only its form is read)."""
    tag = ANSWER_TAG.search(output)
    if tag:
        output = tag.group(1)
    line = next((ln.strip() for ln in output.splitlines() if ln.strip()), "")
    if expected is not None and NUMBER.fullmatch(expected.strip()):
        numbers = NUMBER.findall(line)
        if numbers:
            return str(numbers[-1])
    return line


def read_answer(task: Task, output: str) -> str:
    """`extract_answer` for `task`: the default `AnswerReader`."""
    return extract_answer(output, task.answer)
