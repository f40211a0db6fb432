"""`agentic serve` on 127.0.0.1 with the embedded SmolLM2, driven by clients no one here wrote:
the official `openai` SDK (sync, async, streaming), plain httpx for what the SDK hides (a client
that hangs up mid-stream, raw SSE lines), lm-eval, and `agentic replay` on what the gateway
recorded. Admission (429) is exact in test_gateway_admission.py, where a test double holds the
slots; here 200 concurrent streams are measured on the real model."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from servers import REPO, Server, start_gateway

from agentic.core import GenerateRequest, Message, SamplingParams

# one worker runs them all (make test: --dist loadgroup), so the gateway starts once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gateway")]

KEY = "test-key-not-secret"
PRICE = {"prompt": 1.0, "completion": 2.0}  # USD per 1M tokens
# small searches, so a request takes seconds on two cores
PRESETS = {
    "pf-tiny": {
        "type": "pf",
        "samples": 2,
        "tokens_per_step": 8,
        "max_steps": 2,
        "reward": "confidence",
        "seed": 0,
    },
    "sc-tiny": {"type": "sc", "n": 2, "max_tokens": 16, "seed": 0},
    "pf-long": {
        "type": "pf",
        "samples": 8,
        "tokens_per_step": 24,
        "max_steps": 8,
        "reward": "confidence",
        "seed": 0,
    },
}
QUESTION = [{"role": "user", "content": "What is 3 + 4?"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("gateway")
    config = {
        "models": {"smollm2": "embedded:smollm2"},
        "presets": PRESETS,
        "prices": {"smollm2": PRICE},
        "keys": [
            {"name": "tester", "env": "AGENTIC_TEST_KEY"},
            {"name": "capped", "key": "capped-key", "budget": {"tokens": 1}},
        ],
        "max_concurrency": 32,
        "max_queue": 200,
        "record": {"dir": str(root / "traces"), "per": "request"},
    }
    path = root / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    os.environ["AGENTIC_TEST_KEY"] = KEY
    server = start_gateway(path, root / "gateway.log")
    server.traces = root / "traces"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0, timeout=300)


def _metric(gateway: Server, name: str, labels: str = "") -> float:
    text = httpx.get(gateway.url.removesuffix("/v1") + "/metrics").text
    pattern = rf"^{re.escape(name)}{re.escape(labels)}\s+(\S+)$"
    values = [float(m) for m in re.findall(pattern, text, re.M)]
    return sum(values)


def test_models_lists_models_and_presets(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smollm2", "pf-tiny", "pf-tiny@smollm2", "pf-8@smollm2"} <= ids


def test_chat_passthrough_is_the_in_process_answer_and_priced(
    client: openai.OpenAI, smollm2: Any
) -> None:
    r = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=16, temperature=0
    )
    local = smollm2.generate_sync(
        [
            GenerateRequest(
                messages=(Message(role="user", content="What is 3 + 4?"),),
                params=SamplingParams(max_tokens=16, temperature=0),
            )
        ]
    )[0][0]
    assert r.choices[0].message.content == local.text
    assert r.choices[0].finish_reason == local.finish_reason
    u = r.usage
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens) == (
        local.usage.prompt_tokens,
        local.usage.completion_tokens,
    )
    expected = (u.prompt_tokens * PRICE["prompt"] + u.completion_tokens * PRICE["completion"]) / 1e6
    assert u.model_extra["cost_usd"] == pytest.approx(expected)
    assert u.model_extra["model_calls"] == 1


def test_completions_async_client_with_n_and_echo(gateway: Server) -> None:
    async def go() -> Any:
        async with openai.AsyncOpenAI(base_url=gateway.url, api_key=KEY, max_retries=0) as c:
            return await c.completions.create(
                model="smollm2",
                prompt="1, 2, 3,",
                max_tokens=6,
                temperature=0.8,
                seed=1,
                n=2,
                echo=True,
            )

    r = asyncio.run(go())
    assert len(r.choices) == 2 and [c.index for c in r.choices] == [0, 1]
    assert all(c.text.startswith("1, 2, 3,") and len(c.text) > 8 for c in r.choices)
    assert r.usage.completion_tokens > 6  # both samples counted


def test_stream_passthrough_sends_tokens_as_they_come(client: openai.OpenAI) -> None:
    args: dict[str, Any] = dict(model="smollm2", messages=QUESTION, max_tokens=16, temperature=0)
    whole = client.chat.completions.create(**args).choices[0].message.content
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 5  # token by token, not one burst
    assert "".join(texts) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16


def test_preset_search_streams_progress_then_the_same_answer(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="pf-tiny@smollm2", messages=QUESTION)
    info = plain.model_extra["agentic"]
    assert info["controller"]["type"] == "pf" and info["error"] is None
    assert plain.usage is not None and plain.usage.model_extra["model_calls"] >= 2
    stream = client.chat.completions.create(
        model="pf-tiny", messages=QUESTION, stream=True, extra_body={"agentic": {"progress": True}}
    )
    chunks = list(stream)
    progress = [
        c.model_extra["agentic"]["progress"]
        for c in chunks
        if (c.model_extra or {}).get("agentic", {}).get("progress")
    ]
    rounds = [p for p in progress if p["event"] == "search.round"]
    assert rounds and all("live" in p and "resampled" in p for p in rounds)
    assert any(p["best"] is not None and p["scores"] for p in rounds)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # same seed, same answer


def test_extra_body_spec_with_a_verifier(client: openai.OpenAI) -> None:
    spec = {"type": "bon", "samples": 2, "tokens_per_step": 8, "max_steps": 2, "seed": 3}
    r = client.chat.completions.create(
        model="smollm2",
        messages=QUESTION,
        extra_body={"agentic": {"controller": spec, "verifier": "0.5*confidence+0.5*program"}},
    )
    info = r.model_extra["agentic"]
    assert info["controller"]["type"] == "bon"
    assert info["controller"]["reward"] == "0.5*confidence+0.5*program"
    assert r.model == "bon@smollm2"
    assert r.usage is not None and r.usage.model_extra["reward_calls"] >= 1


def test_a_budget_stops_a_search_with_its_best_so_far(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="pf-long", messages=QUESTION, extra_body={"agentic": {"budget": {"tokens": 60}}}
    )
    assert r.choices[0].finish_reason == "length"
    assert "budget exceeded: tokens" in r.model_extra["agentic"]["error"]
    assert r.usage is not None and r.usage.model_extra["model_calls"] <= 8  # one round of 8
    # dollars charge too, through the price table
    r = client.chat.completions.create(
        model="pf-long", messages=QUESTION, extra_body={"agentic": {"budget": {"cost_usd": 1e-5}}}
    )
    assert "budget exceeded: cost_usd" in r.model_extra["agentic"]["error"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {"model": "pf-tiny", "agentic": {"controller": {"type": "pf", "samples": "x"}}},
            "agentic.controller",
            "samples",
        ),
        (
            {"model": "smollm2", "agentic": {"controller": {"type": "nope"}}},
            "agentic.controller",
            "nope",
        ),
        ({"model": "smollm2", "temperature": 5}, "temperature", "temperature"),
        ({"model": "sc-tiny", "agentic": {"verifier": "value"}}, "agentic.verifier", "sc"),
        ({"model": "pf-tiny", "n": 2}, "n", "n must be 1"),
        (
            {"model": "pf-tiny", "agentic": {"budget": {"tokns": 3}}},
            "agentic.budget.tokns",
            "tokns",
        ),
        ({"model": "pf-tiny", "agentic": {"verifier": "oracle"}}, "agentic.verifier", "oracle"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(
    client: openai.OpenAI, body: dict[str, Any], param: str, words: str
) -> None:
    body = {"messages": QUESTION, **body}
    agentic = body.pop("agentic", None)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**body, extra_body={"agentic": agentic} if agentic else None)
    assert e.value.status_code == 400
    error = e.value.body
    assert isinstance(error, dict) and error["param"] == param and words in error["message"]
    assert "Traceback" not in error["message"]


def test_unknown_model_is_404_and_keys_are_checked(gateway: Server) -> None:
    c = openai.OpenAI(base_url=gateway.url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-9", messages=QUESTION)
    wrong = openai.OpenAI(base_url=gateway.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="smollm2", messages=QUESTION)
    capped = openai.OpenAI(base_url=gateway.url, api_key="capped-key", max_retries=0)
    capped.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as e:  # its one-token budget is spent
        capped.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=2)
    assert e.value.body["code"] == "insufficient_quota"  # type: ignore[index]
    log = Path(gateway.log).read_text()
    assert KEY not in log and "capped-key" not in log


def test_a_client_that_hangs_up_cancels_its_search(gateway: Server) -> None:
    label = '{endpoint="chat",model="pf-long@smollm2",status="499"}'
    before = _metric(gateway, "agentic_requests_total", label)
    body = {"model": "pf-long", "messages": QUESTION, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{gateway.url}/chat/completions", json=body, headers=headers, timeout=120
    ) as r:
        lines = r.iter_lines()  # held: a dropped iterator closes the connection when collected
        next(lines)  # the stream is open and the search started
        deadline = time.monotonic() + 120
        while _metric(gateway, "agentic_backend_rows") == 0:  # its particles are decoding
            assert time.monotonic() < deadline, "the search never reached the backend"
            time.sleep(0.1)
    gone = time.monotonic()  # hung up mid-search
    while _metric(gateway, "agentic_backend_rows") and time.monotonic() - gone < 30:
        time.sleep(0.1)
    freed = time.monotonic() - gone
    assert _metric(gateway, "agentic_backend_rows") == 0, "the cancelled search still decodes"
    # a decode step of 8 rows takes well under a second; the whole search takes minutes
    assert freed < 10
    while _metric(gateway, "agentic_in_flight") and time.monotonic() - gone < 30:
        time.sleep(0.1)
    assert _metric(gateway, "agentic_requests_total", label) == before + 1
    # a plain (not streamed) request whose client gives up is cancelled too
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.url}/chat/completions",
            json={**body, "stream": False},
            headers=headers,
            timeout=3,
        )
    gone = time.monotonic()
    while _metric(gateway, "agentic_in_flight") and time.monotonic() - gone < 30:
        time.sleep(0.1)
    # its rows leave the batch at the next decode step, which a busy machine may take a while to
    # reach after the request itself has ended
    while _metric(gateway, "agentic_backend_rows") and time.monotonic() - gone < 30:
        time.sleep(0.1)
    assert _metric(gateway, "agentic_backend_rows") == 0, "the abandoned search still decodes"
    assert time.monotonic() - gone < 10
    assert _metric(gateway, "agentic_requests_total", label) == before + 2


def test_recordings_replay_offline(gateway: Server, client: openai.OpenAI, tmp_path: Path) -> None:
    r = client.chat.completions.create(model="sc-tiny", messages=QUESTION)
    trace = gateway.traces / f"{r.id}.jsonl"  # type: ignore[attr-defined]
    replay = subprocess.run(
        [sys.executable, "-m", "agentic.cli", "replay", str(trace)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "identical" in replay.stdout
    # a pass-through request's recording, served by a gateway with no model
    plain = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=12, temperature=0
    )
    # the viewer reads the gateway's folder as it wrote it: the search request as a run of one
    # task with its search tree, the pass-through as a plain completion
    from agentic.view import Library

    lib = Library.open([gateway.traces], live=False)  # type: ignore[attr-defined]
    by_file = {Path(r.path).stem: r.summary() for r in lib.recordings}
    searched, passed = by_file[r.id], by_file[plain.id]
    assert searched.status == "ok" and searched.done == 1, searched
    assert searched.gateway and searched.gateway["request"] == r.id
    assert passed.status == "plain", passed
    config = tmp_path / "replay.yaml"
    recorded = gateway.traces / f"{plain.id}.jsonl"  # type: ignore[attr-defined]
    config.write_text(yaml.safe_dump({"models": {"smollm2": f"replay:{recorded}"}}))
    served = start_gateway(config, tmp_path / "replay.log")
    try:
        c = openai.OpenAI(base_url=served.url, api_key="none", max_retries=0)
        again = c.chat.completions.create(
            model="smollm2", messages=QUESTION, max_tokens=12, temperature=0
        )
        assert again.choices[0].message.content == plain.choices[0].message.content
    finally:
        served.stop()


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]


def test_200_streams_with_disconnects(gateway: Server, smollm2: Any) -> None:
    rng = random.Random(0)
    prompts = [f"What is {i % 10} + {i // 10}?" for i in range(200)]
    drop = {i for i in range(200) if rng.random() < 0.2}
    headers = {"Authorization": f"Bearer {KEY}"}

    def body(i: int) -> dict[str, Any]:
        return {
            "model": "smollm2",
            "messages": [{"role": "user", "content": prompts[i]}],
            "max_tokens": 12,
            "temperature": 0.8,
            "seed": i,
            "stream": True,
        }

    async def one(c: httpx.AsyncClient, i: int) -> str | None:
        text = ""
        async with c.stream(
            "POST", f"{gateway.url}/chat/completions", json=body(i), headers=headers
        ) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                text += "".join(ch["delta"].get("content") or "" for ch in chunk["choices"])
                if i in drop and text:
                    return None  # hang up mid-stream
        return text

    async def wave() -> list[str | None]:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=250)) as c:
            return await asyncio.gather(*(one(c, i) for i in range(200)))

    pid = gateway.proc.pid
    asyncio.run(wave())  # warm: the allocator's pools at their working size
    baseline = _rss_kib(pid)
    answers = asyncio.run(wave())
    assert (
        gateway.proc.poll() is None
        and httpx.get(gateway.url.removesuffix("/v1") + "/health").status_code == 200
    )
    deadline = time.monotonic() + 10
    while _metric(gateway, "agentic_in_flight") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (
        _metric(gateway, "agentic_in_flight") == 0 and _metric(gateway, "agentic_backend_rows") == 0
    )
    assert _rss_kib(pid) < baseline * 1.1, "memory did not return to its baseline"
    # what a stream left mid-way produced was charged while its trace was open, not after
    assert "Traceback" not in Path(gateway.log).read_text()
    kept = [i for i in range(200) if i not in drop]
    local = smollm2.generate_sync(
        [
            GenerateRequest(
                messages=(Message(role="user", content=prompts[i]),),
                params=SamplingParams(max_tokens=12, temperature=0.8, seed=i),
            )
            for i in kept
        ]
    )
    assert [answers[i] for i in kept] == [g[0].text for g in local]


def _last_number(text: str) -> str:
    found = re.findall(r"-?\d+", text)  # the task YAML's filter and lm-eval's fallback
    return found[-1] if found else "[invalid]"


def test_lm_eval_through_the_gateway_matches_in_process(
    gateway: Server, smollm2: Any, tmp_path: Path
) -> None:
    from agentic.runtime.chat import ChatSuite
    from agentic.runtime.runner import run_suite
    from agentic.specs.registry import BuildContext

    out = tmp_path / "lm_eval"
    env = {**os.environ, "OPENAI_API_KEY": KEY, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = (
        f"model=sc-tiny@smollm2,base_url={gateway.url}/chat/completions,"
        "num_concurrent=4,max_retries=1,tokenized_requests=False"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "local-chat-completions",
            "--model_args",
            args,
            "--include_path",
            "benchmarks/lm_eval",
            "--tasks",
            "agentic_arith",
            "--apply_chat_template",
            "--log_samples",
            "--output_path",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [results] = list(out.rglob("results_*.json"))
    score = json.loads(results.read_text())["results"]["agentic_arith"]["exact_match,last_number"]
    [samples] = list(out.rglob("samples_agentic_arith_*.jsonl"))
    graded = {
        json.loads(line)["doc"]["id"]: json.loads(line)["filtered_resps"][0]
        for line in samples.read_text().splitlines()
    }
    docs = [json.loads(x) for x in (REPO / "benchmarks/lm_eval/agentic_arith/arith.jsonl").open()]

    async def in_process() -> list[str]:
        controller = BuildContext(smollm2, ChatSuite([])).build(PRESETS["sc-tiny"])
        answers = []
        for d in docs:
            suite = ChatSuite.from_messages(
                str(d["id"]), [Message(role="user", content=d["question"])]
            )
            result = await run_suite(suite, controller, concurrency=1)
            answers.append(_last_number(result.outcomes[0].output))
        return answers

    local = asyncio.run(in_process())
    in_process_score = sum(a == d["answer"] for a, d in zip(local, docs, strict=True)) / len(docs)
    print(f"lm-eval exact_match through the gateway {score:.4f}, in process {in_process_score:.4f}")
    assert [graded[d["id"]] for d in docs] == local
    assert score == pytest.approx(in_process_score)
