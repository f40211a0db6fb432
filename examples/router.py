"""A²FM-style routing on the embedded SmolLM2-135M: instant, reasoning or agentic, per question.

`A2FMRouter` holds three modes, `Direct` (one greedy answer), `SelfConsistency` (a vote over 4
sampled answers) and a `ToolAgent` with the calculator, and a policy that picks one per
question. `SelfTagPolicy` asks the model itself which mode the question needs and scores the
three tags with `Backend.score`; a 135M model tags nearly everything "instant", and its routing
call (three scored prompts) costs more tokens than the instant answer. Any object with an async
`route(task, ctx) -> RouteDecision` is a policy too: `DigitsPolicy` below is a two-line rule,
run through the same router for contrast; `LearnedPolicy` is the trained one
(`benchmarks/controllers_a2fm.py`). A²FM's measure is cost-of-pass, hence the tokens column.

.venv/bin/python examples/router.py
"""

import asyncio
import re

from agentic import Context, Outcome, SamplingParams, Task, load_backend
from agentic.agents import ToolAgent
from agentic.agents.tools import calculator
from agentic.core import extract_answer
from controllers import A2FMRouter, Direct, SelfConsistency, SelfTagPolicy
from controllers.router import Mode, RouteDecision, RoutingPolicy

TASKS = [
    Task(id="fact", input="What is the capital of France?", answer="Paris"),
    Task(id="story", input="Tom has 3 apples and buys 5 more. How many apples now?", answer="8"),
    Task(id="product", input="What is 4821 * 37?", answer="178377"),
]


class DigitsPolicy:
    """Numbers of three or more digits: a calculator; any other number: reasoning."""

    async def route(self, task: Task, ctx: Context | None = None) -> RouteDecision:
        longest = max((len(n) for n in re.findall(r"\d+", task.input)), default=0)
        mode: Mode = "agentic" if longest >= 3 else "reasoning" if longest else "instant"
        return RouteDecision(mode=mode, scores={"longest_number": longest}, policy="digits")


def right(task: Task, outcome: Outcome) -> bool:
    assert task.answer is not None
    got = extract_answer(outcome.output, task.answer).replace(",", "")
    return task.answer.lower() in got.lower()


async def main() -> None:
    backend = load_backend("embedded:smollm2")
    instant = Direct(backend, params=SamplingParams(temperature=0.0, max_tokens=24))
    reasoning = SelfConsistency(backend, n=4, params=SamplingParams(temperature=0.7, max_tokens=32))
    agentic = ToolAgent(backend, [calculator], max_steps=3, tool_choice="required")
    policies: dict[str, RoutingPolicy] = {
        "self-tag": SelfTagPolicy(backend),
        "digits": DigitsPolicy(),
    }
    routers = {
        name: A2FMRouter(instant=instant, reasoning=reasoning, agentic=agentic, policy=policy)
        for name, policy in policies.items()
    }
    # every question under both routers at once: the backend batches their model calls
    runs = [(name, task, router(task)) for name, router in routers.items() for task in TASKS]
    outcomes = await asyncio.gather(*(run for _, _, run in runs))
    for (name, task, _), outcome in zip(runs, outcomes, strict=True):
        verdict = "right" if right(task, outcome) else "wrong"
        answer = outcome.output.strip().split("\n")[0][:50]
        print(
            f"{name:<8} {task.id:<8} -> {outcome.info['mode']:<9} "
            f"{outcome.usage.total_tokens:>5} tokens  {verdict}  {answer!r}"
        )
    await backend.aclose()


asyncio.run(main())
