"""`echo:` — a deterministic, model-free agentic backend, and the template for writing your own.

Copy this package to add a backend to agentic without changing agentic itself:

1. Subclass `backends.base.BaseBackend` and set `name` and `capabilities` (what the backend can
   do: logprobs, prefix continuation, scoring, ...; controllers read them to pick a strategy).
2. Implement `async _generate(requests) -> list[list[Generation]]`: one list per request with
   `request.params.n` generations, each carrying its `Usage` (count `model_calls=1` once per
   request, on its first sample, so budgets count calls, not samples). Honour
   `params.max_tokens` (`finish_reason="length"` when cut) and `params.stop`
   (`finish_reason="stop"`, `stop_reason` = the stop string that ended it).
3. Implement `count_tokens(text_or_messages)` with the backend's own tokenizer.
4. Optionally implement `async _score(requests)` (logprobs of a given continuation; set
   `Capabilities(score=True)`), `stream(request)` (token streaming) and `aclose()` (release
   clients, engines, GPU memory).
5. Expose a factory `(spec: str, **options) -> Backend` and register it in `pyproject.toml`
   under the entry-point group `agentic.backends`; the entry-point name is the URI scheme.

Do not override `generate` / `score`: `BaseBackend` implements them around your `_generate` /
`_score`. It validates the input (a non-empty list of requests of the right type, with clear
`ConfigError`s), checks the active `Budget` before the call and charges the returned `Usage`
after it (so `BudgetExceeded` stops a search over your backend like any other), and emits one
`backend.generate` / `backend.score` event per request holding the request, its stable key and
the results. Those events are what a `JSONLSink` records and what `ReplayBackend` serves back,
so every run over your backend can be replayed offline, bit-identically, with no model.

This backend answers each request with the content of its last message (or the raw `prompt`):

- `echo:` or `echo:plain` echoes it unchanged; `echo:upper` upper-cases it.
- `request.prefix` is the start of the answer already written: when the echo starts with the
  prefix, the generation is the rest of the echo (so `prefix + text` is the echo); otherwise
  the whole echo is returned.
- Its "tokenizer" splits on whitespace: `max_tokens` keeps that many words, `count_tokens` and
  `Usage` count words. `n` returns that many identical generations.

It is useful as a test double: fast, deterministic and dependency-free beyond agentic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from agentic.core import ConfigError, GenerateRequest, Generation, Message, Usage
from backends.base import BaseBackend, Capabilities

__all__ = ["MODES", "EchoBackend", "from_uri"]
__version__ = "0.1.0"

MODES: dict[str, Callable[[str], str]] = {
    "plain": lambda text: text,
    "upper": str.upper,
}

_WORD = re.compile(r"\S+")


def _words(text: str) -> int:
    return len(text.split())


def _first_words(text: str, n: int) -> tuple[str, bool]:
    """The text up to the end of its `n`-th word, and whether anything was cut."""
    for i, m in enumerate(_WORD.finditer(text), start=1):
        if i == n:
            rest = text[m.end() :]
            return text[: m.end()], bool(rest.strip())
    return text, False


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Position and value of the earliest stop string in `text` (the longest at a tie)."""
    hits = [(i, -len(s), s) for s in stops if (i := text.find(s)) >= 0]
    if not hits:
        return None
    i, _, s = min(hits)
    return i, s


class EchoBackend(BaseBackend):
    """Answers every request with its last message (or prompt), transformed by `mode`."""

    capabilities = Capabilities(prefix=True, max_batch=None)

    def __init__(self, mode: str = "plain") -> None:
        mode = mode or "plain"
        if mode not in MODES:
            raise ConfigError(
                f"unknown echo backend spec {mode!r}; allowed: "
                + ", ".join(f"echo:{m}" for m in MODES)
                + " (or echo: for plain)"
            )
        self.mode = mode
        self.name = f"echo:{mode}"
        self._transform = MODES[mode]

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        return [self._answer(r) for r in requests]

    def _answer(self, request: GenerateRequest) -> list[Generation]:
        # a GenerateRequest holds exactly one of `prompt` and (non-empty) `messages`
        if request.prompt is not None:
            source = request.prompt
            prompt_tokens = self.count_tokens(request.prompt)
        else:
            messages = request.messages or ()
            source = messages[-1].content
            prompt_tokens = self.count_tokens(messages)
        prompt_tokens += self.count_tokens(request.prefix)

        text = self._transform(source)
        if request.prefix and text.startswith(request.prefix):
            text = text[len(request.prefix) :]

        params = request.params
        stop_reason: str | None = None
        hit = _first_stop(text, params.stop)
        if hit is not None:
            text, stop_reason = text[: hit[0]], hit[1]
        text, cut = _first_words(text, params.max_tokens)
        if cut:
            stop_reason = None  # the length limit came before the stop string

        return [
            Generation(
                text=text,
                finish_reason="length" if cut else "stop",
                stop_reason=stop_reason,
                usage=Usage(
                    prompt_tokens=prompt_tokens if j == 0 else 0,
                    completion_tokens=_words(text),
                    model_calls=1 if j == 0 else 0,
                ),
            )
            for j in range(params.n)
        ]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        """Whitespace-separated words: this backend's whole "tokenizer"."""
        if isinstance(text_or_messages, str):
            return _words(text_or_messages)
        return sum(_words(m.content) for m in text_or_messages)


def from_uri(spec: str, **options: Any) -> EchoBackend:
    """The `agentic.backends` entry point: `echo:`, `echo:plain` or `echo:upper`."""
    if options:
        raise ConfigError(f"echo backend takes no options, got {', '.join(sorted(options))}")
    return EchoBackend(spec)
