"""Installing a package for one test only: into a folder that a subprocess puts on PYTHONPATH,
so the test process and the venv never see it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def pip_install_target(src: Path, site: Path) -> None:
    """`pip install --target site src`, offline, without dependencies or build isolation."""
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--disable-pip-version-check", "--target", str(site), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
