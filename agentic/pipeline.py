"""Pipelines: controllers nested by a small spec (YAML or JSON) that pydantic validates.

A spec is a tree of typed nodes, each with a `type`; a node's controller fields (`inner`,
`instant`, `reasoning`, `agentic`) are specs themselves, so controllers nest freely:

```yaml
type: psr                 # whatever the router answers passes progressive self-reflection
max_rounds: 2
inner:
  type: router
  policy: self-tag
  instant: {type: direct, max_tokens: 32}
  reasoning: {type: epf, samples: 4}
  agentic: {type: agent, tools: [calculator]}
```

Every node runs on the run's backend unless it names another by URI (`ead.large`, `psr.judge`),
and all nodes share the run's budget and trace (both are context variables). `agentic run
--controller` takes a node type with its defaults, a spec file, or inline JSON; the run records
the validated spec, so `agentic replay` and `--resume` rebuild the same pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from agentic.build import ControllerName, ControllerSpec, build_controller
from agentic.core import ConfigError, Controller, SamplingParams, TaskSuite
from backends import Backend

SEARCH_TYPES = set(get_args(ControllerName))


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SelfConsistencySpec(_Node):
    type: Literal["sc"]
    n: int = Field(default=8, ge=1)
    # chosen on the train families of benchmarks/ttc_matrix.py by majority vote at N=8
    temperature: float = Field(default=1.0, ge=0.0)
    min_p: float = Field(default=0.1, ge=0.0, le=1.0)
    max_tokens: int = Field(default=64, ge=1)
    seed: int = 0


class CyberVSpec(_Node):
    type: Literal["cyberv"]
    n: int = Field(default=4, ge=1)
    theta: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=0.7, ge=0.0)
    max_tokens: int = Field(default=64, ge=1)
    seed: int = 0


class AgentSpec(_Node):
    type: Literal["agent"]
    tools: tuple[Literal["calculator", "python", "search_docs"], ...] = ("calculator",)
    docs: str | None = Field(default=None, description="search_docs: the folder it searches")
    max_steps: int = Field(default=6, ge=1)
    max_tokens: int = Field(default=160, ge=1, description="tokens per action")


class PSRSpec(_Node):
    type: Literal["psr"]
    inner: PipelineSpec | None = Field(
        default=None, description="a controller whose output PSR reflects on; none: PSR writes"
    )
    chunk_tokens: int = Field(default=32, ge=1)
    max_rounds: int | None = Field(default=3, ge=0)
    round_predictor: str | None = Field(
        default=None, description="a RoundPredictor saved by benchmarks/train_round_predictor.py"
    )
    judge: str | None = Field(default=None, description="backend URI of the reflecting model")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    penalty: float = Field(default=0.0, ge=0.0)
    max_tokens: int = Field(default=256, ge=1)


class EADSpec(_Node):
    type: Literal["ead"]
    large: str = Field(default="embedded:gemma3-270m", description="backend URI of the large model")
    window: int = Field(default=5, ge=1)
    threshold: float = Field(default=1.0, ge=0.0)
    chunk_tokens: int = Field(default=8, ge=1)
    max_tokens: int = Field(default=256, ge=1)


class RouterSpec(_Node):
    type: Literal["router"]
    policy: Literal["self-tag", "learned"] = "self-tag"
    path: str | None = Field(default=None, description="learned: the router saved by its fit")
    embedder: Literal["minilm", "hashing"] | None = None
    instant: PipelineSpec = Field(default_factory=lambda: ControllerSpec(max_tokens=32))
    reasoning: PipelineSpec = Field(default_factory=lambda: SelfConsistencySpec(type="sc"))
    agentic: PipelineSpec = Field(default_factory=lambda: AgentSpec(type="agent"))


class ACESpec(_Node):
    type: Literal["ace"]
    store: str = Field(description="SQLite file holding the playbook (created if missing)")
    playbook: str = Field(default="default", description="the playbook's name in the store")
    learn: bool = Field(default=True, description="learn from each task after answering it")
    reflector: str | None = Field(default=None, description="backend URI of reflector/curator")
    playbook_tokens: int = Field(default=1024, ge=0)
    max_tokens: int | None = Field(
        default=None, ge=1, description="the generator's tokens; none: ACE's default"
    )
    embedder: Literal["minilm", "hashing"] | None = Field(
        default="minilm", description="deduplicates new bullets; none: no deduplication"
    )


class CaseMemorySpec(_Node):
    type: Literal["cases"]
    store: str = Field(description="SQLite file holding the case bank (created if missing)")
    bank: str = Field(default="default", description="the bank's name in the store")
    selection: Literal["similarity", "q"] = "similarity"
    k: int = Field(default=2, ge=1, description="cases of each label shown to the planner")
    executor: PipelineSpec = Field(default_factory=lambda: AgentSpec(type="agent"))
    write: bool = Field(default=True, description="write each task's case back")
    learn: bool = Field(default=True, description="train the selection policy online")
    embedder: Literal["minilm", "hashing"] = "minilm"


_TAGS = ("sc", "cyberv", "agent", "psr", "ead", "router", "ace", "cases")


def _tag(value: Any) -> str:
    kind = value.get("type", "direct") if isinstance(value, dict) else getattr(value, "type", None)
    # a non-string type (a list, a dict) is no known tag: pydantic then names it
    return "search" if isinstance(kind, str) and kind in SEARCH_TYPES else str(kind)


PipelineSpec = Annotated[
    Annotated[ControllerSpec, Tag("search")]
    | Annotated[SelfConsistencySpec, Tag("sc")]
    | Annotated[CyberVSpec, Tag("cyberv")]
    | Annotated[AgentSpec, Tag("agent")]
    | Annotated[PSRSpec, Tag("psr")]
    | Annotated[EADSpec, Tag("ead")]
    | Annotated[RouterSpec, Tag("router")]
    | Annotated[ACESpec, Tag("ace")]
    | Annotated[CaseMemorySpec, Tag("cases")],
    Discriminator(
        _tag,
        custom_error_type="controller_type",
        custom_error_message="unknown controller type; the types are "
        + ", ".join(sorted(SEARCH_TYPES | set(_TAGS))),
    ),
]
for _model in (PSRSpec, RouterSpec, CaseMemorySpec):
    _model.model_rebuild()
_ADAPTER: TypeAdapter[Any] = TypeAdapter(PipelineSpec)
NODE_TYPES = sorted(SEARCH_TYPES | set(_TAGS))
MEMORY_TYPES = {"ace", "cases"}


def _shown(part: Any) -> str:
    """A path part as it reads on one line: a key with a newline or other control character is
    quoted, so the error stays one line."""
    text = str(part)
    return text if text.isprintable() else repr(text)


def validate_spec(data: Any) -> Any:
    """A spec from plain data (a dict), or a ConfigError naming every bad field by its path."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as e:
        tags = {"search", *_TAGS}
        problems = [
            # the union's tag is part of pydantic's path ("router.reasoning.sc.n"): leave it out
            f"{'.'.join(_shown(p) for p in err['loc'] if p not in tags) or 'type'}: {err['msg']}"
            for err in e.errors()
        ]
        raise ConfigError("bad controller spec: " + "; ".join(problems)) from None


