"""`EntropyAdaptiveDecoding`: generate with a small model and hand the text to a larger one
while the rolling entropy of the next-token distributions is high, and back when it falls.

Paper: T. Simonds, "Entropy Adaptive Decoding: Dynamic Model Switching for Efficient
Inference", 2025 (arXiv:2502.06833). Its symbols in this file:

- M_S, M_L: `small`, `large`, any two `Backend`s (local or remote). The hand-off is by text:
  the answer so far is the `GenerateRequest.prefix` on whichever model is active, so the two
  may have different tokenizers and chat templates (SmolLM2-135M-Instruct ↔ Gemma-3-270M).
- H_t, the entropy of the distribution token t was drawn from (before temperature): the
  backend's `Generation.entropies` (exact for local backends; derived from the top-k logprobs
  for remote ones, which is why every request asks for `logprobs`).
- w, the rolling window (the paper uses w = 5): `window`. H̄_t, the mean of the last w
  entropies: `_Decoder.window`. The history is one sequence across both models.
- τ: `threshold`. The switching rule: while M_S is active and H̄_t > τ, token t is given to
  M_L; while M_L is active and H̄_t ≤ τ, M_S takes over after token t.
- The paper's stability constraint (a minimum run in the large model before it may hand
  back, against oscillation): `min_large_tokens`.
- Which model is monitored: the one generating. The paper computes H_t from the logits of
  the model producing token t, so while M_L is active its own entropies fill the window and it
  hands back once it is confident (M_S is not run alongside to watch).

Where this deviates, and why:
- Units: entropies are in nats (the framework's unit); the paper reports bits. A threshold of
  τ bits is `threshold = τ * ln 2`.
- Granularity: a model call per token would be slow through a batched backend, so the active
  model generates `chunk_tokens` at a time and the rule is replayed token by token on the
  chunk's entropies. At the first token where the rule fires the chunk is cut: on a hand-off
  to M_L that token is dropped and M_L generates that position itself (the uncertain choice is
  the large model's to make); on the hand-back M_L's token is kept. Cutting at a token
  boundary uses the protocol only: the active backend is asked again for exactly the kept
  number of tokens (same request, `max_tokens=k`), which reproduces them for greedy or seeded
  sampling, so the text matches the backend's own detokenization and a recorded run replays.
  Dropped and re-asked tokens count in `Outcome.usage`, not in the output's token counts.
- The start: no decision is taken on fewer than w entropies (the paper leaves the start open;
  smoothing is its reason for the window), so the first w - 1 tokens are always M_S's. An
  answer's first token is often its most uncertain; deciding on it alone would hand almost
  every answer to M_L from the start.

`max_tokens` bounds the tokens in the output, counted in each model's own tokens. EOS from
either model ends the answer, unless that EOS was the token the rule handed to M_L.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from agentic.core import (
    BudgetExceeded,
    ConfigError,
    Context,
    GenerateRequest,
    Generation,
    Message,
    NotSupported,
    Outcome,
    SamplingParams,
    Task,
    Usage,
    emit,
    task_messages,
)
from backends import Backend

Role = Literal["small", "large"]
End = Literal["switch", "eos", "stop", "max_tokens", "budget", "empty"]
Rendered = str | tuple[Message, ...]
PromptFormat = str | Callable[[str, str | None], Rendered]

PLAIN_TEMPLATE = "{system}{input}\n\n"
"""The prompt for a model without a chat template (a base model): `{system}` becomes the
system prompt and a blank line, or nothing."""


def resolve_format(
    fmt: PromptFormat, backend: Backend, field: str
) -> Callable[[str, str | None], Rendered]:
    """How a task reaches one backend: `(task input, system prompt) -> messages or prompt`.

    `"chat"`: system and user messages (the backend applies its chat template). A string with
    `{input}` (and optionally `{system}`): a raw prompt built from that template. `"auto"`:
    `PLAIN_TEMPLATE` when the backend has a local tokenizer without a chat template, else chat.
    A callable is used as it is."""
    if callable(fmt):
        return fmt
    if fmt == "auto":
        tokenizer = getattr(backend, "tokenizer", None)
        plain = tokenizer is not None and not getattr(tokenizer, "chat_template", None)
        fmt = PLAIN_TEMPLATE if plain else "chat"
    if fmt == "chat":
        return task_messages
    if isinstance(fmt, str) and "{input}" in fmt:
        template = fmt
        return lambda text, system: template.format(
            input=text, system=f"{system}\n\n" if system else ""
        )
    raise ConfigError(
        f"{field} must be 'auto', 'chat', a template containing '{{input}}' or a callable; "
        f"got {fmt!r}"
    )


def request_for(rendered: Rendered, prefix: str, params: SamplingParams) -> GenerateRequest:
    if isinstance(rendered, str):
        return GenerateRequest(prompt=rendered, prefix=prefix, params=params)
    return GenerateRequest(messages=rendered, prefix=prefix, params=params)


class Segment(BaseModel):
    """A stretch of the answer written by one model. `entropy` is the rolling mean that ended
    it when a switch did; `end` says what ended it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Role
    backend: str
    text: str
    tokens: int
    entropy: float | None = None
    end: End = "switch"


