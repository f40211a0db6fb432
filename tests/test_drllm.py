"""Dr.LLM skip/execute/repeat routers: pooling and loss, configuration search scored against
a model rebuilt by hand, routers that reproduce their labels, and per-request decisions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from agentic.core import ConfigError, GenerateRequest, InterventionRef
from agentic.runtime.suites import load_suite
from backends.interventions.drllm import (
    EXECUTE,
    REPEAT,
    SKIP,
    DrLLMRouter,
    RouterNet,
    fit_drllm,
    focal_loss,
    search_config,
    windowed_mean,
)
from backends.interventions.static import LayerRepeat, LayerSkip


@pytest.fixture
def lm(smollm2: Any) -> Iterator[Any]:
    yield smollm2
    smollm2.clear_interventions()


def test_windowed_mean_and_focal_loss() -> None:
    h = torch.arange(12.0).reshape(6, 2)
    # windows {0,1},{2,3},{4,5}: means (1,2),(5,6),(9,10) -> (5,6)
    assert windowed_mean(h, 3).tolist() == [5.0, 6.0]
    assert windowed_mean(h[:2], 8).tolist() == h[:2].mean(0).tolist()  # fewer tokens than windows
    logits, target = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 1])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(focal_loss(logits, target, torch.ones(3), gamma=0.0), ce)
    assert focal_loss(logits, target, torch.ones(3), gamma=2.0) < ce


def forced(layers: list[int], actions: dict[int, int]) -> DrLLMRouter:
    net = RouterNet(576, layers, width=8)
    with torch.no_grad():
        for k, layer in enumerate(layers):
            mlp = net.nets[k]
            assert isinstance(mlp, torch.nn.Sequential)
            last = mlp[-1]
            assert isinstance(last, torch.nn.Linear)
            last.weight.zero_()
            last.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
            last.bias[actions.get(layer, EXECUTE)] = 1.0
    return DrLLMRouter(net)


pytestmark = pytest.mark.slow


async def test_router_decisions_are_the_plan_a_static_config_would_give(lm: Any) -> None:
    router = forced(list(range(1, 30)), {5: SKIP, 9: REPEAT, 20: SKIP})
    lm.attach("dr", router)
    lm.attach("skip", LayerSkip({5, 20}))
    lm.attach("rep", LayerRepeat({9}))
    text = "Calculate 4 + 3.\nGive only the final answer."
    base = GenerateRequest.chat(text, max_tokens=10, temperature=0.0)
    [[routed]] = await lm.generate(
        [base.model_copy(update={"interventions": (InterventionRef(name="dr"),)})]
    )
    refs = (InterventionRef(name="skip"), InterventionRef(name="rep"))
    [[fixed]] = await lm.generate([base.model_copy(update={"interventions": refs})])
    assert routed.token_ids == fixed.token_ids


def loglik_by_hand(lm: Any, ids: list[int], start: int, skip: set[int], repeat: set[int]) -> float:
    layers = lm.model.model.layers
    new = [x for i, x in enumerate(layers) if i not in skip for _ in range(2 if i in repeat else 1)]
    lm.model.model.layers = torch.nn.ModuleList(new)
    n = lm.model.config.num_hidden_layers
    lm.model.config.num_hidden_layers = len(new)
    try:
        with torch.inference_mode():
            logits = lm.model(torch.tensor([ids]), use_cache=False).logits[0].float()
    finally:
        lm.model.model.layers = layers
        lm.model.config.num_hidden_layers = n
    logp = torch.log_softmax(logits[start - 1 : -1], -1)
    return float(logp.gather(-1, torch.tensor(ids[start:])[:, None]).sum())


async def test_search_finds_an_admissible_cheaper_config_scored_correctly(lm: Any) -> None:
    suite = load_suite(
        "basic_arithmetic",
        n=1,
        seed=3,
        config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    )
    task = suite.tasks[0]
    prompt = lm.render(GenerateRequest.chat(task.input))
    answer = list(lm.tokenizer(str(task.answer), add_special_tokens=False).input_ids)
    full = loglik_by_hand(lm, prompt + answer, len(prompt), set(), set())
    tol = 0.5
    found = await search_config(
        lm, prompt, answer, max_executions=28, tolerance=tol, beam=2, rounds=2
    )
    assert found.executions(lm.num_layers) <= 28 and 0 not in found.skip
    by_hand = loglik_by_hand(lm, prompt + answer, len(prompt), set(found.skip), set(found.repeat))
    assert found.score == pytest.approx(by_hand, abs=1e-3)
    assert found.score >= full - tol * len(answer) - 1e-4
    with pytest.raises(ConfigError, match="tolerance"):
        await search_config(lm, prompt, answer, tolerance=-1.0)


async def test_fit_trains_routers_that_reproduce_their_labels(lm: Any, tmp_path: Any) -> None:
    suite = load_suite(
        "basic_arithmetic",
        n=2,
        seed=5,
        config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
    )
    examples = [(GenerateRequest.chat(t.input), str(t.answer)) for t in suite.tasks]
    layers = list(range(1, 30))
    router, configs = await fit_drllm(
        lm,
        examples,
        layers=layers,
        search={"tolerance": 0.5, "rounds": 2, "beam": 1, "max_executions": 29},
        train={"epochs": 150},
    )
    assert all(c.executions(30) <= 29 for c in configs)
    lm.attach("dr", router)
    for (req, _), config in zip(examples, configs, strict=True):
        r = req.model_copy(
            update={
                "interventions": (InterventionRef(name="dr"),),
                "params": req.params.model_copy(update={"max_tokens": 1, "temperature": 0.0}),
            }
        )
        from agentic.core import Tracer

        events: list[Any] = []
        with Tracer([events.append]).activate():
            await lm.generate([r])
        [ev] = [e for e in events if e.type == "backend.intervention"]
        decided = ev.payload["decisions"]["drllm"]
        expect = config.actions(30)
        agree = sum(decided[x] == ["skip", "execute", "repeat"][expect[x]] for x in layers)
        assert agree >= 0.9 * len(layers)
    path = router.save(tmp_path / "dr.safetensors")
    again = DrLLMRouter.load(path)
    for k in range(len(layers)):
        for a, b in zip(
            router.net.nets[k].parameters(), again.net.nets[k].parameters(), strict=True
        ):
            assert torch.equal(a, b)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(ConfigError, match=r"bad\.safetensors"):
        DrLLMRouter.load(tmp_path / "bad.safetensors")
