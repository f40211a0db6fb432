"""ACE on the embedded SmolLM2-135M: offline adaptation on two arithmetic tasks (generator,
reflector and curator each write schema-constrained JSON), then online serving of one more,
where each answer comes back at once and the learning runs in a background worker. Prints each
role's output from the trace and the playbook at the end.

SmolLM2 is a weak reflector: its lessons are short and often trivial. Pass a stronger model as
`reflector=` (and `curator=`) and the same loop writes useful strategies.

.venv/bin/python examples/ace.py
"""

import asyncio
import tempfile
from pathlib import Path

from agentic import Context, Event, Tracer, load_backend, load_suite
from controllers import ACE
from memory import HashingEmbedder, Playbook


def show(event: Event) -> None:
    p = event.payload
    if event.type == "ace.generator":
        print(f"  generator: answer {p.get('output')!r}, cited {p.get('bullet_ids')}")
    elif event.type == "ace.applied":
        print(f"  curator -> playbook v{p['version']}: {p['effects']}")
    elif event.type in ("ace.unknown_bullets", "ace.learn_skipped", "ace.learn_failed"):
        print(f"  {event.type}: {p}")


async def main() -> None:
    backend = load_backend("embedded:smollm2")
    suite = load_suite("basic_arithmetic", n=3, seed=0)
    train, test = list(suite.tasks[:2]), list(suite.tasks[2:])
    store = Path(tempfile.mkdtemp()) / "ace.db"
    with Tracer([show]).activate():
        async with await Playbook.open(store, embedder=HashingEmbedder()) as playbook:
            ace = ACE(backend, playbook, checker=suite.check, max_chars=64)
            print("offline: one epoch over two tasks")
            [report] = await ace.train(train, epochs=1)
            print(f"  epoch 1: mean score {report.mean_score}, {report.bullets} bullets\n")
            print("online: answer now, learn in the background")
            for task in test:
                outcome = await ace(task, Context(system_prompt=suite.system_prompt))
                score = await suite.check(task, outcome.output)
                print(f"  {task.input.splitlines()[0]!r} -> {outcome.output!r} (score {score})")
            print(f"  lessons still queued: {ace.pending}")
            await ace.aclose()  # waits for the queued learning
            print(f"\nplaybook ({store}):")
            print(playbook.render(max_tokens=200, count_tokens=backend.count_tokens))


asyncio.run(main())
