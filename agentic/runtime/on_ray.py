"""Tasks of a run solved in Ray actors: `run_suite(suite, spec, executor=RayExecutor(address))`
or `agentic run --ray ADDRESS`.

What travels and what stays:
- Each actor (`workers` of them, one CPU each, spread over the cluster's nodes) builds the run
  once: the backend from its URI (a local model is loaded once per actor; an `openai:` or
  `pool:` backend is shared through its servers), the suite from its config, the controller from
  its spec, the same registry the CLI uses. So the controller is given as a spec, not an object.
- The driver keeps the run: `run_suite` opens each task's span and budget, sends the task to the
  least-busy actor, grades the answer with the suite's checker, records, resumes and summarises
  exactly as for a local run. The actor returns the outcome and every event the controller
  emitted; the driver forwards the events into its own trace (`agentic.core.forward`) and
  charges the usage to its budgets, so a recording made on Ray replays with `agentic replay` on
  one machine.
- Budgets: the actor solves under what is left of the driver's budgets when the task is sent
  (`Budget.remaining()`); the driver checks its run budget between tasks, as locally.
- Faults: actors restart (`max_restarts`) and Ray re-sends the calls a dead actor held
  (`max_task_retries`), so killing a worker process re-runs only its unfinished tasks; a task's
  events and usage come back only with its one returned outcome, so nothing is counted twice.

Ray is imported only here, when an executor starts: `import agentic` stays light.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from agentic.core import (
    AgenticError,
    Budget,
    ConfigError,
    Context,
    Event,
    Outcome,
    PriceTable,
    Task,
    TaskSuite,
    Usage,
    charge_budget,
    forward,
    redact_uri,
)

_ADDRESS = re.compile(r"^(local|auto|ray://[^\s/]+|[A-Za-z0-9.\-]+:\d{1,5})$")


class _Solver:
    """One Ray actor: the run's backend, suite and controller, built once, solving tasks."""

    def __init__(
        self,
        backend: str,
        options: dict[str, Any],
        prices: PriceTable | None,
        spec: dict[str, Any],
        suite: dict[str, Any],
    ) -> None:
        from agentic.runtime.suites import suite_from_config
        from agentic.specs.registry import BuildContext, parse_controller_spec
        from backends import load_backend

        def load(uri: str) -> Any:
            b: Any = load_backend(uri, **(options if uri == backend else {}))
            if prices is not None:
                b.price = prices.price_for([b.name, uri])
            return b

        self.suite = suite_from_config(suite)
        self.backend = load(backend)
        self.builder = BuildContext(self.backend, self.suite, load)
        self.controller = self.builder.build(parse_controller_spec(spec, files=False))

    def describe(self) -> dict[str, Any]:
        import ray

        return {
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "backend_name": self.backend.name,
            "backends": {redact_uri(u): b.name for u, b in self.builder.backends.items()},
        }

    async def solve(
        self, task: dict[str, Any], ctx: dict[str, Any], limits: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """The outcome, the events emitted, and what the task spent (as the local runner's
        meter counts it)."""
        from agentic.core import Tracer, affinity

        t = Task.model_validate(task)
        events: list[Event] = []
        with Tracer([events.append]).activate(), Budget(**limits) as meter, affinity(t.id):
            try:
                outcome = await self.controller(t, Context.model_validate(ctx))
            except AgenticError as e:  # as the local runner records it: the run goes on
                outcome = Outcome(task_id=t.id, output="", error=f"{type(e).__name__}: {e}")
        return (
            outcome.model_dump(mode="json"),
            [e.model_dump(mode="json") for e in events],
            meter.spent.model_dump(mode="json"),
        )


def _limits(budget: Budget | None) -> dict[str, Any]:
    if budget is None:
        return {}
    left = budget.remaining()
    return {k: v for k, v in vars(left).items() if k.startswith("max_") and v is not None}


class RayController:
    """A controller whose tasks run in the executor's actors (see the module docstring)."""

    def __init__(self, actors: list[Any], info: list[dict[str, Any]]) -> None:
        self.actors = actors
        self.info = info
        self.busy = [0] * len(actors)

    @property
    def backend_name(self) -> str:
        return str(self.info[0]["backend_name"])

    @property
    def pids(self) -> list[int]:
        """Worker process ids, as the actors were when the run started."""
        return [int(i["pid"]) for i in self.info]

    async def __call__(self, task: Task, ctx: Context) -> Outcome:
        i = min(range(len(self.actors)), key=lambda j: self.busy[j])
        self.busy[i] += 1
        try:
            limits = _limits(Budget.current())
            outcome, events, spent = await self.actors[i].solve.remote(
                task.model_dump(mode="json"), ctx.model_dump(mode="json"), limits
            )
        finally:
            self.busy[i] -= 1
        for e in events:
            forward(Event.model_validate(e))
        charge_budget(Usage.model_validate(spent))
        return Outcome.model_validate(outcome)

    async def aclose(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


class RayExecutor:
    """Where a run's tasks go: a Ray cluster at `address` ("local" starts Ray in this process;
    "auto" finds the cluster this machine belongs to; else HOST:PORT or ray://HOST:PORT).

    Args:
        address: the cluster.
        backend: the backend URI every actor loads (`embedded:smollm2`, `openai:...`, `pool:...`).
        workers: actors, one CPU each.
        backend_options: keyword options for the backend's factory.
        prices: a price table, applied in the actors as `--prices` does locally.
        max_restarts: how often a dead actor is restarted (and its calls re-sent).
    """

    def __init__(
        self,
        address: str = "local",
        *,
        backend: str,
        workers: int = 2,
        backend_options: dict[str, Any] | None = None,
        prices: PriceTable | None = None,
        max_restarts: int = 3,
    ) -> None:
        if not _ADDRESS.match(address):
            raise ConfigError(
                f"--ray address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local"
            )
        if workers < 1:
            raise ConfigError(f"Ray workers must be >= 1, got {workers}")
        self.address = address
        self.backend = backend
        self.workers = workers
        self.backend_options = backend_options or {}
        self.prices = prices
        self.max_restarts = max_restarts

    def _connect(self) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "Ray is not installed: pip install 'agentic[scale]' (or ray>=2.40)"
            ) from None
        if ray.is_initialized():
            return
        if self.address not in ("local", "auto"):
            # Ray's own client retries an unreachable address for minutes; a refused connection
            # is answered here at once
            host, _, port = self.address.removeprefix("ray://").rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=5).close()
            except OSError as e:
                raise ConfigError(
                    f"cannot reach the Ray cluster at {self.address!r}: {e.strerror or e}"
                ) from None
        try:
            ray.init(
                # "local" always starts a new instance: None would join a cluster that
                # `ray start` left on this machine
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = self.address
            raise ConfigError(f"cannot reach the Ray cluster at {where!r}: {first}") from None

    async def controller(self, spec: Any, suite: TaskSuite) -> RayController:
        """Start the actors and build the run in each; returns the controller to run with."""
        import ray

        self._connect()
        spec_json = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
        # Ray's stubs type a remote class by its methods, not as an actor class
        solver: Any = ray.remote(_Solver).options(
            num_cpus=1,
            max_restarts=self.max_restarts,
            max_task_retries=self.max_restarts,
            scheduling_strategy="SPREAD",
        )
        actors: list[Any] = [
            solver.remote(
                self.backend, self.backend_options, self.prices, spec_json, suite.config()
            )
            for _ in range(self.workers)
        ]
        try:
            info = [await a.describe.remote() for a in actors]
        except ray.exceptions.RayActorError as e:
            for a in actors:
                ray.kill(a)
            cause = str(e).strip().splitlines()[-1][:300]
            raise ConfigError(f"a Ray worker could not build the run: {cause}") from None
        return RayController(actors, info)
