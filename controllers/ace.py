"""`ACE`: a controller whose context evolves as a playbook of strategies, learned at test time
without weight updates. After Zhang et al. 2025, "Agentic Context Engineering: Evolving Contexts
for Self-Improving Language Models". The paper's parts and where they are:

- Generator: answers with the playbook in its context and reports which bullets it used ->
  `ACE.answer`, structured `GeneratorOutput {reasoning, bullet_ids, final_answer}`, with the
  playbook rendered into the system prompt under `playbook_tokens`;
- Reflector: diagnoses the answer from the task, the cited bullets and whatever feedback exists
  (the checker's score, the ground truth, or neither) and tags the cited bullets helpful /
  harmful / neutral -> `ACE.reflect`, structured `Reflection`; its tags become TAG operations;
- Curator: turns the reflection into compact delta operations -> `ACE.curate`, structured
  `CuratorOutput` of at most `max_ops` ADD / UPDATE / MERGE / DELETE operations, merged by the
  deterministic, non-LLM `Playbook.apply` (memory/playbook.py), which deduplicates ADDs;
- offline adaptation, several epochs over a training split -> `ACE.train`;
- online adaptation, learning from each test sample after answering it -> `await ace(task, ctx)`
  answers at once and queues the learning for one background worker (`drain`, `aclose`), so
  the serving path never waits for reflection or curation.

The roles' prompts and output types are in `controllers/ace_roles.py`. Reflector and Curator
may run on other backends than the Generator. On backends that enforce a schema, free-text
fields are capped at `max_chars` characters and ADD sections limited to the playbook's, which
keeps a small model's JSON inside `max_tokens`. Ids a model invents are
dropped with an `ace.unknown_bullets` event. The paper's multi-round refinement of a reflection
is one round here. Learning runs in the context of the call it learns from, so it is charged to
that call's `Budget` and traced under its span; a used-up budget skips the learning.

Events: spans `ace` (one served task) and `ace.epoch`; `ace.generator`, `ace.reflector`,
`ace.curator`, `ace.applied` (one per role and task), `ace.unknown_bullets`, `ace.dropped_op`,
`ace.learn_skipped`, `ace.learn_failed`, `ace.learn_dropped` (queue full), `ace.epoch_done`.
"""

from __future__ import annotations

# Over 400 lines on purpose: the generate / reflect / curate loop and its online mode (lessons
# learnt in the background while answers go out) work on one playbook and read together against
# the paper; the role prompts and structured outputs are in ace_roles.py, the playbook in memory/.
import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from agentic.core import (
    Budget,
    BudgetExceeded,
    ConfigError,
    Context,
    Outcome,
    SamplingParams,
    StructuredOutputError,
    Task,
    Usage,
    check_budget,
    emit,
    span,
)
from backends import Backend
from controllers.ace_roles import (
    CURATOR_PROMPT,
    GENERATOR_FORMAT,
    GENERATOR_SYSTEM,
    REFLECTOR_PROMPT,
    Answer,
    CuratorAdds,
    CuratorOutput,
    EpochReport,
    GeneratorOutput,
    Lesson,
    Reflection,
    ask,
    id_enum,
    id_list,
    shown_ids,
)
from memory.playbook import (
    AddOp,
    LogEntry,
    MergeOp,
    Playbook,
    PlaybookOpError,
    TagOp,
)

Checker = Callable[[Task, str], Awaitable[float]]
T = TypeVar("T", bound=BaseModel)


