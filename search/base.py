"""What every search algorithm shares: step-wise generation, the search tree, the result.

A *partial solution* is the text of the assistant's answer so far, made of *steps*. A step ends
at a delimiter (default "\\n\\n") or after `tokens_per_step` tokens. `StepGenerator.extend`
extends many partial solutions by one step in one batched `Backend.generate` call, continuing each
through `GenerateRequest.prefix`. A partial solution is *finished* when the model ended its answer
(EOS: a stop without a delimiter) or when it reaches `max_steps`; finished solutions are absorbing:
algorithms never extend or resample them again.

Every partial solution an algorithm creates is a node of a `networkx.DiGraph` (`SearchTree`), with
its step text, score, whether it finished, and the usage of the call that made it; each node is
also a `search.node` event, so a recording holds the tree.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from agentic.core import (
    Budget,
    BudgetExceeded,
    ConfigError,
    Context,
    GenerateRequest,
    Generation,
    Message,
    Outcome,
    SamplingParams,
    Task,
    Usage,
    emit,
    span,
    task_messages,
)
from backends import Backend


@dataclass(frozen=True)
class Partial:
    """A partial solution: its steps so far, whether it is finished, and its tree node."""

    steps: tuple[str, ...]
    node: int
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass
class SearchTree:
    """The search tree: node 0 is the empty solution; edges go from a partial solution to each
    one-step extension of it."""

    graph: nx.DiGraph = field(default_factory=nx.DiGraph)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.graph.add_node(0, step="", text="", done=False, score=None, usage=Usage())

    def root(self) -> Partial:
        return Partial(steps=(), node=0)

    def add(self, parent: Partial, step: str, done: bool, usage: Usage) -> Partial:
        child = Partial(steps=(*parent.steps, step), node=next(self._ids), done=done)
        self.graph.add_node(
            child.node, step=step, text=child.text, done=done, score=None, usage=usage
        )
        self.graph.add_edge(parent.node, child.node)
        emit(
            "search.node",
            node=child.node,
            parent=parent.node,
            step=step,
            done=done,
            tokens=usage.completion_tokens,
        )
        return child

    def score(self, p: Partial, value: float) -> None:
        self.graph.nodes[p.node]["score"] = value
        emit("search.score", node=p.node, score=value)


@dataclass
class SearchResult:
    """What a search returns: the chosen answer, every finished candidate with its score, the
    tree, and what the search spent."""

    answer: str
    score: float | None
    finished: list[tuple[str, float | None]]
    tree: SearchTree
    usage: Usage
    stopped: str | None = None  # why the search ended early (budget), if it did

    @property
    def chosen(self) -> int | None:
        """The tree node of the answer (finished first, then best scored, then first made); None
        when no node holds it (an empty tree, or an answer a selector assembled)."""
        nodes = [
            (n, d) for n, d in self.tree.graph.nodes(data=True) if n and d["text"] == self.answer
        ]
        if not nodes:
            return None
        score = lambda d: d["score"] if d["score"] is not None else -math.inf  # noqa: E731
        return min(nodes, key=lambda nd: (not nd[1]["done"], -score(nd[1]), nd[0]))[0]


class StepGenerator:
    """Extends partial solutions one step at a time through a backend, batched."""

    def __init__(
        self,
        backend: Backend,
        *,
        delimiter: str = "\n\n",
        tokens_per_step: int = 64,
        max_steps: int = 8,
        temperature: float = 0.8,
        top_p: float = 1.0,
        min_p: float = 0.0,
        system_prompt: str | None = None,
    ) -> None:
        if not delimiter:
            raise ConfigError("delimiter must be a non-empty string")
        if tokens_per_step < 1:
            raise ConfigError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        self.backend = backend
        self.delimiter = delimiter
        self.tokens_per_step = tokens_per_step
        self.max_steps = max_steps
        self.temperature = temperature
        self.top_p = top_p
        self.min_p = min_p
        self.system_prompt = system_prompt

    def messages(self, task: Task, ctx: Context | None = None) -> tuple[Message, ...]:
        return task_messages(task, self.system_prompt or (ctx.system_prompt if ctx else None))

    def request(
        self, task: Task, ctx: Context | None, prefix: str, n: int, seed: int | None
    ) -> GenerateRequest:
        return GenerateRequest(
            messages=self.messages(task, ctx),
            prefix=prefix,
            params=SamplingParams(
                max_tokens=self.tokens_per_step,
                temperature=self.temperature,
                top_p=self.top_p,
                min_p=self.min_p,
                stop=(self.delimiter,),
                n=n,
                seed=seed,
            ),
        )

    def _step(self, parent: Partial, g: Generation) -> tuple[str, bool]:
        """The step text (with its delimiter, so steps concatenate back to the answer) and
        whether the solution is finished."""
        if g.stop_reason == self.delimiter:
            step, ended = g.text + self.delimiter, False
        else:
            # EOS ends the answer; a step cut at tokens_per_step goes on in the next step
            step, ended = g.text, g.finish_reason == "stop"
        return step, ended or len(parent.steps) + 1 >= self.max_steps

    async def extend(
        self,
        task: Task,
        ctx: Context | None,
        tree: SearchTree,
        parents: Sequence[Partial],
        n: int = 1,
        seed: int | None = None,
    ) -> list[list[Partial]]:
        """`n` one-step extensions of each unfinished parent, in one batched call. Finished
        parents get no children."""
        live = [p for p in parents if not p.done]
        if not live:
            return [[] for _ in parents]
        reqs = [
            self.request(task, ctx, p.text, n, None if seed is None else seed + i)
            for i, p in enumerate(live)
        ]
        gens = await self.backend.generate(reqs)
        # by position, not node id: a resampled population holds the same parent several times
        grown = iter(
            [tree.add(p, *self._step(p, g), g.usage) for g in samples]
            for p, samples in zip(live, gens, strict=True)
        )
        return [[] if p.done else next(grown) for p in parents]


def describe(result: SearchResult) -> dict[str, Any]:
    """A JSON-able summary of a search, for events and the CLI."""
    return {
        "answer": result.answer,
        "score": result.score,
        "chosen": result.chosen,
        "nodes": result.tree.graph.number_of_nodes(),
        "finished": len(result.finished),
        "usage": result.usage.model_dump(),
        "stopped": result.stopped,
    }


class SearchController(ABC):
    """A search algorithm as a controller: `await algo(task, ctx) -> Outcome`.

    Each search runs inside a fresh copy of `budget` (per task), nested in whatever budget is
    current, so `SearchResult.usage` is exactly what the search spent. When a limit is hit the
    search stops and answers with the best finished (else best partial) solution so far.
    """

    def __init__(self, steps: StepGenerator, *, budget: Budget | None = None) -> None:
        self.steps = steps
        self.budget = budget or Budget()

    @abstractmethod
    async def _search(
        self, task: Task, ctx: Context | None, tree: SearchTree
    ) -> tuple[str, float | None, list[tuple[str, float | None]]]:
        """The answer, its score and all finished candidates. Raises `BudgetExceeded` when the
        budget runs out; `_best_so_far` then answers from the tree."""

    async def search(self, task: Task, ctx: Context | None = None) -> SearchResult:
        tree = SearchTree()
        with span("search", algorithm=type(self).__name__), self.budget.fresh() as meter:
            try:
                answer, score, finished = await self._search(task, ctx, tree)
                stopped = None
            except BudgetExceeded as e:
                answer, score, finished = best_so_far(tree)
                stopped = str(e)
        result = SearchResult(answer, score, finished, tree, meter.spent, stopped)
        emit("search.result", algorithm=type(self).__name__, **describe(result))
        return result

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        result = await self.search(task, ctx)
        # a stopped search still answers (its best so far, graded as any answer): the reason
        # goes in `info`, not `error`, which would leave the answer ungraded
        info = {"stopped": result.stopped} if result.stopped else {}
        return Outcome(task_id=task.id, output=result.answer, usage=result.usage, info=info)


def best_so_far(tree: SearchTree) -> tuple[str, float | None, list[tuple[str, float | None]]]:
    """The highest-scored finished solution in the tree, else the highest-scored (then
    deepest) partial one; unscored nodes rank last."""
    nodes = [d for n, d in tree.graph.nodes(data=True) if n != 0]
    finished = [(d["text"], d["score"]) for d in nodes if d["done"]]
    pool = [d for d in nodes if d["done"]] or nodes
    if not pool:
        return "", None, finished

    def rank(d: dict[str, Any]) -> tuple[float, int]:
        return (d["score"] if d["score"] is not None else -math.inf, len(d["text"]))

    best = max(pool, key=rank)
    return best["text"], best["score"], finished