class _Decoder:
    """The state of one answer: its segments, the entropy window and who is active."""

    def __init__(self, window: int) -> None:
        self.window: deque[float] = deque(maxlen=window)
        self.active: Role = "small"
        self.run = 0  # tokens kept from the active model since it took over
        self.texts: list[str] = [""]
        self.tokens: list[int] = [0]
        self.models: list[Role] = ["small"]
        self.ended: list[tuple[float | None, End]] = []

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def kept(self) -> int:
        return sum(self.tokens)

    def add(self, text: str, tokens: int) -> None:
        self.texts[-1] += text
        self.tokens[-1] += tokens
        self.run += tokens

    def switch(self, mean: float) -> None:
        self.ended.append((mean, "switch"))
        self.active = "large" if self.active == "small" else "small"
        self.run = 0
        self.texts.append("")
        self.tokens.append(0)
        self.models.append(self.active)

    def truncate(self, length: int) -> None:
        """Cut the answer to `length` characters (a stop string that spans chunks)."""
        cut = len(self.text) - length
        while cut > 0:
            take = min(cut, len(self.texts[-1]))
            self.texts[-1] = self.texts[-1][: len(self.texts[-1]) - take]
            cut -= take
            if cut > 0:
                for stack in (self.texts, self.tokens, self.models):
                    stack.pop()
                self.ended.pop()

    def segments(self, names: dict[Role, str], end: End) -> list[Segment]:
        ends = [*self.ended, (None, end)]
        return [
            Segment(model=m, backend=names[m], text=t, tokens=n, entropy=e, end=why)
            for m, t, n, (e, why) in zip(self.models, self.texts, self.tokens, ends, strict=True)
        ]


