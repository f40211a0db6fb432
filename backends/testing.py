"""Test doubles: backends whose answers the caller decides, for tests, docs and notebooks.

In the spirit of pydantic-ai's `TestModel` / `FunctionModel`, and real `BaseBackend`s: every
call goes through `BaseBackend.generate`, so budgets, events, tracing and record/replay work
exactly as with a model. Use them to test the mechanics of a controller or a search, never as
the only evidence for a feature (each algorithm also runs on a real model).

- `ScriptedBackend` replays scripted outputs: a list of texts in order, or a rule
  `(prefix, j) -> (text, ends)` that continues a prefix step by step.
- `FunctionBackend` asks a function of yours, `(request) -> text or Generation`, for each sample.

Text answers are one token per character: `params.max_tokens` cuts them (`finish_reason`
"length"), the first `params.stop` string found ends them (`stop_reason`), token ids are
0..len-1, and usage counts one completion token per character and, on a request's first sample
only, one model call and one prompt token per character of the prompt and prefix.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Literal

from agentic.core import ConfigError, GenerateRequest, Generation, Message, Usage
from backends.base import BaseBackend, Capabilities

__all__ = ["AnswerFunction", "FunctionBackend", "Rule", "ScriptedBackend", "text_generation"]

Rule = Callable[[str, int], tuple[str, bool]]
"""`(prefix, j) -> (text, ends)`: the continuation of `prefix` for sample j, and whether it
ends the answer. j is the sample's index plus 1000 times the request's seed (0 if unseeded)."""

Answer = str | Generation
AnswerFunction = Callable[[GenerateRequest], Answer | Awaitable[Answer]]


def _chars(text_or_messages: str | Sequence[Message]) -> int:
    if isinstance(text_or_messages, str):
        return len(text_or_messages)
    return sum(len(m.content) for m in text_or_messages)


def text_generation(req: GenerateRequest, text: str, j: int, ends: bool = True) -> Generation:
    """`text` as sample `j` of `req`, one token per character (see the module docstring);
    it finishes with "stop" if `ends`, else with "length"."""
    p = req.params
    stop_reason = None
    finish: Literal["stop", "length"] = "stop" if ends else "length"
    for s in p.stop:
        if s in text:
            text, stop_reason, finish = text[: text.index(s)], s, "stop"
            break
    if len(text) > p.max_tokens:
        text, stop_reason, finish = text[: p.max_tokens], None, "length"
    prompt = req.messages if req.messages is not None else req.prompt or ""
    return Generation(
        text=text,
        token_ids=tuple(range(len(text))),
        finish_reason=finish,
        stop_reason=stop_reason,
        usage=Usage(
            prompt_tokens=_chars(prompt) + len(req.prefix) if j == 0 else 0,
            completion_tokens=len(text),
            model_calls=1 if j == 0 else 0,
        ),
    )


def _replay(outputs: list[str]) -> Rule:
    it = iter(outputs)

    def rule(prefix: str, j: int) -> tuple[str, bool]:
        try:
            return next(it), True
        except StopIteration:
            raise RuntimeError(
                f"ScriptedBackend: all {len(outputs)} scripted outputs are used up"
            ) from None

    return rule


class ScriptedBackend(BaseBackend):
    """Replays a script; every request it gets is kept in `requests`.

    Args:
        script: the outputs, in order, one per sample (each ends the answer; running out
            raises), or a `Rule` `(prefix, j) -> (text, ends)` that continues the request's
            `prefix`, as step-wise search asks a model to.
        name: the backend's name in events and errors.
        capabilities: what it claims to support (default: continuing a `prefix`).

    Example:
        ```python
        backend = ScriptedBackend(["4", "5"])
        await backend.generate([GenerateRequest.chat("2 + 2?")])  # "4", then "5"
        steps = ScriptedBackend(lambda prefix, j: (f"step {prefix.count('|')}|", j % 2 == 1))
        ```
    """

    def __init__(
        self,
        script: Rule | Iterable[str],
        *,
        name: str = "scripted",
        capabilities: Capabilities | None = None,
    ) -> None:
        if isinstance(script, str):
            raise ConfigError("ScriptedBackend takes a list of outputs or a rule, not one string")
        self.rule: Rule = script if callable(script) else _replay(list(script))
        self.name = name
        self.capabilities = capabilities or Capabilities(prefix=True)
        self.requests: list[GenerateRequest] = []

    def _one(self, req: GenerateRequest, j: int) -> Generation:
        text, ends = self.rule(req.prefix, (req.params.seed or 0) * 1000 + j)
        return text_generation(req, text, j, ends)

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.requests += requests
        return [[self._one(r, j) for j in range(r.params.n)] for r in requests]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return _chars(text_or_messages)


class FunctionBackend(BaseBackend):
    """Answers each sample with `fn(request)`: a text (handled as the module docstring says)
    or a whole `Generation`, returned as is (give it a `usage` to be charged for). `fn` may be
    async; it is called once per sample, `params.n` times for a request. Every request is kept
    in `requests`.

    Args:
        fn: `(GenerateRequest) -> str | Generation`, or an async function returning either.
        name: the backend's name in events and errors.
        capabilities: what it claims to support (default: continuing a `prefix`).

    Example:
        ```python
        def answer(request: GenerateRequest) -> str:
            question = request.messages[-1].content
            return "4" if "2 + 2" in question else "I don't know"

        backend = FunctionBackend(answer)
        ```
    """

    def __init__(
        self,
        fn: AnswerFunction,
        *,
        name: str = "function",
        capabilities: Capabilities | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.capabilities = capabilities or Capabilities(prefix=True)
        self.requests: list[GenerateRequest] = []

    async def _one(self, req: GenerateRequest, j: int) -> Generation:
        answer = self.fn(req)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, Generation):
            return answer
        if isinstance(answer, str):
            return text_generation(req, answer, j)
        raise TypeError(
            f"FunctionBackend: the function returned {type(answer).__name__}, "
            "expected str or Generation"
        )

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.requests += requests
        return [[await self._one(r, j) for j in range(r.params.n)] for r in requests]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return _chars(text_or_messages)
