"""`TransformersBackend`: a local Hugging Face causal LM behind the async `Backend` protocol.

Many coroutines may call `generate` at once; a scheduler coalesces whatever is queued into one
batched decode (`batch.RunningBatch`), run on the backend's one model thread so the event loop
stays free.
`await asyncio.gather(*(backend.generate([r]) for r in requests))` is therefore batched without
the caller doing anything. Requests that arrive while a batch runs join it at the next step
(continuous batching); rows leave as they finish. Prompts that start like one encoded before
(a search's growing prefix, siblings, the n samples of a request) encode only what is new
(`prefix_cache_tokens` bounds the kept keys and values; `forwards.encoded_tokens` counts what was
encoded). A request's `response_format` constrains its rows token by token (`grammar.py`); its
`params.logit_bias` is added to the logits it samples from. Every forward of the model is
`forward.py`'s (`self.forwards`); choosing tokens and stopping rows is `sampling.py`'s
(`self.sampler`).
"""

# Over 400 lines because the scheduler loop, `stream`, `score` and the job queue they share stay
# in one class: they hand rows to each other through its queue and its one model thread.

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from agentic.core import (
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    ScoreRequest,
    ScoreResult,
    TopLogprob,
    Usage,
    check_budget,
    emit,
)
from backends.base import BaseBackend, Capabilities
from backends.hf.batch import RunningBatch
from backends.hf.forward import Forwards
from backends.hf.grammar import Grammars
from backends.hf.interventions import InterventionHost
from backends.hf.sampling import Row, Sampler, generations
from backends.hf.states import HiddenStateReader
from backends.hf.states import HiddenStates as HiddenStates  # re-exported
from backends.interventions.base import ModelShape
from backends.interventions.table import Interventions
from backends.prompts import render_ids

_T = TypeVar("_T")


@dataclass
class _Job:
    request: GenerateRequest
    rows: list[Row]
    future: asyncio.Future[list[Generation]]
    started: float = field(default_factory=time.monotonic)
    slot: int = 0  # intervention table row of this request (0: none)
    report: dict[str, Any] | None = None  # what its interventions did, for the trace


