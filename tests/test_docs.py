"""The documentation stays buildable, short where it should be, and its programs stay runnable.

- `mkdocs build --strict` (the `make docs` build) succeeds: a broken link, a page missing from
  the nav or a docstring mkdocstrings cannot render fails the test suite.
- Every fenced ```python block in README.md and docs/*.md whose first line is `# runs: yes` is
  a complete program; each distinct one runs in a subprocess from the repository root with
  `HF_HUB_OFFLINE=1` and must exit 0. Only a few blocks carry the marker: each one runs the
  embedded model for real on a 2-core machine.
- README.md stays a front page (at most 150 lines), every page in the nav exists, and every
  relative link in README.md points at a file that exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
MARKER = "# runs: yes"
MAX_README_LINES = 150
MAX_MARKED_PROGRAMS = 5
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _marked_blocks() -> list[tuple[str, str]]:
    """(where, code) for each distinct marked block, first occurrence wins."""
    seen: dict[str, str] = {}
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            code = match.group(1)
            if code.splitlines()[:1] != [MARKER]:
                continue
            line = text.count("\n", 0, match.start()) + 1
            seen.setdefault(code, f"{path.relative_to(ROOT)}:{line}")
    return [(where, code) for code, where in seen.items()]


MARKED = _marked_blocks()


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    return []


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{output[-6000:]}"
    assert (tmp_path / "index.html").is_file(), output[-3000:]
    assert (tmp_path / "reference" / "core" / "index.html").is_file(), output[-3000:]


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_nav_pages_exist() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = _nav_pages(config["nav"])
    assert pages, "mkdocs.yml has no nav"
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"pages in the nav but not under docs/: {missing}"


def test_readme_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    assert local, "README.md links to no docs page"
    broken = [t for t in local if not (ROOT / t).exists()]
    assert not broken, f"README.md links to missing files: {broken}"


def test_marked_programs_are_few() -> None:
    assert MARKED, f"no ```python block starts with {MARKER!r}"
    assert len(MARKED) <= MAX_MARKED_PROGRAMS, [where for where, _ in MARKED]


@pytest.mark.slow
@pytest.mark.parametrize(("where", "code"), MARKED, ids=[where for where, _ in MARKED])
def test_marked_program_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, (
        f"{where} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-3000:]}"
    )
