"""What every `agentic` command module shares: the stderr console and loading a backend by URI
(quietly, with its key redacted from the status line). A module of its own so that the command
modules (`commands`, `route`, `steer`) import it and never each other."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console

from agentic.core import redact_uri

err = Console(stderr=True, soft_wrap=True)


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_quietly(uri: str) -> Any:
    from backends import load_backend

    shown = redact_uri(uri)
    with err.status(f"loading {shown} (the first use of an embedded model converts it, ~20 s)"):
        # only local models load transformers; remote and plugin backends should not pay for it
        if uri.startswith(("hf:", "embedded:", "vllm:")):
            _quiet_transformers()
        return load_backend(uri)