class TransformersBackend(InterventionHost, HiddenStateReader, BaseBackend):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "hf",
        max_batch: int = 64,
        prefix_cache_tokens: int = 4096,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if prefix_cache_tokens < 0:
            raise ConfigError(f"prefix_cache_tokens must be >= 0, got {prefix_cache_tokens}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch = max_batch
        self.capabilities = Capabilities(
            logprobs=True,
            top_logprobs=20,
            prefix=True,
            score=True,
            streaming=True,
            seed=True,
            hidden_states=True,
            interventions=True,
            structured_output=True,
            max_batch=max_batch,
        )
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        pad = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else min(eos_ids, default=0)
        )
        self.forwards = Forwards(model, pad, prefix_cache_tokens)
        self.sampler = Sampler(tokenizer, eos_ids)
        head = model.get_output_embeddings()
        # the logits' width, which padded embedding matrices make larger than the tokenizer
        self.vocab_size = int(
            head.weight.shape[0] if head is not None else self._text_config.vocab_size
        )
        self._grammars: Grammars | None = None  # built on the first constrained request
        self.max_context = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._pending: deque[_Job] = deque()
        self._batch: RunningBatch | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        # every forward on one thread: each thread that runs torch brings its own OpenMP team,
        # and teams competing for the cores cost 20-40% of decode time (design-choices.md)
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-model")
        self.interventions = Interventions(
            ModelShape(self.name, self.num_layers, self.hidden_size),
            dtype=next(model.parameters()).dtype,
            device=model.device,
        )

    # ---- interventions (attach, detach, clear: `interventions.py`) -------------------------

    async def exclusive(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the model thread between the scheduler's decode steps (for code
        that calls the model directly, such as router training and configuration search)."""
        self._ensure_worker()
        assert self._lock is not None
        async with self._lock:
            return await self.on_model_thread(fn, *args)

    async def on_model_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)` on the thread that runs every forward of this model."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, partial(fn, *args))

    def _close_slot(self, job: _Job) -> None:
        if not job.slot:
            return
        slot, job.slot = job.slot, 0
        job.report = self._close(slot)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        gguf_file: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> TransformersBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        p = Path(path)
        if not p.exists():
            raise ConfigError(f"hf: model path does not exist: {p}")
        tok = AutoTokenizer.from_pretrained(p, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(p, gguf_file=gguf_file, dtype=dtype)
        return cls(model, tok, name=name or f"hf:{p}", **kwargs)

    # ---- prompts -------------------------------------------------------------------------

    def render(self, req: GenerateRequest | ScoreRequest) -> list[int]:
        """Token ids of the prompt, with the chat template applied and the prefix appended."""
        return render_ids(self.tokenizer, req, self.name)

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        if isinstance(text_or_messages, str):
            return len(self.tokenizer(text_or_messages, add_special_tokens=False).input_ids)
        return len(self.render(GenerateRequest(messages=tuple(text_or_messages))))

    def _rows(
        self, req: GenerateRequest, on_text: Callable[[str], None] | None = None
    ) -> list[Row]:
        ids = self.render(req)
        if len(ids) >= self.max_context:
            raise ConfigError(
                f"prompt has {len(ids)} tokens; model {self.name!r} holds {self.max_context}"
            )
        if req.interventions:
            self.interventions.resolve(req.interventions)
        p = req.params
        room = self.max_context - len(ids)
        if p.max_tokens > room:
            p = p.model_copy(update={"max_tokens": room})
        if p.logit_bias and p.logit_bias[-1][0] >= self.vocab_size:
            raise ConfigError(
                f"logit_bias token id {p.logit_bias[-1][0]} is outside the vocabulary of "
                f"{self.name!r} ({self.vocab_size} tokens)"
            )
        fmt, grammars = req.response_format, self._grammars
        if fmt is not None and grammars is None:
            grammars = self._grammars = Grammars(
                self.tokenizer, self.vocab_size, self.sampler.eos_ids
            )
        # the prefix is tokenized on its own (as `render` does): the matcher replays those tokens
        prefix_ids = (
            self.tokenizer(req.prefix, add_special_tokens=False).input_ids
            if fmt is not None and req.prefix
            else []
        )
        rows = []
        for j in range(p.n):
            gen = None
            if p.seed is not None and p.temperature > 0:
                # one stream per sample, so sample j is the same alone or in any batch
                gen = torch.Generator(device=self.model.device).manual_seed(
                    (p.seed * 1_000_003 + j) % (1 << 63)
                )
            grammar = None
            if fmt is not None and grammars is not None:
                grammar = grammars.matcher(fmt, prefix_ids)
            rows.append(
                Row(prompt_ids=ids, params=p, generator=gen, on_text=on_text, grammar=grammar)
            )
        return rows

    # ---- scheduling ----------------------------------------------------------------------

    @property
    def rows_in_flight(self) -> int:
        """Sequences queued or decoding now: a gauge for servers (the gateway's queue depth),
        and how a test sees that a cancelled request gave its batch slots back."""
        running = sum(not r.done for r in self._batch.rows) if self._batch is not None else 0
        return running + sum(len(j.rows) for j in self._pending)

    def _ensure_worker(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            old, old_loop = self._worker, self._loop
            if old is not None and old_loop is not None and not old_loop.is_closed():
                # left idle on another loop (generate_sync in a running loop): cancel, not drop
                old_loop.call_soon_threadsafe(old.cancel)
            self._loop = loop
            self._pending.clear()
            self._wake = asyncio.Event()
            self._lock = asyncio.Lock()
            self._worker = loop.create_task(self._run(), name=f"{self.name}-scheduler")

    def _take(self, room: int) -> list[_Job]:
        """Queued jobs whose rows fit in `room` (at least one job when the batch is empty)."""
        jobs: list[_Job] = []
        rows = 0
        while self._pending and (
            rows + len(self._pending[0].rows) <= room or (not jobs and room == self.max_batch)
        ):
            jobs.append(self._pending.popleft())
            rows += len(jobs[-1].rows)
        return jobs

    async def _run(self) -> None:
        assert self._wake is not None and self._lock is not None
        batch = self._batch = RunningBatch(self.forwards, self.sampler)
        live: list[_Job] = []
        while True:
            if not batch.rows:
                self._wake.clear()
                if not self._pending:
                    await self._wake.wait()
                # let every coroutine that is ready to enqueue do so before the batch is cut
                for _ in range(2):
                    await asyncio.sleep(0)
            new = self._take(self.max_batch - len(batch.rows)) if batch.joinable else []
            if not batch.rows and not new:
                continue
            try:
                async with self._lock:
                    if new:
                        await self.on_model_thread(batch.join, [r for j in new for r in j.rows])
                    await self.on_model_thread(batch.step)
            except Exception as e:  # a failed step fails its callers, not the scheduler
                for j in live + new:
                    self._close_slot(j)
                    if not j.future.done():
                        j.future.set_exception(e)
                batch, live = RunningBatch(self.forwards, self.sampler), []
                self._batch = batch
                continue
            live += new
            for j in [j for j in live if all(r.done for r in j.rows)]:
                live.remove(j)
                self._close_slot(j)
                if not j.future.done():
                    j.future.set_result(generations(j.rows, time.monotonic() - j.started))

    async def _submit(self, req: GenerateRequest, rows: list[Row]) -> list[Generation]:
        self._ensure_worker()
        assert self._wake is not None
        future: asyncio.Future[list[Generation]] = asyncio.get_running_loop().create_future()
        job = _Job(req, rows, future)
        if req.interventions:
            job.slot = self.interventions.open(self.interventions.resolve(req.interventions))
            for row in rows:
                row.slot = job.slot
        self._pending.append(job)
        self._wake.set()
        try:
            gens = await future
        except asyncio.CancelledError:
            for row in rows:  # nobody waits for them: stop spending compute on them
                row.cancelled = True
            raise
        if job.report is not None:
            emit("backend.intervention", backend=self.name, key=req.key(), **job.report)
        return gens

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        rows = [self._rows(r) for r in requests]  # every request validated before any is queued
        jobs = (self._submit(r, x) for r, x in zip(requests, rows, strict=True))
        return list(await asyncio.gather(*jobs))

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        if request.params.n != 1:
            raise ConfigError(f"stream() takes n=1, got n={request.params.n}")
        check_budget()
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(delta: str) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, delta)

        rows = self._rows(request, on_text)
        task = asyncio.ensure_future(self._submit(request, rows))
        task.add_done_callback(lambda _: chunks.put_nowait(None))

        finished = False
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            gens = await task
            finished = True
            self._account("backend.generate", [request], [gens])
        finally:
            if not finished:
                # a caller that stops reading frees the batch slot at the next decode step; what
                # was produced is charged then, while the caller's budget and trace are still
                # open (a gateway closes a request's trace as soon as its stream ends); the
                # caller has left, so a late refusal has no one to reach
                for row in rows:
                    row.cancelled = True
                with contextlib.suppress(Exception):
                    self._account("backend.generate", [request], [await asyncio.shield(task)])

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        prompts, conts = [], []
        for r in requests:
            prompts.append(self.render(r))
            c = r.continuation
            conts.append(
                list(c)
                if isinstance(c, tuple)
                else list(self.tokenizer(c, add_special_tokens=False).input_ids)
            )
        top = max(r.top_logprobs for r in requests)
        self._ensure_worker()
        assert self._lock is not None
        t0 = time.monotonic()
        scored = []
        for i in range(0, len(requests), self.max_batch):  # the same memory bound as generation
            async with self._lock:
                scored += await self.on_model_thread(
                    self._score_rows,
                    prompts[i : i + self.max_batch],
                    conts[i : i + self.max_batch],
                    top,
                )
        seconds = time.monotonic() - t0
        return [
            ScoreResult(
                token_ids=tuple(c),
                token_logprobs=tuple(lp),
                top_logprobs=tuple(t[: r.top_logprobs] for t in tops) if r.top_logprobs else None,
                usage=Usage(
                    prompt_tokens=len(p) + len(c),
                    model_calls=1,
                    seconds=seconds / len(requests),
                ),
            )
            for r, p, c, (lp, tops) in zip(requests, prompts, conts, scored, strict=True)
        ]

    def _score_rows(
        self, prompts: list[list[int]], conts: list[list[int]], top_k: int
    ) -> list[tuple[list[float], list[tuple[TopLogprob, ...]]]]:
        """Logprob of each continuation token given everything before it, and its top_k
        alternatives (on the model thread)."""
        logits = self.forwards.score(prompts, conts)
        return [self.sampler.continuation(x, c, top_k) for x, c in zip(logits, conts, strict=True)]

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None


def from_uri(spec: str, **options: Any) -> TransformersBackend:
    """`hf:PATH` — a model folder `from_pretrained` can read."""
    return TransformersBackend.from_pretrained(spec, **options)
