"""Quickstart: batched generation, scoring and a budget on the embedded SmolLM2-135M.

.venv/bin/python examples/quickstart.py
"""

import asyncio

from agentic import Budget, GenerateRequest, ScoreRequest, load_backend


async def main() -> None:
    backend = load_backend("embedded:smollm2")  # or hf:PATH, replay:run.jsonl, ...
    questions = [f"What is {a} + {a + 3}?" for a in range(1, 9)]
    requests = [
        GenerateRequest.chat(q, temperature=0, max_tokens=24, logprobs=0) for q in questions
    ]
    with Budget(max_tokens=2_000) as budget:
        # eight independent calls; the backend coalesces them into one batched forward
        results = await asyncio.gather(*(backend.generate([r]) for r in requests))
    for q, [[g]] in zip(questions, results, strict=True):
        print(f"{q!r} -> {g.text.splitlines()[0]!r} (logprob {g.logprob:.2f})")
    [s] = await backend.score([ScoreRequest(messages=requests[0].messages, continuation="5")])
    print(f"log P('5' | {questions[0]!r}) = {s.logprob:.3f}; spent {budget.spent}")
    await backend.aclose()


asyncio.run(main())
