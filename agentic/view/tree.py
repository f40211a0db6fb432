"""One search's tree as the recording grows, and its drawing: positions and marks.

Node ids are per search (each search numbers its nodes from 1; node 0 is the empty solution), so
a tree is keyed by the span of the search that made it. The layout is a simple tidy tree: leaves
left to right in depth-first order (children by id, i.e. in creation order), each parent centred
over its first and last child, depth as y. Positions are in units (one leaf apart, one level
apart); the page scales them.

Marks, from the events of the search:
- resampled: a particle filter round's `particles` holds the node more than once (`copies`);
- pruned: in beam search's `pruned` lists; in a particle filter, a node dropped by resampling:
  unfinished, childless, not a look-ahead, not among the last round's particles, and made
  before that round closed (so a node of the round in progress is not called pruned yet);
- lookahead: an entropic particle filter's look-ahead step (`search.lookahead`);
- expanded: A* expanded it (`search.expand`);
- chosen: on the path from the root to `search.result`'s chosen node.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pydantic import BaseModel

from agentic.view.payloads import CallResult, SearchNode, SearchResult, SearchRound


class NodeUsage(BaseModel):
    """What the model call that made a node cost (its request's share of a batch)."""

    prompt_tokens: int
    completion_tokens: int
    seconds: float
    batch: str | None


class TreeNode(BaseModel):
    id: int
    parent: int | None
    x: float
    y: int
    step: str
    score: float | None
    shade: float | None  # the score mapped to [0, 1] for colour (see `_shades`)
    done: bool
    tokens: int
    usage: NodeUsage | None
    copies: int  # the most slots one particle-filter round gave this node
    resampled: bool
    pruned: bool
    lookahead: bool
    expanded: bool
    chosen: bool  # on the chosen answer's path
    answer: bool  # the chosen node itself


class TreeView(BaseModel):
    search: str  # the search span id
    algorithm: str
    nodes: list[TreeNode]
    width: int  # leaves
    depth: int
    rounds: list[SearchRound]
    result: SearchResult | None
    note: str | None  # why nothing is highlighted, when the answer is not a node


@dataclass
class _Node:
    parent: int | None
    step: str = ""
    done: bool = False
    tokens: int = 0
    score: float | None = None
    usage: NodeUsage | None = None
    born: int = 0  # rounds closed when it was made
    lookahead: bool = False
    expanded: bool = False
    kids: list[int] = field(default_factory=list)


@dataclass
class SearchState:
    """The events of one search, folded as they arrive."""

    span: str
    parent: str | None
    algorithm: str
    ts: float
    nodes: dict[int, _Node] = field(default_factory=lambda: {0: _Node(parent=None)})
    rounds: list[SearchRound] = field(default_factory=list)
    result: SearchResult | None = None
    end_ts: float | None = None
    # results of model calls made directly under the search span, not yet matched to a node:
    # `StepGenerator.extend` adds one node per result, in request then sample order, right after
    # the call returns; reward calls sit under their own span, so they never land here
    _pending: deque[tuple[CallResult, str | None]] = field(default_factory=deque)

    def called(self, results: list[CallResult], batch: str | None) -> None:
        self._pending.extend((r, batch) for r in results)

    def add(self, p: SearchNode) -> None:
        usage = None
        if self._pending:
            r, batch = self._pending.popleft()
            # a node that is not that result (a controller that made nodes some other way) gets
            # no usage rather than another node's; the step is the text plus its delimiter
            if p.step.startswith(r.text) and r.usage.completion_tokens == p.tokens:
                usage = NodeUsage(
                    prompt_tokens=r.usage.prompt_tokens,
                    completion_tokens=r.usage.completion_tokens,
                    seconds=r.usage.seconds,
                    batch=batch,
                )
        parent = p.parent if p.parent in self.nodes else 0  # a parent the file lost: the root
        self.nodes[p.node] = _Node(
            parent=parent,
            step=p.step,
            done=p.done,
            tokens=p.tokens,
            usage=usage,
            born=len(self.rounds),
        )
        self.nodes[parent].kids.append(p.node)

    def score(self, node: int, value: float | None) -> None:
        if node in self.nodes:
            self.nodes[node].score = value

    def mark(self, node: int, *, lookahead: bool = False, expanded: bool = False) -> None:
        if node in self.nodes:
            self.nodes[node].lookahead |= lookahead
            self.nodes[node].expanded |= expanded

    def view(self) -> TreeView:
        pos, width, depth = layout({n: d.kids for n, d in self.nodes.items()})
        copies = _copies(self.rounds)
        pruned = self._pruned()
        chosen, note = self._chosen_path()
        shades = _shades({n: d.score for n, d in self.nodes.items()})
        nodes = [
            TreeNode(
                id=n,
                parent=d.parent,
                x=pos[n][0],
                y=pos[n][1],
                step=d.step,
                score=d.score,
                shade=shades.get(n),
                done=d.done,
                tokens=d.tokens,
                usage=d.usage,
                copies=copies.get(n, 0),
                resampled=copies.get(n, 0) > 1,
                pruned=n in pruned,
                lookahead=d.lookahead,
                expanded=d.expanded,
                chosen=n in chosen,
                answer=bool(chosen) and n == chosen[-1],
            )
            for n, d in sorted(self.nodes.items())
        ]
        return TreeView(
            search=self.span,
            algorithm=self.algorithm,
            nodes=nodes,
            width=width,
            depth=depth,
            rounds=self.rounds,
            result=self.result,
            note=note,
        )

    def _pruned(self) -> set[int]:
        out = {n for r in self.rounds for n in r.pruned or ()}
        last = next((r for r in reversed(self.rounds) if r.particles is not None), None)
        if last is not None:
            alive = set(last.particles or ())
            out |= {
                n
                for n, d in self.nodes.items()
                if n
                and not (d.done or d.kids or d.lookahead or n in alive)
                and d.born < len(self.rounds)
            }
        return out

    def _chosen_path(self) -> tuple[list[int], str | None]:
        if self.result is None:
            return [], None
        node = self.result.chosen
        if node is None:
            return [], "the answer is no single node (a selector assembled it, or none was found)"
        if node not in self.nodes:
            return [], f"the chosen node {node} is not in the recording"
        path: list[int] = []
        at: int | None = node
        while at is not None:
            path.append(at)
            at = self.nodes[at].parent
        return path[::-1], None


def layout(
    kids: dict[int, list[int]], root: int = 0
) -> tuple[dict[int, tuple[float, int]], int, int]:
    """Tidy positions {node: (x, depth)}, the number of leaves and the depth: leaves at 0, 1, 2,
    ... in depth-first order (children by id), each parent centred over its first and last
    child. Iterative, so a deep A* tree does not hit Python's recursion limit."""
    pos: dict[int, tuple[float, int]] = {}
    leaves = 0
    depth = 0
    stack: list[tuple[int, int, bool]] = [(root, 0, False)]
    while stack:
        node, d, visited = stack.pop()
        children = sorted(kids.get(node, ()))
        depth = max(depth, d)
        if not children:
            pos[node] = (float(leaves), d)
            leaves += 1
        elif visited:
            pos[node] = ((pos[children[0]][0] + pos[children[-1]][0]) / 2, d)
        else:
            stack.append((node, d, True))
            stack.extend((c, d + 1, False) for c in reversed(children))
    return pos, leaves, depth


def _copies(rounds: list[SearchRound]) -> dict[int, int]:
    most: dict[int, int] = {}
    for r in rounds:
        counts: dict[int, int] = {}
        for n in r.particles or ():
            counts[n] = counts.get(n, 0) + 1
        for n, c in counts.items():
            most[n] = max(most.get(n, 0), c)
    return most


def _shades(scores: dict[int, float | None]) -> dict[int, float]:
    """Scores as colours, stretched over the search's own range: what a reader compares is the
    nodes of one search, and verifiers differ in range (the value model's scores sit around
    0.05-0.35, a judge's near 0.4), so absolute colours would paint most trees one hue. The
    panel shows the score itself on click."""
    known = {n: s for n, s in scores.items() if s is not None}
    if not known:
        return {}
    lo, hi = min(known.values()), max(known.values())
    span = hi - lo
    if span <= 0.0:
        return {n: 0.5 for n in known}
    return {n: (s - lo) / span for n, s in known.items()}
