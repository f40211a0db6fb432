"""A CyberV sensor / controller / feedback loop on one-digit sums, on the embedded SmolLM2-135M.

Round 1 samples a greedy answer and `n` more; the sensor reads each candidate's answer, the
confidence and entropy of its answer tokens, its repetition and whether it agrees with the
greedy one; the controller votes with weight confidence × (1 − repetition). When the winner's
weight is under θ·(candidates), the vote is weak: feedback listing the disagreeing answers goes
back to the model for one more round, and the final vote spans both rounds. Everything printed
below is read from the trace (`cyberv.signals`, `cyberv.decision`, `cyberv.feedback`).

.venv/bin/python examples/cyberv.py
"""

import asyncio

from agentic import Event, SamplingParams, Tracer, load_backend, load_suite
from controllers import CyberVLoop


def show(event: Event) -> None:
    p = event.payload
    if event.type == "cyberv.signals":
        conf = "   -" if p["confidence"] is None else f"{p['confidence']:.2f}"
        ent = "   -" if p["entropy"] is None else f"{p['entropy']:.2f}"
        kind = "greedy" if p["greedy"] else f"sample {p['index']}"
        print(
            f"  {kind:>9}: answer {p['answer']!r:>6}  confidence {conf}  entropy {ent}  "
            f"repetition {p['repetition']:.2f}  agrees {p['agrees_with_greedy']}"
        )
    elif event.type == "cyberv.decision":
        verdict = "weak: ask again" if p["weak"] else "accepted"
        print(
            f"  decision (round {p['round']}): {p['answer']!r}, weight {p['weight']:.2f}, {verdict}"
        )
    elif event.type == "cyberv.feedback":
        print("  feedback: " + p["text"].replace("\n", "\n            "))


async def main() -> None:
    backend = load_backend("embedded:smollm2")
    suite = load_suite("basic_arithmetic", n=3, seed=3)
    loop = CyberVLoop(
        backend, n=4, theta=0.5, params=SamplingParams(temperature=0.7, max_tokens=24)
    )
    with Tracer([show]).activate():
        for task in suite.tasks:
            print(f"{task.input.splitlines()[0]}  (expected {task.answer})")
            outcome = await loop(task)
            score = await suite.check(task, outcome.output)
            tokens = outcome.usage.total_tokens
            print(f"  => {outcome.info['answer']!r}, score {score:.0f}, {tokens} tokens\n")
    await backend.aclose()


asyncio.run(main())
