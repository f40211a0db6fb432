"""The import layering of docs/design-choices.md ("Layering"), checked on the source (ast),
and name shadowing.

`agentic.core` <- `kernels` <- `backends` <- `search`, `memory` <- `controllers` <- `agentic`.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUR_PACKAGES = ("agentic", "backends", "kernels", "search", "memory", "controllers")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Absolute names of every module `source` imports, wherever the import sits (top level,
    function bodies, `if TYPE_CHECKING:`), relative imports resolved against `module`, plus
    constant-string `importlib.import_module(...)` / `__import__(...)` calls."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module or ""
            yield name
            # `from pkg import sub` may import the submodule pkg.sub
            for alias in node.names:
                if alias.name != "*":
                    yield f"{name}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            fname = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            first = node.args[0]
            if (
                fname in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield first.value


def _imports_of_tree(root: Path) -> Iterator[tuple[Path, str]]:
    files = sorted(root.rglob("*.py"))
    assert files, f"no Python files under {root}"
    for path in files:
        mod = _module_name(path)
        src = path.read_text(encoding="utf-8")
        for name in imported_modules(src, mod, is_package=path.name == "__init__.py"):
            yield path, name


def _top(name: str) -> str:
    return name.split(".")[0]


def _core_violations() -> list[str]:
    bad = []
    for path, name in _imports_of_tree(REPO / "agentic" / "core"):
        if _top(name) in OUR_PACKAGES and not (
            name == "agentic.core" or name.startswith("agentic.core.")
        ):
            bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


def _kernel_violations() -> list[str]:
    allowed = set(sys.stdlib_module_names) | {"torch", "triton", "kernels"}
    bad = []
    for path, name in _imports_of_tree(REPO / "kernels"):
        # intra-package imports (`kernels.*`) are fine
        if _top(name) not in allowed:
            bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


# ------------------------------------------------------------------ the checker sees violations


def test_import_checker_finds_every_kind_of_import() -> None:
    src = textwrap.dedent(
        """
        import os, backends.base as bb
        from search import beam
        from ..memory import playbook
        from . import budget
        from .types import Usage
        import typing
        if typing.TYPE_CHECKING:
            from controllers import Direct
        def lazy():
            import torch
            import importlib
            importlib.import_module("agentic.runner")
            __import__("kernels")
        """
    )
    names = set(imported_modules(src, "agentic.core.events"))
    assert {
        "os",
        "backends.base",
        "search",
        "search.beam",
        "agentic.memory",
        "agentic.memory.playbook",
        "agentic.core",
        "agentic.core.budget",
        "agentic.core.types",
        "agentic.core.types.Usage",
        "controllers",
        "torch",
        "agentic.runner",
        "kernels",
    } <= names
    # relative imports in a package's __init__ resolve against the package itself
    assert "agentic.core.types" in set(
        imported_modules("from .types import Usage", "agentic.core", is_package=True)
    )


# ------------------------------------------------------------------------------ the real layers


def test_core_imports_nothing_from_siblings_or_agentic() -> None:
    bad = _core_violations()
    assert not bad, "agentic.core must import nothing from the repo:\n" + "\n".join(bad)
    # and the check actually looked at the modules it guards
    checked = {p.name for p, _ in _imports_of_tree(REPO / "agentic" / "core")}
    assert {"types.py", "budget.py", "events.py", "tasks.py", "errors.py"} <= checked


def test_kernels_import_only_torch_triton_stdlib() -> None:
    bad = _kernel_violations()
    assert not bad, "kernels may import only torch, triton and the stdlib:\n" + "\n".join(bad)
    for forbidden in ("agentic", "backends", "search", "memory", "controllers"):
        assert forbidden not in sys.stdlib_module_names


def test_only_the_cli_imports_the_viewer() -> None:
    """`agentic.view` (the web viewer) sits at the top: only `agentic.cli` may import it."""
    bad = []
    for top in OUR_PACKAGES:
        for path, name in _imports_of_tree(REPO / top):
            mod = _module_name(path)
            if (name == "agentic.view" or name.startswith("agentic.view.")) and not (
                mod.startswith(("agentic.cli", "agentic.view"))
            ):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    assert not bad, "only agentic.cli may import agentic.view:\n" + "\n".join(bad)


def test_import_agentic_stays_light() -> None:
    code = (
        "import agentic, sys; from backends import load_backend; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'transformers' not in sys.modules, 'transformers imported'; "
        # the OpenTelemetry SDK (an optional extra) loads when an export is opened
        "assert 'opentelemetry.sdk' not in sys.modules, 'opentelemetry imported'"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------- shadowing


def _our_top_level_names() -> set[str]:
    names = set(OUR_PACKAGES)
    top_level = importlib.metadata.distribution("agentic").read_text("top_level.txt")
    if top_level:
        names |= {line.strip() for line in top_level.splitlines() if line.strip()}
    return names


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


_SHADOW_PROBE = textwrap.dedent(
    """
    import importlib.util, json
    out = {}
    for name in ("transformers", "vllm", "kernels"):
        spec = importlib.util.find_spec(name)
        out[name] = None if spec is None else spec.origin
    import transformers
    out["transformers.__file__"] = transformers.__file__
    import importlib.metadata
    out["version"] = transformers.__version__
    out["dist_version"] = importlib.metadata.version("transformers")
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("where", ["repo", "elsewhere"])
def test_transformers_and_vllm_are_not_shadowed(where: str, tmp_path: Path) -> None:
    import json

    names = _our_top_level_names()
    assert "transformers" not in names and "vllm" not in names, names

    # from the repository root (where '' on sys.path could pick up a folder) and from elsewhere
    cwd = REPO if where == "repo" else tmp_path
    proc = subprocess.run(
        [sys.executable, "-c", _SHADOW_PROBE],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])

    tf = Path(found["transformers.__file__"])
    assert found["transformers"] == str(tf)
    assert "site-packages" in tf.parts, tf
    # the venv may live inside the repo; what must not happen is a repo package named so
    assert not _is_under(tf, REPO / "transformers"), tf
    assert all(not _is_under(tf, REPO / n) for n in names), tf
    assert found["version"] == found["dist_version"]  # the installed library, not a stub

    if found["vllm"] is not None:  # not installed on this machine; if it is, it is the real one
        vllm = Path(found["vllm"])
        assert "site-packages" in vllm.parts and not _is_under(vllm, REPO / "vllm"), vllm


def test_kernels_name_clash_with_hf_kernels_is_known() -> None:
    """Our package `kernels` shares its import name with the Hugging Face hub package `kernels`
    (kernels-community loader). While that distribution is absent, `import kernels` is ours;
    if someone installs HF `kernels` into this environment the two would shadow each other,
    and this test fails so the clash gets handled (rename ours, or vendor under a namespace)."""
    import kernels

    spec = importlib.util.find_spec("kernels")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).resolve() == (REPO / "kernels" / "__init__.py").resolve()
    assert Path(kernels.__file__).resolve() == (REPO / "kernels" / "__init__.py").resolve()
    assert "kernels" in _our_top_level_names()
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("kernels")


def test_transformers_does_not_mistake_our_kernels_for_hf_kernels() -> None:
    """transformers finds `kernels` by import name and takes the version of the distribution
    that provides it: ours (agentic). It uses the hub kernels only inside a version window, so
    this holds while agentic's version stays below it; the test fails before that can change."""
    from transformers.utils import import_utils

    found, version = import_utils._is_package_available("kernels", return_version=True)
    assert found and version == importlib.metadata.version("agentic")
    assert not import_utils.is_kernels_available()
