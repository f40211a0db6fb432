"""The `Backend` protocol and `BaseBackend`, which does a backend's bookkeeping once.

Every model call in agentic goes through `Backend.generate` / `Backend.score`. `BaseBackend`
validates the input, checks the current `Budget` before the call, charges it after, and emits
one `backend.generate` / `backend.score` event per request carrying the request and its result.
Those events are the recording that `ReplayBackend` serves back, so budgets, tracing and replay
work for every backend that subclasses it (a third-party plugin included).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from agentic.core import (
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    NotSupported,
    Price,
    ScoreRequest,
    ScoreResult,
    Usage,
    charge_budget,
    check_budget,
    emit,
    run,
)


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    logprobs: bool = False
    top_logprobs: int = 0
    prefix: bool = False
    score: bool = False
    streaming: bool = False
    seed: bool = False
    hidden_states: bool = False
    interventions: bool = False
    structured_output: bool = False  # enforces `GenerateRequest.response_format`
    max_batch: int | None = None


@runtime_checkable
class Backend(Protocol):
    name: str
    capabilities: Capabilities

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Generation]]: ...

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]: ...

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int: ...

    async def aclose(self) -> None: ...


def _checked(requests: Sequence[Any], kind: type[BaseModel], method: str) -> list[Any]:
    if isinstance(requests, BaseModel):
        raise ConfigError(f"{method}() takes a list of {kind.__name__}, got a single request")
    items = list(requests)
    if not items:
        raise ConfigError(f"{method}() got an empty list of requests")
    for i, r in enumerate(items):
        if not isinstance(r, kind):
            raise ConfigError(
                f"{method}() requests[{i}] is {type(r).__name__}, expected {kind.__name__}"
            )
    return items


class BaseBackend(ABC):
    """Subclasses implement `_generate`, optionally `_score` and `stream`, and `count_tokens`."""

    name: str = "backend"
    capabilities: Capabilities = Capabilities()
    price: Price | None = None
    """What this backend's tokens cost; every generation and score it returns is priced by it
    (`Usage.cost_usd`), so `Budget(max_cost_usd=...)` charges something. None: free."""

    async def generate(self, requests: Sequence[GenerateRequest]) -> list[list[Generation]]:
        items = _checked(requests, GenerateRequest, "generate")
        if not self.capabilities.interventions:
            for i, r in enumerate(items):
                if r.interventions:
                    raise NotSupported(
                        f"requests[{i}] names intervention {r.interventions[0].name!r}, but "
                        f"backend {self.name!r} runs no interventions (local models do)"
                    )
        check_budget()
        return self._account("backend.generate", items, await self._generate(items))

    def generate_sync(self, requests: Sequence[GenerateRequest]) -> list[list[Generation]]:
        """`generate` for synchronous code (scripts, notebooks): waits for the result, with or
        without an event loop running in this thread (`agentic.run`)."""
        return run(self.generate(requests))

    async def score(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        items = _checked(requests, ScoreRequest, "score")
        check_budget()
        results = await self._score(items)
        return [row[0] for row in self._account("backend.score", items, [[r] for r in results])]

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        """Text as it is produced. Backends without token streaming yield the whole text once."""
        gens = await self.generate([request])
        yield gens[0][0].text

    @abstractmethod
    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]: ...

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        raise NotSupported(f"backend {self.name!r} cannot score continuations")

    @abstractmethod
    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int: ...

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> BaseBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _priced(self, results: list[list[Any]]) -> list[list[Any]]:
        """`results` with `price` applied to each one's usage (left as they are when unpriced
        or already priced by the server)."""
        price = self.price
        if price is None:
            return results
        return [
            [
                r
                if r.usage.cost_usd
                else r.model_copy(
                    update={
                        "usage": r.usage.model_copy(
                            update={
                                "cost_usd": price.cost(
                                    r.usage.prompt_tokens, r.usage.completion_tokens
                                )
                            }
                        )
                    }
                )
                for r in row
            ]
            for row in results
        ]

    def _account(
        self, event: str, requests: Sequence[BaseModel], results: Sequence[Sequence[Any]]
    ) -> list[list[Any]]:
        """Price `results`, record one event per request and charge the current budget; returns
        the priced results (what the caller gets)."""
        results = self._priced([list(row) for row in results])
        usage = Usage()
        # the requests of one call share a batch id, so a recording shows what ran together
        batch = uuid.uuid4().hex[:12]
        for req, res in zip(requests, results, strict=True):
            for r in res:
                usage = usage + r.usage
            emit(
                event,
                backend=self.name,
                batch=batch,
                batch_size=len(requests),
                key=req.key(),  # type: ignore[attr-defined]
                request=req.model_dump(mode="json"),
                results=[r.model_dump(mode="json") for r in res],
            )
        charge_budget(usage)
        return results
