"""Our process reward model behind its_hub's `AbstractProcessRewardModel`, so that its_hub's
particle filters and ours are guided by the very same PRM (issue #4), and an its_hub LM that tells
its step generation where an answer ended (issue #18).

What maps to what (its_hub `AbstractProcessRewardModel` -> agentic `search.rewards`):

- `prompt_or_messages`, the question (its particle filters pass `ChatMessages.to_prompt()`, which
  for a string prompt is the string itself) -> the `Task` whose `input` is that question;
- `steps`, one string per particle: its whole partial answer so far (its steps joined by the
  step token, delimiter stripped) -> one solution per particle made of a single "step", the whole
  text, so the PRM's last per-step score is its score of the full prefix;
- `ascore(...) -> list[float]`, one score in [0, 1] per particle ->
  `rate(reward, task, [[text], ...], "last")`; for `JudgeReward`, P("Yes") of the judge prompt
  about the whole prefix; for `search.value_model.ValueReward`, the value of the whole prefix.

With aggregation "last" (what the benchmark runs ours with) our particle filters weigh a particle
by the PRM score of its whole prefix too, so both sides ask the same PRM about the same text (the
judge with the same prompt on the same backend). One difference in the PRM's input: our step texts
keep the delimiter, so an unfinished particle of ours is scored with a trailing "\\n\\n" and
its_hub's without (its `StepGeneration` strips it).

The text is scored as one piece on purpose: splitting it back into steps at "\\n\\n" would ask the
PRM about prefixes that end in the delimiter, which its_hub never scored before (its previous texts
end without it), so the PRM's per-prefix cache (`JudgeReward`'s, `ValueReward`'s) would miss and
every round would cost one score per step instead of one per particle. As it is, both sides share
that cache's behaviour: a text scored before for the same task (a resampled copy, say) costs
nothing.

Each scored text is charged to the current `agentic` `Budget` (reward calls; the judge's score
requests, the value model's encoded tokens), as ours are; open a `Budget()` around `ainfer` to
meter its_hub's PRM use.

Sync and async: its_hub's particle filters only ever `await prm.ascore(...)`, which runs on the
caller's event loop (the one our backend's HTTP client is bound to). `score` (sync, required by
the abstract class) runs `ascore` with `asyncio.run`; called from inside a running loop it does so
in a worker thread with its own loop (our backend then opens a client for that loop), so it never
nests event loops.

The end of an answer (`StopMarkerLM`): its_hub keeps only a step's text, so out of the box it
cannot tell a step that ended at the delimiter from an answer that ended at EOS, and it goes on
extending (and re-scoring) finished answers until `max_steps`. Its one hook is
`StepGeneration(stop_token=...)`: a particle stops when that string appears in its new step.
`StopMarkerLM` appends `STOP_MARKER` to a step's text when the server stopped at EOS, so
`StepGeneration(stop_token=STOP_MARKER)` stops exactly the particles our `StepGenerator` would
call finished. The marker is not the model's text: `ItsHubPRM(stop_marker=...)` removes it before
scoring and `strip_marker` removes it from the final answer, and it never reaches the server (a
stopped particle is not continued).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from its_hub.api import AbstractProcessRewardModel, ChatMessages
from its_hub.core.lms.openai_lm import OpenAICompatibleLanguageModel

from agentic.core import Task
from search.rewards import Aggregation, OutcomeReward, ProcessReward, rate

# Not text SmolLM2 writes; a model that did write it would only stop that particle early.
STOP_MARKER = "<|its_hub:eos|>"


def question_of(prompt_or_messages: Any) -> str:
    """The question its_hub asks about: the prompt string itself, or the text of the last user
    message of a conversation."""
    if isinstance(prompt_or_messages, str):
        return prompt_or_messages
    messages = ChatMessages.from_prompt_or_messages(prompt_or_messages).to_chat_messages()
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ValueError("its_hub passed a conversation with no user message to the PRM")
    return str(users[-1].extract_text_content())


class ItsHubPRM(AbstractProcessRewardModel):
    """its_hub PRM interface over an agentic reward model (a `JudgeReward` or a `ValueReward`).

    `tasks`: the tasks its_hub will be asked about; its_hub only passes the question text, which
    is looked up here (the first task with that `input` wins: tasks with the same question get
    the same judge prompt or value-model chat anyway). `stop_marker`: the `StopMarkerLM` marker,
    removed from a text's end before it is scored.
    """

    def __init__(
        self,
        reward: ProcessReward | OutcomeReward,
        tasks: Iterable[Task],
        *,
        aggregation: Aggregation = "last",
        stop_marker: str | None = None,
    ) -> None:
        self.reward = reward
        self.aggregation: Aggregation = aggregation
        self.stop_marker = stop_marker
        self.tasks: dict[str, Task] = {}
        for t in tasks:
            self.tasks.setdefault(t.input, t)

    def task(self, prompt_or_messages: Any) -> Task:
        q = question_of(prompt_or_messages)
        try:
            return self.tasks[q]
        except KeyError:
            raise KeyError(f"ItsHubPRM was not given a task for the question {q[:80]!r}") from None

    async def ascore(self, prompt_or_messages: Any, steps: Sequence[str]) -> list[float]:
        if not steps:
            return []
        task = self.task(prompt_or_messages)
        texts = [strip_marker(text, self.stop_marker) for text in steps]
        return await rate(self.reward, task, [[text] for text in texts], self.aggregation)

    def score(self, prompt_or_messages: Any, steps: Sequence[str]) -> list[float]:
        coro = self.ascore(prompt_or_messages, list(steps))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, coro).result()


def strip_marker(text: str, marker: str | None) -> str:
    """`text` without the stop marker its last step may end with."""
    return text.removesuffix(marker) if marker else text


def ended_at_eos(choice: Mapping[str, Any]) -> bool:
    """Whether the server ended this chat choice at the end of the answer, as our `StepGenerator`
    reads it: finish_reason "stop" with no stop string behind it. vLLM names the stop string that
    matched in `stop_reason`; EOS leaves it null (a stop token id, an int, also ends the answer).
    A cut at the token limit is "length"."""
    return choice.get("finish_reason") == "stop" and not isinstance(choice.get("stop_reason"), str)


class StopMarkerLM(OpenAICompatibleLanguageModel):
    """its_hub's OpenAI-compatible LM that appends `stop_marker` to a generated step the server
    ended at EOS (`ended_at_eos`); pair it with `StepGeneration(stop_token=stop_marker)`.

    It reads the server's choice through its_hub's own `include_raw_choices` (always on here) and
    drops that raw copy from the message it returns.
    """

    def __init__(self, *args: Any, stop_marker: str = STOP_MARKER, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "include_raw_choices": True})
        self.stop_marker = stop_marker

    def _marked(self, message: dict[str, Any]) -> dict[str, Any]:
        # an error replaced by `replace_error_with_message` comes without a choice: not an end
        choice = message.pop("_raw_choice", {})
        if ended_at_eos(choice):
            message["content"] = (message.get("content") or "") + self.stop_marker
        return message

    async def agenerate(self, *args: Any, **kwargs: Any) -> Any:
        out = await super().agenerate(*args, **kwargs)
        return [self._marked(m) for m in out] if isinstance(out, list) else self._marked(out)

    async def agenerate_single(self, *args: Any, **kwargs: Any) -> Any:
        return self._marked(await super().agenerate_single(*args, **kwargs))
