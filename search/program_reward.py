"""Program-aided verification: an outcome reward that checks a candidate's final answer against
what programs, written by the policy model for the same task and run in a sandbox, print.

Papers:
- PAL: Gao et al. 2023, "PAL: Program-aided Language Models". The model writes a program for
  the question and an interpreter, not the model, computes the answer.
- CSV: Zhou et al. 2023, "Solving Challenging Math Word Problems Using GPT-4 Code Interpreter
  with Code-based Self-Verification". An answer is verified by code; the verdict (True, False or
  Uncertain) weights the answer in a verification-guided weighted majority vote.

Symbols -> code:
- x: the task (`task.input`), asked once per task with `PROGRAM_PROMPT`;
- P_1..P_k ~ policy(x): `k` programs from one `Backend.generate` call (`n=k`), extracted from a
  ```python block by `extract_program` and cached per `task.id` with their outputs
  (`ProgramReward.runs`), so the N candidates of a task, scored in any number of calls, share
  one program generation;
- o_i = exec(P_i): the injected `run(code)` (stdout, or None when P_i failed, timed out or
  printed nothing); search/ cannot import the sandbox, so `agentic.agents.verifiers.sandbox_runner`
  builds the usual runner;
- a(y): the final answer of a text (`answer_of(task, y)`, default `last_answer`), read from the
  candidates and the program outputs alike; a ≡ b is `same_answer` (numbers compare by value);
- R(y) = |{i : o_i ok and a(o_i) ≡ a(y)}| / |{i : o_i ok}|: 1.0 is CSV's "verified True", 0.0
  "verified False". When no program ran successfully, R(y) = `neutral` (0.5) for every
  candidate: CSV's "Uncertain". A silent check must neither reward nor punish, so a
  weighted vote or a search falls back on its other signals instead of on noise.

Cost: program generation goes through the backend, so its tokens and model calls are charged
there like any other generation; the reward counts one reward call per candidate scored.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from agentic.core import (
    AnswerReader,
    ConfigError,
    GenerateRequest,
    Message,
    SamplingParams,
    Task,
    Usage,
    charge_budget,
    emit,
)
from backends import Backend

__all__ = [
    "PROGRAM_PROMPT",
    "ProgramReward",
    "ProgramRun",
    "Runner",
    "extract_program",
    "last_answer",
    "same_answer",
]

Runner = Callable[[str], Awaitable[str | None]]
"""`code -> stdout`, or None when the program failed, timed out or printed nothing."""

PROGRAM_PROMPT = (
    "{question}\n\n"
    "Write a short Python program that computes the answer to this problem and prints only the "
    "final answer. Put the program in a ```python code block."
)
CODE_START = "```python\n"

# An unclosed block counts: a program cut off by `max_tokens` or by the closing-fence stop
# sequence still runs (and fails cleanly if it is incomplete).
_CODE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)
_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def extract_program(text: str) -> str | None:
    """The first fenced Python block of `text` (closed or not), or None when there is none."""
    match = _CODE.search(text)
    code = match.group(1).strip() if match else ""
    return code or None


def last_answer(task: Task, text: str) -> str:
    """The default answer reader: an `<answer>…</answer>` tag, else the last number in the text,
    else its last non-empty line, stripped. Programs print their answer last, and a worked
    solution ("3 + 4 = 7") ends on it."""
    if tag := _TAG.search(text):
        return tag.group(1).strip()
    if numbers := _NUMBER.findall(text):
        return str(numbers[-1])
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _number(answer: str) -> Fraction | None:
    try:
        return Fraction(_THOUSANDS.sub("", answer))
    except (ValueError, ZeroDivisionError):
        return None


def _normalise(answer: str) -> str:
    return answer.strip().rstrip(".,;:!?").strip()


def same_answer(a: str, b: str) -> bool:
    """Whether two extracted answers agree: surrounding whitespace and trailing punctuation are
    ignored, numbers compare by value ("7.0" and "7", "1,000" and "1000", "1/2" and "0.5"),
    within float round-off since programs print floats ("0.30000000000000004" and "0.3")."""
    a, b = _normalise(a), _normalise(b)
    x, y = _number(a), _number(b)
    if x is None or y is None:
        return a.casefold() == b.casefold()
    try:
        return x == y or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    except OverflowError:  # beyond float range: only the exact comparison above applies
        return False


@dataclass(frozen=True)
class ProgramRun:
    """One program written for a task: its code (None when the reply held no code block), what
    it printed (None when it failed, timed out, printed nothing or never ran) and the answer
    read from that output (None unless it ran and an answer could be read)."""

    code: str | None
    output: str | None
    answer: str | None


class ProgramReward:
    """R(y): the fraction of successful programs whose printed answer agrees with y's answer;
    `neutral` when none succeeded (see the module docstring).

    Args:
        backend: the policy that writes the programs.
        run: executes one program (`agentic.agents.verifiers.sandbox_runner()` in a sandbox).
        k: programs per task; more than one needs sampling (`temperature`).
        temperature: for the programs; None means greedy for one program and 0.7 for several.
        max_tokens: per program.
        answer_of: reads the final answer from a candidate and from a program's output; pass
            the suite's `extract` to read candidates exactly as its checker grades them.
        neutral: the score of every candidate when no program ran successfully.
        prompt: must contain {question}; the task's input fills it.
        seed: for the program sampling, so a rerun writes the same programs.
    """

    kind: Literal["outcome"] = "outcome"

    def __init__(
        self,
        backend: Backend,
        run: Runner,
        *,
        k: int = 1,
        temperature: float | None = None,
        max_tokens: int = 256,
        answer_of: AnswerReader = last_answer,
        neutral: float = 0.5,
        prompt: str = PROGRAM_PROMPT,
        seed: int | None = 0,
    ) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if temperature is None:
            temperature = 0.0 if k == 1 else 0.7
        if k > 1 and temperature == 0.0:
            raise ConfigError("k > 1 programs at temperature 0 would all be the same program")
        if not 0.0 <= neutral <= 1.0:
            raise ConfigError(f"neutral must be in [0, 1], got {neutral}")
        if "{question}" not in prompt:
            raise ConfigError("prompt must contain {question}")
        self.backend = backend
        self.run = run
        self.params = SamplingParams(max_tokens=max_tokens, temperature=temperature, n=k, seed=seed)
        self.answer_of = answer_of
        self.neutral = neutral
        self.prompt = prompt
        self._runs: dict[str, tuple[ProgramRun, ...]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _request(self, task: Task) -> GenerateRequest:
        messages = (Message(role="user", content=self.prompt.format(question=task.input)),)
        if self.backend.capabilities.prefix:
            # Opening the block for the model keeps a weak policy on code, and the closing
            # fence then ends the program without paying for any prose after it.
            params = self.params.model_copy(update={"stop": ("```",)})
            return GenerateRequest(messages=messages, prefix=CODE_START, params=params)
        return GenerateRequest(messages=messages, params=self.params)

    async def _execute(self, task: Task, code: str | None) -> ProgramRun:
        output = await self.run(code) if code is not None else None
        answer = self.answer_of(task, output) if output is not None and output.strip() else None
        return ProgramRun(code=code, output=output, answer=answer or None)

    async def runs(self, task: Task) -> tuple[ProgramRun, ...]:
        """The task's `k` programs and what they printed: written and run on the first call for
        a task id, cached afterwards. Concurrent callers for one task wait for the same work."""
        if task.id not in self._runs:
            async with self._locks.setdefault(task.id, asyncio.Lock()):
                if task.id not in self._runs:
                    self._runs[task.id] = await self._write_and_run(task)
            # Later calls read the cache first, so the lock is needed no more.
            self._locks.pop(task.id, None)
        return self._runs[task.id]

    async def _write_and_run(self, task: Task) -> tuple[ProgramRun, ...]:
        request = self._request(task)
        [generations] = await self.backend.generate([request])
        codes = [extract_program(request.prefix + g.text) for g in generations]
        runs = tuple(await asyncio.gather(*(self._execute(task, c) for c in codes)))
        emit(
            "reward.programs",
            task_id=task.id,
            programs=len(runs),
            written=sum(r.code is not None for r in runs),
            answers=[r.answer for r in runs],
        )
        return runs

    async def score(self, task: Task, texts: Sequence[str]) -> list[float]:
        answers = [r.answer for r in await self.runs(task) if r.answer is not None]
        charge_budget(Usage(reward_calls=len(texts)))
        if not answers:
            return [self.neutral] * len(texts)
        scores = []
        for text in texts:
            mine = self.answer_of(task, text)
            scores.append(sum(same_answer(mine, a) for a in answers) / len(answers))
        return scores
