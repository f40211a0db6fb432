"""One file format for every trained or extracted intervention: safetensors tensors plus the
settings as JSON under one header key. Written beside the target and renamed, so a reader never
sees half a file; every way a file can be wrong is a `ConfigError` naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from agentic.core import ConfigError


def write(
    path: str | Path, key: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> Path:
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(state, str(tmp), metadata={key: json.dumps(meta)})
    tmp.replace(p)
    return p


def read(path: str | Path, key: str, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(settings, tensors) of a file `write` made with `key`; `what` names the kind of file."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no {what} file at {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{p} is not a safetensors file ({e})") from None
    if key not in header:
        raise ConfigError(f"{p} is a safetensors file without {what} settings (header key {key!r})")
    try:
        meta = json.loads(header[key])
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: unreadable {what} settings ({e})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{p}: unreadable {what} settings (not a JSON object)")
    return meta, tensors
