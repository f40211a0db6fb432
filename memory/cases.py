"""Case values and the JSON file a `CaseBank` exports and imports (see `memory.case_bank`).

`Case` is one episode of AgentFly's case bank (task, plan, trajectory, reward, success label);
`CaseHit` a retrieved case with its similarity. The export file:

```
{"format": "agentic.case_bank", "version": 1, "bank": "default",
 "embedder": "hashing-256", "dim": 256, "exported": "2025-...Z",
 "cases": [{"case": {"id": ..., "task": ..., ...}, "vector": "<base64 float32 LE>"}, ...]}
```

Vectors travel with the cases (base64 of little-endian float32, exact and compact), so an import
into a bank of the same embedder embeds nothing. The file is written to a temporary name and
renamed, so a crash never leaves a half-written export in place.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentic.core import ConfigError

FORMAT = "agentic.case_bank"
VERSION = 1


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


class Case(BaseModel):
    """One episode: the task, the plan (action) that was tried, how it went, and its reward."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    task: str = Field(min_length=1, description="the task text; what retrieval matches on")
    plan: str = ""
    trajectory: str = Field(default="", description="a short record of the execution")
    reward: float = Field(allow_inf_nan=False)
    label: bool = Field(description="whether the episode succeeded")
    metadata: dict[str, Any] = Field(default_factory=dict)
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("created")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        # a naive time is taken as UTC, so every stored time compares with every other
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


class CaseHit(BaseModel):
    """A retrieved case and its cosine similarity to the query."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case: Case
    score: float


def case_from_row(row: Sequence[Any]) -> Case:
    """A `Case` from the columns id, task, plan, trajectory, reward, label, metadata, created."""
    keys = ("id", "task", "plan", "trajectory", "reward", "label", "metadata", "created")
    data = dict(zip(keys, row, strict=True))
    data["label"], data["metadata"] = bool(data["label"]), json.loads(data["metadata"])
    return Case.model_validate(data)


def case_row(case: Case) -> tuple[Any, ...]:
    """The columns `case_from_row` reads, for storing `case`."""
    try:
        metadata = json.dumps(case.metadata, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"case {case.id!r}: metadata is not JSON-serialisable: {e}") from None
    return (
        case.id,
        case.task,
        case.plan,
        case.trajectory,
        case.reward,
        int(case.label),
        metadata,
        case.created.isoformat(),
    )


class ExportedCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: dict[str, Any]
    vector: str = Field(description="base64 of the little-endian float32 embedding")


class CaseExport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["agentic.case_bank"] = "agentic.case_bank"
    version: int = VERSION
    bank: str
    embedder: str
    dim: int = Field(ge=1)
    exported: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cases: list[ExportedCase]


def first_error(e: ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    where = ".".join(str(x) for x in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def decode_vector(text: str, dim: int, where: str) -> npt.NDArray[np.float32]:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigError(f"{where}: vector is not base64") from None
    v = np.frombuffer(raw, dtype="<f4")
    if v.shape != (dim,) or not np.isfinite(v).all():
        raise ConfigError(f"{where}: vector has {v.size} values (or non-finite ones), need {dim}")
    return v.astype(np.float32)


def write_export(
    path: str | Path,
    bank: str,
    embedder: str,
    dim: int,
    records: Sequence[tuple[dict[str, Any], bytes]],
) -> None:
    """Write `records` (a case as JSON data, its stored vector bytes) to `path` atomically."""
    p = Path(path)
    if not p.parent.exists():
        raise ConfigError(f"cannot write {p}: folder {p.parent} does not exist")
    export = CaseExport(
        bank=bank,
        embedder=embedder,
        dim=dim,
        cases=[
            ExportedCase(case=case, vector=base64.b64encode(blob).decode("ascii"))
            for case, blob in records
        ],
    )
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(export.model_dump_json(indent=1), encoding="utf-8")
    os.replace(tmp, p)


def read_export(path: str | Path) -> CaseExport:
    """The export at `path`; `ConfigError` names the file and what is wrong with it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no case export at {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a case-bank export: not UTF-8 text") from None
    try:
        export = CaseExport.model_validate_json(text)
    except ValidationError as e:
        raise ConfigError(f"{p} is not a case-bank export ({FORMAT}): {first_error(e)}") from None
    if export.version > VERSION:
        raise ConfigError(
            f"{p} has export version {export.version}; this agentic reads up to {VERSION}"
        )
    return export


def case_from_export(path: str | Path, i: int, data: dict[str, Any]) -> Case:
    try:
        return Case.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"{path}: cases[{i}]: {first_error(e)}") from None
