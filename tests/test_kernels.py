"""kernels: each torch reference against a naive float64 formula, each Triton kernel against its
reference (on CPU, in Triton's interpreter), the bit-exact no-op rows, a compile of every kernel
for a GPU, the dispatcher, argument errors, and the CPU paths of benchmarks/kernels_gpu.py.

triton.jit decides at import time whether a function is interpreted, triton's own tl.sum and
tl.max included, so TRITON_INTERPRET=1 must be set before triton is first imported and then holds
for the whole process. The kernel checks therefore run in a subprocess started with it
(test_triton_kernels_in_the_interpreter); in any other process `tri` is None and they are left
out. The interpreter pays per program instance: the kernels pick few, large tiles for CPU tensors.
It also converts float32 to bfloat16 by truncation where a GPU (and torch) rounds to nearest, so
bfloat16 steer_add results may differ from the reference by one ulp there (rtol 2**-7).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import kernels
from kernels import dispatch, reference

REPO = Path(__file__).resolve().parents[1]
F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
RTOL = {F32: 1e-5, BF16: 2**-7, F16: 1e-3}
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def tri() -> types.SimpleNamespace | None:
    """kernels.triton_ops (`ops`) and kernels.triton_entropy (`ent`), interpreted; None outside
    the interpreter subprocess."""
    if not (INTERPRETER and kernels.triton_available()):
        return None
    from triton.runtime.interpreter import InterpretedFunction

    ops = importlib.import_module("kernels.triton_ops")
    assert isinstance(ops._steer_add_kernel, InterpretedFunction)
    return types.SimpleNamespace(ops=ops, ent=importlib.import_module("kernels.triton_entropy"))


@pytest.mark.skipif(INTERPRETER, reason="this is the interpreter subprocess")
def test_triton_kernels_in_the_interpreter() -> None:
    assert kernels.triton_available(), "triton is a dependency on Linux: install it"
    env = {k: v for k, v in os.environ.items() if k != "AGENTIC_KERNELS"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
    done = subprocess.run(
        cmd, cwd=REPO, env={**env, "TRITON_INTERPRET": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits, so -0.0 != 0.0."""
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


