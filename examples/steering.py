"""Activation steering per request on the embedded SmolLM2-135M: a CAA refusal vector, applied to
some requests of one batch and not to others.

The vector is the mean difference of the residual stream after a refusing assistant opening
("I'm sorry, but I can't") and after a complying one ("Sure, here is how"), over 12 prompts, at
layers 10-16. Two harmful and two benign questions are then decoded together, each once plain and
once steered; the plain rows are bit-identical to a batch without steering. A fixed vector
turns benign answers into refusals as well (at 0.4 per layer the text breaks): that is what the
weighted controller (`backends.interventions.weighted`) is for.

.venv/bin/python examples/steering.py
"""

import asyncio
import json
from pathlib import Path

from agentic import load_backend
from agentic.core import GenerateRequest, InterventionRef
from backends.interventions.static import Steering
from backends.interventions.steering_vectors import extract_mean_difference

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "safety_prompts.jsonl"


def prompts(label: str, split: str, n: int) -> list[str]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [r["prompt"] for r in rows if (r["label"], r["split"]) == (label, split)][:n]


def ask(text: str, prefix: str = "", steer: bool = False) -> GenerateRequest:
    req = GenerateRequest.chat(text, max_tokens=32, temperature=0.0)
    refs = (InterventionRef(name="refuse"),) if steer else ()
    return req.model_copy(update={"prefix": prefix, "interventions": refs})


async def main() -> None:
    lm = load_backend("embedded:smollm2")
    train = prompts("harmful", "train", 6) + prompts("benign", "train", 6)
    vector = await extract_mean_difference(
        lm,
        [ask(p, "I'm sorry, but I can't") for p in train],
        [ask(p, "Sure, here is how") for p in train],
        layers=range(10, 17),
        name="refusal",
    )
    lm.attach("refuse", Steering(vector, scale=0.1))
    questions = prompts("harmful", "test", 2) + prompts("benign", "test", 2)
    reqs = [ask(q) for q in questions] + [ask(q, steer=True) for q in questions]
    outs = await asyncio.gather(*(lm.generate([r]) for r in reqs))  # one batch
    for i, q in enumerate(questions):
        plain, steered = outs[i][0][0].text, outs[i + len(questions)][0][0].text
        print(f"Q: {q}\n  plain:   {plain[:90]!r}\n  steered: {steered[:90]!r}")
    await lm.aclose()


asyncio.run(main())
