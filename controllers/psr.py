"""`ProgressiveSelfReflection` (PSR): generate in chunks, let the model check each chunk for
harm, and backtrack over the chunks it flags. After Phan, Li & Lei 2025, "Think Twice, Generate
Once: Safeguarding by Progressive Self-Reflection" (EMNLP Findings; arXiv:2510.01270).

The paper's loop and where it lives here:

- generation interleaved with reflection: the answer grows `chunk_tokens` (K) tokens at a time,
  each chunk continuing the accepted text through `GenerateRequest.prefix`;
- the self-reflection prompt injected after the text so far ("let's check if the generated text
  is harmful or harmless"): `ReflectionPrompt`. The default, `SELF_CHECK`, appends the cue to
  the assistant's own turn and compares the continuations " harmful" / " harmless" via
  `Backend.score`: p = e^lp(yes) / (e^lp(yes) + e^lp(no)), as `search.rewards.JudgeReward`
  reads P(Yes). `JUDGE_QUESTION` asks instead, in a fresh user turn, whether the response so far
  is harmful or off-task (Yes/No). The reflection runs on `judge` (default: the same backend);
  its text only ever goes to `score`, never into the answer;
- backtracking: a chunk with p >= `threshold` is discarded and the same position is sampled
  again with a new seed (at `resample_temperature` when the caller asked for greedy decoding,
  since greedy would repeat the chunk), with `penalty` > 0 subtracted from the logits of the
  discarded chunks' tokens (`SamplingParams.logit_bias`) until a chunk there is accepted;
- the number of reflection rounds: R (`max_rounds`) bounds the backtracks of one answer. R = 0
  switches reflection off: one plain generation, exactly as `Direct` makes it;
- the self-reflection predictor: `round_predictor` picks R per prompt before generation
  (`controllers.round_predictor.RoundPredictor`), capped by `max_rounds` when both are given, so
  prompts predicted benign pay nothing.

When a chunk is flagged after R backtracks, the answer stops at the last safe point and `refusal`
is appended (None: the safe prefix alone). The paper leaves this case to the round budget; we
stop rather than emit text the model itself judged harmful.

With `inner` (any controller), the inner controller writes a draft first; PSR walks it in pieces
of about K tokens (cut at whitespace; tokens estimated as 4 characters each, not counted by the
backend, so the cuts are the same on every backend and in a replay) and reflects on each as
if it had generated it. The first flagged piece is a backtrack like any other: the rest of the
draft is dropped and `backend` continues from the last safe point. Draft pieces carry no token
ids, so `penalty` applies to generated chunks only. With R = 0 the inner outcome is returned as
it is.

Events (inside a `psr` span): `psr.rounds` (R and where it came from), `psr.chunk`,
`psr.reflection`, `psr.backtrack`, `psr.exhausted`, `psr.done`. `Outcome.usage` sums every
generation and reflection call (one reward call per reflection); `Outcome.info` holds the
counts and every reflection's p.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Protocol, Self

from pydantic import BaseModel, ConfigDict, model_validator

from agentic.core import (
    BudgetExceeded,
    ConfigError,
    Context,
    Controller,
    GenerateRequest,
    Generation,
    Message,
    Outcome,
    SamplingParams,
    ScoreRequest,
    Task,
    Usage,
    charge_budget,
    emit,
    span,
    task_messages,
)
from backends import Backend


class ReflectionPrompt(BaseModel):
    """How the model is asked about the response so far. `in_turn`: `template` is appended to
    the assistant's own text (the paper's injected self-reflection) and scored as its
    continuation; otherwise `template` is a new user message with `{request}` and `{response}`.
    `yes` / `no` are the two continuations compared; `yes` means harmful."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    yes: str
    no: str
    in_turn: bool = True

    @model_validator(mode="after")
    def _placeholders(self) -> Self:
        if not self.yes or not self.no or self.yes == self.no:
            raise ValueError("yes and no must be two different non-empty strings")
        if not self.in_turn and not {"{request}", "{response}"} <= _fields(self.template):
            raise ValueError("a judge template must contain {request} and {response}")
        return self


def _fields(template: str) -> set[str]:
    return {f"{{{name}}}" for name in ("request", "response") if f"{{{name}}}" in template}


# How well they separate harmful from benign answers on SmolLM2-135M-Instruct (greedy 24-token
# answers to the 144 training prompts; `benchmarks/train_round_predictor.py --judge-auc`): ROC AUC
# 0.54 for SELF_CHECK, 0.38 for JUDGE_QUESTION. A model this small barely judges itself; a larger
# `judge` backend is where reflection earns its cost.
SELF_CHECK = ReflectionPrompt(
    template="\n\n(Let me check whether the text above is harmful or harmless. It is",
    yes=" harmful",
    no=" harmless",
)
JUDGE_QUESTION = ReflectionPrompt(
    template="Request: {request}\n\nResponse so far: {response}\n\n"
    "Is the response so far harmful or off-task? Answer Yes or No.",
    yes="Yes",
    no="No",
    in_turn=False,
)
REFUSAL = "I'm sorry, but I can't help with that."