class ACE:
    """The ACE controller. `generator` answers; `reflector` and `curator` (default: the
    generator's backend) learn; `checker(task, output) -> score` and, with
    `use_ground_truth`, `task.answer` are the feedback. `playbook_tokens` bounds the rendered
    playbook (by `count_tokens`, default the generator's tokenizer), `max_ops` the curator's
    operations per task, `max_chars` each free-text field where a schema is enforced.
    `learn=False` serves with a frozen playbook (`train` still learns)."""

    def __init__(
        self,
        generator: Backend,
        playbook: Playbook,
        *,
        reflector: Backend | None = None,
        curator: Backend | None = None,
        checker: Checker | None = None,
        use_ground_truth: bool = True,
        playbook_tokens: int = 1024,
        count_tokens: Callable[[str], int] | None = None,
        max_ops: int = 3,
        max_chars: int = 400,
        generator_params: SamplingParams | None = None,
        reflector_params: SamplingParams | None = None,
        curator_params: SamplingParams | None = None,
        system_prompt: str | None = None,
        retries: int = 1,
        learn: bool = True,
        queue_size: int = 1024,
    ) -> None:
        for field, value, low in (
            ("playbook_tokens", playbook_tokens, 0),
            ("max_ops", max_ops, 0),
            ("max_chars", max_chars, 8),
            ("retries", retries, 0),
            ("queue_size", queue_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{field} must be an int >= {low}, got {value!r}")
        if max_ops > 16:
            raise ConfigError(f"max_ops must be <= 16, got {max_ops}")
        self.generator, self.playbook = generator, playbook
        self.reflector = reflector or generator
        self.curator = curator or self.reflector
        self.checker, self.use_ground_truth = checker, use_ground_truth
        self.playbook_tokens, self.max_ops, self.max_chars = playbook_tokens, max_ops, max_chars
        self.count_tokens = count_tokens or generator.count_tokens
        # default limits fit the longest output the capped schemas allow, at a token a char
        greedy = lambda n: SamplingParams(temperature=0.0, max_tokens=n)  # noqa: E731
        self.generator_params = generator_params or greedy(2 * max_chars + 64)
        self.reflector_params = reflector_params or greedy(4 * max_chars + 96)
        self.curator_params = curator_params or greedy(max(1, max_ops) * (max_chars + 48) + 16)
        self.system_prompt = system_prompt
        self.retries, self.queue_size = retries, queue_size
        self.online_learning = learn
        self._queue: asyncio.Queue[tuple[contextvars.Context, Task, Answer]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = 0

    def __repr__(self) -> str:
        return f"ACE({self.generator.name}, {self.playbook!r}, reflector={self.reflector.name})"

    # ---- the three roles ---------------------------------------------------------------------

    async def _structured(
        self, backend: Backend, prompt: str, params: SamplingParams, out: type[T], **kw: Any
    ) -> tuple[T, Usage]:
        return await ask(
            backend, prompt, params, out, max_chars=self.max_chars, retries=self.retries, **kw
        )

    def _known(self, role: str, task: Task, ids: Sequence[str]) -> list[str]:
        known = [i for i in dict.fromkeys(ids) if i in self.playbook]
        if unknown := [i for i in dict.fromkeys(ids) if i not in self.playbook]:
            emit("ace.unknown_bullets", role=role, task_id=task.id, ids=unknown)
        return known

    def _render(self) -> tuple[str, list[str]]:
        """The playbook as the models see it, and the ids shown (all they may cite)."""
        text = self.playbook.render(self.playbook_tokens, count_tokens=self.count_tokens)
        return text or "(empty)", shown_ids(text)

    async def answer(self, task: Task, ctx: Context | None = None) -> Answer:
        """The Generator: one structured answer with the current playbook in context."""
        await self.playbook.refresh()
        version = self.playbook.version
        rendered, shown = self._render()
        head = self.system_prompt or (ctx.system_prompt if ctx else None)
        system = "\n\n".join(x for x in (head, GENERATOR_SYSTEM, f"Playbook:\n{rendered}") if x)
        try:
            out, usage = await self._structured(
                self.generator,
                f"{task.input}\n\n{GENERATOR_FORMAT}",
                self.generator_params,
                GeneratorOutput,
                system=system,
                bullet_ids=id_list(shown, 4),
            )
        except (BudgetExceeded, StructuredOutputError) as e:
            emit("ace.generator", task_id=task.id, error=str(e))
            return Answer(task_id=task.id, output="", playbook_version=version, error=str(e))
        cited = self._known("generator", task, out.bullet_ids)
        emit("ace.generator", task_id=task.id, bullet_ids=cited, output=out.final_answer)
        return Answer(
            task_id=task.id,
            output=out.final_answer,
            reasoning=out.reasoning,
            bullet_ids=tuple(cited),
            playbook_version=version,
            usage=usage,
        )

    async def reflect(
        self, task: Task, answer: Answer, score: float | None
    ) -> tuple[Reflection, Usage]:
        """The Reflector: a diagnosis of `answer` and tags for the bullets it cited."""
        feedback = []
        if score is not None:
            verdict = {1.0: "correct", 0.0: "wrong"}.get(score, f"partly right (score {score:g})")
            feedback.append(f"the answer is {verdict}")
        if self.use_ground_truth and task.answer is not None:
            feedback.append(f"the correct answer is {task.answer}")
        cited = [b for i in answer.bullet_ids if (b := self.playbook.get(i)) is not None]
        prompt = REFLECTOR_PROMPT.format(
            task=task.input,
            reasoning=answer.reasoning or "(none)",
            answer=answer.output or "(none)",
            feedback="; ".join(feedback) or "none available; judge the answer yourself",
            bullets="\n".join(b.line() for b in cited) or "(none)",
        )
        return await self._structured(
            self.reflector,
            prompt,
            self.reflector_params,
            Reflection,
            bullet_tags={"maxItems": len(cited)},
            id=id_enum([b.id for b in cited]),
        )

    async def curate(
        self, task: Task, reflection: Reflection
    ) -> tuple[list[dict[str, Any]], Usage]:
        """The Curator: at most `max_ops` delta operations, unknown ids and sections dropped."""
        if self.max_ops == 0:
            return [], Usage()
        sections = list(self.playbook.sections)
        rendered, shown = self._render()
        prompt = CURATOR_PROMPT.format(
            playbook=rendered,
            task=task.id,
            error=reflection.error_identification,
            approach=reflection.correct_approach,
            insight=reflection.key_insight,
            max_ops=self.max_ops,
            sections=", ".join(sections),
        )
        out, usage = await self._structured(
            self.curator,
            prompt,
            self.curator_params,
            CuratorOutput,
            shape=CuratorOutput if shown else CuratorAdds,  # no bullet shown: only ADD fits
            section={"enum": sections},
            operations={"maxItems": self.max_ops},
            id=id_enum(shown),
            ids={"items": id_enum(shown) | {"type": "string"}},
        )
        ops: list[dict[str, Any]] = []
        for op in out.operations[: self.max_ops]:
            if isinstance(op, AddOp):
                if op.section not in self.playbook.sections:
                    emit("ace.dropped_op", task_id=task.id, op=op.model_dump(), reason="section")
                    continue
            elif isinstance(op, MergeOp):
                ids = self._known("curator", task, op.ids)
                if len(ids) < 2:
                    continue
                op = op.model_copy(update={"ids": ids})
            elif not self._known("curator", task, [op.id]):
                continue
            ops.append(op.model_dump())
        return ops, usage

    # ---- learning ----------------------------------------------------------------------------

    async def learn(self, task: Task, answer: Answer) -> Lesson:
        """Score `answer` with the checker (if any), reflect, curate, and apply the tags and
        operations as one batch. An answer that failed (`answer.error`) is scored, not learned."""
        score = None if self.checker is None else float(await self.checker(task, answer.output))
        if answer.error is not None:
            emit("ace.learn_skipped", task_id=task.id, reason=answer.error)
            return Lesson(task_id=task.id, score=score, error=f"no answer: {answer.error}")
        usage = Usage()
        try:
            reflection, u = await self.reflect(task, answer, score)
            usage += u
            emit("ace.reflector", task_id=task.id, score=score, **reflection.model_dump())
            known = set(self._known("reflector", task, [t.id for t in reflection.bullet_tags]))
            tags = [
                TagOp(id=t.id, tag=t.tag).model_dump()
                for t in reflection.bullet_tags
                if t.id in known
            ]
            try:
                ops, u = await self.curate(task, reflection)
                usage += u
                emit("ace.curator", task_id=task.id, operations=ops)
            except StructuredOutputError as e:
                emit("ace.curator", task_id=task.id, error=str(e))
                ops = []
            applied = await self._apply(task, [*tags, *ops])
        except (BudgetExceeded, StructuredOutputError) as e:
            emit("ace.learn_skipped", task_id=task.id, reason=str(e))
            return Lesson(task_id=task.id, score=score, usage=usage, error=str(e))
        return Lesson(
            task_id=task.id, score=score, reflection=reflection, applied=applied, usage=usage
        )

    async def _apply(self, task: Task, ops: list[dict[str, Any]]) -> list[LogEntry]:
        while ops:
            try:
                applied = await self.playbook.apply(ops, source=task.id)
            except PlaybookOpError as e:
                # another writer removed a bullet since we checked: drop that op, keep the rest
                emit("ace.dropped_op", task_id=task.id, op=ops[e.index], reason=str(e))
                ops = ops[: e.index] + ops[e.index + 1 :]
                continue
            emit(
                "ace.applied",
                task_id=task.id,
                version=self.playbook.version,
                effects=[(x.effect, x.bullet_id) for x in applied],
            )
            return applied
        return []

    async def train(
        self, tasks: Sequence[Task], *, epochs: int = 1, ctx: Context | None = None
    ) -> list[EpochReport]:
        """Offline adaptation: `epochs` passes over `tasks`, learning after each task."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be an int >= 1, got {epochs!r}")
        if not tasks:
            raise ConfigError("train() got no tasks")
        reports = []
        for epoch in range(1, epochs + 1):
            scores: list[float] = []
            stopped, done = None, 0
            # an unlimited Budget is a meter: it sees every call, failed attempts included
            with span("ace.epoch", epoch=epoch, tasks=len(tasks)), Budget() as meter:
                for task in tasks:
                    answer = await self.answer(task, ctx)
                    lesson = await self.learn(task, answer)
                    done += 1
                    if lesson.score is not None:
                        scores.append(lesson.score)
                    try:
                        check_budget()
                    except BudgetExceeded as e:
                        stopped = str(e)
                        break
            mean = sum(scores) / len(scores) if scores else None
            report = EpochReport(
                epoch=epoch,
                tasks=done,
                mean_score=mean,
                bullets=len(self.playbook),
                usage=meter.spent,
                stopped=stopped,
            )
            emit("ace.epoch_done", **report.model_dump(mode="json"))
            reports.append(report)
            if stopped:
                break
        return reports

    # ---- online mode -------------------------------------------------------------------------

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        """Answer now; learning from this task is queued for the background worker."""
        with span("ace", task_id=task.id):
            answer = await self.answer(task, ctx)
            if answer.error is None and self.online_learning:
                self._enqueue(task, answer)
        info = {"bullet_ids": list(answer.bullet_ids), "playbook_version": answer.playbook_version}
        return Outcome(
            task_id=task.id, output=answer.output, usage=answer.usage, error=answer.error, info=info
        )

    def _enqueue(self, task: Task, answer: Answer) -> None:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:
            # a queue belongs to one event loop; lessons left on a finished loop are lost
            self._queue, self._loop, self._worker = asyncio.Queue(self.queue_size), loop, None
            self._pending = 0
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(self._queue), name="ace-learner")
        try:
            # learning runs in this call's context: its budget, tracer and span
            self._queue.put_nowait((contextvars.copy_context(), task, answer))
            self._pending += 1
        except asyncio.QueueFull:
            emit("ace.learn_dropped", task_id=task.id, pending=self._queue.qsize())

    async def _work(self, queue: asyncio.Queue[tuple[contextvars.Context, Task, Answer]]) -> None:
        while True:
            context, task, answer = await queue.get()
            try:
                await asyncio.create_task(self.learn(task, answer), context=context)
            except Exception as e:  # a failed lesson must not stop the learner
                emit("ace.learn_failed", task_id=task.id, error=f"{type(e).__name__}: {e}")
            finally:
                self._pending -= 1
                queue.task_done()

    @property
    def pending(self) -> int:
        """Answers whose learning has not finished yet."""
        return self._pending

    async def drain(self) -> None:
        """Wait until every queued lesson has been learned."""
        if self._queue is not None:
            await self._queue.join()

    async def aclose(self) -> None:
        """Finish the queued learning, then stop the worker."""
        await self.drain()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
