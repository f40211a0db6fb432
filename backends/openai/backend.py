"""`OpenAIBackend`: any OpenAI-compatible server (vLLM, llama.cpp, a hosted API) behind `Backend`.

URI: `openai:http://HOST:PORT/v1#MODEL` (the model may be left out when the server has one).

How each request travels:
- `messages` go to `/chat/completions`; a raw `prompt` goes to `/completions`.
- A `prefix` (a partial assistant turn to continue) uses the server's own option where it has
  one (vLLM: `continue_final_message`); otherwise the chat template is rendered locally with
  `tokenizer=` and sent as a raw completion. Without either, `NotSupported` says so.
- `n` samples: servers that return fewer choices than asked (llama.cpp's returns one) get one
  more request per missing sample, each with its own seed (`seed + j`) when a seed is set.
- Logprobs and top-k logprobs map into `Generation`; per-token entropy is derived from them.
- `response_format` uses the server's own structured-output option (`wire.structured_body`:
  vLLM takes JSON schemas, regexes and grammars; llama.cpp JSON schemas on chat and GBNF grammars;
  other servers JSON schemas on chat); one the server cannot do raises `NotSupported` before
  anything is sent. `params.logit_bias` is sent as OpenAI's `logit_bias` (ids as strings).
- `top_k` and `min_p` are not OpenAI's: they are sent only when set (vLLM's and llama.cpp's
  servers take them); unset, llama-cpp-python's server uses its own top_k 40 and min_p 0.05.
- `score()` needs prompt logprobs: vLLM's `prompt_logprobs` over exact token ids. Servers without
  it raise `NotSupported`, and `capabilities.score` says so beforehand.

The server kind is probed once at construction (`GET /models`, retried like any request: a server
still starting answers 503) unless `server=` and `model=` are given. Transport, retries, timeouts
(`read_timeout` between reads, `attempt_timeout` for a whole attempt) and the API key are
`http_client.RetryingClient`'s business; so is a 200 answer without the fields the endpoint
promises (no `choices`, a choice that is not an object): it is retried, and names the URL and
what was missing when it keeps coming. Credentials
in the URL (`http://user:KEY@host/v1`, `?api_key=KEY`) are used but never shown: the backend's
`name`, its errors and its events carry the URL through `redact_uri`.
"""

from __future__ import annotations

# Slightly over 400 lines: the request building, response checking and error naming of one wire
# protocol read best together; the wire shapes are in wire.py, retries in http_client.py.
import asyncio
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from agentic.core import (
    ConfigError,
    GenerateRequest,
    Generation,
    Message,
    NotSupported,
    ScoreRequest,
    ScoreResult,
    TopLogprob,
    Usage,
    check_budget,
    redact_uri,
)
from backends.base import BaseBackend, Capabilities
from backends.openai.http_client import RetryingClient
from backends.openai.wire import (
    SHAPE_ERRORS,
    StreamedChoice,
    answer_choices,
    chat_logprobs,
    completion_logprobs,
    messages_json,
    model_list,
    shape_problem,
    structured_body,
    token_list,
)
from backends.prompts import render_text

Server = Literal["vllm", "llama.cpp", "openai"]

# how `GET /models` tells the servers apart
_OWNERS: dict[str, Server] = {"vllm": "vllm", "me": "llama.cpp", "llamacpp": "llama.cpp"}


