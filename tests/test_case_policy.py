"""`CasePolicy`: Q learns which cases help, the softmax temperature, seeded determinism,
persistence in a case bank, bad input, and that `import memory` does not load torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agentic.core import ConfigError, StoreError
from memory import CaseBank, HashingEmbedder
from memory.case_policy import CasePolicy

REPO = Path(__file__).resolve().parents[1]
DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random positive scores above a random negative)."""
    return float((pos[:, None] > neg[None, :]).mean())


def test_q_separates_cases_that_help_from_cases_that_never_do() -> None:
    rng = np.random.default_rng(0)
    cases = _unit(rng, 24)
    helps = np.arange(24) < 12  # the first half always helps, the rest never does
    policy = CasePolicy(DIM, seed=0)
    probe = _unit(rng, 20)
    before = np.stack([policy.q(q, cases) for q in probe])
    for _ in range(40):
        pick = rng.choice(24, size=6, replace=False)
        policy.update(_unit(rng, 1)[0], cases[pick], helps[pick].astype(float))
    after = np.stack([policy.q(q, cases) for q in probe])  # queries never trained on
    gap_before = before[:, helps].mean() - before[:, ~helps].mean()
    gap_after = after[:, helps].mean() - after[:, ~helps].mean()
    assert _auc(after[:, helps].ravel(), after[:, ~helps].ravel()) > 0.95
    assert gap_after > 0.5 and gap_after > gap_before + 0.4
    assert policy.updates == 40


def test_q_learns_which_case_helps_which_query() -> None:
    # two topics: a case helps a query of its own topic only, so Q must read both inputs
    rng = np.random.default_rng(1)
    centres = _unit(rng, 2)

    def near(topic: int, n: int) -> np.ndarray:
        x = centres[topic] + 0.35 * rng.normal(size=(n, DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cases = np.concatenate([near(0, 8), near(1, 8)])
    topic = np.repeat([0, 1], 8)
    policy = CasePolicy(DIM, seed=0)
    for step in range(120):
        t = step % 2
        pick = rng.choice(16, size=6, replace=False)
        policy.update(near(t, 1)[0], cases[pick], (topic[pick] == t).astype(float))
    for t in (0, 1):
        qs = np.stack([policy.q(q, cases) for q in near(t, 10)])
        assert _auc(qs[:, topic == t].ravel(), qs[:, topic != t].ravel()) > 0.9
        # and greedy selection takes only cases of the query's topic
        assert set(topic[policy.select(near(t, 1)[0], cases, 4, alpha=0.0)]) == {t}


def test_softmax_temperature() -> None:
    rng = np.random.default_rng(2)
    cases = _unit(rng, 6)
    policy = CasePolicy(DIM, seed=0)
    for _ in range(30):  # make Q clearly prefer case 0
        policy.update(_unit(rng, 1)[0], cases, (np.arange(6) == 0).astype(float))
    q = _unit(rng, 1)[0]
    assert int(np.argmax(policy.q(q, cases))) == 0
    entropies = []
    for alpha in (10.0, 1.0, 0.1, 0.02):
        p = policy.probabilities(q, cases, alpha=alpha)
        assert p.sum() == pytest.approx(1.0)
        entropies.append(float(-(p * np.log(p + 1e-300)).sum()))
    assert entropies == sorted(entropies, reverse=True)  # colder is more peaked
    assert entropies[0] > 0.99 * np.log(6)  # hot: near uniform
    assert policy.probabilities(q, cases, alpha=0.0).tolist() == [1, 0, 0, 0, 0, 0]
    # sampling follows it: at a high temperature every case gets drawn first sometimes
    hot = [policy.select(q, cases, 1, alpha=10.0)[0] for _ in range(600)]
    cold = [policy.select(q, cases, 1, alpha=0.02)[0] for _ in range(200)]
    assert set(hot) == set(range(6)) and hot.count(0) < 200
    assert cold.count(0) > 190
    assert policy.select(q, cases, 3, alpha=0.0) == list(np.argsort(-policy.q(q, cases))[:3])
    # without replacement: k = n is a permutation, k > n gives all
    assert sorted(policy.select(q, cases, 6)) == list(range(6))
    assert sorted(policy.select(q, cases, 50)) == list(range(6))


def test_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(3)
    cases, queries = _unit(rng, 10), _unit(rng, 12)
    labels = rng.integers(0, 2, size=(12, 10)).astype(float)
    a, b, c = CasePolicy(DIM, seed=7), CasePolicy(DIM, seed=7), CasePolicy(DIM, seed=8)
    for p in (a, b, c):
        for q, r in zip(queries, labels, strict=True):
            p.update(q, cases, r)
    np.testing.assert_array_equal(a.q(queries[0], cases), b.q(queries[0], cases))
    assert not np.array_equal(a.q(queries[0], cases), c.q(queries[0], cases))
    draws_a = [a.select(queries[i], cases, 3, alpha=0.5) for i in range(10)]
    draws_b = [b.select(queries[i], cases, 3, alpha=0.5) for i in range(10)]
    assert draws_a == draws_b


async def test_saved_in_the_bank_and_loaded_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    bank = CaseBank.open(path, HashingEmbedder(dim=DIM))
    assert await CasePolicy.load(bank) is None
    rng = np.random.default_rng(4)
    cases = _unit(rng, 8)
    policy = CasePolicy(DIM, seed=1, alpha=0.3, hidden=16)
    for _ in range(10):
        policy.update(_unit(rng, 1)[0], cases, rng.integers(0, 2, size=8).astype(float))
    await policy.save(bank)
    bank.close()
    again = CaseBank.open(path, HashingEmbedder(dim=DIM))
    loaded = await CasePolicy.load(again)
    assert loaded is not None
    assert loaded.config == policy.config and loaded.updates == 10
    q = _unit(rng, 1)[0]
    np.testing.assert_array_equal(loaded.q(q, cases), policy.q(q, cases))
    assert loaded.select(q, cases, 4) == policy.select(q, cases, 4)  # the generator came too
    # training goes on from where it stopped, identically
    r = np.ones(8)
    assert loaded.update(q, cases, r) == pytest.approx(policy.update(q, cases, r), abs=0)
    again.close()


def test_bad_input_is_a_clear_error() -> None:
    policy = CasePolicy(DIM)
    q, cases = np.ones(DIM) / np.sqrt(DIM), np.eye(DIM)[:3]
    with pytest.raises(ConfigError, match="cases must have shape"):
        policy.q(q, np.ones((3, DIM + 1)))
    with pytest.raises(ConfigError, match="query must have shape"):
        policy.q(np.ones(DIM + 1), cases)
    with pytest.raises(ConfigError, match="labels must have 3"):
        policy.update(q, cases, [1, 0])
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 1\]"):
        policy.update(q, cases, [1, 0, 2])
    with pytest.raises(ConfigError, match="alpha"):
        policy.select(q, cases, 1, alpha=-1)
    with pytest.raises(ConfigError, match="k must be"):
        policy.select(q, cases, 0)
    with pytest.raises(ValueError, match="hidden"):
        CasePolicy(DIM, hidden=0)
    with pytest.raises(StoreError, match="not a saved CasePolicy"):
        CasePolicy.from_bytes(b"not a policy at all")


def test_import_memory_does_not_load_torch() -> None:
    code = (
        "import sys, memory; from memory.case_policy import CasePolicy; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
