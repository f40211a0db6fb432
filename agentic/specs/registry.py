"""Controllers by name: each controller type is a pydantic `Spec` that knows how to build it.

A `Spec` subclass declares the controller's `type` (its name, `Literal["name"] = "name"`), its
own fields only (validated, unknown ones refused), and `build(ctx)`, which returns the
controller on the run's backend. A field that holds another controller is a `ChildSpec`: the
nested spec is parsed through this same registry, so any registered type nests anywhere.

The command line (`agentic run --controller` and its flags), pipeline files (YAML or JSON) and
recordings (`agentic replay`, `--resume`) all go through `parse_controller_spec`; every mistake
is one `ConfigError` line naming the type and the field, or the path of a nested node.

Built-in types are listed in `_BUILTIN` and imported on first use, as backends are; their
`Spec` classes live on the top floor (`agentic/specs/searches.py`: direct and the searches;
`agentic/specs/pipeline.py`: the others) because `search/` and `controllers/` may not import
`agentic`, and building `agent` needs `agentic.agents`. Third-party packages add types through
the entry-point group `agentic.controllers` (name = the type, value = its `Spec` subclass), with
no change here; `register_controller` adds one at run time.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from agentic.core import ConfigError, Controller, TaskSuite
from backends import Backend, load_backend

__all__ = [
    "ENTRY_POINT_GROUP",
    "BuildContext",
    "ChildSpec",
    "OptionalChildSpec",
    "Spec",
    "controller_types",
    "parse_controller_spec",
    "register_controller",
    "spec_class",
]

ENTRY_POINT_GROUP = "agentic.controllers"

# built-ins are imported only when used, so `import agentic` stays light
_BUILTIN: dict[str, str] = {
    "direct": "agentic.specs.searches:DirectSpec",
    "bon": "agentic.specs.searches:BestOfNSpec",
    "beam": "agentic.specs.searches:BeamSpec",
    "pf": "agentic.specs.searches:ParticleFilterSpec",
    "epf": "agentic.specs.searches:EntropicParticleFilterSpec",
    "astar": "agentic.specs.searches:AStarSpec",
    "sc": "agentic.specs.pipeline:SelfConsistencySpec",
    "cyberv": "agentic.specs.pipeline:CyberVSpec",
    "agent": "agentic.specs.pipeline:AgentSpec",
    "psr": "agentic.specs.pipeline:PSRSpec",
    "ead": "agentic.specs.pipeline:EADSpec",
    "router": "agentic.specs.pipeline:RouterSpec",
    "ace": "agentic.specs.pipeline:ACESpec",
    "cases": "agentic.specs.pipeline:CaseMemorySpec",
}
_registered: dict[str, type[Spec]] = {}


class Spec(BaseModel):
    """A controller's settings: everything needed to build it again (a run records its spec,
    so `agentic replay` and `--resume` rebuild the very same controller).

    Subclass it with `type: Literal["name"] = "name"`, the controller's own fields, and `build`;
    then register the class (`register_controller`, or the `agentic.controllers` entry point).
    Specs are frozen, and a field the class does not declare is an error.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str

    cli_flags: ClassVar[Mapping[str, str]] = {}
    """The `agentic run` options this type takes, as option -> field (`"samples": "n"`);
    any other option given with `--controller NAME` is refused."""
    keeps_memory: ClassVar[bool] = False
    """True for a controller that reads and writes a store outliving the run: its prompts
    depend on what the store held, so `agentic replay` refuses a recording of it."""

    @model_serializer(mode="wrap")
    def _always_typed(self, handler: SerializerFunctionWrapHandler) -> Any:
        # `type` is a default, but a dump without it (exclude_defaults) would name no controller
        data = handler(self)
        return {"type": self.type, **data} if isinstance(data, dict) else data

    def build(self, ctx: BuildContext) -> Controller:
        """The controller this spec describes, on `ctx.backend` (nested specs: `ctx.build`)."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it builds")

    def children(self) -> Iterator[tuple[str, Spec]]:
        """(field, spec) for each nested controller spec among this spec's fields."""
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Spec):
                yield name, value
            elif isinstance(value, tuple | list):
                for i, item in enumerate(value):
                    if isinstance(item, Spec):
                        yield f"{name}.{i}", item


