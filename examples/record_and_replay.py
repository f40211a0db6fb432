"""Record a run on the real model, then replay it bit-identically with no model loaded.

.venv/bin/python examples/record_and_replay.py
"""

import asyncio
import tempfile
from pathlib import Path

from agentic import JSONLSink, SamplingParams, Tracer, load_backend, load_suite, run_suite
from backends import ReplayBackend
from controllers import Direct


async def main() -> None:
    suite = load_suite("basic_arithmetic", n=8, seed=7)
    params = SamplingParams(temperature=0, max_tokens=32)
    recording = Path(tempfile.mkdtemp()) / "run.jsonl"

    sink = JSONLSink(recording)
    with Tracer([sink]).activate():
        live = await run_suite(suite, Direct(load_backend("embedded:smollm2"), params=params))
    sink.close()
    print(f"live:   accuracy {live.accuracy:.0%}, {live.usage.total_tokens} tokens")

    replayed = await run_suite(suite, Direct(ReplayBackend(recording), params=params))
    print(f"replay: accuracy {replayed.accuracy:.0%}, {replayed.usage.total_tokens} tokens")
    same = [a.output for a in live.outcomes] == [b.output for b in replayed.outcomes]
    print("identical outputs:", same, "| recording:", recording)


asyncio.run(main())
