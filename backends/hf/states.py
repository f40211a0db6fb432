"""Reading a local Hugging Face model's residual stream: `HiddenStateReader`, the part of
`TransformersBackend` that returns hidden states at chosen layers for rendered prompts.

Forwards (`Forwards.states`) run in batches of `max_batch` under the backend's scheduler lock,
between its decode steps, with left padding and position ids that count real tokens only, so a
prompt's states do not depend on its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch

from agentic.core import ConfigError, GenerateRequest, ScoreRequest
from backends.hf.forward import Forwards


class HiddenStates(NamedTuple):
    """`TransformersBackend.hidden_states`: one row per prompt, and the prompt tokens encoded."""

    states: torch.Tensor
    prompt_tokens: int


class HiddenStateReader:
    """Mixin for `TransformersBackend`: hidden states of rendered prompts. The attributes below
    are the backend's, which the mixin reads."""

    model: Any
    name: str
    max_batch: int
    forwards: Forwards
    _lock: asyncio.Lock | None
    render: Callable[[GenerateRequest | ScoreRequest], list[int]]
    _ensure_worker: Callable[[], None]
    on_model_thread: Callable[..., Awaitable[Any]]

    @property
    def num_layers(self) -> int:
        """Decoder layers; `hidden_states` accepts layers in [-(num_layers + 1), num_layers]."""
        return int(self._text_config.num_hidden_layers)

    def check_layer(self, layer: int) -> None:
        """Raise `ConfigError` unless `layer` is a valid index into the hidden states."""
        n = self.num_layers
        if not -(n + 1) <= layer <= n:
            raise ConfigError(
                f"layer must be in [{-(n + 1)}, {n}] for {self.name!r} "
                f"({n} layers + embeddings), got {layer}"
            )

    async def hidden_states(
        self, requests: Sequence[GenerateRequest], layer: int = -1
    ) -> HiddenStates:
        """The residual stream at each prompt's last token (chat template and prefix applied, as
        `generate` would see it), shape (len(requests), hidden size), in float32 on the CPU.

        `layer` indexes transformers' `hidden_states`: 0 is the embeddings, i the output of
        decoder layer i, -1 the last layer's output (after the final norm). Forwards run in
        batches of `max_batch`, between the scheduler's decode steps, never during one."""
        got = await self.layer_states(requests, [layer], pool="last")
        return HiddenStates(got.states[:, 0], got.prompt_tokens)

    async def layer_states(
        self,
        requests: Sequence[GenerateRequest],
        layers: Sequence[int],
        pool: Literal["last", "mean"] = "last",
    ) -> HiddenStates:
        """The residual stream at several layers in one forward per batch: shape
        (len(requests), len(layers), hidden size), float32 on the CPU. `pool="last"` takes each
        prompt's last token, `"mean"` averages over its tokens. Layers index as in
        `hidden_states`."""
        if not layers:
            raise ConfigError("layers is empty: name at least one layer")
        for layer in layers:
            self.check_layer(layer)
        if pool not in ("last", "mean"):
            raise ConfigError(f"pool must be 'last' or 'mean', got {pool!r}")
        seqs = [self.render(r) for r in requests]
        if not seqs:
            return HiddenStates(torch.zeros((0, len(layers), self.hidden_size)), 0)
        self._ensure_worker()
        assert self._lock is not None
        parts = []
        for i in range(0, len(seqs), self.max_batch):
            async with self._lock:
                batch = seqs[i : i + self.max_batch]
                parts.append(
                    await self.on_model_thread(self.forwards.states, batch, list(layers), pool)
                )
        return HiddenStates(torch.cat(parts), sum(len(s) for s in seqs))

    @property
    def hidden_size(self) -> int:
        return int(self._text_config.hidden_size)

    @property
    def _text_config(self) -> Any:
        """The language model's config (multimodal models nest it)."""
        cfg = self.model.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
