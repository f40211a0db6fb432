"""Reward models as people run them: a Hugging Face PRM/ORM checkpoint loaded with transformers
(`LocalRewardModel`), or the same checkpoint served by vLLM's pooling API (`ServedReward`).

Both are `ProcessReward`s: a solution is its steps s_1..s_k and each step gets r_i, the model's
probability that the solution is right so far, read from a classification head at one token.
Two ways to read it (`read=`), which cover the common checkpoints:

- **`"prefix"`**: each prefix chat + s_1..s_i is its own sequence and r_i is the head at its last
  token. Exact for value models and ORMs trained on prefixes (our exported value model, a
  `*ForSequenceClassification` with one label). vLLM: `/classify`, all prefixes in one request.
- **`"steps"`**: one sequence per solution, each step followed by `step_separator`, and r_i is
  the head at the separator's last token after step i: the PRM convention (Math-Shepherd-style
  PRMs on `"\n\n"` or a tag; Qwen2.5-Math-PRM puts `<extra_0>` after each step and its label 1
  means "correct"). One forward per solution instead of one per step. vLLM: `/pooling` with
  `task: token_classify`, which returns the activated head at every token.

Heads: one label is read as the sigmoid of its logit; several as the softmax probability of
`positive_label`. `*ForSequenceClassification` and `*ForTokenClassification` checkpoints load
in transformers (the default read is "prefix" for the first, "steps" for the second); vLLM
serves both heads with both reads. Prompts are tokenized here with the checkpoint's own chat
template and sent as token ids, so the in-process and served scores see the same tokens
(`backends.prompts.render_ids`). Checkpoints whose architecture needs `trust_remote_code`
(Qwen2.5-Math-PRM, Skywork-PRM) are for `ServedReward`: vLLM ships those architectures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from agentic.core import ConfigError, GenerateRequest, Task, Usage, charge_budget
from backends.openai.http_client import RetryingClient
from backends.prompts import render_ids
from search.head_reward import MessagesOf, user_only

Read = Literal["prefix", "steps"]


def _tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _activate(logits: torch.Tensor, positive_label: int) -> list[float]:
    """One label: sigmoid; several: softmax probability of `positive_label`. Rows are scores."""
    if logits.shape[-1] == 1:
        return [float(x) for x in torch.sigmoid(logits.double()[..., 0])]
    return [float(x) for x in torch.softmax(logits.double(), -1)[..., positive_label]]


class _Steps:
    """How a solution becomes token ids, shared by the local and the served reward."""

    def __init__(
        self, tokenizer: Any, messages: MessagesOf, step_separator: str, name: str
    ) -> None:
        self.tokenizer, self.messages, self.sep, self.name = (
            tokenizer,
            messages,
            step_separator,
            name,
        )

    def prefix_ids(self, task: Task, prefix: str) -> list[int]:
        req = GenerateRequest(messages=self.messages(task), prefix=prefix)
        return render_ids(self.tokenizer, req, self.name)

    def solution_ids(self, task: Task, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The chat, then each step followed by the separator; and the position of each step's
        separator's last token."""
        ids = render_ids(self.tokenizer, GenerateRequest(messages=self.messages(task)), self.name)
        ends = []
        for step in steps:
            # search steps end with their delimiter already; a PRM's tag is added after it
            text = step if step.endswith(self.sep) else step + self.sep
            ids += self.tokenizer(text, add_special_tokens=False).input_ids
            ends.append(len(ids) - 1)
        return ids, ends


