"""The gateway's admission and key mechanics over real HTTP (uvicorn in a thread, the official
`openai` SDK), with a `FunctionBackend` that holds every request until the test lets it go, so
"full" is exact rather than a race. The gateway on the real model is test_gateway.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from servers import free_port

from agentic.core import GenerateRequest
from agentic.server import GatewayConfig, create_app
from agentic.server.service import Gateway
from backends.testing import FunctionBackend


class Held:
    """A backend whose answers wait until `release`."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)
        self.go = threading.Event()
        self.backend = FunctionBackend(self.answer, name="held")

    async def answer(self, request: GenerateRequest) -> str:
        self.entered.release()
        await asyncio.to_thread(self.go.wait)  # set from the test's thread
        return "done"


@pytest.fixture
def held_gateway() -> Iterator[tuple[str, Held]]:
    held = Held()
    config = GatewayConfig(max_concurrency=1, max_queue=1, retry_after_s=7)
    app = create_app(lambda: Gateway.start(config, "fn:held", lambda uri: held.backend))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield f"{url}/v1", held
    held.go.set()
    server.should_exit = True
    thread.join(timeout=10)


def test_one_solving_one_waiting_then_429_with_retry_after(
    held_gateway: tuple[str, Held],
) -> None:
    url, held = held_gateway
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    results: list[Any] = []

    def ask() -> None:
        results.append(
            client.chat.completions.create(
                model="held", messages=[{"role": "user", "content": "hi"}]
            )
        )

    first = threading.Thread(target=ask)
    first.start()
    assert held.entered.acquire(timeout=10)  # the first is solving
    second = threading.Thread(target=ask)
    second.start()
    time.sleep(0.3)  # the second waits for the slot
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="held", messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.headers["Retry-After"] == "7"
    assert e.value.body["code"] == "server_busy"  # type: ignore[index]
    metrics = httpx.get(url.removesuffix("/v1") + "/metrics").text
    assert "agentic_in_flight 1.0" in metrics and "agentic_queue_depth 1.0" in metrics
    held.go.set()
    first.join(10)
    second.join(10)
    assert [r.choices[0].message.content for r in results] == ["done", "done"]


def test_no_keys_configured_means_no_auth_and_a_refused_body_is_400(
    held_gateway: tuple[str, Held],
) -> None:
    url, held = held_gateway
    held.go.set()
    r = httpx.post(f"{url}/chat/completions", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/chat/completions", json={"model": "held", "messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
