"""Pipelines: controllers nested by a small spec (YAML or JSON), and the specs of the
controllers that are not searches (`sc`, `cyberv`, `agent`, `psr`, `ead`, `router`, `ace`,
`cases`).

A spec is a tree of typed nodes, each with a `type`; a node's controller fields (`inner`,
`instant`, `reasoning`, `agentic`, `executor`) are specs themselves (`ChildSpec`), so
controllers of any registered type nest freely:

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
--controller` takes a node type with its defaults, a spec file, or inline JSON
(`agentic.specs.registry.parse_controller_spec`); the run records the validated spec, so `agentic
replay` and `--resume` rebuild the same pipeline. The specs live here, on the top floor, because
`controllers/` may not import `agentic` and building `agent` needs `agentic.agents`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from agentic.core import ConfigError, Controller, SamplingParams
from agentic.specs.registry import BuildContext, ChildSpec, OptionalChildSpec, Spec
from agentic.specs.searches import DirectSpec


class SelfConsistencySpec(Spec):
    """n samples and a majority vote (`controllers.SelfConsistency`)."""

    type: Literal["sc"] = "sc"
    n: int = Field(default=8, ge=1)
    # chosen on the train families of benchmarks/ttc_matrix.py by majority vote at N=8
    temperature: float = Field(default=1.0, ge=0.0)
    min_p: float = Field(default=0.1, ge=0.0, le=1.0)
    max_tokens: int = Field(default=64, ge=1)
    seed: int = 0

    cli_flags: ClassVar[dict[str, str]] = {
        "samples": "n",
        "temperature": "temperature",
        "min_p": "min_p",
        "max_tokens": "max_tokens",
    }

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.self_consistency import SelfConsistency

        params = SamplingParams(
            temperature=self.temperature, min_p=self.min_p, max_tokens=self.max_tokens
        )
        return SelfConsistency(
            ctx.backend,
            n=self.n,
            params=params,
            answer_of=ctx.suite.extract,
            system_prompt=ctx.suite.system_prompt,
            seed=self.seed,
        )


class CyberVSpec(Spec):
    """A weighted vote with one corrective round when it is weak (`controllers.CyberVLoop`)."""

    type: Literal["cyberv"] = "cyberv"
    n: int = Field(default=4, ge=1)
    theta: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=0.7, ge=0.0)
    max_tokens: int = Field(default=64, ge=1)
    seed: int = 0

    cli_flags: ClassVar[dict[str, str]] = {
        "samples": "n",
        "temperature": "temperature",
        "max_tokens": "max_tokens",
    }

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.cyberv import CyberVLoop

        params = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens)
        return CyberVLoop(
            ctx.backend,
            n=self.n,
            theta=self.theta,
            params=params,
            answer_of=ctx.suite.extract,
            system_prompt=ctx.suite.system_prompt,
            seed=self.seed,
        )


class AgentSpec(Spec):
    """A tool-using agent (`agentic.agents.ToolAgent`)."""

    type: Literal["agent"] = "agent"
    tools: tuple[Literal["calculator", "python", "search_docs"], ...] = ("calculator",)
    docs: str | None = Field(default=None, description="search_docs: the folder it searches")
    max_steps: int = Field(default=6, ge=1)
    max_tokens: int = Field(default=160, ge=1, description="tokens per action")

    def build(self, ctx: BuildContext) -> Controller:
        from agentic.agents import ToolAgent
        from agentic.agents.tools import calculator, python_tool, search_docs_tool

        tools = []
        for name in self.tools:
            if name == "calculator":
                tools.append(calculator)
            elif name == "python":
                tools.append(python_tool())
            else:
                if self.docs is None:
                    raise ConfigError("agent.tools has search_docs: set agent.docs to a folder")
                tools.append(search_docs_tool(self.docs))
        return ToolAgent(
            ctx.backend,
            tools,
            max_steps=self.max_steps,
            params=SamplingParams(temperature=0.0, max_tokens=self.max_tokens),
            system_prompt=ctx.suite.system_prompt,
        )


class PSRSpec(Spec):
    """Progressive self-reflection (`controllers.ProgressiveSelfReflection`)."""

    type: Literal["psr"] = "psr"
    inner: OptionalChildSpec = Field(
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

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.psr import ProgressiveSelfReflection

        predictor = None
        if self.round_predictor is not None:
            from controllers.round_predictor import RoundPredictor
            from memory.embedders import SentenceTransformerEmbedder

            predictor = RoundPredictor.load(self.round_predictor, SentenceTransformerEmbedder())
        return ProgressiveSelfReflection(
            ctx.backend,
            chunk_tokens=self.chunk_tokens,
            max_rounds=self.max_rounds,
            round_predictor=predictor,
            judge=ctx.other(self.judge) if self.judge else None,
            threshold=self.threshold,
            penalty=self.penalty,
            params=SamplingParams(temperature=0.0, max_tokens=self.max_tokens),
            system_prompt=ctx.suite.system_prompt,
            inner=ctx.build(self.inner) if self.inner is not None else None,
        )


class EADSpec(Spec):
    """A small model that hands uncertain stretches to a large one
    (`controllers.EntropyAdaptiveDecoding`)."""

    type: Literal["ead"] = "ead"
    large: str = Field(default="embedded:gemma3-270m", description="backend URI of the large model")
    window: int = Field(default=5, ge=1)
    threshold: float = Field(default=1.0, ge=0.0)
    chunk_tokens: int = Field(default=8, ge=1)
    max_tokens: int = Field(default=256, ge=1)

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.entropy_switch import EntropyAdaptiveDecoding

        return EntropyAdaptiveDecoding(
            ctx.backend,
            ctx.other(self.large),
            window=self.window,
            threshold=self.threshold,
            chunk_tokens=self.chunk_tokens,
            max_tokens=self.max_tokens,
            system_prompt=ctx.suite.system_prompt,
        )


class RouterSpec(Spec):
    """Instant, reasoning or agentic per task (`controllers.A2FMRouter`)."""

    type: Literal["router"] = "router"
    policy: Literal["self-tag", "learned"] = "self-tag"
    path: str | None = Field(default=None, description="learned: the router saved by its fit")
    embedder: Literal["minilm", "hashing"] | None = None
    instant: ChildSpec = Field(default_factory=lambda: DirectSpec(max_tokens=32))
    reasoning: ChildSpec = Field(default_factory=SelfConsistencySpec)
    agentic: ChildSpec = Field(default_factory=AgentSpec)

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.router import A2FMRouter, LearnedPolicy, RoutingPolicy, SelfTagPolicy

        policy: RoutingPolicy
        if self.policy == "self-tag":
            policy = SelfTagPolicy(ctx.backend)
        else:
            if self.path is None:
                raise ConfigError("router.policy 'learned' needs router.path (a saved router)")
            policy = LearnedPolicy.load(self.path, embedder=_embedder(self.embedder))
        return A2FMRouter(
            instant=ctx.build(self.instant),
            reasoning=ctx.build(self.reasoning),
            agentic=ctx.build(self.agentic),
            policy=policy,
        )


class ACESpec(Spec):
    """Agentic context engineering: a playbook learned online (`controllers.ACE`)."""

    type: Literal["ace"] = "ace"
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

    keeps_memory: ClassVar[bool] = True

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.ace import ACE
        from memory.playbook import Playbook
        from memory.store import open_store

        conn = open_store(_path(self.store, "ace"))
        playbook = Playbook(conn, name=self.playbook, embedder=_embedder(self.embedder))
        ace = ACE(
            ctx.backend,
            playbook,
            reflector=ctx.other(self.reflector) if self.reflector else None,
            checker=ctx.suite.check,
            playbook_tokens=self.playbook_tokens,
            generator_params=(
                SamplingParams(temperature=0.0, max_tokens=self.max_tokens)
                if self.max_tokens
                else None
            ),
            system_prompt=ctx.suite.system_prompt,
            learn=self.learn,
        )

        async def close() -> None:
            await ace.aclose()
            conn.close()

        ctx.on_close(close)
        return ace


class CaseMemorySpec(Spec):
    """A planner over a case bank of past tasks (`controllers.CaseMemoryAgent`)."""

    type: Literal["cases"] = "cases"
    store: str = Field(description="SQLite file holding the case bank (created if missing)")
    bank: str = Field(default="default", description="the bank's name in the store")
    selection: Literal["similarity", "q"] = "similarity"
    k: int = Field(default=2, ge=1, description="cases of each label shown to the planner")
    executor: ChildSpec = Field(default_factory=AgentSpec)
    write: bool = Field(default=True, description="write each task's case back")
    learn: bool = Field(default=True, description="train the selection policy online")
    embedder: Literal["minilm", "hashing"] = "minilm"

    keeps_memory: ClassVar[bool] = True

    def build(self, ctx: BuildContext) -> Controller:
        from controllers.case_memory import CaseMemoryAgent
        from memory.case_bank import CaseBank

        bank = CaseBank.open(_path(self.store, "cases"), _embedder(self.embedder), self.bank)
        ctx.on_close(bank.aclose)
        return CaseMemoryAgent(
            ctx.backend,
            ctx.build(self.executor),
            bank,
            checker=ctx.suite.check,
            selection=self.selection,
            k=self.k,
            write=self.write,
            learn=self.learn,
        )


def memory_nodes(spec: Spec) -> list[str]:
    """Paths of the nodes of `spec` that read and write a memory store ("controller.inner")."""
    found = []

    def walk(node: Spec, path: str) -> None:
        if node.keeps_memory:
            found.append(path)
        for field, child in node.children():
            walk(child, f"{path}.{field}")

    walk(spec, "controller")
    return found


def _path(path: str, node: str) -> Path:
    if not path:
        raise ConfigError(f"{node}.store: give the SQLite file that holds the memory")
    return Path(path).expanduser()


def _embedder(name: str | None) -> Any:
    if name is None:
        return None
    from memory.embedders import HashingEmbedder, SentenceTransformerEmbedder

    return SentenceTransformerEmbedder() if name == "minilm" else HashingEmbedder()
