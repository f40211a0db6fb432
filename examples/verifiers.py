"""Verifiers on the embedded SmolLM2-135M: a plain majority vote against best-of-N guided by the
policy's own token confidence plus a program it writes and the sandbox runs.

Both read each answer with the suite's own `extract`, the rule its checker grades by; the
verifier adds one program per task (its tokens are counted) and scores the samples' confidence
from the logprobs they were sampled with (no extra forward).

.venv/bin/python examples/verifiers.py
"""

import asyncio

from agentic.runtime.runner import run_suite
from agentic.runtime.suites import load_suite
from agentic.specs.registry import BuildContext
from backends import load_backend


async def main() -> None:
    backend = load_backend("embedded:smollm2")
    suite = load_suite("gcd", n=4, seed=7, config={"max_value": 20})
    builder = BuildContext(backend, suite)
    specs = {
        "majority vote": {"type": "sc", "n": 4},
        "best-of-4 (confidence + program)": {
            "type": "bon", "samples": 4, "reward": "confidence+program", "confidence": "mean",
        },
    }  # fmt: skip
    for name, spec in specs.items():
        result = await run_suite(suite, builder.build(spec))
        tokens = result.usage.completion_tokens / len(result.outcomes)
        print(f"{name:34s} accuracy {result.accuracy:.0%}, {tokens:.0f} generated tokens/task")
    await backend.aclose()


asyncio.run(main())
