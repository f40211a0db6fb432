"""The trained value model (`search.value_model`): LoRA + a scalar head on the real SmolLM2,
trained on a tiny slice here (the shipped one is trained by `benchmarks/train_value.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentic.core import Budget, ConfigError, Message, Task
from search.head_reward import LabelledPrefix
from search.value_model import DEFAULT_PATH, ValueReward, save_adapter, train_value_model

TASK = Task(id="add/0", input="What is 3 + 4?", answer="7")
MSGS = (Message(role="user", content=TASK.input),)
GOOD = ["3 + 4 = 7", "The answer is 7.", "7"]
BAD = ["3 + 4 = 9", "The answer is 5.", "12"]


def labelled(prefix: str, soft: float) -> LabelledPrefix:
    return LabelledPrefix(
        task_id=TASK.id, messages=MSGS, prefix=prefix, step=1, hard=float(soft > 0), soft=soft,
        rollouts=0,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained() -> tuple[Any, Any, list[float]]:
    examples = [labelled(p, 1.0) for p in GOOD] + [labelled(p, 0.0) for p in BAD]
    return train_value_model(
        "embedded:smollm2", examples, epochs=8, batch_size=6, lr=3e-4, head_lr=3e-3
    )


async def test_a_tiny_slice_trains_and_ranks_its_answers(trained: Any) -> None:
    model, tok, losses = trained
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.05
    reward = ValueReward(model, tok)
    [good, bad] = [await reward.score(TASK, [[p] for p in ps]) for ps in (GOOD, BAD)]
    assert min(v for [v] in good) > max(v for [v] in bad)


async def test_saved_adapter_is_small_and_loads_to_the_same_scores(
    trained: Any, tmp_path: Path
) -> None:
    model, tok, _ = trained
    path = save_adapter(model, tmp_path / "value", {"base": "embedded:smollm2"})
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 8_000_000, f"adapter + head is {size} bytes"
    solutions = [["3 + 4 = ", "7"], ["9"]]
    before = await ValueReward(model, tok).score(TASK, solutions)
    after = await ValueReward.load(path).score(TASK, solutions)
    for b, a in zip(before, after, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


async def test_scores_are_cached_per_prefix_and_charged_once(trained: Any) -> None:
    model, tok, _ = trained
    reward = ValueReward(model, tok)
    with Budget() as budget:
        first = await reward.score(TASK, [["3 + 4 = ", "7"], ["3 + 4 = ", "9"]])
        assert budget.spent.reward_calls == 3  # the shared first step is scored once
        again = await reward.score(TASK, [["3 + 4 = ", "7"]])
        assert budget.spent.reward_calls == 3
    assert again[0] == first[0] and first[0][0] == first[1][0]


def test_a_missing_artifact_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train_value\.py"):
        ValueReward.load(tmp_path / "nothing-here")


def test_the_shipped_value_model_was_fit_on_train_families_only() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from ttc_matrix import EVAL, TRAIN

    meta = json.loads((DEFAULT_PATH / "value.json").read_text())
    assert meta["base"] == "embedded:smollm2"
    assert set(meta["train_families"]) <= set(TRAIN)
    assert not set(meta["train_families"]) & set(EVAL)


def test_labels_are_scored_against_the_question_they_were_made_on() -> None:
    """train_value.tasks_for keeps the suite's task (with its expected answer, which decides how
    an answer is read) where a label's question is that task's, and otherwise rebuilds the task
    from the label's own question, so a label is never paired with another question."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from train_value import tasks_for
    from ttc_matrix import EVAL, TRAIN

    from agentic.runtime.suites import load_suite

    def label(task_id: str, question: str, prefix: str) -> LabelledPrefix:
        chat = (Message(role="user", content=question),)
        return LabelledPrefix(
            task_id=task_id, messages=chat, prefix=prefix, step=1, hard=1, soft=1, rollouts=0
        )

    gcd = TRAIN["gcd:max_value=20"]
    real = load_suite(gcd.dataset, n=2, seed=0, config=gcd.config).tasks[1]
    examples = [
        label("ransom_note/0/3", "Ransom note: ab\nMagazine: xyz", "False"),
        label("ransom_note/0/3", "Ransom note: ab\nMagazine: xyz", "True"),
        label(real.id, real.input, "2"),
    ]
    tasks = tasks_for(examples, EVAL)
    assert list(tasks) == ["ransom_note/0/3"]  # gcd is a train family
    assert tasks["ransom_note/0/3"].input == "Ransom note: ab\nMagazine: xyz"
    assert tasks["ransom_note/0/3"].answer is None  # the suite's task 3 is another question
    assert tasks_for(examples, TRAIN)[real.id] == real


