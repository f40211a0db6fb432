"""Steering vectors (`backends.interventions.steering_vectors`) and `agentic steer extract`.

The math on planted activations (a stub backend whose `layer_states` returns chosen tensors), then
on SmolLM2-135M-Instruct: the mean difference equals a direct computation from `layer_states`,
the PCA direction keeps its conventions, a refusal vector from 16 + 16 train prompts separates
held-out test prompts, the safetensors round trip is exact, and the CLI writes a loadable file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from agentic.cli import app
from agentic.cli.steer import code_language, code_tasks, refusal_pairs
from agentic.core import ConfigError, GenerateRequest
from backends.interventions.steering_vectors import (
    META_KEY,
    SteeringVector,
    as_request,
    extract_mean_difference,
    extract_pca,
)

D = 16


class Planted:
    """A backend whose residual stream is a table: prompt text -> (num_layers + 1, D) states."""

    name = "planted"
    num_layers = 4

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        self.table = table

    async def layer_states(
        self, requests: Sequence[GenerateRequest], layers: Sequence[int], pool: str = "last"
    ) -> SimpleNamespace:
        rows = torch.stack([self.table[r.messages[-1].content] for r in requests])  # type: ignore[index]
        return SimpleNamespace(states=rows[:, list(layers)], prompt_tokens=len(requests))


def planted_pairs(
    n: int = 12, seed: int = 0
) -> tuple[Planted, list[tuple[str, str]], torch.Tensor]:
    """Pairs whose difference at decoder layer 2 (hidden index 3) is a_j * v, a_j in [1, 3]."""
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(D, generator=g), dim=0)
    table, pairs = {}, []
    for j in range(n):
        base = torch.randn(Planted.num_layers + 1, D, generator=g) * 5
        pos = base + 1e-3 * torch.randn(base.shape, generator=g)
        pos[3] += (1 + 2 * j / (n - 1)) * v
        pos[2] += 4 * torch.ones(D)  # an off-by-one in the layer index would pick this up
        table[f"p{j}"], table[f"n{j}"] = pos, base
        pairs.append((f"p{j}", f"n{j}"))
    return Planted(table), pairs, v


async def test_pca_recovers_a_planted_rank_one_direction() -> None:
    backend, pairs, v = planted_pairs()
    vec = await extract_pca(backend, pairs, [2, 0], name="planted")
    d = vec.direction(2)
    assert torch.cosine_similarity(d, v, 0) > 0.99  # the sign points from negative to positive
    assert float(d.norm()) == pytest.approx(2.0, abs=0.01)  # mean a_j: activation units
    assert float(vec.info["explained_variance.2"]) > 0.99
    assert vec.info["n_pairs"] == 12 and vec.info["pool"] == "last"
    assert vec.layers == [0, 2] and vec.model == "planted" and vec.hidden_size == D
    mean = await extract_mean_difference(
        backend, [p for p, _ in pairs], [n for _, n in pairs], [2], name="m"
    )
    assert torch.cosine_similarity(mean.direction(2), v, 0) > 0.999
    assert mean.info["norm.2"] == pytest.approx(float(mean.direction(2).norm()))
    # identical differences leave nothing to analyse: the difference itself is the axis
    same = Planted({"a": torch.ones(5, D), "b": torch.zeros(5, D), "c": 3 + torch.ones(5, D)})
    same.table["d"] = same.table["c"] - 1
    flat = await extract_pca(same, [("a", "b"), ("c", "d")], [1], name="flat")
    torch.testing.assert_close(flat.direction(1), torch.ones(D))
    assert flat.info["explained_variance.1"] == 1.0


async def test_bad_inputs_name_the_field() -> None:
    backend, pairs, _ = planted_pairs(3)
    pos, neg = [p for p, _ in pairs], [n for _, n in pairs]
    cases: list[tuple[Any, str]] = [
        (extract_mean_difference(backend, [], neg, [1], name="x"), "positive is empty"),
        (extract_mean_difference(backend, pos, [], [1], name="x"), "negative is empty"),
        (extract_mean_difference(backend, "abc", neg, [1], name="x"), "positive must be a list"),
        (extract_mean_difference(backend, [3], neg, [1], name="x"), r"positive\[0\]"),  # type: ignore[list-item]
        (extract_mean_difference(backend, pos, neg, [], name="x"), "layers is empty"),
        (extract_mean_difference(backend, pos, neg, [4], name="x"), r"layer 4 .*\[0, 4\)"),
        (extract_mean_difference(backend, pos, neg, [-1], name="x"), "layers: layer -1"),
        (extract_mean_difference(backend, pos, neg, [1, 1], name="x"), "layer 1 appears twice"),
        (extract_mean_difference(backend, pos, neg, [1], name="x", pool="max"), "pool"),  # type: ignore[arg-type]
        (extract_mean_difference(backend, pos, neg, [1], name=""), "name is empty"),
        (extract_pca(backend, pairs[:1], [1], name="x"), "pairs: PCA needs at least 2"),
        (extract_pca(backend, [("a",), *pairs], [1], name="x"), r"pairs\[0\]"),  # type: ignore[list-item]
        (
            extract_mean_difference(SimpleNamespace(name="openai:x"), pos, neg, [1], name="x"),
            "'openai:x' \\(SimpleNamespace\\) has no layer_states",
        ),
    ]
    for coro, match in cases:
        with pytest.raises(ConfigError, match=match):
            await coro


def test_save_load_round_trip_and_refused_files(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    info: dict[str, float | int | str] = {"n_positive": 3, "pool": "mean", "norm.7": 0.1 + 0.2}
    vec = SteeringVector(
        name="t",
        method="pca",
        model="embedded:smollm2",
        hidden_size=D,
        directions={7: torch.randn(D, generator=g), 2: torch.randn(D, generator=g)},
        info=info,
    )
    path = vec.save(tmp_path / "sub" / "t.safetensors")
    back = SteeringVector.load(path)
    assert back.layers == [2, 7] and back.info == info and type(back.info["n_positive"]) is int
    assert (back.name, back.method, back.model, back.hidden_size) == ("t", "pca", vec.model, D)
    assert all(torch.equal(back.direction(i), vec.direction(i)) for i in (2, 7))
    with pytest.raises(ConfigError, match=r"no direction for layer 3; it has layers 2, 7"):
        vec.direction(3)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00not a safetensors file" * 8)
    foreign = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    shapes = tmp_path / "shapes.safetensors"
    meta = {"name": "s", "method": "pca", "model": "m", "hidden_size": 4, "layers": [1]}
    save_file({"layer.1": torch.zeros(5)}, str(shapes), metadata={META_KEY: json.dumps(meta)})
    extra = tmp_path / "extra.safetensors"
    save_file({"layer.2": torch.zeros(4)}, str(extra), metadata={META_KEY: json.dumps(meta)})
    for bad, match in [
        (tmp_path / "missing.safetensors", "no steering-vector file"),
        (junk, "not a safetensors file"),
        (foreign, "without steering-vector settings"),
        (shapes, r"layer 1 has shape \(5,\), expected \(4,\)"),
        (extra, "do not match the layers"),
    ]:
        with pytest.raises(ConfigError, match=match) as e:
            SteeringVector.load(bad)
        assert str(bad) in str(e.value)


def test_code_language_reads_tags_then_syntax() -> None:
    assert code_language("Sure:\n```py\nx = 1\n```") == "python"
    assert code_language("```JavaScript\nreturn 1\n```") == "javascript"
    assert code_language("```rust\nfn main() {}\n```\n```python\ndef f(): pass\n```") == "rust"
    snippets = {
        "python": "def reverse(s: str) -> str:\n    return s[::-1]",
        "javascript": "const reverse = (s) => s.split('').reverse().join('');",
        "rust": "fn reverse(s: &str) -> String {\n    let x = s.chars().rev().collect();\n    x\n}",
        "c": '#include <string.h>\nvoid reverse(char *s) {\n    printf("%s", s);\n}',
        "java": "public static String reverse(String s) {\n  return s;\n}",
        "go": "func reverse(s string) string {\n\tr := []rune(s)\n\treturn string(r)\n}",
    }
    for lang, code in snippets.items():
        assert code_language(f"Here it is:\n```\n{code}\n```\nDone.") == lang, lang
        assert code_language(code) == lang, lang  # no fence at all
    assert code_language("function sum(xs) { let t = 0; return t; }") == "javascript"
    assert code_language("```cpp\n#include <iostream>\nint main() { }\n```") == "c"
    assert code_language("```python\ndef f(x):\n    return x") == "python"  # cut off mid-answer
    assert code_language("A function that reverses a string maps 'ab' => 'ba'.") is None
    assert code_language("I cannot help with that.") is None


def test_prompt_sets() -> None:
    tasks, test = code_tasks(), code_tasks(split="test")
    assert (len(tasks), len(test)) == (40, 20) and not set(tasks) & set(test)
    assert all(t.startswith("Write a function that ") for t in tasks + test)
    train = refusal_pairs()
    assert len(train) == 72 and not {p for p, _ in train} & {
        p for p, _ in refusal_pairs(split="test")
    }


# ---- the real model ---------------------------------------------------------------------------

TRAIN = refusal_pairs()[:16]
HELD_OUT = refusal_pairs(split="test")[:24]


@pytest.mark.slow
async def test_mean_difference_and_pca_match_layer_states_directly(smollm2: Any) -> None:
    pos, neg = [p for p, _ in TRAIN[:6]], [n for _, n in TRAIN[:6]]
    vec = await extract_mean_difference(smollm2, pos, neg, [3, 17], name="r", pool="mean")
    reqs = [as_request(x) for x in pos + neg]
    states = (await smollm2.layer_states(reqs, [4, 18], pool="mean")).states  # layer i -> i + 1
    direct = states[:6].mean(0) - states[6:].mean(0)
    torch.testing.assert_close(vec.direction(3), direct[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(vec.direction(17), direct[1], atol=1e-4, rtol=1e-4)
    assert vec.info["n_positive"] == 6 and vec.info["pool"] == "mean"
    assert vec.hidden_size == smollm2.hidden_size and vec.model == smollm2.name

    delta = (states[:6] - states[6:])[:, 1].double()
    for center in (False, True):
        pca = await extract_pca(smollm2, TRAIN[:6], [17], name="p", pool="mean", center=center)
        d = pca.direction(17).double()
        u = d / d.norm()
        # the unit first principal component of the (centered) differences, up to sign ...
        x = delta - delta.mean(0) if center else delta
        pc = torch.linalg.svd(x, full_matrices=False).Vh[0]
        assert abs(float(u @ pc)) > 0.999
        # ... signed toward the positive set and scaled by the mean projection
        proj = float((delta @ u).mean())
        assert proj > 0 and float(d.norm()) == pytest.approx(proj, rel=1e-3)
        assert 0 < float(pca.info["explained_variance.17"]) <= 1
        assert pca.info["centered"] == int(center)
    with pytest.raises(ConfigError, match=r"layer 30 is out of range \[0, 30\)"):
        await extract_pca(smollm2, TRAIN[:2], [30], name="p")


@pytest.mark.slow
async def test_refusal_direction_separates_held_out_prompts(smollm2: Any) -> None:
    # this can fail: it measures the model, not the code (layer 15 AUC was 0.99 when written)
    layer = 15
    vec = await extract_mean_difference(
        smollm2, [p for p, _ in TRAIN], [n for _, n in TRAIN], [layer], name="refusal"
    )
    reqs = [as_request(x) for pair in HELD_OUT for x in pair]
    states = (await smollm2.layer_states(reqs, [layer + 1])).states[:, 0]
    proj = states @ vec.direction(layer)
    harmful, benign = proj[0::2], proj[1::2]
    auc = float((harmful[:, None] > benign[None, :]).float().mean())
    assert float(harmful.mean() - benign.mean()) > 0
    assert auc > 0.8, auc


@pytest.mark.slow
def test_cli_extract_writes_a_loadable_file(
    smollm2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("agentic.cli.steer._load_backend", lambda uri: smollm2)
    pairs = tmp_path / "tiny.jsonl"
    pairs.write_text(
        "\n".join(json.dumps({"positive": p, "negative": n}) for p, n in TRAIN[:3]) + "\n"
    )
    out = tmp_path / "tiny.safetensors"
    args = ["steer", "extract", "--contrast", str(pairs), "--out", str(out), "--method", "pca"]
    res = CliRunner().invoke(app, [*args, "--layers", "3,7"])
    assert res.exit_code == 0, res.output
    # the CLI's console may be older than COLUMNS (another test made it): long paths wrap
    assert "explained variance" in res.output and str(out) in res.output.replace("\n", "")
    vec = SteeringVector.load(out)
    assert vec.layers == [3, 7] and vec.method == "pca" and vec.name == "tiny"
    assert vec.info["contrast"] == str(pairs) and vec.info["n_pairs"] == 3

    for extra, match in [
        (["--layers", "3,x", "--overwrite"], "--layers takes 'all'"),
        (["--layers", "3,30", "--overwrite"], r"--layers: layer 30 is out of range \[0, 30\)"),
        (["--layers", "3"], "--out: .* exists"),
    ]:
        res = CliRunner().invoke(app, [*args, *extra])
        assert res.exit_code == 2 and isinstance(res.exception, SystemExit)  # no traceback
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert re.search(match, res.stderr), res.stderr
    res = CliRunner().invoke(
        app, ["steer", "extract", "--contrast", "code:python:cobol", "--out", "x"]
    )
    assert res.exit_code == 2 and "--contrast: unknown language 'cobol'" in res.stderr
