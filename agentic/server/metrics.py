"""Prometheus metrics of one gateway (its own registry, so two apps in a process do not mix).

`agentic_requests_total{endpoint,model,status}`, `agentic_tokens_total{kind}` (prompt,
completion), `agentic_reward_calls_total`, `agentic_model_calls_total`, `agentic_cost_usd_total`,
`agentic_in_flight` and `agentic_queue_depth` (requests solving and waiting),
`agentic_backend_rows` (sequences queued or decoding in local backends), and the histogram
`agentic_request_seconds{endpoint,stream}`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentic.core import Usage

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "agentic_requests", "Requests answered", ["endpoint", "model", "status"], registry=r
        )
        self.tokens = Counter("agentic_tokens", "Tokens spent by requests", ["kind"], registry=r)
        self.reward_calls = Counter("agentic_reward_calls", "Verifier calls", registry=r)
        self.model_calls = Counter("agentic_model_calls", "Backend calls", registry=r)
        self.cost = Counter("agentic_cost_usd", "Dollars spent (price table)", registry=r)
        self.in_flight = Gauge("agentic_in_flight", "Requests being solved", registry=r)
        self.queue_depth = Gauge("agentic_queue_depth", "Requests waiting for a slot", registry=r)
        self.backend_rows = Gauge(
            "agentic_backend_rows", "Sequences queued or decoding in local backends", registry=r
        )
        self.latency = Histogram(
            "agentic_request_seconds",
            "Request latency",
            ["endpoint", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def spent(self, u: Usage) -> None:
        self.tokens.labels("prompt").inc(u.prompt_tokens)
        self.tokens.labels("completion").inc(u.completion_tokens)
        self.reward_calls.inc(u.reward_calls)
        self.model_calls.inc(u.model_calls)
        self.cost.inc(u.cost_usd)

    def render(self, rows: Callable[[], int]) -> bytes:
        self.backend_rows.set(rows())
        return generate_latest(self.registry)
