"""`ReplicaPool`: one backend over several replicas of the same model, with prefix affinity.

Routing is rendezvous hashing (Thaler & Ravishankar, "A Name-Based Mapping Scheme for
Rendezvous", 1996) with bounded loads (Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with
Bounded Loads", SODA 2018):

- key `k`: the affinity key of the call (`agentic.core.affinity_key()`, the task id inside a
  run: every sample, particle, beam, look-ahead and judge call of one task carries it), else a
  hash of the request's opening messages (calls about the same prompt share a prefix anyway).
- rank: replicas ordered by `h(k, replica)` (blake2b), highest first. The first in the ranking is
  the task's home: its prefix cache holds the task's prompt after the first call. A replica that
  goes away moves only its own keys, each to its next-ranked replica.
- bound: with `m` requests in flight over `n` live replicas (the new one counted), a replica takes
  the call only while its load is below `c = ceil((1 + eps) * m / n)` (`eps`: `load_slack`);
  otherwise the call goes to the next in the ranking. So one hot task cannot pile onto one
  replica, and with `eps` large the routing is pure affinity.
- `affinity=False`: least-loaded (fewest requests in flight; ties by a rotating start).

Health: a replica that fails a call (`BackendUnavailable`: its connection refused, reset or timed
out after its own retries) is marked down at once, and the call goes to the next replica; it is
not counted twice, because the failed replica returned nothing. A background check pings every
replica each `health_interval` seconds (`ping()`: one `GET /models`) and brings back the ones that
answer. A request refused as malformed (`RequestRejected`, a 4xx) is not retried elsewhere: every
replica would refuse it. When every replica has failed a call, it raises `BackendUnavailable`
naming them.

Members are called through their `_generate` / `_score`, so usage, price, budget and events are
charged once, by the pool (`BaseBackend.generate`), with the replica named in a `pool.route` event.

URI: `pool:openai:http://h1:8000/v1,http://h2:8000/v1#model` (one scheme, comma-separated
addresses, one `#model`), or `pool:FILE.yaml` / `.json` with `replicas: [URI, ...]` and any of
`affinity`, `load_slack`, `health_interval`.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agentic.core import (
    BackendUnavailable,
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    ScoreRequest,
    ScoreResult,
    affinity_key,
    emit,
    redact_uri,
)
from backends.base import Backend, BaseBackend

_T = TypeVar("_T")


@dataclass
class Replica:
    backend: Backend
    name: str
    up: bool = True
    in_flight: int = 0
    calls: int = 0
    failures: int = 0


def request_key(request: GenerateRequest | ScoreRequest) -> str:
    """The affinity key of a call made outside any task: its opening messages (system and first
    user turn) or the first 256 characters of its raw prompt."""
    if request.messages:
        head = [m.model_dump(mode="json") for m in request.messages[:2]]
        return json.dumps(head, sort_keys=True)
    return (request.prompt or "")[:256]


def _weight(key: str, replica: str) -> int:
    digest = hashlib.blake2b(f"{key}\0{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class ReplicaPool(BaseBackend):
    def __init__(
        self,
        replicas: Sequence[Backend],
        *,
        affinity: bool = True,
        load_slack: float = 0.25,
        health_interval: float = 2.0,
        name: str | None = None,
    ) -> None:
        if not replicas:
            raise ConfigError("a replica pool needs at least one replica, got none")
        if load_slack < 0:
            raise ConfigError(f"load_slack must be >= 0, got {load_slack}")
        if health_interval <= 0:
            raise ConfigError(f"health_interval must be > 0, got {health_interval}")
        names = [getattr(b, "name", f"replica{i}") for i, b in enumerate(replicas)]
        if len(set(names)) != len(names):
            raise ConfigError(f"a replica pool's replicas must differ, got {names}")
        self.replicas = [Replica(b, n) for b, n in zip(replicas, names, strict=True)]
        self.affinity = affinity
        self.load_slack = load_slack
        self.health_interval = health_interval
        self.name = name or "pool:" + ",".join(names)
        self.capabilities = replicas[0].capabilities
        self.price = getattr(replicas[0], "price", None)
        self._rotation = itertools.count()
        self._checker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ReplicaPool({[r.name for r in self.replicas]}, affinity={self.affinity})"

    # ---- routing ----------------------------------------------------------------------------

    def choose(self, key: str | None, exclude: Sequence[Replica] = ()) -> Replica | None:
        """The replica a call with affinity `key` goes to now, skipping `exclude`: live replicas
        first, then (if none is left) those marked down, which may have come back."""
        left = [r for r in self.replicas if r not in exclude]
        live = [r for r in left if r.up] or left
        if not live:
            return None
        if not self.affinity or key is None:
            start = next(self._rotation) % len(live)
            turn = live[start:] + live[:start]
            return min(turn, key=lambda r: r.in_flight)
        ranked = sorted(live, key=lambda r: _weight(key, r.name), reverse=True)
        load = sum(r.in_flight for r in live) + 1
        cap = math.ceil((1 + self.load_slack) * load / len(live))
        return next((r for r in ranked if r.in_flight < cap), ranked[0])

    async def _routed(
        self,
        request: GenerateRequest | ScoreRequest,
        size: int,
        call: Callable[[Backend], Awaitable[_T]],
    ) -> _T:
        self._ensure_checker()
        key = affinity_key() or request_key(request)
        tried: list[Replica] = []
        failures: list[str] = []
        while (replica := self.choose(key, tried)) is not None:
            tried.append(replica)
            replica.in_flight += size
            replica.calls += 1
            try:
                result = await call(replica.backend)
            except BackendUnavailable as e:
                replica.up = False
                replica.failures += 1
                failures.append(f"{replica.name}: {e}")
                emit("pool.failover", replica=replica.name, error=str(e)[:300])
                continue
            finally:
                replica.in_flight -= size
            emit("pool.route", replica=replica.name, task=affinity_key(), attempts=len(tried))
            return result
        raise BackendUnavailable(
            f"{self.name}: every replica failed the call: " + "; ".join(failures)
        )

    # ---- Backend ----------------------------------------------------------------------------

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        # one call, one replica: a search's batch of particles shares the task's prompt
        size = sum(r.params.n for r in requests)
        return await self._routed(requests[0], size, lambda b: b._generate(requests))  # type: ignore[attr-defined]

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return await self._routed(requests[0], len(requests), lambda b: b._score(requests))  # type: ignore[attr-defined]

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        """Text as the chosen replica produces it; a replica that fails before its first piece
        is replaced, one that fails mid-stream ends the stream with its error (the caller has
        text already, and a second replica would start the answer again)."""
        self._ensure_checker()
        key = affinity_key() or request_key(request)
        tried: list[Replica] = []
        while (replica := self.choose(key, tried)) is not None:
            tried.append(replica)
            replica.in_flight += 1
            replica.calls += 1
            started = False
            try:
                async for piece in replica.backend.stream(request):  # type: ignore[attr-defined]
                    started = True
                    yield piece
                return
            except BackendUnavailable as e:
                replica.up = False
                replica.failures += 1
                emit("pool.failover", replica=replica.name, error=str(e)[:300])
                if started:
                    raise
            finally:
                replica.in_flight -= 1
        raise BackendUnavailable(f"{self.name}: every replica failed the stream")

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return self.replicas[0].backend.count_tokens(text_or_messages)

    def stats(self) -> list[dict[str, Any]]:
        """Per replica: name, up, in flight, calls routed to it, calls it failed."""
        return [
            {
                "name": r.name,
                "up": r.up,
                "in_flight": r.in_flight,
                "calls": r.calls,
                "failures": r.failures,
            }
            for r in self.replicas
        ]

    # ---- health -----------------------------------------------------------------------------

    def _ensure_checker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._checker is None or self._checker.done() or self._loop is not loop:
            self._loop = loop
            self._checker = loop.create_task(self._check_health(), name=f"{self.name}-health")

    async def _check_health(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            await self.check_health()

    async def check_health(self) -> None:
        """Ping every replica that can be pinged; a replica without `ping` stays as it is."""
        pings = [r for r in self.replicas if hasattr(r.backend, "ping")]
        answers = await asyncio.gather(*(r.backend.ping() for r in pings))  # type: ignore[attr-defined]
        for replica, up in zip(pings, answers, strict=True):
            if up != replica.up:
                emit("pool.health", replica=replica.name, up=up)
            replica.up = up

    async def aclose(self) -> None:
        if self._checker is not None and self._loop is asyncio.get_running_loop():
            self._checker.cancel()
        self._checker = None
        for r in self.replicas:
            await r.backend.aclose()


def _replica_uris(spec: str) -> tuple[list[str], dict[str, Any]]:
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ConfigError(f"pool file not found: {spec}")
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"pool file {spec} is not valid YAML/JSON: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("replicas"), list):
            raise ConfigError(f"pool file {spec} needs `replicas: [URI, ...]`")
        options = {k: v for k, v in data.items() if k != "replicas"}
        unknown = set(options) - {"affinity", "load_slack", "health_interval"}
        if unknown:
            raise ConfigError(f"pool file {spec}: unknown field(s) {sorted(unknown)}")
        return [str(u) for u in data["replicas"]], options
    scheme, sep, rest = spec.partition(":")
    if not sep or not scheme.isidentifier():
        raise ConfigError(
            f"pool URI 'pool:{redact_uri(spec)}' is not pool:SCHEME:ADDR1,ADDR2[#MODEL] "
            "or pool:FILE.yaml"
        )
    addresses, hash_, model = rest.partition("#")
    uris = [f"{scheme}:{a.strip()}{hash_}{model}" for a in addresses.split(",") if a.strip()]
    if not uris:
        raise ConfigError(f"pool URI 'pool:{redact_uri(spec)}' names no replica")
    return uris, {}


def from_uri(spec: str, **options: Any) -> ReplicaPool:
    """`pool:SCHEME:ADDR1,ADDR2#MODEL` or `pool:FILE`; `**options` go to each replica's factory,
    except the pool's own (`affinity`, `load_slack`, `health_interval`)."""
    from backends.registry import load_backend

    uris, pool_options = _replica_uris(spec)
    for field in ("affinity", "load_slack", "health_interval"):
        if field in options:
            pool_options[field] = options.pop(field)
    if len(set(uris)) != len(uris):
        raise ConfigError(f"pool lists a replica twice: {[redact_uri(u) for u in uris]}")
    if any(u.startswith("pool:") for u in uris):
        raise ConfigError("a pool's replica cannot be a pool")
    # a dead replica should fail over in about a second, not after the minute of retries a
    # lone server gets: the pool is the retry
    openai = {"max_retries": 1, "connect_timeout": 3.0, **options}
    members = [load_backend(u, **(openai if u.startswith("openai:") else options)) for u in uris]
    return ReplicaPool(members, **pool_options)