class OpenAIBackend(BaseBackend):
    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        server: Server | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | Path | Any | None = None,
        max_concurrency: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        attempt_timeout: float | None = None,
        max_retries: int = 6,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        name: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url must start with http:// or https://, got {redact_uri(base_url)!r}"
            )
        if server is not None and server not in get_args(Server):
            raise ConfigError(f"server must be one of {get_args(Server)}, got {server!r}")
        self.http = RetryingClient(
            base_url,
            api_key=api_key if api_key is not None else os.environ.get(api_key_env) or None,
            max_concurrency=max_concurrency,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempt_timeout=attempt_timeout,
            max_retries=max_retries,
            backoff=backoff,
            backoff_max=backoff_max,
        )
        if model is None or server is None:
            model, server = self._probe(model, server)
        self.model = model
        self.server: Server = server
        self.name = name or redact_uri(f"openai:{self.http.base_url}#{model}")
        self.http.name = self.name
        self.tokenizer = self._load_tokenizer(tokenizer)
        vllm = server == "vllm"
        self.capabilities = Capabilities(
            logprobs=True,
            top_logprobs=20,
            prefix=vllm or self.tokenizer is not None,
            score=vllm,
            seed=True,
            streaming=True,
            structured_output=True,
            max_batch=max_concurrency,
        )

    async def ping(self) -> bool:
        """Whether the server answers `GET /models` now (one try, two seconds)."""
        return await self.http.ping()

    def __repr__(self) -> str:
        url = redact_uri(self.http.base_url)
        return f"OpenAIBackend({url!r}, model={self.model!r}, server={self.server!r})"

    def _probe(self, model: str | None, server: Server | None) -> tuple[str, Server]:
        data = self.http.request_sync("GET", "models", parse=model_list)
        if model is None:
            if not data:
                raise ConfigError(
                    f"{redact_uri(self.http.base_url)}/models lists no model: give one as #MODEL"
                )
            model = str(data[0]["id"])
        if server is None:
            entry = next((d for d in data if d.get("id") == model), data[0] if data else {})
            server = _OWNERS.get(str(entry.get("owned_by", "")), "openai")
        return model, server

    @staticmethod
    def _load_tokenizer(tokenizer: str | Path | Any | None) -> Any:
        if tokenizer is None or not isinstance(tokenizer, str | Path):
            return tokenizer
        from transformers import AutoTokenizer

        if not Path(tokenizer).exists():
            raise ConfigError(f"tokenizer path does not exist: {tokenizer}")
        return AutoTokenizer.from_pretrained(str(tokenizer))

    # ---- request bodies ---------------------------------------------------------------------

    def _sampling(self, req: GenerateRequest, n: int, seed: int | None) -> dict[str, Any]:
        p = req.params
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "n": n,
        }
        # only sent when set: hosted APIs reject parameters they do not know
        if p.top_k:
            body["top_k"] = p.top_k
        if p.min_p:
            body["min_p"] = p.min_p
        if seed is not None:
            body["seed"] = seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.ignore_eos:
            body["ignore_eos"] = True
        if p.logit_bias:
            body["logit_bias"] = {str(t): b for t, b in p.logit_bias}
        if self.server == "vllm":
            body["return_token_ids"] = True
            if p.logprobs is not None:
                body["return_tokens_as_token_ids"] = True
        return body

    def render(self, req: GenerateRequest | ScoreRequest) -> str:
        """The prompt text the model sees, chat template applied locally, prefix appended."""
        if req.messages is not None and self.tokenizer is None:
            raise NotSupported(
                f"{self.name}: continuing a prefix on a {self.server} server needs the chat "
                "template rendered locally: pass tokenizer=PATH (an HF tokenizer folder)"
            )
        return render_text(self.tokenizer, req, self.name) + req.prefix

    def _route(self, req: GenerateRequest, n: int, seed: int | None) -> tuple[str, dict[str, Any]]:
        path, body = self._endpoint(req, n, seed)
        if req.response_format is not None:
            chat = path.startswith("chat")
            body |= structured_body(req.response_format, self.server, chat, self.name)
        return path, body

    def _endpoint(
        self, req: GenerateRequest, n: int, seed: int | None
    ) -> tuple[str, dict[str, Any]]:
        body = self._sampling(req, n, seed)
        k = req.params.logprobs
        if req.messages is not None and (not req.prefix or self.server == "vllm"):
            body["messages"] = messages_json(req.messages)
            if req.prefix:
                body["messages"].append({"role": "assistant", "content": req.prefix})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            if k is not None:
                body["logprobs"] = True
                body["top_logprobs"] = k
            return "chat/completions", body
        body["prompt"] = self.render(req)
        if k is not None:
            body["logprobs"] = k
        return "completions", body

    # ---- answers ----------------------------------------------------------------------------

    def _generation(
        self, choice: dict[str, Any], chat: bool, req: GenerateRequest, usage: Usage
    ) -> Generation:
        k = req.params.logprobs
        if chat:
            text = (choice.get("message") or {}).get("content") or ""
            parsed = chat_logprobs(choice.get("logprobs"), k or 0)
        else:
            text = choice.get("text") or ""
            parsed = completion_logprobs(choice.get("logprobs"), k or 0)
        ids = choice.get("token_ids") or parsed.ids
        stop_reason = choice.get("stop_reason")
        return Generation(
            text=text,
            token_ids=tuple(ids),
            token_logprobs=tuple(parsed.logprobs) if k is not None else None,
            top_logprobs=tuple(parsed.tops) if k else None,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            usage=usage,
        )

    def _answer(
        self, data: Any, chat: bool, req: GenerateRequest
    ) -> tuple[list[Generation], int, int]:
        """The generations of one answer, with its prompt and completion token totals."""
        choices, u = answer_choices(data)
        gens = []
        for i, c in enumerate(choices):
            try:
                gens.append(self._generation(c, chat, req, Usage()))
            except SHAPE_ERRORS as e:
                raise shape_problem(e, f"choices[{i}]") from None
        try:
            return gens, int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        except SHAPE_ERRORS as e:
            raise shape_problem(e, "usage") from None

    async def _call(self, req: GenerateRequest, n: int, seed: int | None) -> list[Generation]:
        path, body = self._route(req, n, seed)
        chat = path.startswith("chat")
        t0 = time.monotonic()
        gens, prompt_tokens, completion_total = await self.http.post(
            path, body, parse=lambda data: self._answer(data, chat, req)
        )
        seconds = time.monotonic() - t0
        # the server reports one total; per-sample counts come from the tokens where known
        counts = [len(g.token_ids) or len(g.token_logprobs or ()) for g in gens]
        if len(gens) == 1 or not all(counts):
            share, extra = divmod(completion_total, max(len(gens), 1))
            counts = [share + (extra if j == 0 else 0) for j in range(len(gens))]
        return [
            g.model_copy(
                update={
                    "usage": Usage(
                        prompt_tokens=prompt_tokens if j == 0 else 0,
                        completion_tokens=counts[j],
                        model_calls=1 if j == 0 else 0,
                        seconds=seconds if j == 0 else 0.0,
                    )
                }
            )
            for j, g in enumerate(gens)
        ]

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        if request.params.n != 1:
            raise ConfigError(f"stream() takes n=1, got n={request.params.n}")
        check_budget()
        path, body = self._route(request, 1, request.params.seed)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        chat = path.startswith("chat")
        merged = StreamedChoice(chat)
        t0 = time.monotonic()
        try:
            async for event in self.http.stream(path, body):
                if piece := merged.add(event):
                    yield piece
        finally:
            # an abandoned stream is charged for what it produced, like a finished one
            gen = self._generation(merged.choice(), chat, request, Usage())
            u = merged.usage
            prompt_tokens = int(u.get("prompt_tokens") or 0)
            if not prompt_tokens and self.tokenizer is not None:
                # llama.cpp streams no usage: count the prompt as the model saw it
                prompt_tokens = self.count_tokens(self.render(request))
            usage = Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=int(u.get("completion_tokens") or 0)
                or len(gen.token_ids)
                or len(gen.token_logprobs or ())
                or merged.pieces,
                model_calls=1,
                seconds=time.monotonic() - t0,
            )
            self._account(
                "backend.generate", [request], [[gen.model_copy(update={"usage": usage})]]
            )

    async def _one(self, req: GenerateRequest) -> list[Generation]:
        n, seed = req.params.n, req.params.seed
        gens = await self._call(req, n, seed)
        if len(gens) < n:
            # the server ignored `n`: ask once more per missing sample, each with its own seed
            more = await asyncio.gather(
                *(
                    self._call(req, 1, None if seed is None else seed + j)
                    for j in range(len(gens), n)
                )
            )
            gens += [g for batch in more for g in batch]
        return gens[:n]

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        for r in requests:  # every request checked before any is sent
            self._route(r, r.params.n, r.params.seed)
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    # ---- scoring ----------------------------------------------------------------------------

    def _tokenize_url(self) -> str:
        # vLLM serves /tokenize beside /v1, not under it
        return self.http.base_url.removesuffix("/v1") + "/tokenize"

    async def _tokenize(self, body: dict[str, Any]) -> list[int]:
        return list(
            await self.http.post(
                self._tokenize_url(), {"model": self.model, **body}, parse=token_list
            )
        )

    @staticmethod
    def _prompt_logprobs(
        data: Any, prompt: list[int], cont: list[int], req: ScoreRequest
    ) -> tuple[list[float], list[tuple[TopLogprob, ...]]]:
        """The logprob and top alternatives of each continuation token, from vLLM's
        `prompt_logprobs` rows (one per prompt token, keyed by token id)."""
        choices, _ = answer_choices(data)
        try:
            rows = (choices[0].get("prompt_logprobs") or [])[len(prompt) :]
            logprobs, tops = [], []
            for tid, row in zip(cont, rows, strict=True):
                logprobs.append(float(row[str(tid)]["logprob"]))
                alts = sorted(row.items(), key=lambda kv: kv[1].get("rank") or 0)
                tops.append(
                    tuple(
                        TopLogprob(
                            token_id=int(t),
                            token=v.get("decoded_token") or "",
                            logprob=float(v["logprob"]),
                        )
                        for t, v in alts
                        if v.get("rank") is not None and v["rank"] <= req.top_logprobs
                    )[: req.top_logprobs]
                )
        except SHAPE_ERRORS as e:
            raise shape_problem(e, "choices[0].prompt_logprobs") from None
        return logprobs, tops

    async def _score_one(self, req: ScoreRequest) -> ScoreResult:
        if req.messages is not None:
            prompt = await self._tokenize(
                {"messages": messages_json(req.messages), "add_generation_prompt": True}
            )
        else:
            prompt = await self._tokenize({"prompt": req.prompt or "", "add_special_tokens": True})
        if req.prefix:
            prompt += await self._tokenize({"prompt": req.prefix, "add_special_tokens": False})
        c = req.continuation
        cont = (
            list(c)
            if isinstance(c, tuple)
            else await self._tokenize({"prompt": c, "add_special_tokens": False})
        )
        body = {
            "model": self.model,
            "prompt": prompt + cont,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": max(req.top_logprobs, 1),
        }
        t0 = time.monotonic()
        logprobs, tops = await self.http.post(
            "completions", body, parse=lambda data: self._prompt_logprobs(data, prompt, cont, req)
        )
        seconds = time.monotonic() - t0
        return ScoreResult(
            token_ids=tuple(cont),
            token_logprobs=tuple(logprobs),
            top_logprobs=tuple(tops) if req.top_logprobs else None,
            usage=Usage(prompt_tokens=len(prompt) + len(cont), model_calls=1, seconds=seconds),
        )

    async def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        if not self.capabilities.score:
            raise NotSupported(
                f"{self.name}: a {self.server} server returns no prompt logprobs, so it cannot "
                "score continuations (vLLM's OpenAI server can)"
            )
        return list(await asyncio.gather(*(self._score_one(r) for r in requests)))

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        if isinstance(text_or_messages, str):
            text, body = text_or_messages, {"prompt": text_or_messages, "add_special_tokens": False}
        else:
            req = GenerateRequest(messages=tuple(text_or_messages))
            text = self.render(req) if self.tokenizer is not None else ""
            body = {"messages": messages_json(text_or_messages), "add_generation_prompt": True}
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False).input_ids)
        if self.server != "vllm":
            raise NotSupported(f"{self.name}: counting tokens needs tokenizer=PATH")
        url, payload = self._tokenize_url(), {"model": self.model, **body}
        return len(self.http.request_sync("POST", url, payload, parse=token_list))

    async def aclose(self) -> None:
        await self.http.aclose()


def from_uri(spec: str, **options: Any) -> OpenAIBackend:
    """`openai:http://HOST:PORT/v1#MODEL`; the model may be left out."""
    url, _, model = spec.partition("#")
    if not url:
        raise ConfigError(
            "openai: URI needs a server URL, e.g. openai:http://127.0.0.1:8000/v1#MODEL; "
            f"got {redact_uri(spec)!r}"
        )
    return OpenAIBackend(url, model or options.pop("model", None), **options)