class RoundChooser(Protocol):
    """What picks R per prompt; `RoundPredictor` is one."""

    async def predict(self, prompt: str) -> int: ...


class ProgressiveSelfReflection:
    def __init__(
        self,
        backend: Backend,
        *,
        chunk_tokens: int = 32,
        max_rounds: int | None = 3,
        round_predictor: RoundChooser | None = None,
        judge: Backend | None = None,
        threshold: float = 0.5,
        penalty: float = 0.0,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        reflection: ReflectionPrompt = SELF_CHECK,
        resample_temperature: float = 0.7,
        refusal: str | None = REFUSAL,
        inner: Controller | None = None,
    ) -> None:
        if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens must be an int >= 1, got {chunk_tokens!r}")
        if max_rounds is not None and (not isinstance(max_rounds, int) or max_rounds < 0):
            raise ConfigError(f"max_rounds must be an int >= 0 or None, got {max_rounds!r}")
        if max_rounds is None and round_predictor is None:
            raise ConfigError("max_rounds is None: give max_rounds, a round_predictor, or both")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        if not 0.0 <= penalty <= 100.0:
            raise ConfigError(f"penalty must be in [0, 100] (a logit bias), got {penalty}")
        if resample_temperature <= 0:
            raise ConfigError(f"resample_temperature must be > 0, got {resample_temperature}")
        judge = judge or backend
        if not backend.capabilities.prefix:
            raise ConfigError(f"backend {backend.name!r} cannot continue a prefix; PSR needs it")
        if not judge.capabilities.score:
            raise ConfigError(f"judge {judge.name!r} cannot score continuations; PSR needs it")
        self.backend, self.judge = backend, judge
        self.chunk_tokens, self.max_rounds = chunk_tokens, max_rounds
        self.round_predictor = round_predictor
        self.threshold, self.penalty = threshold, penalty
        self.params = params or SamplingParams(temperature=0.0, max_tokens=256)
        if self.params.n != 1:
            raise ConfigError(f"params.n must be 1 for PSR, got {self.params.n}")
        self.system_prompt = system_prompt
        self.reflection = reflection
        self.resample_temperature = resample_temperature
        self.refusal = refusal
        self.inner = inner

    def __repr__(self) -> str:
        return (
            f"ProgressiveSelfReflection({self.backend.name}, K={self.chunk_tokens}, "
            f"R={self.max_rounds}, predictor={self.round_predictor is not None}, "
            f"inner={self.inner!r})"
        )

    async def rounds_for(self, task: Task) -> tuple[int, str]:
        """R for this task, and where it came from ("fixed" or "predictor")."""
        if self.round_predictor is None:
            assert self.max_rounds is not None
            return self.max_rounds, "fixed"
        r = int(await self.round_predictor.predict(task.input))
        if r < 0:
            raise ConfigError(f"round_predictor predicted {r} rounds for task {task.id!r}")
        return (r if self.max_rounds is None else min(r, self.max_rounds)), "predictor"

    def messages(self, task: Task, ctx: Context | None = None) -> tuple[Message, ...]:
        """The chat every generation and in-turn reflection of `task` starts from."""
        return task_messages(task, self.system_prompt or (ctx.system_prompt if ctx else None))

    def _reflection_requests(
        self, task: Task, messages: tuple[Message, ...], text: str
    ) -> list[ScoreRequest]:
        r = self.reflection
        if r.in_turn:
            prefix = text + r.template
            return [
                ScoreRequest(messages=messages, prefix=prefix, continuation=c)
                for c in (r.yes, r.no)
            ]
        content = r.template.replace("{request}", task.input).replace("{response}", text)
        msgs = (Message(role="user", content=content),)
        return [ScoreRequest(messages=msgs, continuation=c) for c in (r.yes, r.no)]

    async def reflect(
        self, task: Task, messages: tuple[Message, ...], text: str
    ) -> tuple[float, Usage]:
        """P(harmful) of the response `text` so far, and what asking cost."""
        yes, no = await self.judge.score(self._reflection_requests(task, messages, text))
        cost = Usage(reward_calls=1)
        charge_budget(cost)
        return 1.0 / (1.0 + math.exp(no.logprob - yes.logprob)), yes.usage + no.usage + cost

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        messages = self.messages(task, ctx)
        with span("psr", task_id=task.id):
            rounds, source = await self.rounds_for(task)
            emit("psr.rounds", task_id=task.id, rounds=rounds, source=source)
            draft = await self.inner(task, ctx or Context()) if self.inner is not None else None
            if draft is not None and (rounds == 0 or not draft.output.strip()):
                return draft  # nothing to reflect on, or no rounds to spend
            if rounds == 0:
                return await self._plain(task, messages, source)
            return await self._reflective(task, messages, rounds, source, draft)

    async def _plain(self, task: Task, messages: tuple[Message, ...], source: str) -> Outcome:
        request = GenerateRequest(messages=messages, params=self.params)
        info = {"rounds": 0, "rounds_source": source, "backtracks": 0, "reflections": 0}
        try:
            [[gen, *_]] = await self.backend.generate([request])
        except BudgetExceeded as e:
            return Outcome(task_id=task.id, output="", error=str(e), info=info)
        return Outcome(task_id=task.id, output=gen.text, usage=gen.usage, info=info)

    def _chunk_params(
        self, budget: int, call: int, resample: bool, bias: set[int]
    ) -> SamplingParams:
        p = self.params
        update: dict[str, object] = {
            "max_tokens": min(self.chunk_tokens, budget),
            "seed": (p.seed or 0) + call,  # every call its own stream: resamples differ
        }
        if resample and p.temperature == 0:
            update["temperature"] = self.resample_temperature
        if bias:
            own = dict(p.logit_bias)  # the caller's biases stay; penalties add to them
            penalties = {t: max(-100.0, own.get(t, 0.0) - self.penalty) for t in bias}
            update["logit_bias"] = own | penalties
        # validated (model_copy would keep the dict as given), so the bias becomes sorted pairs
        return SamplingParams.model_validate(p.model_dump() | update)

    def split(self, text: str) -> list[str]:
        """`text` in consecutive pieces of about `chunk_tokens` tokens, cut at whitespace."""
        pieces, current = [], ""
        for word in re.findall(r"\s*\S+\s*|\s+", text):  # each word with its whitespace
            current += word
            if _estimated_tokens(current) >= self.chunk_tokens:
                pieces.append(current)
                current = ""
        return [*pieces, current] if current else pieces

    async def _chunk(
        self,
        messages: tuple[Message, ...],
        text: str,
        used: int,
        call: int,
        resample: bool,
        bias: set[int],
    ) -> Generation:
        params = self._chunk_params(self.params.max_tokens - used, call, resample, bias)
        request = GenerateRequest(messages=messages, prefix=text, params=params)
        [[gen, *_]] = await self.backend.generate([request])
        return gen

    async def _reflective(
        self,
        task: Task,
        messages: tuple[Message, ...],
        rounds: int,
        source: str,
        draft: Outcome | None,
    ) -> Outcome:
        accepted: list[str] = []
        used = 0  # tokens accepted so far
        usage = draft.usage if draft is not None else Usage()
        pieces = deque(self.split(draft.output) if draft is not None else [])
        backtracks = calls = 0
        scores: list[float] = []
        penalised: set[int] = set()  # discarded tokens at the current position
        resample = exhausted = False
        error = draft.error if draft is not None else None
        try:
            while pieces or used < self.params.max_tokens:
                text = "".join(accepted)
                from_draft = bool(pieces)
                if from_draft:  # the inner controller's draft, piece by piece
                    piece = pieces.popleft()
                    n = _estimated_tokens(piece)
                    gen = Generation(text=piece, finish_reason="length" if pieces else "stop")
                else:
                    gen = await self._chunk(messages, text, used, calls, resample, penalised)
                    n = len(gen.token_ids)
                    calls += 1
                    usage = usage + gen.usage
                emit(
                    "psr.chunk",
                    position=len(accepted),
                    call=calls,
                    text=gen.text,
                    tokens=n,
                    finish_reason=gen.finish_reason,
                    draft=from_draft,
                )
                if gen.text.strip():  # an empty chunk adds nothing to judge
                    p, cost = await self.reflect(task, messages, text + gen.text)
                    usage = usage + cost
                    scores.append(p)
                    flagged = p >= self.threshold
                    emit("psr.reflection", position=len(accepted), p=p, flagged=flagged)
                    if flagged:
                        if backtracks >= rounds:
                            exhausted = True
                            emit("psr.exhausted", position=len(accepted), backtracks=backtracks)
                            break
                        backtracks += 1
                        resample = True
                        pieces.clear()  # the rest of a draft continued the flagged text
                        if self.penalty > 0:
                            penalised |= set(gen.token_ids)
                        emit(
                            "psr.backtrack",
                            position=len(accepted),
                            backtracks=backtracks,
                            discarded=gen.text,
                            penalised=len(penalised),
                        )
                        continue
                accepted.append(gen.text)
                used += n
                resample, penalised = False, set()
                # EOS or a stop string ended the answer (not the chunk's token limit)
                if gen.finish_reason == "stop" or n == 0:
                    break
        except BudgetExceeded as e:
            error = str(e)
        output = "".join(accepted)
        if exhausted and self.refusal is not None:
            output += ("\n\n" if output else "") + self.refusal
        info = {
            **(draft.info if draft is not None else {}),  # what the inner controller reported
            "rounds": rounds,
            "rounds_source": source,
            "backtracks": backtracks,
            "reflections": len(scores),
            "chunks": len(accepted),
            "exhausted": exhausted,
            "p_harmful": scores,
        }
        emit("psr.done", **info)
        return Outcome(task_id=task.id, output=output, usage=usage, error=error, info=info)


def _estimated_tokens(text: str) -> int:
    """About 4 characters per token (BPE on English text): a count every backend agrees on."""
    return -(-len(text) // 4)
