"""`agentic steer extract`: steering vectors from contrastive prompt sets, saved as safetensors.

Contrasts (`--contrast`):
- `refusal`: harmful (positive) vs benign (negative) requests of the train split of
  `benchmarks/data/safety_prompts.jsonl`, paired i-th with i-th;
- `code:LANG:OTHER`: each train task of `benchmarks/data/code_prompts.jsonl` as
  "{task} Use LANG." vs "{task} Use OTHER." (`code:python:javascript` by default in docs);
- `FILE.jsonl`: lines `{"positive": "...", "negative": "..."}`.

The math is in `backends.interventions.steering_vectors`. `code_language` is the heuristic that
later measures the share of answers written in a target language.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentic.core import ConfigError

steer_app = typer.Typer(
    help="Steering vectors for local models: extract them from contrastive prompts.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data"
LANGUAGES = {
    "python": "Python",
    "javascript": "JavaScript",
    "rust": "Rust",
    "c": "C",
    "java": "Java",
    "go": "Go",
}
Pair = tuple[str, str]

# ---- which language an answer's code is in ------------------------------------------------

_TAGS = {
    "python": "python", "py": "python", "python3": "python", "py3": "python",
    "javascript": "javascript", "js": "javascript", "jsx": "javascript", "node": "javascript",
    "mjs": "javascript", "rust": "rust", "rs": "rust", "c": "c", "h": "c",
    "java": "java", "go": "go", "golang": "go",
}  # fmt: skip
# (pattern, weight): 3 for cues that all but name the language, 1 for ones others share
_CUES: dict[str, list[tuple[str, int]]] = {
    "python": [
        (r"^\s*def \w+\s*\(.*\)\s*(->\s*[^:{]+)?:", 3),
        (r"^\s*(from [\w.]+ )?import [\w., ]+$", 1),
        (r"^\s*(if|elif|for|while|with|class|try|else)\b[^{;]*:\s*$", 1),
        (r"\bprint\(|\bself\b|\bNone\b|\belif\b|\blen\(", 1),
    ],
    "javascript": [
        (r"\bfunction\s*\w*\s*\(", 3),
        (r"\b(const|let|var)\s+\w+\s*=", 2),
        (r"=>", 1),
        (r"console\.log\(|===|module\.exports|\brequire\(", 2),
    ],
    "rust": [
        (r"\bfn\s+\w+\s*(<[^>]*>)?\s*\(", 3),
        (r"\blet\s+mut\b|println!\(|\bimpl\b|&str\b|\bVec<|\busize\b", 2),
    ],
    "c": [
        (r"#include\s*[<\"]", 3),
        (r"\bprintf\s*\(|\bmalloc\s*\(|\bint\s+main\s*\(", 2),
        (
            r"^\s*(static\s+)?(int|char|void|double|float|long|unsigned)\s+\**\w+\s*\([^)]*\)\s*\{",
            1,
        ),
    ],
    "java": [
        (r"\bpublic\s+(static\s+)?(final\s+)?(class|void|int|long|double|boolean|String)\b", 3),
        (r"System\.out\.print|\bString\[\]|\bimport java\.|\bprivate\s+\w+", 2),
    ],
    "go": [
        (r"\bfunc\s+(\(\w+\s+\*?\w+\)\s*)?\w+\s*\(", 3),
        (r"^package \w+|fmt\.Print|:=", 2),
    ],
}
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def _by_cues(code: str, threshold: int) -> str | None:
    scores = {
        lang: sum(w for pat, w in cues if re.search(pat, code, re.M))
        for lang, cues in _CUES.items()
    }
    best = max(scores, key=lambda lang: scores[lang])  # ties go to the first in _CUES
    return best if scores[best] >= threshold else None


def code_language(text: str) -> str | None:
    """The language of the code in an answer: python, javascript, rust, c, java, go, or None.
    The first fenced block's tag wins; otherwise syntax cues in the fenced blocks (or, with no
    fence, in the whole text, where a stronger signal is required so prose does not count).
    C++ reads as c; TypeScript as javascript."""
    blocks = _FENCE.findall(text)
    for tag, _ in blocks:
        if tag.lower() in _TAGS:
            return _TAGS[tag.lower()]
    if blocks:
        return _by_cues("\n".join(body for _, body in blocks), threshold=1)
    return _by_cues(text, threshold=2)


# ---- contrastive prompt sets ------------------------------------------------------------------


def refusal_pairs(
    path: Path | None = None, split: Literal["train", "test"] = "train"
) -> list[Pair]:
    """(harmful, benign) prompts of one split, i-th with i-th."""
    from controllers.harm_judge import load_safety_prompts

    rows = load_safety_prompts(path or DATA / "safety_prompts.jsonl", split=split)
    harmful = [r.prompt for r in rows if r.label == "harmful"]
    benign = [r.prompt for r in rows if r.label == "benign"]
    return list(zip(harmful, benign, strict=False))


def code_tasks(path: Path | None = None, split: Literal["train", "test"] = "train") -> list[str]:
    """The "Write a function that ..." tasks of one split of `code_prompts.jsonl`."""
    p = path or DATA / "code_prompts.jsonl"
    if not p.is_file():
        raise ConfigError(f"code prompt file not found: {p}")
    tasks = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
                if row["split"] == split:
                    tasks.append(str(row["task"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"{p}:{n}: not a code task ({e!r})") from None
    return tasks


def code_pairs(
    positive: str, negative: str, split: Literal["train", "test"] = "train"
) -> list[Pair]:
    """Each task asked in the `positive` language vs in the `negative` one."""
    for lang in (positive, negative):
        if lang not in LANGUAGES:
            raise ConfigError(
                f"--contrast: unknown language {lang!r}; choose from {', '.join(LANGUAGES)}"
            )
    a, b = LANGUAGES[positive], LANGUAGES[negative]
    return [(f"{t} Use {a}.", f"{t} Use {b}.") for t in code_tasks(split=split)]


def file_pairs(path: Path) -> list[Pair]:
    if not path.is_file():
        raise ConfigError(f"--contrast: no such file {path}")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pos, neg = row["positive"], row["negative"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(
                f'{path}:{n}: expected {{"positive": "...", "negative": "..."}}'
            ) from None
        if not isinstance(pos, str) or not isinstance(neg, str):
            raise ConfigError(f"{path}:{n}: positive and negative must be strings")
        pairs.append((pos, neg))
    return pairs


def contrast_pairs(spec: str) -> tuple[list[Pair], str]:
    """The pairs a `--contrast` value names, and a default name for the vector."""
    if spec == "refusal":
        return refusal_pairs(), "refusal"
    if spec.startswith("code:"):
        parts = spec.split(":")
        if len(parts) != 3:
            raise ConfigError(f"--contrast: expected code:LANG:OTHER, got {spec!r}")
        return code_pairs(parts[1], parts[2]), f"code-{parts[1]}-vs-{parts[2]}"
    if spec.endswith(".jsonl"):
        return file_pairs(Path(spec)), Path(spec).stem
    raise ConfigError(f"--contrast must be refusal, code:LANG:OTHER or a FILE.jsonl, got {spec!r}")


def parse_layers(spec: str, num_layers: int | None = None) -> list[int] | None:
    """`all` (None until the model's depth is known) or comma-separated decoder layers."""
    if spec.strip() == "all":
        return list(range(num_layers)) if num_layers is not None else None
    try:
        layers = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        layers = []
    if not layers:
        raise ConfigError(f"--layers takes 'all' or decoder layers like 10,15,20, got {spec!r}")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"--layers names a layer twice: {spec!r}")
    if num_layers is not None:
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(
                f"--layers: layer {bad[0]} is out of range [0, {num_layers}) for this model"
            )
    return layers