class EntropyAdaptiveDecoding:
    """`await EntropyAdaptiveDecoding(small, large, threshold=1.0)(task, ctx) -> Outcome`.

    `Outcome.output` is the whole answer; `Outcome.info` holds `large_token_share` (the share
    of the answer's tokens written by the large model), `large_char_share`, per-model `tokens`
    and `chars` in the answer, `generated_tokens` (all each model produced, with the tokens
    dropped at a cut and the re-asked ones), `switches` and the `segments` (which model, text,
    tokens, entropy at the switch, what ended it). Each segment is also emitted as an
    `ead.segment` event, and the totals as `ead.result`. `threshold` is in nats and depends on
    the pair of models: sweep it on held-out tasks (`benchmarks/ead_eval.py`). `small_prompt`
    and `large_prompt` say how each backend sees the task (see `resolve_format`); `params`
    applies to both (greedy by default; its `max_tokens` is ignored, the controller's own
    `max_tokens` bounds the answer)."""

    def __init__(
        self,
        small: Backend,
        large: Backend,
        *,
        window: int = 5,
        threshold: float = 1.0,
        chunk_tokens: int = 8,
        max_tokens: int = 256,
        min_large_tokens: int = 8,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        small_prompt: PromptFormat = "auto",
        large_prompt: PromptFormat = "auto",
    ) -> None:
        if small is large:
            raise ConfigError("small and large are the same backend object: EAD needs two models")
        for field, value, least in (
            ("window", window, 1),
            ("chunk_tokens", chunk_tokens, 1),
            ("max_tokens", max_tokens, 1),
            ("min_large_tokens", min_large_tokens, 0),
        ):
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"{field} must be an integer >= {least}, got {value!r}")
        if not isinstance(threshold, int | float) or math.isnan(threshold) or threshold < 0:
            raise ConfigError(f"threshold must be >= 0 (nats), got {threshold!r}")
        params = params or SamplingParams(temperature=0.0)
        if params.n != 1:
            raise ConfigError(f"params.n must be 1 for EAD, got {params.n}")
        if params.temperature > 0 and params.seed is None:
            raise ConfigError(
                "params.seed is required when params.temperature > 0: a chunk cut at a switch "
                "point is re-asked from the backend and must come back the same"
            )
        for field, backend in (("small", small), ("large", large)):
            if not backend.capabilities.prefix:
                raise ConfigError(f"{field} backend {backend.name!r} cannot continue a prefix")
        self.backends: dict[Role, Backend] = {"small": small, "large": large}
        self.window, self.threshold = window, float(threshold)
        self.chunk_tokens, self.max_tokens = chunk_tokens, max_tokens
        self.min_large_tokens = min_large_tokens
        self.params, self.system_prompt = params, system_prompt
        self.formats = {
            "small": resolve_format(small_prompt, small, "small_prompt"),
            "large": resolve_format(large_prompt, large, "large_prompt"),
        }
        # local backends report exact entropies anyway; remote ones need the top-k to derive them
        self.logprobs: dict[Role, int | None] = {
            r: params.logprobs if params.logprobs else min(20, b.capabilities.top_logprobs) or None
            for r, b in self.backends.items()
        }

    def __repr__(self) -> str:
        return (
            f"EntropyAdaptiveDecoding({self.backends['small'].name} <-> "
            f"{self.backends['large'].name}, window={self.window}, threshold={self.threshold})"
        )

    def _request(
        self, role: Role, task: Task, system: str | None, prefix: str, n: int
    ) -> GenerateRequest:
        params = self.params.model_copy(update={"max_tokens": n, "logprobs": self.logprobs[role]})
        return request_for(self.formats[role](task.input, system), prefix, params)

    async def _generate(self, role: Role, request: GenerateRequest) -> Generation:
        [[gen, *_]] = await self.backends[role].generate([request])
        return gen

    def _scan(self, state: _Decoder, entropies: tuple[float, ...]) -> tuple[int, float | None]:
        """Feed the chunk's entropies to the window; return how many of its tokens to keep and
        the rolling mean if the rule fired (None: keep the whole chunk, no switch)."""
        for i, h in enumerate(entropies):
            state.window.append(h)
            if len(state.window) < self.window:
                continue
            mean = sum(state.window) / self.window
            if state.active == "small":
                if mean > self.threshold:
                    return i, mean
            elif mean <= self.threshold and state.run + i + 1 >= self.min_large_tokens:
                return i + 1, mean
        return len(entropies), None

    async def _kept(
        self,
        role: Role,
        request: GenerateRequest,
        gen: Generation,
        keep: int,
        usage: dict[Role, Usage],
    ) -> tuple[Generation, int, bool]:
        """The first `keep` tokens of `gen` as a generation of their own, their count, and
        whether they end the answer. A cut inside the chunk is re-asked from the backend with
        `max_tokens=keep`, so the text is the backend's own detokenization of those tokens."""
        if keep == len(gen.token_ids):
            return gen, keep, gen.finish_reason == "stop"
        if keep == 0:
            return Generation(text=""), 0, False
        params = request.params.model_copy(update={"max_tokens": keep})
        again = await self._generate(role, request.model_copy(update={"params": params}))
        usage[role] = usage[role] + again.usage
        if again.token_ids != gen.token_ids[:keep]:
            emit("ead.diverged", model=role, expected=keep, got=len(again.token_ids))
        return again, len(again.token_ids), again.finish_reason == "stop"

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        system = self.system_prompt or (ctx.system_prompt if ctx else None)
        state = _Decoder(self.window)
        usage: dict[Role, Usage] = {"small": Usage(), "large": Usage()}
        end: End = "max_tokens"
        error = None
        try:
            while state.kept < self.max_tokens:
                role = state.active
                room = min(self.chunk_tokens, self.max_tokens - state.kept)
                request = self._request(role, task, system, state.text, room)
                gen = await self._generate(role, request)
                usage[role] = usage[role] + gen.usage
                entropies = gen.entropies
                if entropies is None or len(entropies) != len(gen.token_ids):
                    raise NotSupported(
                        f"backend {self.backends[role].name!r} returned no per-token entropies; "
                        "EAD needs a backend that reports logprobs"
                    )
                keep, mean = self._scan(state, entropies)
                piece, keep, done = await self._kept(role, request, gen, keep, usage)
                before = len(state.text)
                state.add(piece.text, keep)
                if self._stop_hit(state, before):
                    end = "stop"
                    break
                if done:
                    end = "eos" if piece.stop_reason is None else "stop"
                    break
                if mean is not None and state.kept < self.max_tokens:
                    state.switch(mean)
                elif not gen.token_ids:
                    end = "empty"  # the backend has no room left (context full)
                    break
        except BudgetExceeded as e:
            end, error = "budget", str(e)
        return self._outcome(task, state, usage, end, error)

    def _stop_hit(self, state: _Decoder, before: int) -> bool:
        """A stop string may straddle two chunks, where neither backend call saw it whole."""
        stops = self.params.stop
        if not stops:
            return False
        text = state.text
        start = max(0, before - max(len(s) for s in stops) + 1)
        hits = [i for s in stops if (i := text.find(s, start)) >= 0]
        if not hits:
            return False
        state.truncate(min(hits))
        return True

    def _outcome(
        self, task: Task, state: _Decoder, usage: dict[Role, Usage], end: End, error: str | None
    ) -> Outcome:
        names: dict[Role, str] = {r: b.name for r, b in self.backends.items()}
        segments = state.segments(names, end)
        for s in segments:
            emit("ead.segment", **s.model_dump())
        tokens = {r: sum(s.tokens for s in segments if s.model == r) for r in names}
        chars = {r: sum(len(s.text) for s in segments if s.model == r) for r in names}
        output = state.text
        info: dict[str, Any] = {
            "large_token_share": tokens["large"] / max(1, sum(tokens.values())),
            "large_char_share": chars["large"] / max(1, len(output)),
            "tokens": tokens,
            "chars": chars,
            "generated_tokens": {r: u.completion_tokens for r, u in usage.items()},
            "switches": len(state.ended),
            "segments": [s.model_dump() for s in segments],
        }
        emit("ead.result", **{k: v for k, v in info.items() if k != "segments"})
        return Outcome(
            task_id=task.id,
            output=output,
            usage=usage["small"] + usage["large"],
            error=error,
            info=info,
        )
