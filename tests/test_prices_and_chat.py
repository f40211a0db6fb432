"""Prices (core `Price`/`PriceTable`, applied by `BaseBackend`), chat tasks (`ChatSuite`,
`task_messages` with history), `Budget(within=...)`, and the gateway config's checks: mechanics
on test doubles. The gateway on the real model is test_gateway.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentic.core import (
    Budget,
    BudgetExceeded,
    ConfigError,
    GenerateRequest,
    Message,
    Price,
    PriceTable,
    task_messages,
)
from agentic.runtime.chat import ChatSuite
from agentic.runtime.suites import suite_from_config
from agentic.server.config import BudgetLimits, GatewayConfig
from agentic.server.service import served_name
from backends.testing import ScriptedBackend


def test_price_is_per_million_tokens() -> None:
    assert Price(prompt=2.0, completion=6.0).cost(500_000, 1_000_000) == pytest.approx(7.0)


async def test_a_priced_backend_charges_dollars_and_a_cost_budget_stops_it() -> None:
    backend = ScriptedBackend(["abcd"] * 10)
    backend.price = Price(prompt=1e6, completion=2e6)  # a dollar per prompt char, 2 per output
    req = GenerateRequest.chat("hi")
    [[gen]] = await backend.generate([req])
    assert gen.usage.cost_usd == pytest.approx(2 * 1 + 4 * 2)
    with Budget(max_cost_usd=15) as b:
        await backend.generate([req])
        await backend.generate([req])  # spends 20: allowed, since budgets check before a call
        with pytest.raises(BudgetExceeded, match="cost_usd"):
            await backend.generate([req])
    assert b.spent.cost_usd == pytest.approx(20)


async def test_an_unpriced_backend_costs_nothing() -> None:
    [[gen]] = await ScriptedBackend(["ok"]).generate([GenerateRequest.chat("hi")])
    assert gen.usage.cost_usd == 0


def test_price_table_loads_yaml_and_names_a_bad_entry(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text("smollm2: {prompt: 0.1, completion: 0.2}\n")
    table = PriceTable.load(good)
    assert table.price_for(["embedded:smollm2", "smollm2"]) == Price(prompt=0.1, completion=0.2)
    assert table.price_for(["other"]) is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("smollm2: {prompt: -1, completion: 0.2}\n")
    with pytest.raises(ConfigError, match=r"smollm2\.prompt"):
        PriceTable.load(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        PriceTable.load(tmp_path / "missing.yaml")


def test_a_chat_becomes_one_task_and_back_the_same_messages() -> None:
    chat = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Hi"),
        Message(role="assistant", content="Hello."),
        Message(role="user", content="What is 3 + 4?"),
    ]
    suite = ChatSuite.from_messages("r1", chat)
    [task] = suite.tasks
    assert task.input == "What is 3 + 4?" and suite.system_prompt == "Be brief."
    assert task_messages(task, suite.system_prompt) == tuple(chat)
    again = suite_from_config(suite.config())  # what `agentic replay` rebuilds
    assert isinstance(again, ChatSuite) and again.tasks == suite.tasks
    assert again.system_prompt == "Be brief."


@pytest.mark.parametrize(
    "chat",
    [
        [Message(role="user", content="a"), Message(role="assistant", content="b")],
        [Message(role="user", content="a"), Message(role="system", content="late")],
    ],
)
def test_a_chat_a_controller_cannot_answer_is_refused(chat: list[Message]) -> None:
    with pytest.raises(ConfigError, match="messages"):
        ChatSuite.from_messages("r", chat)


async def test_a_budget_within_another_charges_it_without_being_entered_in_it() -> None:
    key = Budget(max_tokens=10)
    backend = ScriptedBackend(["abcdef"] * 4)
    with Budget(within=key):
        await backend.generate([GenerateRequest.chat("hi")])  # 2 + 6 tokens
    with Budget(within=key):  # a second request of the same key, concurrently or not
        await backend.generate([GenerateRequest.chat("hi")])
        with pytest.raises(BudgetExceeded):
            await backend.generate([GenerateRequest.chat("hi")])
    assert key.spent.total_tokens == 16


def test_request_limits_cannot_lift_the_servers() -> None:
    server = BudgetLimits(tokens=100, seconds=10)
    merged = server.tighter(BudgetLimits(tokens=1000, cost_usd=1))
    assert (merged.tokens, merged.seconds, merged.cost_usd) == (100, 10, 1)


def test_gateway_config_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("presets:\n  fast: {type: pf, samples: 0}\n")
    with pytest.raises(ConfigError, match=r"preset 'fast'.*samples"):
        GatewayConfig.load(path)
    path.write_text("max_concurency: 3\n")
    with pytest.raises(ConfigError, match="max_concurency"):
        GatewayConfig.load(path)
    path.write_text("presets:\n  mine: {type: sc, n: 2}\n")
    cfg = GatewayConfig.load(path)
    assert {"mine", "pf-8", "sc-8"} <= set(cfg.presets)  # a file's presets add to the built-ins


def test_served_names_come_from_the_uri() -> None:
    assert served_name("embedded:smollm2") == "smollm2"
    assert served_name("hf:/models/qwen-0.5b/") == "qwen-0.5b"
    assert served_name("openai:http://h:8000/v1#gpt-x") == "gpt-x"
    assert served_name("replay:traces/day.jsonl") == "day"
