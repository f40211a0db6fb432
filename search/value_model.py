"""A value model fine-tuned from the policy: LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models") on SmolLM2 plus a scalar head, trained on Math-Shepherd's
automatic step labels (Wang et al. 2024; the labels are made by `head_reward.collect_labels`).

Where `HeadReward` is a probe on frozen hidden states, this trains the model itself: every
attention projection W gets a low-rank update, and a linear head reads the last token.

Symbols -> code:
    s_1..s_i (a step prefix)           the chat + prefix, tokenized by `backends.prompts.render_ids`
    W + (alpha/r) B A, rank r          `train_value_model(rank=, alpha=)`; peft `LoraConfig` on
                                       q/k/v/o projections, A Gaussian, B zero (the paper's init)
    h_L(last token)                    the last layer's state at the prefix's last token
    V(s_1..s_i) = sigmoid(w . h_L)     `ValueReward.values`; w is HF's `score` layer of a
                                       `*ForSequenceClassification` model with one label
    y_SE (soft label)                  `LabelledPrefix.soft`
    loss                               BCE(V, y_SE) over (prefix, label) pairs, `train_value_model`

The model is a standard Hugging Face sequence-classification model, so the artifact is what
people already use for reward models: `save` writes the peft adapter (LoRA weights + head, a few
MB, committed) and `export` writes the merged model as a plain Hugging Face folder that
transformers loads (`search.served_reward.LocalRewardModel`) and vLLM serves as a pooling model
(`search.served_reward.ServedReward`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import DynamicCache

from agentic.core import ConfigError, GenerateRequest, Task, Usage, charge_budget, emit
from backends.hf.prefix_cache import KV, PrefixCache
from backends.prompts import render_ids
from search.head_reward import LabelledPrefix, MessagesOf, user_only

log = logging.getLogger(__name__)

# The committed artifact: trained by `benchmarks/train_value.py` on the TRAIN families only.
DEFAULT_PATH = Path(__file__).parent / "artifacts" / "value_smollm2"
TRAIN_COMMAND = (
    "python benchmarks/value_labels.py --split train && python benchmarks/train_value.py"
)
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def _base_path(base: str) -> Path:
    """`embedded:NAME` or a folder holding a Hugging Face causal LM."""
    if base.startswith("embedded:"):
        from backends.embedded import ensure_local

        return ensure_local(base.removeprefix("embedded:"))
    path = Path(base.removeprefix("hf:"))
    if not (path / "config.json").exists():
        raise ConfigError(f"value model base {base!r}: no Hugging Face model folder there")
    return path


def _classifier(path: Path) -> tuple[Any, Any]:
    """A one-label sequence classifier on the causal LM at `path` (a fresh `score` head) and its
    tokenizer; the pad token is set so that pooling finds each row's last real token."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh head is expected: not a load warning here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=torch.float32
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _batch(rows: Sequence[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask: right padding keeps every row's positions as if alone."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def _logits(model: Any, rows: Sequence[list[int]], pad: int) -> torch.Tensor:
    """The head's logit at each row's last token. The head is applied here rather than through
    the classifier's own pooling, which looks for the last token that is not the pad id and so
    would pool early a prefix that ends in it (the pad id is `<|im_end|>` for SmolLM2)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids, mask = _batch(rows, pad)
    states = hf.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    last = states[torch.arange(len(rows)), mask.sum(1) - 1]
    out: torch.Tensor = hf.score(last)
    return out.reshape(-1)


def _shared_length(rows: Sequence[list[int]]) -> int:
    """The rows' longest common token prefix, short of the shortest row's last token (every row
    keeps at least one token of its own to read the head at)."""
    first, n = rows[0], min(len(r) for r in rows) - 1
    i = 0
    while i < n and all(r[i] == first[i] for r in rows[1:]):
        i += 1
    return i


def _chunks(rows: Sequence[list[int]], batch_size: int, slack: float = 1.25) -> list[list[int]]:
    """Row indices in batches of rows of similar length: a batch is as wide as its longest row,
    and with answers from 1 to 64 tokens one batch of all of them is mostly padding. Shortest
    first, a batch closes at `batch_size` rows or when the next row would make its padded size
    exceed `slack` times its real tokens (counted past the prefix all rows share)."""
    shared = _shared_length(rows) if len(rows) > 1 else 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list[list[int]] = []
    batch: list[int] = []
    real = 0
    for i in order:
        n = len(rows[i]) - shared
        if batch and (len(batch) == batch_size or (len(batch) + 1) * n > slack * (real + n)):
            out.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += n
    return [*out, batch] if batch else out


def _cache_of(config: Any, kv: KV, rows: int) -> DynamicCache:
    """A fresh cache holding `kv` (batch 1) for `rows` rows: a forward appends to its own
    cache, so the kept keys and values are never written to."""
    cache = DynamicCache(config=config)
    for layer, (k, v) in enumerate(kv):
        cache.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), layer)
    return cache


class ValueReward:
    """ProcessReward from the trained value model: one batched forward per `score` call over the
    prefixes not seen before (cached per task and prefix, as `HeadReward`).

    The prefixes of one call share their chat (system prompt and question), which is most of
    each row: the shared tokens are encoded once, their keys and values kept (`PrefixCache`,
    `prefix_cache_tokens`, least recently used out; 0 turns it off), and each row encodes only
    its own part over them. Attention is causal, so the values are those of encoding every row
    whole (tested within 1e-4); `encoded_tokens` counts what was really encoded."""

    kind: Literal["process"] = "process"
    prefix_only = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        messages: MessagesOf = user_only,
        batch_size: int = 16,
        prefix_cache_tokens: int = 2048,
        name: str = "value",
    ) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        # the transformers classifier under a peft wrapper (an unmerged, freshly trained model)
        self._hf = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.messages, self.batch_size, self.name = messages, batch_size, name
        self._cache: dict[tuple[str, str], float] = {}
        # sliding-window layers (Gemma-3) keep only a window of keys: nothing to share there
        windowed = any(t != "full_attention" for t in getattr(self._hf.config, "layer_types", ()))
        share = prefix_cache_tokens > 0 and not windowed
        self._prefixes = PrefixCache(prefix_cache_tokens) if share else None
        self.encoded_tokens = 0
        # one forward at a time: scoring runs in a worker thread beside the event loop
        self._lock = asyncio.Lock()

    def encode(self, messages: Sequence[Any], prefix: str) -> list[int]:
        req = GenerateRequest(messages=tuple(messages), prefix=prefix)
        return render_ids(self.tokenizer, req, self.name)

    def values(self, rows: Sequence[list[int]]) -> list[float]:
        out = [0.0] * len(rows)
        with torch.inference_mode():
            for chunk in _chunks(rows, self.batch_size):
                logits = self._chunk_logits([rows[i] for i in chunk])
                for i, x in zip(chunk, torch.sigmoid(logits.double()), strict=True):
                    out[i] = float(x)
        return out

    def _chunk_logits(self, rows: Sequence[list[int]]) -> torch.Tensor:
        shared = _shared_length(rows) if self._prefixes is not None else 0
        if shared == 0:
            self.encoded_tokens += sum(map(len, rows))
            return _logits(self.model, rows, self._pad)
        kv = self._prefix_kv(rows[0][:shared])
        ids, own = _batch([r[shared:] for r in rows], self._pad)
        mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), own], 1)
        states = self._hf.base_model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=torch.arange(shared, shared + ids.shape[1])[None].expand(len(rows), -1),
            past_key_values=_cache_of(self._hf.config, kv, len(rows)),
            use_cache=True,
        ).last_hidden_state
        self.encoded_tokens += int(own.sum())
        last = states[torch.arange(len(rows)), own.sum(1) - 1]
        out: torch.Tensor = self._hf.score(last)
        return out.reshape(-1)

    def _prefix_kv(self, ids: list[int]) -> KV:
        """Keys and values of all of `ids`, from the prefix cache and a forward of the rest."""
        assert self._prefixes is not None
        m, kv = self._prefixes.longest(ids, fresh=0)
        if m == len(ids) and kv is not None:
            return kv
        cache = _cache_of(self._hf.config, kv or [], 1)
        self._hf.base_model(
            input_ids=torch.tensor([ids[m:]]),
            position_ids=torch.arange(m, len(ids))[None],
            past_key_values=cache,
            use_cache=True,
        )
        self.encoded_tokens += len(ids) - m
        layers: list[Any] = list(cache.layers)  # plain per-layer tensors: a Llama model
        full = [(x.keys, x.values) for x in layers]
        self._prefixes.add(ids, full)
        return full

    @property
    def _pad(self) -> int:
        return int(self.tokenizer.pad_token_id)

    async def score(self, task: Task, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        prefixes = [["".join(s[: k + 1]) for k in range(len(s))] for s in solutions]
        todo = sorted({p for ps in prefixes for p in ps if (task.id, p) not in self._cache})
        if todo:
            msgs = self.messages(task)
            rows = [self.encode(msgs, p) for p in todo]
            async with self._lock:
                vals = await asyncio.to_thread(self.values, rows)
            charge_budget(Usage(reward_calls=len(todo), prompt_tokens=sum(map(len, rows))))
            for p, v in zip(todo, vals, strict=True):
                self._cache[(task.id, p)] = v
        return [[self._cache[(task.id, p)] for p in ps] for ps in prefixes]

    # ---- persistence ---------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | Path = DEFAULT_PATH,
        *,
        messages: MessagesOf = user_only,
        prefix_cache_tokens: int = 2048,
    ) -> ValueReward:
        """The saved adapter at `path` on its base model, merged for scoring (loaded once per
        process and folder; each reward keeps its own score and prefix caches)."""
        model, tok = _merged(str(Path(path).resolve()))
        return cls(
            model,
            tok,
            messages=messages,
            prefix_cache_tokens=prefix_cache_tokens,
            name=f"value:{Path(path).name}",
        )

    def export(self, folder: str | Path) -> Path:
        """The merged model as a plain Hugging Face folder (config, safetensors, tokenizer):
        `LlamaForSequenceClassification` with one label for SmolLM2, which transformers loads and
        vLLM serves with `--runner pooling` (`/classify`, sigmoid of the one logit)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out


@functools.lru_cache(maxsize=2)
def _merged(path: str) -> tuple[Any, Any]:
    from peft import PeftModel

    p = Path(path)
    meta_path = p / "value.json"
    if not meta_path.exists() or not (p / "adapter_config.json").exists():
        raise ConfigError(f"no trained value model at {p}; build it with `{TRAIN_COMMAND}`")
    meta = json.loads(meta_path.read_text())
    model, tok = _classifier(_base_path(meta["base"]))
    return PeftModel.from_pretrained(model, p).merge_and_unload().eval(), tok


def save_adapter(model: Any, path: str | Path, meta: dict[str, Any]) -> Path:
    """The peft adapter (LoRA weights and the head) and `value.json` (base model, training
    settings and metrics) in the folder `path`."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(p)
    (p / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
    _merged.cache_clear()  # a model loaded from this folder before is stale now
    (p / "value.json").write_text(json.dumps(meta, indent=2) + "\n")
    return p


def train_value_model(
    base: str,
    examples: Sequence[LabelledPrefix],
    *,
    rank: int = 8,
    alpha: int = 16,
    epochs: int = 2,
    batch_size: int = 16,
    lr: float = 3e-4,
    head_lr: float = 1e-3,
    seed: int = 0,
) -> tuple[Any, Any, list[float]]:
    """Fine-tune LoRA adapters and the head of a one-label classifier on `base` against the
    examples' soft labels (BCE). Returns the peft model (unmerged, for `save_adapter`), the
    tokenizer and the mean loss of every epoch. Deterministic for a given seed on one thread
    count: shuffling and the LoRA/head initialisation are seeded."""
    from peft import LoraConfig, TaskType, get_peft_model

    if not examples:
        raise ConfigError("examples must hold at least one LabelledPrefix")
    if epochs < 1 or batch_size < 1 or rank < 1:
        raise ConfigError(
            f"epochs, batch_size and rank must be >= 1, got {epochs, batch_size, rank}"
        )
    torch.manual_seed(seed)
    model, tok = _classifier(_base_path(base))
    torch.nn.init.zeros_(model.score.weight)  # start at V = 0.5 everywhere
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=rank, lora_alpha=alpha, lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    head = [p for n, p in peft_model.named_parameters() if p.requires_grad and "score" in n]
    lora = [p for n, p in peft_model.named_parameters() if p.requires_grad and "score" not in n]
    opt = torch.optim.AdamW(
        [{"params": lora, "lr": lr}, {"params": head, "lr": head_lr}], weight_decay=0.0
    )
    rows = [
        render_ids(tok, GenerateRequest(messages=e.messages, prefix=e.prefix), base)
        for e in examples
    ]
    targets = torch.tensor([e.soft for e in examples], dtype=torch.float32)
    order = list(range(len(rows)))
    rng = random.Random(seed)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    losses: list[float] = []
    peft_model.train()
    pad = int(tok.pad_token_id)
    for epoch in range(epochs):
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            logits = _logits(peft_model, [rows[j] for j in idx], pad)
            loss = loss_fn(logits, targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(order))
        log.info("value model epoch %d/%d: BCE %.4f", epoch + 1, epochs, losses[-1])
    peft_model.eval()
    emit("reward.train", examples=len(examples), loss=losses[-1], kind="value")
    return peft_model, tok, losses