@pytest.mark.parametrize("kind", ["bon", "pf"])
async def test_the_default_reward_is_the_shipped_value_model_and_searches(
    smollm2: Any, kind: str
) -> None:
    """A search built with no reward searches by the value model (chosen on held-out train
    prefixes, benchmarks/train_value.py), end to end on the real SmolLM2: an outcome-style search
    (best-of-N) and a per-step one (the particle filter)."""
    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext, parse_controller_spec

    suite = load_suite("basic_arithmetic", n=1, seed=3)
    spec = parse_controller_spec({"type": kind, "samples": 2, "max_steps": 2})
    assert spec.reward == "value"  # type: ignore[attr-defined]
    controller: Any = BuildContext(smollm2, suite).build(spec)
    assert isinstance(controller.reward, ValueReward)
    with Budget() as budget:
        result = await controller.search(suite.tasks[0])
    assert result.answer and budget.spent.reward_calls >= 2
    scores = [s for _, s in result.finished]
    assert scores and all(s is not None and 0.0 < s < 1.0 for s in scores)


@pytest.mark.parametrize("kind", ["bon", "beam", "pf", "epf", "astar"])
def test_every_search_searches_by_the_value_model_by_default(kind: str) -> None:
    from agentic.specs.registry import parse_controller_spec

    spec = parse_controller_spec({"type": kind})
    assert spec.reward == "value"  # type: ignore[attr-defined]


def test_a_default_search_without_the_artifact_names_the_command_that_builds_it(
    tmp_path: Path,
) -> None:
    from agentic.runtime.suites import load_suite
    from agentic.specs.registry import BuildContext
    from backends.testing import ScriptedBackend

    ctx = BuildContext(ScriptedBackend(lambda prefix, j: ("1", True)), load_suite("gcd", n=1))
    with pytest.raises(ConfigError, match=r"no trained value model at .*train_value\.py"):
        ctx.build({"type": "pf", "value_model": str(tmp_path / "nothing-here")})


async def test_a_shared_chat_is_encoded_once_and_the_values_do_not_change() -> None:
    """The shipped value model on a real suite's chat: sharing the prompt's keys and values
    (within a call, and across calls through the prefix cache) gives the values of encoding
    every prefix whole, for far fewer encoded tokens."""
    from agentic.runtime.suites import load_suite

    task = load_suite("chain_sum", n=1, seed=5).tasks[0]
    steps = [
        ["The sum is ", "12."],
        ["Let me add: ", "3 + 4 = 7, ", "7 + 5 = 12.\n\nThe answer is 12."],
        ["I think the answer is 40"],
        ["1"],
    ]
    whole = ValueReward.load(prefix_cache_tokens=0)
    shared = ValueReward.load()
    assert whole.model is shared.model  # one merged model per process and folder
    expected = await whole.score(task, steps)
    got = await shared.score(task, steps)
    for e, g in zip(expected, got, strict=True):
        assert g == pytest.approx(e, abs=1e-4)
    assert shared.encoded_tokens < whole.encoded_tokens / 2

    more = [["The sum is ", "12.", " Done."], ["2"]]
    before = shared.encoded_tokens
    expected = await whole.score(task, more)
    got = await shared.score(task, more)
    assert [v for vs in got for v in vs] == pytest.approx(
        [v for vs in expected for v in vs], abs=1e-4
    )
    prompt = len(shared.encode(shared.messages(task), ""))
    assert shared.encoded_tokens - before < prompt  # the chat came from the prefix cache