class BuildContext:
    """What building a controller takes besides its spec: the run's backend and suite, other
    backends by URI (loaded once each through `load`, kept in `backends` so a recording can
    name them), and what to close once the run is over (`on_close`, `aclose`).

    Args:
        backend: the backend every node runs on unless it names another.
        suite: the task suite (its system prompt, answer extraction and checker).
        load: URI -> backend for the other backends a spec names; default `load_backend`.
    """

    def __init__(
        self,
        backend: Backend,
        suite: TaskSuite,
        load: Callable[[str], Backend] | None = None,
    ) -> None:
        self.backend, self.suite = backend, suite
        self._load = load or load_backend
        self.backends: dict[str, Backend] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def build(self, spec: Spec | Mapping[str, Any] | str) -> Controller:
        """The controller `spec` describes; plain data is parsed first (`parse_controller_spec`)."""
        if not isinstance(spec, Spec):
            spec = parse_controller_spec(spec)
        return spec.build(self)

    def other(self, uri: str) -> Backend:
        """The backend `uri` names, loaded on first use."""
        if not uri:
            raise ConfigError("this controller needs a backend URI (for example ead.large)")
        if uri not in self.backends:
            self.backends[uri] = self._load(uri)
        return self.backends[uri]

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        """Run `close` at `aclose`, last registered first (a memory store's connection)."""
        self._closers.append(close)

    async def aclose(self) -> None:
        """Finish what the built controllers still have to do (memory learning), then close
        their stores. The backends stay open: their owner closes them."""
        while self._closers:
            await self._closers.pop()()


# ---- the registry -----------------------------------------------------------------------------


def _type_name(spec: type[Spec]) -> str:
    field = spec.model_fields.get("type")
    name = field.default if field is not None else None
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"{spec.__name__} declares no controller name: give it `type: Literal['name'] = 'name'`"
        )
    return name


def register_controller(spec: type[Spec]) -> type[Spec]:
    """Register a `Spec` subclass under its `type` (usable as a class decorator). A registered
    type takes precedence over a built-in or a plugin of the same name."""
    if not (isinstance(spec, type) and issubclass(spec, Spec)):
        raise ConfigError(f"register_controller takes a Spec subclass, got {spec!r}")
    name = _type_name(spec)
    if spec.build is Spec.build:
        raise ConfigError(f"controller {name!r}: {spec.__name__} does not define build(ctx)")
    _registered[name] = spec
    return spec


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def controller_types() -> list[str]:
    """Every controller type name: built-in, registered and installed plugins."""
    return sorted(set(_BUILTIN) | set(_registered) | set(_plugins()))


def _known() -> str:
    return ", ".join(controller_types())


def spec_class(name: str) -> type[Spec]:
    """The `Spec` class registered as `name`; a `ConfigError` listing the known names if none."""
    if name in _registered:
        return _registered[name]
    if name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        spec: Any = getattr(importlib.import_module(module), attr)
        where = _BUILTIN[name]
    else:
        plugins = _plugins()
        if name not in plugins:
            raise ConfigError(
                f"unknown controller type {_brief(name)}; known: {_known()} (third-party "
                f"controllers register the entry-point group {ENTRY_POINT_GROUP!r})"
            )
        spec, where = plugins[name].load(), f"{plugins[name].value} (plugin)"
    if not (isinstance(spec, type) and issubclass(spec, Spec)):
        raise ConfigError(f"controller {name!r}: {where} is not a Spec subclass")
    if _type_name(spec) != name:
        raise ConfigError(
            f"controller {name!r}: {where} declares type {_type_name(spec)!r}, not {name!r}"
        )
    if spec.build is Spec.build:
        raise ConfigError(f"controller {name!r}: {where} does not define build(ctx)")
    return spec


# ---- parsing ---------------------------------------------------------------------------------