def memory_nodes(spec: Any) -> list[str]:
    """Paths of the nodes of `spec` that read and write a memory store ("controller.inner")."""
    found = []

    def walk(node: Any, path: str) -> None:
        if getattr(node, "type", None) in MEMORY_TYPES:
            found.append(path)
        for field in ("inner", "instant", "reasoning", "agentic", "executor"):
            child = getattr(node, field, None)
            if isinstance(child, BaseModel):
                walk(child, f"{path}.{field}")

    walk(spec, "controller")
    return found


def parse_spec(text: str) -> Any:
    """`--controller`: a node type (its defaults), a .yaml/.yml/.json file, or inline JSON."""
    if text in NODE_TYPES:
        return validate_spec({"type": text})
    if text.lstrip().startswith("{"):
        try:
            return validate_spec(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--controller: inline JSON is invalid: {e}") from None
    path = Path(text)
    if not path.exists():
        raise ConfigError(
            f"--controller {text!r}: not a controller type ({', '.join(NODE_TYPES)}), "
            "a spec file, or inline JSON"
        )
    raw = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
    return validate_spec(data)


class Builder:
    """Builds a spec's controllers on the run's backend; other backends by URI through `load`
    (loaded once each, remembered in `backends` so a recording can name them)."""

    def __init__(self, backend: Backend, suite: TaskSuite, load: Callable[[str], Backend]) -> None:
        self.backend, self.suite, self._load = backend, suite, load
        self.backends: dict[str, Backend] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    async def aclose(self) -> None:
        """Finish what memory controllers still have to learn, then close their stores."""
        while self._closers:
            await self._closers.pop()()

    def other(self, uri: str) -> Backend:
        if not uri:
            raise ConfigError("this controller needs a backend URI (for example ead.large)")
        if uri not in self.backends:
            self.backends[uri] = self._load(uri)
        return self.backends[uri]

    def build(self, spec: Any) -> Controller:
        system = self.suite.system_prompt
        if isinstance(spec, ControllerSpec):
            return build_controller(spec, self.backend, self.suite)
        if isinstance(spec, SelfConsistencySpec):
            from controllers.self_consistency import SelfConsistency

            params = SamplingParams(
                temperature=spec.temperature, min_p=spec.min_p, max_tokens=spec.max_tokens
            )
            return SelfConsistency(
                self.backend,
                n=spec.n,
                params=params,
                answer_of=self.suite.extract,
                system_prompt=system,
                seed=spec.seed,
            )
        if isinstance(spec, CyberVSpec):
            from controllers.cyberv import CyberVLoop

            params = SamplingParams(temperature=spec.temperature, max_tokens=spec.max_tokens)
            return CyberVLoop(
                self.backend,
                n=spec.n,
                theta=spec.theta,
                params=params,
                answer_of=self.suite.extract,
                system_prompt=system,
                seed=spec.seed,
            )
        if isinstance(spec, AgentSpec):
            return self._agent(spec)
        if isinstance(spec, PSRSpec):
            return self._psr(spec)
        if isinstance(spec, EADSpec):
            from controllers.entropy_switch import EntropyAdaptiveDecoding

            return EntropyAdaptiveDecoding(
                self.backend,
                self.other(spec.large),
                window=spec.window,
                threshold=spec.threshold,
                chunk_tokens=spec.chunk_tokens,
                max_tokens=spec.max_tokens,
                system_prompt=system,
            )
        if isinstance(spec, RouterSpec):
            return self._router(spec)
        if isinstance(spec, ACESpec):
            return self._ace(spec)
        if isinstance(spec, CaseMemorySpec):
            return self._cases(spec)
        raise ConfigError(f"unknown controller spec {spec!r}")

    def _agent(self, spec: AgentSpec) -> Controller:
        from agentic.agent import ToolAgent
        from agentic.tools import calculator, python_tool, search_docs_tool

        tools = []
        for name in spec.tools:
            if name == "calculator":
                tools.append(calculator)
            elif name == "python":
                tools.append(python_tool())
            else:
                if spec.docs is None:
                    raise ConfigError("agent.tools has search_docs: set agent.docs to a folder")
                tools.append(search_docs_tool(spec.docs))
        return ToolAgent(
            self.backend,
            tools,
            max_steps=spec.max_steps,
            params=SamplingParams(temperature=0.0, max_tokens=spec.max_tokens),
            system_prompt=self.suite.system_prompt,
        )

    def _psr(self, spec: PSRSpec) -> Controller:
        from controllers.psr import ProgressiveSelfReflection

        predictor = None
        if spec.round_predictor is not None:
            from controllers.round_predictor import RoundPredictor
            from memory.embedders import SentenceTransformerEmbedder

            predictor = RoundPredictor.load(spec.round_predictor, SentenceTransformerEmbedder())
        return ProgressiveSelfReflection(
            self.backend,
            chunk_tokens=spec.chunk_tokens,
            max_rounds=spec.max_rounds,
            round_predictor=predictor,
            judge=self.other(spec.judge) if spec.judge else None,
            threshold=spec.threshold,
            penalty=spec.penalty,
            params=SamplingParams(temperature=0.0, max_tokens=spec.max_tokens),
            system_prompt=self.suite.system_prompt,
            inner=self.build(spec.inner) if spec.inner is not None else None,
        )

    def _router(self, spec: RouterSpec) -> Controller:
        from controllers.router import A2FMRouter, LearnedPolicy, RoutingPolicy, SelfTagPolicy

        policy: RoutingPolicy
        if spec.policy == "self-tag":
            policy = SelfTagPolicy(self.backend)
        else:
            if spec.path is None:
                raise ConfigError("router.policy 'learned' needs router.path (a saved router)")
            policy = LearnedPolicy.load(spec.path, embedder=_embedder(spec.embedder))
        return A2FMRouter(
            instant=self.build(spec.instant),
            reasoning=self.build(spec.reasoning),
            agentic=self.build(spec.agentic),
            policy=policy,
        )

    def _ace(self, spec: ACESpec) -> Controller:
        from controllers.ace import ACE
        from memory.playbook import Playbook

        conn = _store(spec.store, "ace")
        playbook = Playbook(conn, name=spec.playbook, embedder=_embedder(spec.embedder))
        ace = ACE(
            self.backend,
            playbook,
            reflector=self.other(spec.reflector) if spec.reflector else None,
            checker=self.suite.check,
            playbook_tokens=spec.playbook_tokens,
            generator_params=(
                SamplingParams(temperature=0.0, max_tokens=spec.max_tokens)
                if spec.max_tokens
                else None
            ),
            system_prompt=self.suite.system_prompt,
            learn=spec.learn,
        )

        async def close() -> None:
            await ace.aclose()
            conn.close()

        self._closers.append(close)
        return ace

    def _cases(self, spec: CaseMemorySpec) -> Controller:
        from controllers.case_memory import CaseMemoryAgent
        from memory.case_bank import CaseBank

        bank = CaseBank.open(_path(spec.store, "cases"), _embedder(spec.embedder), spec.bank)
        self._closers.append(bank.aclose)
        return CaseMemoryAgent(
            self.backend,
            self.build(spec.executor),
            bank,
            checker=self.suite.check,
            selection=spec.selection,
            k=spec.k,
            write=spec.write,
            learn=spec.learn,
        )


def _path(path: str, node: str) -> Path:
    if not path:
        raise ConfigError(f"{node}.store: give the SQLite file that holds the memory")
    return Path(path).expanduser()


def _store(path: str, node: str) -> Any:
    from memory.store import open_store

    return open_store(_path(path, node))


def _embedder(name: str | None) -> Any:
    if name is None:
        return None
    from memory.embedders import HashingEmbedder, SentenceTransformerEmbedder

    return SentenceTransformerEmbedder() if name == "minilm" else HashingEmbedder()
