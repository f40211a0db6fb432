"""An ACE playbook on its own, no language model: delta operations, grow-and-refine
deduplication with all-MiniLM-L6-v2, rendering under a token budget, the operation log, and two
handles (think: two processes) writing to one store file without losing an update.

.venv/bin/python examples/playbook.py
"""

import asyncio
import tempfile
from pathlib import Path

from memory import AddOp, MergeOp, Playbook, PlaybookOpError, SentenceTransformerEmbedder, TagOp


async def main() -> None:
    path = Path(tempfile.mkdtemp()) / "memory.db"
    embedder = SentenceTransformerEmbedder()
    a = await Playbook.open(path, embedder=embedder)
    b = await Playbook.open(path, embedder=embedder)  # a second handle on the same file

    first = await a.apply(
        [
            AddOp(section="strategies", content="Multiply before adding, left to right."),
            AddOp(section="mistakes", content="Dropping the minus sign of a negative result."),
        ],
        source="task-1",
    )
    # a near-paraphrase in the same section is merged into the existing bullet (cosine >= 0.9)
    [dup] = await b.apply(
        [AddOp(section="strategies", content="Multiply before you add, going left to right.")]
    )
    print(f"paraphrase: {dup.effect} into {dup.bullet_id} (cosine {dup.similarity:.2f})")
    [check] = await b.apply(
        [AddOp(section="strategies", content="Check the answer by estimating it.")]
    )
    await a.refresh()  # picks up b's writes
    rule, sign = first[0].bullet_id, first[1].bullet_id
    await a.apply([TagOp(id=rule, tag="helpful"), TagOp(id=sign, tag="harmful")])
    await a.apply([MergeOp(ids=[rule, check.bullet_id], content="Multiply first; estimate.")])

    try:  # a batch is all or nothing; the error names the operation and the id
        await a.apply(
            [AddOp(section="strategies", content="kept?"), TagOp(id="nope", tag="helpful")]
        )
    except PlaybookOpError as e:
        print(f"refused: {e}\n")

    print(f"{len(a)} bullets, version {a.version}; rendered under 80 tokens:")
    print(a.render(max_tokens=80))
    print("\noperation log:")
    for entry in await a.history():
        print(f"  {entry.seq}: {entry.effect:<12} {entry.bullet_id}  (source {entry.source})")
    await a.aclose()
    await b.aclose()


asyncio.run(main())