def _brief(value: Any, limit: int = 60) -> str:
    """`value` as it reads in a one-line message: quoted, control characters escaped, cut."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


@dataclass(frozen=True)
class _Problem:
    """One mistake in a spec: where the node sits (field path from the root), its type (None
    when the type itself is the mistake), and what is wrong."""

    where: tuple[str, ...]
    kind: str | None
    text: str

    def __str__(self) -> str:
        where = ".".join(self.where)
        if self.kind is None:  # "inner: unknown controller type 'x'; known: ..."
            return f"{where}: {self.text}" if where else self.text
        at = f" at {where}" if where else ""
        return f"controller {self.kind!r}{at}: {self.text}"


class _Invalid(Exception):
    def __init__(self, problems: list[_Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(p if isinstance(p, str) and p.isprintable() else repr(p) for p in parts)


def _validate(data: Any) -> Spec:
    """Plain data -> a Spec, or `_Invalid` with every problem, nested ones with their path."""
    if not isinstance(data, Mapping):
        raise _Invalid(
            [
                _Problem(
                    (),
                    None,
                    f"a controller spec is a mapping with a 'type', not {type(data).__name__}",
                )
            ]
        )
    if "type" not in data:
        raise _Invalid([_Problem((), None, f"a controller spec needs a 'type'; known: {_known()}")])
    kind = data["type"]
    if not isinstance(kind, str) or not kind:
        raise _Invalid(
            [_Problem((), None, f"unknown controller type {_brief(kind)}; known: {_known()}")]
        )
    try:
        cls = spec_class(kind)
    except ConfigError as e:
        raise _Invalid([_Problem((), None, str(e))]) from None
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        problems: list[_Problem] = []
        for err in e.errors():
            loc = tuple(err["loc"])
            ctx = err.get("ctx") or {}
            if err["type"] == "controller_spec" and "problems" in ctx:
                field = tuple(_loc((p,)) for p in loc)
                problems += [_Problem((*field, *p.where), p.kind, p.text) for p in ctx["problems"]]
            elif err["type"] == "extra_forbidden":
                name = loc[0] if len(loc) == 1 else _loc(loc)
                fields = ", ".join(k for k in cls.model_fields if k != "type")
                problems.append(
                    _Problem((), kind, f"unknown field {_brief(name)}; its fields: {fields}")
                )
            else:
                problems.append(_Problem((), kind, f"{_loc(loc) or 'type'}: {err['msg']}"))
        raise _Invalid(problems) from None


def _child(value: Any) -> Any:
    """A nested controller spec: parsed through the registry; its problems keep their path."""
    if value is None or isinstance(value, Spec):
        return value
    try:
        return _validate(value)
    except _Invalid as e:
        raise PydanticCustomError(
            "controller_spec", "{message}", {"message": str(e), "problems": e.problems}
        ) from None


ChildSpec = Annotated[SerializeAsAny[Spec], BeforeValidator(_child)]
"""A field that holds another controller's spec, of any registered type."""
OptionalChildSpec = Annotated[SerializeAsAny[Spec] | None, BeforeValidator(_child)]
"""`ChildSpec`, or None."""


def parse_controller_spec(data: Spec | Mapping[str, Any] | str, *, files: bool = True) -> Spec:
    """The one way in for controller specs, from anywhere.

    Args:
        data: a mapping with a `type` (nested specs are mappings too); or a string: a type name
            (its defaults), inline JSON, or the path of a .yaml/.yml/.json spec file. A `Spec`
            is returned as it is.
        files: whether a string may name a file; a server parsing requests passes False, so a
            request cannot make it read its files.

    Raises:
        ConfigError: one line naming each problem: an unknown type (with the known ones), an
            unknown field of a type (with its fields), a bad value, and for a nested spec the
            path of its node (`controller 'sc' at inner.reasoning: n: ...`).
    """
    if isinstance(data, Spec):
        return data
    if isinstance(data, str):
        data = _read(data, files)
    try:
        return _validate(data)
    except _Invalid as e:
        raise ConfigError(str(e)) from None


def _read(text: str, files: bool) -> Any:
    if text in controller_types():
        return {"type": text}
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"controller spec: inline JSON is invalid: {e}") from None
    path = Path(text)
    if not files or not path.exists():
        other = "a .yaml/.json spec file or inline JSON" if files else "inline JSON"
        raise ConfigError(f"unknown controller type {_brief(text)}; known: {_known()}; or {other}")
    raw = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            reason = " ".join(str(e).split())  # YAML's message spans lines
            raise ConfigError(f"{path}: not valid YAML: {reason}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
