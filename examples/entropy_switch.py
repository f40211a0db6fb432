"""Entropy Adaptive Decoding: SmolLM2-135M-Instruct writes, Gemma-3-270M takes over when unsure.

The small model generates; whenever the mean entropy of its last 5 next-token distributions
rises above the threshold (nats), the answer so far is handed, as text, to the large model,
which writes until its own rolling entropy falls back below it (after at least 8 tokens). The
two models have different tokenizers and Gemma-3-270M is a base model without a chat template,
so it sees the task as a plain prompt: the question and a blank line. τ = 1.5 nats sits inside
the range `benchmarks/ead_eval.py` sweeps (1 to 3); it depends on the pair of models. Printed:
each segment (which model wrote what, and the rolling entropy that ended it) and the large
model's share of the tokens.

.venv/bin/python examples/entropy_switch.py
"""

import asyncio

from agentic import Task, load_backend
from controllers import EntropyAdaptiveDecoding
from controllers.entropy_switch import Segment


async def main() -> None:
    small = load_backend("embedded:smollm2")
    large = load_backend("embedded:gemma3-270m")
    ead = EntropyAdaptiveDecoding(small, large, threshold=1.5, max_tokens=64)
    task = Task(id="q", input="Calculate 7 + 5 * 2.")
    outcome = await ead(task)

    print(f"Q: {task.input}\n")
    for s in map(Segment.model_validate, outcome.info["segments"]):
        why = f"rolling entropy {s.entropy:.2f}" if s.entropy is not None else s.end
        print(f"[{s.model:>5} {s.tokens:>2} tokens, ended by {why}] {s.text!r}")
    info = outcome.info
    print(f"\nanswer: {outcome.output!r}")
    print(
        f"large-model share: {info['large_token_share']:.0%} of tokens, "
        f"{info['large_char_share']:.0%} of characters; {info['switches']} switches; "
        f"generated {info['generated_tokens']} tokens in all"
    )
    await small.aclose()
    await large.aclose()


asyncio.run(main())
