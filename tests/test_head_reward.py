"""HeadReward: a Math-Shepherd-style PRM as a probe on SmolLM2's hidden states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from agentic.core import Budget, ConfigError, Message, Task
from agentic.runtime.suites import load_suite
from search.base import StepGenerator
from search.head_reward import (
    HeadReward,
    LabelledPrefix,
    collect_labels,
    fit_head,
    train_head,
    user_only,
)
from search.rewards import ProcessReward

TASK = Task(id="t", input="What is 2 + 2?")


def synthetic() -> list[LabelledPrefix]:
    """16 prefixes whose label is visible in the text: a correct sum (1) or a wrong one (0)."""
    out = []
    for a, b in [(2, 2), (3, 4), (1, 5), (6, 2), (4, 4), (7, 1), (2, 5), (3, 3)]:
        msgs = (Message(role="user", content=f"What is {a} + {b}?"),)
        for c, y in [(a + b, 1.0), (a + b + 1, 0.0)]:
            out.append(
                LabelledPrefix(
                    task_id=f"{a}+{b}",
                    messages=msgs,
                    prefix=f"{a} + {b} = {c}",
                    step=1,
                    hard=y,
                    soft=y,
                    rollouts=0,
                )
            )
    return out


@pytest.fixture(scope="module")
async def trained(smollm2: Any) -> HeadReward:
    return await train_head(smollm2, synthetic(), layer=-1, epochs=200, lr=1e-2)


# ---- without a model ------------------------------------------------------------------------


def test_fit_head_learns_a_separable_rule_and_rejects_bad_input() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g) * torch.tensor([100.0, 1, 1, 1, 1, 1, 1, 1])
    y = (x[:, 1] > 0).float()  # dimension 0 is huge and irrelevant: standardisation copes
    head, losses = fit_head(x, y, epochs=200, lr=5e-2)
    assert losses[-1] < losses[0] / 2
    with torch.no_grad():
        acc = ((head(x) > 0).float() == y).float().mean()
    assert acc >= 0.95
    with pytest.raises(ConfigError, match="epochs"):
        fit_head(x, y, epochs=0)
    with pytest.raises(ConfigError, match="features"):
        fit_head(x, y[:3])


# ---- on the real model ----------------------------------------------------------------------


@pytest.mark.slow
async def test_score_shape_range_and_cache(trained: HeadReward) -> None:
    assert isinstance(trained, ProcessReward)
    forwards = []
    hook = trained.backend.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        solutions = [["2 + 2 = 4"], ["Let me add.\n\n", "2 + 2 = 5"], ["a\n\n", "b\n\n", "4"]]
        with Budget() as meter:
            first = await trained.score(TASK, solutions)
        assert [len(s) for s in first] == [1, 2, 3]
        assert all(0.0 < v < 1.0 for s in first for v in s)
        assert meter.spent.reward_calls == 6 and meter.spent.prompt_tokens > 0
        assert len(forwards) == 1  # one batched forward for all six prefixes

        with Budget() as again:
            second = await trained.score(TASK, solutions)
        assert second == first and again.spent.reward_calls == 0 and len(forwards) == 1

        with Budget() as grown:  # one more step: only the new prefix is encoded
            third = await trained.score(TASK, [[*solutions[1], "\n\nSo 4."]])
        assert third[0][:2] == first[1] and grown.spent.reward_calls == 1
    finally:
        hook.remove()


@pytest.mark.slow
async def test_features_are_the_same_alone_and_in_a_left_padded_batch(smollm2: Any) -> None:
    reward = HeadReward(smollm2, layer=12)
    msgs = user_only(TASK)
    alone, n1 = await reward.features([(msgs, "4")])
    batch, _ = await reward.features(
        [(msgs, "Let me think about this step by step before I answer."), (msgs, "4")]
    )
    assert n1 > 0 and batch.shape == (2, reward.hidden_size)
    torch.testing.assert_close(alone[0], batch[1], atol=1e-4, rtol=0)


@pytest.mark.slow
async def test_train_head_learns_a_visible_property(trained: HeadReward) -> None:
    examples = synthetic()
    feats, _ = await trained.features([(e.messages, e.prefix) for e in examples])
    probs = trained.predict(feats)
    acc = sum((p > 0.5) == (e.hard > 0.5) for p, e in zip(probs, examples, strict=True))
    assert acc / len(examples) >= 0.8
    assert trained.train_losses[-1] < trained.train_losses[0]


@pytest.mark.slow
async def test_save_load_round_trip_and_hidden_size_check(
    trained: HeadReward, smollm2: Any, tmp_path: Path
) -> None:
    path = tmp_path / "head.pt"
    meta_path = trained.save(path)
    loaded = HeadReward.load(smollm2, path)
    assert loaded.layer == trained.layer
    for k, v in trained.head.state_dict().items():
        assert torch.equal(v, loaded.head.state_dict()[k])
    solutions = [["2 + 2 = 4"], ["2 + 2 = 5", "\n\nNo, 4."]]
    # the same batch through both: identical; (trained's cache may hold other batches' values)
    fresh = HeadReward(smollm2, trained.head, layer=trained.layer)
    assert await loaded.score(TASK, solutions) == await fresh.score(TASK, solutions)

    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "hidden_size": 999}))
    with pytest.raises(ConfigError, match=r"999.*576"):
        HeadReward.load(smollm2, path)
    with pytest.raises(ConfigError, match="no saved head"):
        HeadReward.load(smollm2, tmp_path / "missing.pt")


@pytest.mark.slow
async def test_collect_labels_on_two_tasks(smollm2: Any) -> None:
    suite = load_suite("basic_arithmetic", n=2, seed=0)
    steps = StepGenerator(smollm2, tokens_per_step=8, max_steps=2, temperature=0.8)
    labels = await collect_labels(smollm2, suite, steps, rollouts=2, samples=2)
    assert {e.task_id for e in labels} == {t.id for t in suite.tasks}
    assert any(e.rollouts == 2 for e in labels)  # some 8-token step is cut and rolled out
    for e in labels:
        assert 0.0 <= e.soft <= 1.0 and e.hard == float(e.soft > 0)
        assert 1 <= e.step <= 2 and e.prefix


@pytest.mark.slow
async def test_bad_input_names_the_field(smollm2: Any) -> None:
    suite = load_suite("basic_arithmetic", n=1, seed=0)
    with pytest.raises(ConfigError, match="rollouts"):
        await collect_labels(smollm2, suite, StepGenerator(smollm2), rollouts=0)
    for layer in (31, -32):
        with pytest.raises(ConfigError, match="layer"):
            HeadReward(smollm2, layer=layer)
    HeadReward(smollm2, layer=-31)  # the embeddings: still in range
    with pytest.raises(ConfigError, match="examples"):
        await train_head(smollm2, [])
