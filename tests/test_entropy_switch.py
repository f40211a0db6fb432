"""EntropyAdaptiveDecoding: the switching rule on scripted backends with chosen entropies (one
token per character, so every boundary is visible), then SmolLM2 ↔ Gemma-3-270M for real."""

from __future__ import annotations

import math
import string
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from agentic.core import (
    Budget,
    ConfigError,
    Context,
    Event,
    GenerateRequest,
    Generation,
    Message,
    NotSupported,
    SamplingParams,
    Task,
    Tracer,
    Usage,
)
from backends.base import BaseBackend, Capabilities
from controllers import EntropyAdaptiveDecoding
from controllers.entropy_switch import PLAIN_TEMPLATE

EOS = 0


def letter(pos: int, upper: bool) -> str:
    c = string.ascii_lowercase[pos % 26]
    return c.upper() if upper else c


class EntropyScripted(BaseBackend):
    """Writes the letter of each absolute position (lower case: small, upper case: large), one
    token per character, with entropy `entropy(pos)`; emits EOS at position `eos_at`."""

    def __init__(
        self,
        name: str,
        entropy: Callable[[int], float],
        *,
        upper: bool = False,
        eos_at: int | None = None,
        with_entropies: bool = True,
    ) -> None:
        self.name, self.entropy, self.upper, self.eos_at = name, entropy, upper, eos_at
        self.with_entropies = with_entropies
        self.capabilities = Capabilities(prefix=True)
        self.requests: list[GenerateRequest] = []

    def _one(self, req: GenerateRequest) -> Generation:
        p, start = req.params, len(req.prefix)
        ids: list[int] = []
        text, finish, stop_reason = "", "length", None
        for pos in range(start, start + p.max_tokens):
            if pos == self.eos_at:
                ids.append(EOS)
                finish = "stop"
                break
            text += letter(pos, self.upper)
            ids.append(ord(text[-1]))
            hit = next((s for s in p.stop if s in text), None)
            if hit is not None:
                text, finish, stop_reason = text[: text.index(hit)], "stop", hit
                break
        ents = tuple(self.entropy(start + j) for j in range(len(ids)))
        return Generation(
            text=text,
            token_ids=tuple(ids),
            entropies=ents if self.with_entropies else None,
            finish_reason=finish,  # type: ignore[arg-type]
            stop_reason=stop_reason,
            usage=Usage(prompt_tokens=10, completion_tokens=len(ids), model_calls=1),
        )

    async def _generate(self, requests: list[GenerateRequest]) -> list[list[Generation]]:
        self.requests += requests
        return [[self._one(r)] for r in requests]

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return len(text_or_messages) if isinstance(text_or_messages, str) else 0


def reference(
    small: EntropyScripted,
    large: EntropyScripted,
    *,
    window: int,
    threshold: float,
    min_large_tokens: int,
    max_tokens: int,
) -> tuple[str, dict[str, int]]:
    """The rule applied one token at a time, no chunks: what EAD must produce for any
    `chunk_tokens`. Returns the text and the kept tokens per model."""
    models = {"small": small, "large": large}
    hist: deque[float] = deque(maxlen=window)
    active, run, text = "small", 0, ""
    kept = {"small": 0, "large": 0}
    while sum(kept.values()) < max_tokens:
        m, pos = models[active], len(text)
        hist.append(m.entropy(pos))
        full = len(hist) == window
        mean = sum(hist) / window
        if full and active == "small" and mean > threshold:
            active, run = "large", 0
            continue
        kept[active] += 1
        run += 1
        if pos == m.eos_at:
            break
        text += letter(pos, m.upper)
        if full and active == "large" and mean <= threshold and run >= min_large_tokens:
            active, run = "small", 0
    return text, kept


