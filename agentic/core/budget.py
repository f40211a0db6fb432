"""Budgets in every unit, shared by nested code through a context variable.

`with Budget(max_tokens=10_000):` makes the budget current for everything that runs inside,
including coroutines started there (asyncio copies the context into each task). Backends call
`charge()` after every call and `check()` before it, so a run overshoots by at most one batch.
Budgets nest: entering a budget inside another charges both, and the tighter one stops the work.
Controllers catch `BudgetExceeded` and return their best-so-far.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from types import TracebackType

from agentic.core.errors import AgenticError, ConfigError
from agentic.core.types import Usage

_current: ContextVar[Budget | None] = ContextVar("agentic_budget", default=None)


class BudgetExceeded(AgenticError):
    def __init__(self, unit: str, limit: float, spent: float) -> None:
        super().__init__(f"budget exceeded: {unit} spent {spent:g} of limit {limit:g}")
        self.unit, self.limit, self.spent = unit, limit, spent


class Budget:
    """Limits (None = unlimited) and what has been spent so far. An unlimited Budget is a meter."""

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_model_calls: int | None = None,
        max_reward_calls: int | None = None,
        max_seconds: float | None = None,
        max_cost_usd: float | None = None,
        within: Budget | None = None,
    ) -> None:
        limits = {
            "max_tokens": max_tokens,
            "max_model_calls": max_model_calls,
            "max_reward_calls": max_reward_calls,
            "max_seconds": max_seconds,
            "max_cost_usd": max_cost_usd,
        }
        for name, value in limits.items():
            if value is not None and value < 0:
                raise ConfigError(f"Budget.{name} must be >= 0, got {value}")
        self.max_tokens = max_tokens
        self.max_model_calls = max_model_calls
        self.max_reward_calls = max_reward_calls
        self.max_seconds = max_seconds
        self.max_cost_usd = max_cost_usd
        self.spent = Usage()
        # `within`: a budget this one spends from without being entered inside it, such as an API
        # key's budget that many concurrent gateway requests share (entering it once per request
        # is refused, and the context variable does not cross requests)
        self._within = within
        self.parent: Budget | None = within
        self._started = time.monotonic()
        self._token: Token[Budget | None] | None = None

    def __repr__(self) -> str:
        limits = {k: v for k, v in vars(self).items() if k.startswith("max_") and v is not None}
        return f"Budget({limits}, spent={self.spent})"

    def fresh(self) -> Budget:
        """A new, unspent budget with the same limits (one per task, say)."""
        return Budget(
            max_tokens=self.max_tokens,
            max_model_calls=self.max_model_calls,
            max_reward_calls=self.max_reward_calls,
            max_seconds=self.max_seconds,
            max_cost_usd=self.max_cost_usd,
        )

    def remaining(self) -> Budget:
        """A fresh budget holding what is left here and in every enclosing budget: what work
        sent to another process (a Ray worker) may still spend."""
        left: dict[str, float] = {}
        b: Budget | None = self
        while b is not None:
            s = b.spent
            for name, limit, spent in (
                ("max_tokens", b.max_tokens, s.total_tokens),
                ("max_model_calls", b.max_model_calls, s.model_calls),
                ("max_reward_calls", b.max_reward_calls, s.reward_calls),
                ("max_seconds", b.max_seconds, b.elapsed),
                ("max_cost_usd", b.max_cost_usd, s.cost_usd),
            ):
                if limit is not None:
                    room = max(limit - spent, 0)
                    left[name] = min(left.get(name, room), room)
            b = b.parent
        return Budget(**left)  # type: ignore[arg-type]

    @staticmethod
    def current() -> Budget | None:
        return _current.get()

    def __enter__(self) -> Budget:
        if self._token is not None:
            raise ConfigError(
                "this Budget is already active: enter it once around the work that shares it "
                "(tasks started inside inherit it), or nest a new Budget"
            )
        self.parent = self._within or _current.get()
        self._started = time.monotonic()
        self._token = _current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def exceeded(self) -> BudgetExceeded | None:
        """The first limit that is used up, here or in an enclosing budget."""
        s = self.spent
        checks = (
            ("tokens", self.max_tokens, s.total_tokens),
            ("model_calls", self.max_model_calls, s.model_calls),
            ("reward_calls", self.max_reward_calls, s.reward_calls),
            ("seconds", self.max_seconds, self.elapsed),
            ("cost_usd", self.max_cost_usd, s.cost_usd),
        )
        for unit, limit, spent in checks:
            if limit is not None and spent >= limit:
                return BudgetExceeded(unit, limit, spent)
        return self.parent.exceeded() if self.parent else None

    def charge(self, usage: Usage) -> None:
        """Record spending here and in every enclosing budget. Never raises: work already done
        is kept; the next `check()` stops further work."""
        b: Budget | None = self
        while b is not None:
            b.spent = b.spent + usage
            b = b.parent


def check_budget() -> None:
    """Raise `BudgetExceeded` if the current budget (or an enclosing one) is used up."""
    b = _current.get()
    if b is not None and (err := b.exceeded()) is not None:
        raise err


def charge_budget(usage: Usage) -> None:
    b = _current.get()
    if b is not None:
        b.charge(usage)
