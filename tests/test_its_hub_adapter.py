"""The its_hub adapters of `benchmarks/its_hub_adapter.py`, on its_hub's real particle filter
against a scripted OpenAI server: the stop marker ends exactly the particles the server ended at
EOS, never reaches the server, the PRM or the final answer, and without it its_hub extends an
ended answer until max_steps (the handicap the fair setting of its_hub_compare.py removes)."""

from __future__ import annotations

import json
import random
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from its_hub.core.algorithms.particle_gibbs import ParticleFiltering
from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel
from its_hub.core.lms.step_generation import StepGeneration
from servers import stub_server

from agentic.core import Task

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
try:
    from its_hub_adapter import STOP_MARKER, ItsHubPRM, StopMarkerLM, ended_at_eos, strip_marker
finally:
    sys.path.pop()

TASK = Task(id="t", input="What is 2 + 3?", answer="5")
FIRST, LAST = "Add them.", "The answer is 5."


class Asked:
    """A process reward that records every text it is asked about and scores it 0.5."""

    kind: Literal["process"] = "process"

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        self.texts += ["".join(s) for s in solutions]
        return [[0.5] for _ in solutions]


def answer(path: str, body: bytes) -> bytes:
    """The first step ends at the delimiter, every later one at EOS (stop_reason null), as
    vLLM reports them."""
    request = json.loads(body)
    continued = request["messages"][-1]["role"] == "assistant"
    text, stop = (LAST, None) if continued else (FIRST, "\n\n")
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": "stop",
        "stop_reason": stop,
    }
    return json.dumps(
        {"choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    ).encode()


@pytest.mark.parametrize(
    ("choice", "ended"),
    [
        ({"finish_reason": "stop", "stop_reason": None}, True),
        ({"finish_reason": "stop"}, True),
        ({"finish_reason": "stop", "stop_reason": 2}, True),  # a stop token id
        ({"finish_reason": "stop", "stop_reason": "\n\n"}, False),  # the step delimiter
        ({"finish_reason": "length", "stop_reason": None}, False),
    ],
)
def test_ended_at_eos_reads_finish_and_stop_reason(choice: dict[str, Any], ended: bool) -> None:
    assert ended_at_eos(choice) is ended


def test_strip_marker_removes_only_a_trailing_marker() -> None:
    assert strip_marker("x = 5" + STOP_MARKER, STOP_MARKER) == "x = 5"
    assert strip_marker(STOP_MARKER + " x", STOP_MARKER) == STOP_MARKER + " x"
    assert strip_marker("x" + STOP_MARKER, None) == "x" + STOP_MARKER


async def run_pf(lm: OpenAICompatibleLanguageModel, fair: bool) -> tuple[str, list[str]]:
    """its_hub's PF, 2 particles, at most 4 steps; the final answer (marker stripped) and every
    text its PRM was asked about."""
    asked = Asked()
    marker = STOP_MARKER if fair else None
    sg = StepGeneration(max_steps=3, step_token="\n\n", stop_token=marker, temperature=0.7)
    prm = ItsHubPRM(asked, [TASK], stop_marker=marker)
    random.seed(0)
    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"agenerate\(\) is deprecated", DeprecationWarning)
        result = await ParticleFiltering(sg, prm).ainfer(lm, TASK.input, budget=2)
    await lm.close()
    assert isinstance(result, dict)
    return strip_marker(str(result["content"]), marker), asked.texts


async def test_marker_stops_particles_at_eos_and_stays_out_of_prm_and_answer() -> None:
    with stub_server(answer) as stub:
        lm = StopMarkerLM(endpoint=stub.url, api_key="EMPTY", model_name="m")
        final, asked = await run_pf(lm, fair=True)
    # step 1 ends at the delimiter, step 2 at EOS: two requests per particle, then done
    assert len(stub.posts) == 4
    assert all(STOP_MARKER.encode() not in p.body for p in stub.posts)
    assert final == f"{FIRST}\n\n{LAST}"
    assert asked == [FIRST, FIRST, f"{FIRST}\n\n{LAST}", f"{FIRST}\n\n{LAST}"]


async def test_without_the_marker_its_hub_extends_ended_answers_to_max_steps() -> None:
    with stub_server(answer) as stub:
        lm = OpenAICompatibleLanguageModel(endpoint=stub.url, api_key="EMPTY", model_name="m")
        final, asked = await run_pf(lm, fair=False)
    assert len(stub.posts) == 8  # 4 steps for each of the 2 particles
    assert final == "\n\n".join([FIRST, LAST, LAST, LAST])
    assert len(asked) == 8  # both particles scored after each of the 4 rounds


async def test_marker_lm_marks_single_generations_too() -> None:
    with stub_server(answer) as stub:
        lm = StopMarkerLM(endpoint=stub.url, api_key="EMPTY", model_name="m")
        first = await lm.agenerate_single([{"role": "user", "content": TASK.input}])
        more = [{"role": "user", "content": TASK.input}, {"role": "assistant", "content": FIRST}]
        last = await lm.agenerate_single(more)
        await lm.close()
    assert first == {"role": "assistant", "content": FIRST}
    assert last == {"role": "assistant", "content": LAST + STOP_MARKER}