def pair(
    small_high: set[int] = frozenset({6, 7, 8}),  # type: ignore[assignment]
    *,
    eos_small: int | None = 14,
    eos_large: int | None = None,
    large_high: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[EntropyScripted, EntropyScripted]:
    small = EntropyScripted("small", lambda p: 3.0 if p in small_high else 0.2, eos_at=eos_small)
    large = EntropyScripted(
        "large", lambda p: 2.0 if p in large_high else 0.1, upper=True, eos_at=eos_large
    )
    return small, large


TASK = Task(id="t", input="Say the alphabet.")


def ead(small: Any, large: Any, **kw: Any) -> EntropyAdaptiveDecoding:
    opts: dict[str, Any] = {
        "window": 2,
        "threshold": 1.0,
        "chunk_tokens": 4,
        "max_tokens": 64,
        "min_large_tokens": 1,
    }
    return EntropyAdaptiveDecoding(small, large, **{**opts, **kw})


def prefixes(*backends: EntropyScripted) -> Iterator[str]:
    for b in backends:
        yield from (r.prefix for r in b.requests)


# ---- the rule, exactly ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 4, 32])
async def test_hand_off_and_back_at_the_window_crossing(chunk: int) -> None:
    small, large = pair()
    out = await ead(small, large, chunk_tokens=chunk)(TASK, Context())
    # window 2, tau 1: small's 3.0 at position 6 lifts the mean to 1.6, so the large model
    # writes position 6; two of its 0.1s bring the mean down and position 8 goes back to the
    # small model, whose 3.0 hands it straight back (an empty small segment); EOS at 14
    assert out.output == "abcdefGHIJklmn"
    assert out.error is None
    segs = out.info["segments"]
    assert [(s["model"], s["text"], s["tokens"], s["end"]) for s in segs] == [
        ("small", "abcdef", 6, "switch"),
        ("large", "GH", 2, "switch"),
        ("small", "", 0, "switch"),
        ("large", "IJ", 2, "switch"),
        ("small", "klmn", 5, "eos"),  # four letters and EOS
    ]
    assert [s["entropy"] for s in segs[:4]] == pytest.approx([1.6, 0.1, 1.55, 0.1])
    assert out.info["switches"] == 4
    assert "".join(s["text"] for s in segs) == out.output
    assert out.info["tokens"] == {"small": 11, "large": 4}
    assert out.info["large_token_share"] == pytest.approx(4 / 15)
    assert out.info["large_char_share"] == pytest.approx(4 / 14)
    # every call continued exactly the text written so far: nothing lost or duplicated
    for p in prefixes(small, large):
        assert out.output.startswith(p)
    if chunk > 6:  # the cut inside the first chunk is re-asked for exactly the kept tokens
        assert [r.params.max_tokens for r in small.requests][:2] == [chunk, 6]


SCENARIOS = {
    "oscillating": dict(small_high={3, 4, 9, 10, 11, 20}, eos_small=30),
    "large-uncertain": dict(small_high={5}, large_high={6, 7}, eos_small=25),
    "eos-handed-over": dict(small_high={12}, eos_small=12, eos_large=15),
    "no-eos": dict(small_high={2, 17}, eos_small=None),
    "uncertain-start": dict(small_high={0, 1, 2}, eos_small=20),
}


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("chunk", [1, 3, 8])
@pytest.mark.parametrize(("window", "min_large"), [(1, 0), (3, 1), (5, 4)])
async def test_chunking_never_changes_the_answer(
    name: str, chunk: int, window: int, min_large: int
) -> None:
    small, large = pair(**SCENARIOS[name])  # type: ignore[arg-type]
    want, kept = reference(
        small, large, window=window, threshold=1.0, min_large_tokens=min_large, max_tokens=40
    )
    out = await ead(
        small,
        large,
        window=window,
        chunk_tokens=chunk,
        min_large_tokens=min_large,
        max_tokens=40,
    )(TASK)
    assert out.output == want
    assert out.info["tokens"] == kept
    assert sum(kept.values()) <= 40
    assert out.info["large_token_share"] == pytest.approx(kept["large"] / sum(kept.values()))
    assert out.output.lower() == "".join(letter(i, False) for i in range(len(out.output)))


async def test_min_large_tokens_holds_the_large_model() -> None:
    small, large = pair(small_high={4})
    out = await ead(small, large, min_large_tokens=5, chunk_tokens=3)(TASK)
    assert out.output == "abcdEFGHIjklmn"  # five large tokens though its entropy fell at once


async def test_no_decision_before_the_window_is_full() -> None:
    small, large = pair(small_high={0, 1})
    out = await ead(small, large, window=3)(TASK)
    # (3.0 + 3.0 + 0.2) / 3 > 1 at position 2, the first full window: the first two tokens
    # stay the small model's though each alone was far above the threshold
    assert out.output.startswith("abC")
    assert out.info["segments"][0]["entropy"] == pytest.approx(6.2 / 3)


async def test_max_tokens_is_respected() -> None:
    small, large = pair()
    out = await ead(small, large, max_tokens=7, chunk_tokens=4)(TASK)
    assert out.output == "abcdefG"
    assert sum(out.info["tokens"].values()) == 7
    assert out.info["segments"][-1]["end"] == "max_tokens"
    assert all(r.params.max_tokens <= 4 for r in small.requests + large.requests)


async def test_budget_exceeded_returns_best_so_far() -> None:
    small, large = pair()
    with Budget(max_model_calls=3):
        out = await ead(small, large, chunk_tokens=2)(TASK)
    assert out.error is not None and "model_calls" in out.error
    assert out.output == "abcdef"
    assert out.info["segments"][-1]["end"] == "budget"
    assert out.usage.model_calls == 3


@pytest.mark.parametrize(("stop", "want"), [("cd", "ab"), ("ef", "abcd"), ("HI", "abcdefG")])
async def test_stop_strings_also_across_chunks(stop: str, want: str) -> None:
    small, large = pair()
    params = SamplingParams(temperature=0.0, stop=(stop,))
    out = await ead(small, large, chunk_tokens=3, params=params)(TASK)
    assert out.output == want
    assert out.info["segments"][-1]["end"] == "stop"
    assert "".join(s["text"] for s in out.info["segments"]) == want


async def test_events_name_each_segment() -> None:
    small, large = pair()
    events: list[Event] = []
    with Tracer([events.append]).activate():
        out = await ead(small, large)(TASK)
    segs = [e.payload for e in events if e.type == "ead.segment"]
    assert [s["model"] for s in segs] == ["small", "large", "small", "large", "small"]
    assert segs == out.info["segments"]
    [result] = [e.payload for e in events if e.type == "ead.result"]
    assert result["large_token_share"] == out.info["large_token_share"]


async def test_prompt_rendering_per_backend() -> None:
    small, large = pair()
    large.tokenizer = type("Tok", (), {"chat_template": None})()  # type: ignore[attr-defined]
    await ead(small, large, system_prompt="Be brief.")(TASK)
    assert small.requests[0].messages is not None  # no tokenizer seen: the server's chat
    assert small.requests[0].messages[0].content == "Be brief."
    want = PLAIN_TEMPLATE.format(system="Be brief.\n\n", input=TASK.input)
    assert {r.prompt for r in large.requests} == {want}

    small, large = pair()
    await ead(small, large, small_prompt="Q: {input}\nA:", large_prompt=lambda t, s: f"<{t}>")(TASK)
    assert {r.prompt for r in small.requests} == {"Q: Say the alphabet.\nA:"}
    assert {r.prompt for r in large.requests} == {"<Say the alphabet.>"}


async def test_backend_without_entropies_is_named() -> None:
    small, _ = pair()
    large = EntropyScripted("mute", lambda p: 0.1, upper=True, with_entropies=False)
    with pytest.raises(NotSupported, match="'mute'"):
        await ead(small, large)(TASK)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 0}, "window"),
        ({"threshold": -0.5}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_large_tokens": -1}, "min_large_tokens"),
        ({"params": SamplingParams(n=2)}, "params.n"),
        ({"params": SamplingParams(temperature=0.7)}, "params.seed"),
        ({"small_prompt": "plain"}, "small_prompt"),
        ({"large_prompt": "no placeholder"}, "large_prompt"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    small, large = pair()
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        ead(small, large, **kwargs)


def test_same_backend_twice_or_no_prefix_is_rejected() -> None:
    small, large = pair()
    with pytest.raises(ConfigError, match="same backend"):
        EntropyAdaptiveDecoding(small, small)
    large.capabilities = Capabilities(prefix=False)
    with pytest.raises(ConfigError, match="large backend 'large'"):
        EntropyAdaptiveDecoding(small, large)


# ---- real models: SmolLM2-135M-Instruct (chat) <-> Gemma-3-270M base (plain prompt) --------


@pytest.fixture(scope="session")
def gemma() -> Iterator[Any]:
    from backends import load_backend

    yield load_backend("embedded:gemma3-270m")


@pytest.mark.slow
async def test_smollm2_and_gemma_hand_off_by_text(smollm2: Any, gemma: Any) -> None:
    assert not gemma.tokenizer.chat_template  # a base model: "auto" gives it a plain prompt
    events: list[Event] = []
    controller = EntropyAdaptiveDecoding(
        smollm2, gemma, window=5, threshold=2.0, chunk_tokens=8, max_tokens=40
    )
    task = Task(id="sky", input="Why is the sky blue? Answer in two sentences.")
    with Tracer([events.append]).activate():
        out = await controller(task, Context())
    info = out.info
    assert out.error is None
    models = [s["model"] for s in info["segments"]]
    assert "large" in models and models.count("small") >= 2, models  # over and back
    assert info["tokens"]["small"] > 0 and info["tokens"]["large"] > 0
    assert 0 < info["large_token_share"] < 1
    assert "".join(s["text"] for s in info["segments"]) == out.output
    calls = [e.payload for e in events if e.type == "backend.generate"]
    assert {c["backend"] for c in calls} == {smollm2.name, gemma.name}
    for c in calls:
        req = c["request"]
        assert out.output.startswith(req["prefix"])  # each model continued the text so far
        assert (req["messages"] is None) == (c["backend"] == gemma.name)
    assert sum(info["tokens"].values()) <= 40
    assert all(s["tokens"] > 0 for s in info["segments"] if s["text"])