def _acts(b: int, t: int, d: int, dtype: torch.dtype, strided: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if strided:  # the feature axis not contiguous
        return torch.randn(b, d, t, generator=g).to(dtype).transpose(1, 2)
    return torch.randn(b, t, d, generator=g).to(dtype)


# (B, T, D, dtype, strided): odd widths, single elements, a decode step, and 130 x 8193, which
# spans two row tiles and two column tiles even at the interpreter's tile sizes.
SHAPES = [
    (4, 3, 577, F32, False),
    (4, 3, 577, BF16, False),
    (1, 1, 1, F32, False),
    (3, 1, 4096, BF16, False),
    (2, 5, 64, F16, False),
    (5, 7, 33, BF16, True),
    (130, 1, 8193, F32, False),
]
SHAPE_ARGS = ("b", "t", "d", "dtype", "strided")
SHAPE_IDS = [f"{b}x{t}x{d}-{str(dt)[6:]}{'-strided' * s}" for b, t, d, dt, s in SHAPES]


def _steer_inputs(b: int, t: int, d: int, dtype: torch.dtype, strided: bool) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(b + t + d)
    hidden = _acts(b, t, d, dtype, strided, seed=d)
    hidden[0, 0, 0] = -0.0  # in a row-0 sequence: a `+ 0` would make it +0.0
    rows = torch.randint(0, 5, (b,), generator=g)
    rows[0] = 0
    rows[-1] = 4 if b > 1 else 0
    # Table row 0 is not zero: the no-op must not depend on what it holds.
    return hidden, rows, torch.randn(5, d, generator=g), torch.rand(5, generator=g) + 0.5


def _assert_noop_rows(out: torch.Tensor, hidden: torch.Tensor, rows: torch.Tensor) -> None:
    for b in (rows == 0).nonzero().flatten().tolist():
        assert torch.equal(_bits(out[b]), _bits(hidden[b])), f"sequence {b} (row 0) changed"


@pytest.mark.parametrize(SHAPE_ARGS, SHAPES, ids=SHAPE_IDS)
def test_steer_add(tri: Any, b: int, t: int, d: int, dtype: torch.dtype, strided: bool) -> None:
    hidden, rows, vectors, weights = _steer_inputs(b, t, d, dtype, strided)
    out = reference.steer_add(hidden, rows, vectors, weights)
    add = weights.double()[rows][:, None, None] * vectors.double()[rows][:, None, :]
    naive = torch.where((rows == 0)[:, None, None], hidden, (hidden.double() + add).to(dtype))
    torch.testing.assert_close(out, naive, rtol=RTOL[dtype], atol=1e-5)
    _assert_noop_rows(out, hidden, rows)
    if tri is not None:
        if d == 8193:  # int32 rows and a bfloat16 table are accepted too
            rows, vectors = rows.int(), vectors.bfloat16()
            out = reference.steer_add(hidden, rows, vectors, weights)
        before = hidden.clone()
        got = tri.ops.steer_add(hidden, rows, vectors, weights)
        assert torch.equal(_bits(hidden), _bits(before)), "hidden was modified"
        torch.testing.assert_close(got, out, rtol=RTOL[dtype], atol=1e-5)
        _assert_noop_rows(got, hidden, rows)


@pytest.mark.parametrize(SHAPE_ARGS, SHAPES, ids=SHAPE_IDS)
def test_gated_residual_copies_exactly(
    tri: Any, b: int, t: int, d: int, dtype: torch.dtype, strided: bool
) -> None:
    before = _acts(b, t, d, dtype, False, seed=1)
    after = _acts(b, t, d, dtype, strided, seed=2)
    keep = torch.arange(b) % 3 != 1
    for impl in [reference.gated_residual] + ([tri.ops.gated_residual] if tri else []):
        out = impl(before, after, keep)
        for i in range(b):
            assert torch.equal(_bits(out[i]), _bits(after[i] if keep[i] else before[i]))


@pytest.mark.parametrize(SHAPE_ARGS, SHAPES, ids=SHAPE_IDS)
def test_row_l2_delta(tri: Any, b: int, t: int, d: int, dtype: torch.dtype, strided: bool) -> None:
    before = _acts(b, t, d, dtype, strided, seed=3)
    after = before + 0.1 * _acts(b, t, d, dtype, False, seed=4)
    if dtype == F16:  # the two dtypes may differ
        after = after.float()
    naive = (after.double() - before.double()).norm(dim=-1), before.double().norm(dim=-1)
    for impl in [reference.row_l2_delta] + ([tri.ops.row_l2_delta] if tri else []):
        out = impl(before, after)
        assert all(x.shape == (b, t) and x.dtype == F32 for x in out)
        torch.testing.assert_close((out[0].double(), out[1].double()), naive, rtol=1e-5, atol=1e-5)


def _logits(b: int, v: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    return (torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * 3).to(dtype)


def _check_entropy_topk(got: Triple, x: torch.Tensor, k: int) -> None:
    """Against float64 and the reference. Ids tie-agnostically (distinct, each one's
    log-probability the value beside it), and exactly where float32 logits leave no ties."""
    entropy, top, ids = got
    b = x.shape[0]
    assert entropy.shape == (b,) and top.shape == ids.shape == (b, k)
    assert entropy.dtype == top.dtype == F32 and ids.dtype == torch.int64
    logp = torch.log_softmax(x.double(), dim=-1)
    exact = -torch.where(logp > -torch.inf, logp.exp() * logp, 0.0).sum(-1)
    torch.testing.assert_close(entropy.double(), exact, rtol=1e-5, atol=1e-5)
    r_entropy, r_top, _ = reference.entropy_topk(x, k)
    torch.testing.assert_close((entropy, top), (r_entropy, r_top), rtol=1e-5, atol=1e-5)
    if k:
        torch.testing.assert_close(logp.gather(1, ids), top.double(), rtol=1e-5, atol=1e-5)
        assert all(len(set(row)) == k for row in ids.tolist())
        assert bool((top[:, :-1] >= top[:, 1:]).all()), "not descending"
        if x.dtype == F32 and bool(torch.isfinite(top).all()):
            assert torch.equal(ids, logp.topk(k, dim=-1).indices)


@pytest.mark.parametrize(
    ("b", "v", "dtype", "k"),
    [
        (3, 49152, F32, 20),
        (2, 50257, BF16, 64),
        (2, 50257, F32, 0),
        (1, 262144, F32, 5),
        (2, 5, F32, 5),  # k == V: some of the kernel's 8 candidate slots stay empty
        (1, 1, F32, 1),
        (2, 300, F16, 3),
    ],
)
def test_entropy_topk(tri: Any, b: int, v: int, dtype: torch.dtype, k: int) -> None:
    x = _logits(b, v, dtype, seed=v + k)
    if v > 1000:
        x[0, :100] = -torch.inf  # a masked part of the vocabulary
    for impl in [reference.entropy_topk] + ([tri.ops.entropy_topk] if tri else []):
        _check_entropy_topk(impl(x, k), x, k)


if INTERPRETER:  # the kernels themselves run only in the interpreter subprocess

    @pytest.mark.parametrize("bitonic", [False, True])
    def test_entropy_topk_over_spans(tri: Any, bitonic: bool) -> None:
        """Two spans a row (so the combining kernel), a whole chunk of -inf, a whole span of
        -inf, a peaked row; both top-k merges (bitonic on a small vocabulary: the interpreter is
        slow at it)."""
        assert tri is not None
        assert tri.ent.HAS_TOPK or not bitonic, "triton >= 3.4 has tl.topk"
        v, block_v, k = (300, 64, 3) if bitonic else (50257, 16384, 20)
        x = _logits(3, v, F32, seed=7)
        x[0, block_v : 2 * block_v] = -torch.inf  # one chunk, inside the first span
        x[1, v // 2 :] = -torch.inf  # the whole last span
        x[2, v // 3] = 200.0  # entropy ~ 0: where lse - E[x] would cancel
        got = tri.ent.launch(x, k, block_v=block_v, splits=2, bitonic=bitonic)
        _check_entropy_topk(got, x, k)
        assert got[2][2, 0] == v // 3

    def test_entropy_small_but_not_zero_to_a_tight_tolerance(tri: Any) -> None:
        """Rows with one dominant token and entropy ~0.1 and ~0.03: where an entropy formula
        off by a few 1e-6 hides under the 1e-5 tolerance above and the peaked row (entropy
        ~e^-190) cannot tell. One block of 1000 logits a row, so the interpreter is quick."""
        assert tri is not None
        x = _logits(2, 1000, F32, seed=0)
        x[0, 17], x[1, 17] = 17.5, 17.35
        logp = torch.log_softmax(x.double(), dim=-1)
        exact = -(logp.exp() * logp).sum(-1)
        assert bool(((exact > 0.01) & (exact < 0.2)).all()), exact
        entropy, _, ids = tri.ent.launch(x, 1, block_v=1024, splits=1, bitonic=False)
        # float32 gets these within ~2e-7; an error of 7e-6 (0.007% here) must not pass
        torch.testing.assert_close(entropy.double(), exact, rtol=0, atol=1e-6)
        assert ids[:, 0].tolist() == [17, 17]


@pytest.mark.skipif(INTERPRETER, reason="needs compiled (not interpreted) kernels")
def test_kernels_compile_for_hopper() -> None:
    """The kernels, in the variants the launchers pick on a GPU, compile to sm_90 binaries with
    triton's bundled ptxas, no GPU needed: this catches what the interpreter lets through
    (non-constexpr globals, loop-carried type changes). The bitonic top-k (~20 s) is left out."""
    assert kernels.triton_available(), "triton is a dependency on Linux: install it"
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    assert ptxas.exists(), f"triton's wheel ships ptxas; missing: {ptxas}"
    from kernels import triton_entropy as ent
    from kernels import triton_ops as ops

    def build(fn: Any, ptrs: dict[str, str], **constexprs: int | bool) -> None:
        def kind(name: str) -> str:
            if name in constexprs:
                return "constexpr"
            return ptrs.get(name, "*fp32") if name.endswith("_ptr") else "i32"

        src = ASTSource(fn, {name: kind(name) for name in fn.arg_names}, constexprs)
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False})

    acts = {"h_ptr": "*bf16", "out_ptr": "*bf16", "vec_ptr": "*bf16", "rows_ptr": "*i64"}
    acts |= {"b_ptr": "*bf16", "a_ptr": "*bf16", "keep_ptr": "*u8"}
    for fn in (ops._steer_add_kernel, ops._gated_residual_kernel, ops._row_l2_delta_kernel):
        build(fn, acts, BLOCK_R=4, BLOCK_D=1024)
    keys = {"key_ptr": "*i64", "ids_ptr": "*i64"}
    for topk, final in ((False, True), (True, True), (True, False)):
        kp = 32 if topk else 1
        build(ent._span_kernel, keys, BLOCK_V=4096, KP=kp, TOPK=topk, BITONIC=False, FINAL=final)
    build(ent._combine_kernel, keys, SP=64, KP=32, TOPK=True, BITONIC=False)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("AGENTIC_KERNELS", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return monkeypatch


def test_backend_for(clean_env: pytest.MonkeyPatch) -> None:
    cpu = torch.zeros(1)
    cuda: Any = types.SimpleNamespace(is_cuda=True)  # all backend_for looks at
    triton = "triton" if kernels.triton_available() else "torch"
    assert (kernels.backend_for(cpu), kernels.backend_for(cuda)) == ("torch", triton)
    clean_env.setenv("AGENTIC_KERNELS", "triton")  # on CPU only with the interpreter
    assert kernels.backend_for(cpu) == "torch"
    clean_env.setenv("TRITON_INTERPRET", "1")
    assert kernels.backend_for(cpu) == triton
    clean_env.setenv("AGENTIC_KERNELS", "torch")
    assert (kernels.backend_for(cpu), kernels.backend_for(cuda)) == ("torch", "torch")
    clean_env.setenv("AGENTIC_KERNELS", "cuda")
    with pytest.raises(ValueError, match="AGENTIC_KERNELS"):
        kernels.backend_for(cpu)
    clean_env.delenv("AGENTIC_KERNELS")
    clean_env.setattr(dispatch, "triton_available", lambda: False)
    assert kernels.backend_for(cuda) == "torch"


if INTERPRETER:  # the kernels themselves run only in the interpreter subprocess

    def test_public_functions_run_triton_when_dispatched(tri: Any, clean_env: Any) -> None:
        assert tri is not None
        clean_env.setenv("AGENTIC_KERNELS", "triton")
        clean_env.setenv("TRITON_INTERPRET", "1")
        hidden, rows, vectors, weights = _steer_inputs(2, 3, 17, BF16, False)
        keep, x = torch.tensor([True, False]), _logits(2, 100, F32, seed=0)
        with pytest.MonkeyPatch.context() as patch:
            for name in ("_steer_add", "_gated_residual", "_row_l2_delta", "_entropy_topk"):
                patch.setattr(reference, name, None)  # calling the reference would fail
            steered = kernels.steer_add(hidden, rows, vectors, weights)
            gated = kernels.gated_residual(hidden, steered, keep)
            norms = kernels.row_l2_delta(hidden, steered)
            stats = kernels.entropy_topk(x, 4)
        _assert_noop_rows(steered, hidden, rows)
        assert torch.equal(gated, reference.gated_residual(hidden, steered, keep))
        torch.testing.assert_close(norms, reference.row_l2_delta(hidden, steered))
        _check_entropy_topk(stats, x, 4)


def test_import_needs_no_triton_and_falls_back_to_the_references() -> None:
    script = """if True:
        import sys
        import kernels
        assert "triton" not in sys.modules, "import kernels imported triton"
        sys.modules["triton"] = None  # as if not installed
        import torch
        assert not kernels.triton_available()
        assert kernels.backend_for(torch.zeros(1)) == "torch"
        out = kernels.steer_add(torch.ones(2, 1, 3), torch.tensor([0, 1]), torch.ones(2, 3),
                                torch.ones(2))
        assert out.tolist() == [[[1.0] * 3], [[2.0] * 3]], out
        """
    env = {**os.environ, "AGENTIC_KERNELS": "triton", "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


H, X = torch.zeros(4, 2, 8), torch.zeros(2, 10)
R4, K4 = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool)
V3, W3 = torch.zeros(3, 8), torch.zeros(3)
BAD: list[tuple[str, tuple[Any, ...], str]] = [
    ("steer_add", (H[0], R4, V3, W3), "hidden must be 3-D"),
    ("steer_add", ("h", R4, V3, W3), "hidden must be a torch.Tensor"),
    ("steer_add", (H.long(), R4, V3, W3), "hidden must be float32"),
    ("steer_add", (H, R4[:3], V3, W3), r"rows has shape \(3,\) but hidden has batch 4"),
    ("steer_add", (H, R4.float(), V3, W3), "rows must be int64"),
    ("steer_add", (H, R4, V3[:, :7], W3), r"vectors has shape \(3, 7\) but hidden has width 8"),
    ("steer_add", (H, R4, V3, W3[:2]), r"weights has shape \(2,\) but vectors has 3 rows"),
    ("steer_add", (H, R4 + 3, V3, W3), r"rows holds values in \[3, 3\]"),
    ("gated_residual", (H, H[:, :1], K4), r"after has shape \(4, 1, 8\) but before has shape"),
    ("gated_residual", (H, H.bfloat16(), K4), "after has dtype"),
    ("gated_residual", (H, H, K4.float()), "keep must be a bool"),
    ("gated_residual", (H, H, K4[:3]), r"keep has shape \(3,\) but before has batch 4"),
    ("row_l2_delta", (H[0], H[0]), "before must be 3-D"),
    ("row_l2_delta", (H, H[:2]), "after has shape"),
    ("entropy_topk", (X[0], 1), "logits must be 2-D"),
    ("entropy_topk", (X.long(), 1), "logits must be a floating-point"),
    ("entropy_topk", (X, 65), "k=65 is out of range"),
    ("entropy_topk", (X, -1), "k=-1 is out of range"),
    ("entropy_topk", (X, 11), "k=11 is out of range"),
    ("entropy_topk", (X, 2.0), "k must be an int"),
]


@pytest.mark.parametrize(("op", "args", "message"), BAD, ids=[f"{b[0]}-{b[2][:24]}" for b in BAD])
def test_bad_input_is_a_value_error_naming_the_argument(
    tri: Any, op: str, args: tuple[Any, ...], message: str
) -> None:
    for module in [kernels, reference] + ([tri.ops] if tri else []):
        with pytest.raises(ValueError, match=message):
            getattr(module, op)(*args)


def _benchmark() -> Any:
    path = REPO / "benchmarks" / "kernels_gpu.py"
    if str(path.parent) not in sys.path:  # as when run as a script: it imports steered_step
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("kernels_gpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_cpu_paths(clean_env: Any, capsys: Any, tmp_path: Path) -> None:
    """Without CUDA: one line and exit 0; --smoke: every timed function runs (references)."""
    bench, out = _benchmark(), tmp_path / "kernels.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        assert bench.main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert bench.main(["--smoke", "--profile", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] and result["backend"] == "torch"
    ops = {"steer_add", "gated_residual", "row_l2_delta", "entropy_topk"}
    assert {r["op"] for r in result["rows"]} == ops
    assert all(r["triton_us"] > 0 and r["max_diff_vs_reference"] == 0 for r in result["rows"])
    # the decode step of a tiny model, with and without hooks, each variant timed
    (decode,) = result["decode"]
    assert decode["model"] == "tiny" and decode["batch"] == 4
    assert all(decode[f"{v} ms"] > 0 for v in ("none", "hooks idle", "steer+route", "steer all"))
    checks = [k for k in decode if k.endswith(("identical", "changed", "repeat"))]
    assert len(checks) == 12 and all(decode[k] for k in checks), decode
    # the same step through a StaticCache (captured in a CUDA graph on a GPU, eager here)
    assert all(decode[f"graph {v} ms"] > 0 for v in ("none", "hooks idle", "steer+route"))
    # the profile of each variant names the ops that took the host's time
    profiled = [decode[f"profile {v}"] for v in ("none", "hooks idle", "steer+route", "steer all")]
    assert all(any(k.startswith("aten::") for k in p["top self cpu"]) for p in profiled)
