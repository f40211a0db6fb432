"""A ReAct tool agent on the embedded SmolLM2-135M: calculator, sandboxed Python, a custom tool.

Every action is a JSON object constrained to the tools' schemas, so even a 135M model calls
tools without malformed JSON; `tool_choice="required"` makes it call one before it answers
(alone it gets 4821 * 37 wrong). A model this small copies worked examples far better than it
follows instructions, so the agent is shown one short exchange per kind of tool (`examples=`);
it still cannot write free-form programs, so the Python question asks for a one-liner.
The trajectory is read back from the trace: each `agent.action` (tool and arguments) and
`agent.observation` (what the tool returned).

.venv/bin/python examples/tool_agent.py
"""

import asyncio
import json
from typing import Any

from agentic import Event, Message, Outcome, SamplingParams, Task, Tracer, load_backend
from agentic.agents import ToolAgent
from agentic.agents.tools import calculator, python_tool, tool


@tool
def fahrenheit(celsius: float) -> str:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit.

    Args:
        celsius: The temperature in degrees Celsius.
    """
    return f"{celsius * 9 / 5 + 32:g}"


def exchange(question: str, call: dict[str, Any], result: str, why: str) -> list[Message]:
    """One worked example: the question, a tool call, the tool's result, the answer."""
    answer = {"thought": f"{why} {result}.", "final_answer": result}
    return [
        Message(role="user", content=question),
        Message(role="assistant", content=json.dumps(call)),
        Message(role="user", content=f"Tool {call['tool']} result: {result}"),
        Message(role="assistant", content=json.dumps(answer)),
    ]


RUN = {"thought": "Run a short program.", "tool": "python", "arguments": {"code": "print(2 ** 10)"}}
CALC = {
    "thought": "Use the calculator.",
    "tool": "calculator",
    "arguments": {"expression": "12 * 34"},
}
EXAMPLES = [
    *exchange("Use python to print 2 ** 10.", RUN, "1024", "The program printed"),
    *exchange("What is 12 * 34?", CALC, "408", "The calculator gave"),
]
QUESTIONS = [
    "What is 4821 * 37?",
    "Use python to print len('encyclopedia').",
    "Convert 37 degrees Celsius to Fahrenheit.",
]


def trajectory(events: list[Event]) -> None:
    for e in events:
        if e.type == "agent.action" and "tool" in e.payload:
            print(f"  action:      {e.payload['tool']}({json.dumps(e.payload['arguments'])})")
        elif e.type == "agent.action":
            print(f"  bad action:  {e.payload['error']}")
        elif e.type == "agent.observation":
            print(f"  observation: {e.payload['content'].strip()[:80]!r}")


async def main() -> None:
    backend = load_backend("embedded:smollm2")
    agent = ToolAgent(
        backend,
        [calculator, python_tool(), fahrenheit],
        max_steps=3,
        tool_choice="required",
        examples=EXAMPLES,
        params=SamplingParams(temperature=0.0, max_tokens=64),
    )

    async def ask(i: int, question: str) -> tuple[list[Event], Outcome]:
        events: list[Event] = []
        with Tracer([events.append]).activate():  # one trace per question
            return events, await agent(Task(id=f"q{i}", input=question))

    # the questions run concurrently: the backend batches their model calls
    runs = await asyncio.gather(*(ask(i, q) for i, q in enumerate(QUESTIONS)))
    for question, (events, outcome) in zip(QUESTIONS, runs, strict=True):
        print(f"Q: {question}")
        trajectory(events)
        tokens = outcome.usage.total_tokens
        print(f"A: {outcome.output!r} ({outcome.info['steps']} steps, {tokens} tokens)\n")
    await backend.aclose()


asyncio.run(main())
