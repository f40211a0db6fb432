"""The prompt a local model sees: chat template applied, the assistant prefix appended.

Shared by every backend that tokenizes locally (transformers, in-process vLLM, and the OpenAI
backend when it continues a prefix on a server without `continue_final_message`), so the same
request becomes the same tokens whichever of them serves it.
"""

from __future__ import annotations

from typing import Any

from agentic.core import ConfigError, GenerateRequest, ScoreRequest


def render_text(tokenizer: Any, req: GenerateRequest | ScoreRequest, name: str) -> str:
    """The chat-templated text of `req.messages` (or the raw prompt), without the prefix."""
    if req.messages is None:
        return req.prompt or ""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"model {name!r} has no chat template: send `prompt=` instead of `messages=`"
        )
    text: str = tokenizer.apply_chat_template(
        [m.model_dump(mode="json", exclude_none=True) for m in req.messages],
        tokenize=False,
        add_generation_prompt=True,
    )
    return text


def render_ids(tokenizer: Any, req: GenerateRequest | ScoreRequest, name: str) -> list[int]:
    """Token ids of the prompt followed by the prefix. The prefix is tokenized on its own, so
    the prompt's tokens are the same as those of the request without a prefix."""
    text = render_text(tokenizer, req, name)
    if req.messages is not None:
        ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    else:
        ids = list(tokenizer(text, add_special_tokens=True).input_ids) if text else []
    if req.prefix:
        ids += tokenizer(req.prefix, add_special_tokens=False).input_ids
    return ids
