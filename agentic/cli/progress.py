"""Progress of `agentic run`: a live bar (tasks, accuracy, tokens, ETA) on a terminal, and
plain periodic lines when stderr is a log file, so a `nohup` run says how far it is."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from agentic.core import Budget, Outcome


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Tally:
    """Progress so far: tasks done (resumed ones included), mean score, tokens, and an ETA from
    this invocation's own pace (resumed tasks took no time here)."""

    def __init__(self, total: int, finished: list[Outcome]) -> None:
        self.total, self.resumed = total, len(finished)
        self.n, self.solved = len(finished), sum((o.score or 0.0) >= 1.0 for o in finished)
        self.score = sum(o.score or 0.0 for o in finished)
        self.tokens = sum(o.usage.total_tokens for o in finished)
        self.started = time.monotonic()

    def add(self, o: Outcome) -> None:
        self.n += 1
        self.solved += (o.score or 0.0) >= 1.0
        self.score += o.score or 0.0
        self.tokens += o.usage.total_tokens

    def eta(self) -> float | None:
        here = self.n - self.resumed
        if here == 0:
            return None
        return (time.monotonic() - self.started) / here * (self.total - self.n)

    def line(self, name: str) -> str:
        mean = self.score / self.n if self.n else 0.0
        eta = self.eta()
        return (
            f"{name}: {self.n}/{self.total} done, accuracy {mean:.1%} ({self.solved} solved), "
            f"{self.tokens} tokens, elapsed {_clock(time.monotonic() - self.started)}, "
            f"ETA {'?' if eta is None else _clock(eta)}"
        )


async def solve_with_progress(
    suite: Any,
    controller: Any,
    concurrency: int,
    budget: Budget,
    config: dict[str, Any],
    done: list[Outcome] | None,
    err: Console,
    progress_every: float = 30.0,
) -> Any:
    """`run_suite` with progress on `err`: a live bar on a terminal, plain lines elsewhere."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from agentic.runtime.runner import run_suite

    ids = {t.id for t in suite.tasks}
    finished = [o for o in done or () if o.task_id in ids]
    tally = _Tally(len(suite.tasks), finished)

    async def solve(tick: Callable[[Outcome], None]) -> Any:
        return await run_suite(
            suite,
            controller,
            concurrency=concurrency,
            budget=budget,
            on_outcome=tick,
            config=config,
            done=finished if done is not None else None,
        )

    if not err.is_terminal:
        # A logged or nohup run: a live bar would show nothing until the end, so plain lines,
        # at most one per `progress_every` seconds, and one at each tenth of the tasks.
        last = [time.monotonic()]
        step = max(1, len(suite.tasks) // 10)

        def log(o: Outcome) -> None:
            tally.add(o)
            now = time.monotonic()
            if now - last[0] >= progress_every or tally.n % step == 0 or tally.n == tally.total:
                last[0] = now
                err.print(tally.line(suite.name), markup=False, highlight=False)

        return await solve(log)

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tokens]} tok"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    ) as progress:
        bar = progress.add_task(
            suite.name, total=len(suite.tasks), completed=len(finished), tokens=tally.tokens
        )

        def tick(o: Outcome) -> None:
            tally.add(o)
            acc = tally.score / tally.n
            description = f"{suite.name} acc {acc:.0%}"
            progress.update(bar, advance=1, description=description, tokens=tally.tokens)

        return await solve(tick)
