"""Typed tools: a Python function becomes a tool with a JSON schema and validated arguments.

The schema comes from the signature (types, defaults) and the docstring (summary for the tool's
description, the `Args:`/`Parameters` section for each argument's description). Calls never
raise for the model's mistakes: bad arguments, exceptions and timeouts come back as a
`ToolResult` with `ok=False` and a short message the model can act on.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import typing
from collections.abc import Awaitable, Callable
from typing import Any, overload

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentic.core import ConfigError

__all__ = ["Tool", "ToolResult", "tool"]

# OpenAI and most servers accept tool names of this shape only.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ARGS_HEADERS = {"args", "arguments", "parameters", "params", "keyword args", "keyword arguments"}
_OTHER_HEADERS = {
    "returns",
    "return",
    "yields",
    "raises",
    "examples",
    "example",
    "notes",
    "note",
    "see also",
    "attributes",
    "warnings",
    "references",
}
_GOOGLE_ENTRY = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ENTRY = re.compile(r"^(\*{0,2}\w+)\s*(?::.*)?$")
_MAX_SHOWN_INPUT = 60


class ToolResult(BaseModel):
    """What a tool call produced: `content` is what the model sees next."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    content: str
    seconds: float


def _is_header(line: str, next_line: str) -> str | None:
    """The lower-cased section name if `line` opens a docstring section (Google or NumPy)."""
    stripped = line.strip().lower()
    known = _ARGS_HEADERS | _OTHER_HEADERS
    if stripped.endswith(":") and stripped[:-1] in known and not line.startswith(" "):
        return stripped[:-1]
    if stripped in known and next_line.strip() and set(next_line.strip()) == {"-"}:
        return stripped
    return None


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a docstring into (summary text, {parameter: description})."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    numpy = False
    i = 0
    while i < len(lines):
        line = lines[i]
        header = _is_header(line, lines[i + 1] if i + 1 < len(lines) else "")
        if header is not None:
            section, current = header, None
            numpy = not line.strip().endswith(":")
            i += 2 if numpy else 1
            continue
        if section is None:
            summary.append(line)
        elif section in _ARGS_HEADERS and line.strip():
            indent = len(line) - len(line.lstrip())
            entry_indent = 0 if numpy else _entry_indent(lines, i)
            match = (_NUMPY_ENTRY if numpy else _GOOGLE_ENTRY).match(line.strip())
            if indent == entry_indent and match:
                current = match.group(1).lstrip("*")
                params[current] = "" if numpy else match.group(2).strip()
            elif current is not None and indent > entry_indent:
                params[current] = f"{params[current]} {line.strip()}".strip()
        i += 1
    return "\n".join(summary).strip(), params


def _entry_indent(lines: list[str], i: int) -> int:
    """Indentation of the entries of the Google-style section that contains line `i`."""
    j = i
    while j > 0 and _is_header(lines[j - 1], lines[j]) is None:
        j -= 1
    for line in lines[j:]:
        if line.strip():
            return len(line) - len(line.lstrip())
    return 0


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_INPUT else text[: _MAX_SHOWN_INPUT - 3] + "..."


def format_validation_error(tool_name: str, error: ValidationError) -> str:
    """One line per problem, naming the argument; no pydantic boilerplate or URLs."""
    problems = []
    for err in error.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "arguments"
        if err["type"] == "missing":
            problems.append(f"missing required argument '{field}'")
        elif err["type"] == "extra_forbidden":
            problems.append(f"unexpected argument '{field}'")
        else:
            problems.append(f"argument '{field}': {err['msg']} (got {_short(err['input'])})")
    return f"invalid arguments for tool '{tool_name}': " + "; ".join(problems)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return pydantic_core.to_json(value, fallback=str).decode()


class Tool:
    """A callable the model may use: name, description, argument model, timeout."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.fn = fn
        self.name = name if name is not None else getattr(fn, "__name__", "")
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"tool name {self.name!r} must be 1-64 characters of letters, digits, '_' or '-'"
            )
        if not timeout_s > 0:
            raise ConfigError(f"tool {self.name!r}: timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        summary, param_docs = parse_docstring(inspect.getdoc(fn))
        self.description = description if description is not None else summary
        self.arguments: type[BaseModel] = self._build_arguments(fn, param_docs)
        self._is_async = inspect.iscoroutinefunction(fn)

    def _build_arguments(
        self, fn: Callable[..., Any], param_docs: dict[str, str]
    ) -> type[BaseModel]:
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:  # unresolvable forward references, bad annotations
            raise ConfigError(f"tool {self.name!r}: cannot resolve type hints: {exc}") from exc
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            where = f"tool {self.name!r}, parameter {param.name!r}"
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"{where}: *args/**kwargs cannot be described by a schema")
            if param.kind is param.POSITIONAL_ONLY:
                raise ConfigError(f"{where}: positional-only parameters are not supported")
            if param.name not in hints:
                raise ConfigError(f"{where}: missing type annotation")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (
                hints[param.name],
                Field(default, description=param_docs.get(param.name) or None),
            )
        model_name = "".join(part.capitalize() for part in re.split(r"[_-]", self.name))
        try:
            return create_model(
                f"{model_name}Arguments",
                __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
                **fields,
            )
        except Exception as exc:  # a type pydantic cannot validate or describe
            raise ConfigError(f"tool {self.name!r}: unsupported parameter type: {exc}") from exc

    def json_schema(self) -> dict[str, Any]:
        """The OpenAI function-tool shape: name, description and the arguments' JSON schema."""
        params = self.arguments.model_json_schema()
        params.pop("title", None)
        for prop in params.get("properties", {}).values():
            prop.pop("title", None)
        params.setdefault("properties", {})
        return {"name": self.name, "description": self.description, "parameters": params}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly, without validation (for tests and reuse)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, timeout_s={self.timeout_s:g})"

    async def run(self, arguments: dict[str, Any] | str) -> ToolResult:
        """Validate `arguments` (a dict or JSON text) and call the tool. Never raises for bad
        arguments, tool exceptions or timeouts: those come back with `ok=False`."""
        start = time.perf_counter()
        ok, content = await self._run(arguments)
        return ToolResult(
            name=self.name, ok=ok, content=content, seconds=time.perf_counter() - start
        )

    async def _run(self, arguments: dict[str, Any] | str) -> tuple[bool, str]:
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return False, f"arguments for tool '{self.name}' are not valid JSON: {exc}"
        if not isinstance(arguments, dict):
            kind = type(arguments).__name__
            return False, f"arguments for tool '{self.name}' must be a JSON object, got {kind}"
        try:
            model = self.arguments.model_validate(arguments)
        except ValidationError as exc:
            return False, format_validation_error(self.name, exc)
        # Attributes, not model_dump(): nested pydantic models reach the tool as models.
        kwargs = {field: getattr(model, field) for field in type(model).model_fields}
        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                if self._is_async:
                    value = await typing.cast(Awaitable[Any], self.fn(**kwargs))
                else:
                    # The thread cannot be stopped: a sync tool that times out keeps running
                    # in the background and its result is dropped.
                    value = await asyncio.to_thread(self.fn, **kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                return False, f"timed out after {self.timeout_s:g}s"
            return False, f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, _to_text(value)


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 10.0,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = 10.0,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a `Tool` from a typed function; usable as `@tool` or `@tool(name=..., timeout_s=...)`.

    Bad definitions (a parameter without annotation, `*args`, `**kwargs`) raise `ConfigError`
    here, at decoration time, naming the parameter.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, timeout_s=timeout_s)

    return wrap(fn) if fn is not None else wrap
