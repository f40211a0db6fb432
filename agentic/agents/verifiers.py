"""Verifiers that need the top floor: the program-aided reward wired to the Python sandbox.

`search.program_reward.ProgramReward` runs programs through an injected runner because search/
may not import `agentic.agents.tools`; `sandbox_runner()` is that runner on a `PythonSandbox`, and
`program_reward(backend)` builds the reward with it.
"""

from __future__ import annotations

from typing import Any

from agentic.agents.tools.sandbox import PythonSandbox
from backends import Backend
from search.program_reward import ProgramReward, Runner

__all__ = ["program_reward", "sandbox_runner"]


def sandbox_runner(
    timeout: float = 5.0, *, memory_mb: int = 256, max_output_chars: int = 4000
) -> Runner:
    """A runner that executes each program in a fresh sandboxed interpreter (no network, a
    private temporary directory, `timeout` seconds of wall clock, `memory_mb` of memory) and
    returns its stdout; None when the program raised, was blocked, was killed for time or
    memory, or printed nothing, which `ProgramReward` treats as a program that gave no answer."""
    sandbox = PythonSandbox(
        timeout_s=timeout, memory_mb=memory_mb, max_output_chars=max_output_chars
    )

    async def run(code: str) -> str | None:
        result = await sandbox.run(code)
        if result.error is not None or not result.stdout.strip():
            return None
        return result.stdout

    return run


def program_reward(
    backend: Backend, *, timeout: float = 5.0, memory_mb: int = 256, **kw: Any
) -> ProgramReward:
    """A `ProgramReward` whose programs `backend` writes and a `sandbox_runner(timeout,
    memory_mb=...)` runs; `kw` goes to `ProgramReward` (k, temperature, answer_of, neutral, ...)."""
    return ProgramReward(backend, sandbox_runner(timeout, memory_mb=memory_mb), **kw)