class LocalRewardModel:
    """A Hugging Face reward checkpoint in process (`*ForSequenceClassification` or
    `*ForTokenClassification`), read per prefix or per solution at step separators."""

    kind: Literal["process"] = "process"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        read: Read,
        token_head: bool,
        messages: MessagesOf = user_only,
        step_separator: str = "\n\n",
        positive_label: int = 1,
        name: str = "local-reward",
    ) -> None:
        self.model, self.read, self.token_head = model.eval(), read, token_head
        self.positive_label = positive_label
        self.steps = _Steps(tokenizer, messages, step_separator, name)
        self.prefix_only = read == "prefix"
        self._lock = asyncio.Lock()

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        read: Read | None = None,
        messages: MessagesOf = user_only,
        step_separator: str = "\n\n",
        positive_label: int = 1,
    ) -> LocalRewardModel:
        """The checkpoint at `path`; its head is read from `config.json`'s architecture."""
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        p = Path(path)
        if not (p / "config.json").exists():
            raise ConfigError(f"reward model {str(p)!r}: no config.json (a Hugging Face folder?)")
        arch = (AutoConfig.from_pretrained(p).architectures or [""])[0]
        if arch.endswith("ForTokenClassification"):
            model, token_head = AutoModelForTokenClassification.from_pretrained(p), True
        elif arch.endswith("ForSequenceClassification"):
            model, token_head = AutoModelForSequenceClassification.from_pretrained(p), False
        else:
            raise ConfigError(
                f"reward model {str(p)!r} is a {arch or 'model of no architecture'}: "
                "expected *ForSequenceClassification or *ForTokenClassification"
            )
        return cls(
            model, _tokenizer(p), read=read or ("steps" if token_head else "prefix"),
            token_head=token_head, messages=messages, step_separator=step_separator,
            positive_label=positive_label, name=f"local-reward:{p.name}",
        )  # fmt: skip

    def head_logits(self, ids: list[int]) -> torch.Tensor:
        """The head's logits at every token of one unpadded sequence, (len(ids), labels)."""
        x = torch.tensor([ids])
        with torch.inference_mode():
            if self.token_head:
                out: torch.Tensor = self.model(input_ids=x).logits[0]
            else:  # a sequence classifier's head, applied at every token instead of pooled
                out = self.model.score(self.model.base_model(input_ids=x).last_hidden_state[0])
        return out

    def _score_sync(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for s in solutions:
            if self.read == "prefix":
                rows = [self.steps.prefix_ids(task, "".join(s[: k + 1])) for k in range(len(s))]
                last = torch.stack([self.head_logits(r)[-1] for r in rows]) if rows else None
                out.append(_activate(last, self.positive_label) if last is not None else [])
                charge_budget(Usage(reward_calls=len(rows), prompt_tokens=sum(map(len, rows))))
            else:
                ids, ends = self.steps.solution_ids(task, s)
                out.append(_activate(self.head_logits(ids)[ends], self.positive_label))
                charge_budget(Usage(reward_calls=1, prompt_tokens=len(ids)))
        return out

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        async with self._lock:  # one forward at a time, in a worker thread
            return await asyncio.to_thread(self._score_sync, task, solutions)


class ServedReward:
    """A reward checkpoint served by vLLM (`vllm serve PATH --runner pooling`), over HTTP.

    `read="prefix"` posts every prefix's token ids to `/classify` in one request;
    `read="steps"` posts each solution to `/pooling` (`task: token_classify`) and reads the
    step separators' positions. `tokenizer` is the checkpoint's folder (its chat template
    renders the prompts); `model` is the served name."""

    kind: Literal["process"] = "process"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        tokenizer: str | Path,
        read: Read = "prefix",
        messages: MessagesOf = user_only,
        step_separator: str = "\n\n",
        positive_label: int = 1,
        api_key: str | None = None,
    ) -> None:
        if read not in ("prefix", "steps"):
            raise ConfigError(f"read must be 'prefix' or 'steps', got {read!r}")
        self.model, self.read, self.positive_label = model, read, positive_label
        self.prefix_only = read == "prefix"
        self.steps = _Steps(_tokenizer(tokenizer), messages, step_separator, f"served:{model}")
        # vLLM's pooling routes live at the server root, beside /v1
        root = base_url.rstrip("/").removesuffix("/v1")
        self.client = RetryingClient(root, api_key=api_key, name="reward")

    def _pick(self, probs: list[float]) -> float:
        """vLLM has applied the activation: one label is its sigmoid already."""
        return float(probs[0] if len(probs) == 1 else probs[self.positive_label])

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        if self.read == "prefix":
            prefixes = [["".join(s[: k + 1]) for k in range(len(s))] for s in solutions]
            flat = [self.steps.prefix_ids(task, p) for ps in prefixes for p in ps]
            if not flat:
                return [[] for _ in solutions]
            body = await self.client.post("/classify", {"model": self.model, "input": flat})
            vals = iter(self._pick(d["probs"]) for d in sorted(body["data"], key=_index))
            charge_budget(Usage(reward_calls=len(flat), prompt_tokens=sum(map(len, flat))))
            return [[next(vals) for _ in ps] for ps in prefixes]
        return list(await asyncio.gather(*(self._solution(task, s) for s in solutions)))

    async def _solution(self, task: Task, steps: Sequence[str]) -> list[float]:
        ids, ends = self.steps.solution_ids(task, steps)
        body = await self.client.post(
            "/pooling", {"model": self.model, "input": ids, "task": "token_classify"}
        )
        per_token = body["data"][0]["data"]
        charge_budget(Usage(reward_calls=1, prompt_tokens=len(ids)))
        return [self._pick(_as_list(per_token[i])) for i in ends]

    async def aclose(self) -> None:
        await self.client.aclose()


def _index(d: dict[str, Any]) -> int:
    return int(d.get("index", 0))


def _as_list(x: Any) -> list[float]:
    return [float(v) for v in x] if isinstance(x, list) else [float(x)]