# ---- the command ------------------------------------------------------------------------------


def _load_backend(uri: str) -> Any:
    from agentic.cli.common import load_quietly as _load

    return _load(uri)


@steer_app.command("extract")
def extract(
    out_path: Annotated[Path, typer.Option("--out", help="The .safetensors file to write.")],
    backend: Annotated[str, typer.Option("--backend", "-b", help="A local model's URI.")] = (
        "embedded:smollm2"
    ),
    contrast: Annotated[
        str, typer.Option(help="refusal, code:LANG:OTHER (e.g. code:python:javascript), FILE.jsonl")
    ] = "refusal",
    method: Annotated[
        Literal["mean_difference", "pca"], typer.Option(help="ActAdd/CAA mean or RepE PCA.")
    ] = "mean_difference",
    layers: Annotated[str, typer.Option(help="Decoder layers, 0-based: 10,15,20 or all.")] = "all",
    pool: Annotated[
        Literal["last", "mean"], typer.Option(help="Last prompt token, or mean over the prompt.")
    ] = "last",
    name: Annotated[
        str | None, typer.Option(help="Vector name (default: from --contrast).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N pairs.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Extract a steering vector from a contrast and save it."""
    try:
        _extract(out_path, backend, contrast, method, layers, pool, name, limit, overwrite)
    except (ConfigError, FileNotFoundError) as e:
        # a one-line error, exit 2, also when invoked without `agentic.cli.main` (CliRunner)
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


def _extract(
    out_path: Path,
    uri: str,
    contrast: str,
    method: str,
    layer_spec: str,
    pool: Literal["last", "mean"],
    name: str | None,
    limit: int | None,
    overwrite: bool,
) -> None:
    from backends.interventions.steering_vectors import extract_mean_difference, extract_pca

    if out_path.exists() and not overwrite:
        raise ConfigError(f"--out: {out_path} exists; pass --overwrite to replace it")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    parse_layers(layer_spec)  # a typo fails before the model loads
    pairs, default_name = contrast_pairs(contrast)
    pairs = pairs[:limit] if limit else pairs
    if not pairs:
        raise ConfigError(f"--contrast {contrast!r} yields no prompt pairs")
    model = _load_backend(uri)
    picked = parse_layers(layer_spec, getattr(model, "num_layers", None)) or []
    info = {"contrast": contrast}

    async def go() -> Any:
        try:
            if method == "pca":
                return await extract_pca(
                    model, pairs, picked, name=name or default_name, pool=pool, info=info
                )
            pos, neg = [p for p, _ in pairs], [n for _, n in pairs]
            return await extract_mean_difference(
                model, pos, neg, picked, name=name or default_name, pool=pool, info=info
            )
        finally:
            await model.aclose()

    vec = asyncio.run(go())
    path = vec.save(out_path)
    out.print(f"{vec.name}: {vec.method} on {vec.model}, {len(pairs)} pairs, pool {pool}")
    table = Table()
    table.add_column("layer", justify="right")
    table.add_column("norm", justify="right")
    if method == "pca":
        table.add_column("explained variance", justify="right")
    for i in vec.layers:
        row = [str(i), f"{vec.info[f'norm.{i}']:.3f}"]
        if method == "pca":
            row.append(f"{vec.info[f'explained_variance.{i}']:.3f}")
        table.add_row(*row)
    out.print(table)
    out.print(f"wrote {escape(str(path))}")


@steer_app.command("apply")
def apply(
    vector: Annotated[Path, typer.Argument(help="A steering vector (.safetensors).")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt (repeatable).")],
    backend: Annotated[str, typer.Option("--backend", "-b", help="A local model's URI.")] = (
        "embedded:smollm2"
    ),
    scale: Annotated[float, typer.Option(help="Multiplies the vector.")] = 1.0,
    layers: Annotated[str, typer.Option(help="Its layers to use: 10,15 or all.")] = "all",
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 64,
) -> None:
    """Answer each prompt with and without the vector (greedy, in one batch), side by side."""
    try:
        _apply(vector, prompt, backend, scale, layers, max_tokens)
    except (ConfigError, FileNotFoundError) as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        raise typer.Exit(2) from None


def _apply(
    path: Path, prompts: list[str], uri: str, scale: float, layer_spec: str, max_tokens: int
) -> None:
    from agentic.core import GenerateRequest, InterventionRef
    from backends.interventions.static import Steering
    from backends.interventions.steering_vectors import SteeringVector

    if max_tokens < 1:
        raise ConfigError(f"--max-tokens must be >= 1, got {max_tokens}")
    vec = SteeringVector.load(path)
    chosen = parse_layers(layer_spec, None)
    if chosen is not None:
        missing = sorted(set(chosen) - set(vec.layers))
        if missing:
            raise ConfigError(f"--layers: {path} has no vector at layers {missing}")
    model = _load_backend(uri)
    if not hasattr(model, "attach"):
        raise ConfigError(f"--backend {uri!r} runs no interventions: use a local model")
    model.attach("steer", Steering(vec, scale=scale, layers=chosen))
    ref = (InterventionRef(name="steer"),)

    async def go() -> list[tuple[str, str]]:
        try:
            plain = [
                GenerateRequest.chat(p, max_tokens=max_tokens, temperature=0.0) for p in prompts
            ]
            steered = [r.model_copy(update={"interventions": ref}) for r in plain]
            outs = await asyncio.gather(*(model.generate([r]) for r in plain + steered))
            texts = [o[0][0].text for o in outs]
            return list(zip(texts[: len(prompts)], texts[len(prompts) :], strict=True))
        finally:
            await model.aclose()

    table = Table(title=f"{vec.name} x {scale} at layers {chosen or vec.layers}")
    table.add_column("prompt")
    table.add_column("without")
    table.add_column("with")
    for p, (a, b) in zip(prompts, asyncio.run(go()), strict=True):
        table.add_row(escape(p), escape(a), escape(b))
    out.print(table)
