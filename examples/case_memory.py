"""AgentFly case memory on the embedded SmolLM2-135M: a planner reads similar past cases, a
`ToolAgent` with the calculator executes the plan, the checker judges, and the case is written
back to a SQLite bank. The bank starts empty; each later task retrieves the cases written by the
earlier ones (by all-MiniLM-L6-v2 similarity), shown as "worked before" or "avoid".

.venv/bin/python examples/case_memory.py
then: .venv/bin/agentic memory ls <the store it prints>
"""

import asyncio
import tempfile
from pathlib import Path

from agentic import Task, load_backend
from agentic.agents import ToolAgent
from agentic.agents.tools import calculator
from controllers import CaseMemoryAgent
from memory import CaseBank, SentenceTransformerEmbedder


async def check(task: Task, output: str) -> float:
    return float(output.strip() == task.answer)


async def main() -> None:
    model = load_backend("embedded:smollm2")
    store = Path(tempfile.mkdtemp()) / "cases.db"
    bank = CaseBank.open(store, SentenceTransformerEmbedder())
    agent = CaseMemoryAgent(
        model,  # the planner
        ToolAgent(model, [calculator], tool_choice="required"),  # the executor
        bank,
        checker=check,
    )
    for a, b in [(48, 12), (37, 21), (48, 13)]:
        task = Task(id=f"{a}x{b}", input=f"What is {a} * {b}?", answer=str(a * b))
        out = await agent(task)
        used = out.info["retrieved"]
        print(f"{task.input} -> {out.output!r} ({'right' if out.info['label'] else 'wrong'})")
        print(f"  retrieved: worked before {used['positive']}, avoid {used['negative']}")
        print(f"  plan: {out.info['plan'][:120]!r}")
    print(f"\n{await bank.count()} cases in {store}")
    await bank.aclose()


asyncio.run(main())
