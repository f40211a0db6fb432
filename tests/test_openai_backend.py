"""`OpenAIBackend` specifics beyond the conformance suite: URIs, probing, clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentic.core import (
    BackendUnavailable,
    ConfigError,
    GenerateRequest,
    Message,
    NotSupported,
)
from backends import load_backend
from backends.openai.backend import OpenAIBackend

pytestmark = pytest.mark.slow


async def test_uri_without_model_probes_the_server(llamacpp_server: Any) -> None:
    backend = load_backend(f"openai:{llamacpp_server.url}")
    assert isinstance(backend, OpenAIBackend)
    assert backend.model == "smollm2" and backend.server == "llama.cpp"
    assert backend.name == f"openai:{llamacpp_server.url}#smollm2"
    assert backend.capabilities.score is False
    [[g]] = await backend.generate([GenerateRequest.chat("Hi", max_tokens=4, temperature=0)])
    assert g.text and g.usage.model_calls == 1
    await backend.aclose()


async def test_vllm_server_is_recognised(vllm_server: Any) -> None:
    backend = load_backend(vllm_server.uri)
    assert isinstance(backend, OpenAIBackend)
    assert backend.server == "vllm"
    assert backend.capabilities.score and backend.capabilities.prefix
    # vLLM tokenizes on the server, so counting needs no local tokenizer
    assert backend.count_tokens([Message(role="user", content="Say hello.")]) > 5
    await backend.aclose()


async def test_prefix_on_llamacpp_without_tokenizer_is_refused(llamacpp_server: Any) -> None:
    backend = OpenAIBackend(llamacpp_server.url, "smollm2", server="llama.cpp")
    assert backend.capabilities.prefix is False
    req = GenerateRequest.chat("What is 2+3?", max_tokens=4).model_copy(update={"prefix": "The"})
    with pytest.raises(NotSupported, match="tokenizer=PATH"):
        await backend.generate([req])
    with pytest.raises(NotSupported, match="tokenizer=PATH"):
        backend.count_tokens("hello")
    # a raw prompt with a prefix needs no template
    [[g]] = await backend.generate(
        [GenerateRequest(prompt="1, 2, 3,", prefix=" 4,", params={"max_tokens": 3})]
    )
    assert g.usage.prompt_tokens > 0
    await backend.aclose()


def test_unreachable_server_names_the_url() -> None:
    from servers import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    # the probe is retried like any request: few and fast retries keep this test quick
    with pytest.raises(BackendUnavailable, match=url.replace(".", r"\.")):
        OpenAIBackend(url, max_retries=1, backoff=0.001, backoff_max=0.01)


@pytest.mark.parametrize(
    ("uri", "field"),
    [
        ("openai:", "server URL"),
        ("openai:127.0.0.1:8000/v1#m", "http://"),
    ],
)
def test_bad_uris_are_named(uri: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_backend(uri)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_concurrency", 0),
        ("read_timeout", -1.0),
        ("attempt_timeout", 0.0),
        ("max_retries", -1),
        ("server", "tgi"),
    ],
)
def test_bad_options_are_named(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", **{"server": "openai", option: value})


def test_cli_runs_and_replays_against_a_server(llamacpp_server: Any, tmp_path: Path) -> None:
    from test_cli import agentic

    uri = llamacpp_server.uri
    run = agentic("run", "--n", "4", "--backend", uri, "--record", "r.jsonl", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "4 done, 0 not run" in run.stdout
    # the recording of a remote run replays with no server at all
    rep = agentic("replay", "r.jsonl", cwd=tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "identical" in rep.stdout
