"""`CyberVLoop`: a sensor / controller / feedback loop around sampling, after Meng et al. 2025,
"CyberV: Cybernetics for Test-time Scaling in Video Understanding", carried over to text models.

CyberV wraps a frozen model in a closed loop: an *inference system* answers, a *sensor* reads
signals off that run, a *controller* decides from them whether the answer can stand, and if not,
*feedback* built from what the sensor found steers one more round. Here:

- inference: round 1 is the greedy answer plus `n` samples (temperature `params.temperature`);
- sensor (`sense`): per candidate, from its `Generation`: the final answer a(y) (`answer_of`), the
  confidence of its answer tokens (geometric-mean probability; the span is the answer's character
  span scaled to token positions), their mean entropy, repetition (share of repeated token
  4-grams), agreement with the greedy answer. The paper's attention drift toward the supplied
  frames becomes drift toward the supplied context; none of our backends exposes attention, so
  that signal is absent (None), never estimated;
- controller (`vote`): a weighted vote, each candidate's weight w = confidence × (1 − repetition)
  (confidence 1 where the backend gives no logprobs). The vote is *weak* when the winning answer's
  weight is below θ·n, n the number of candidates;
- feedback: a user turn listing the answers that disagreed with their support and confidence and
  the least confident answer spans, then one corrective round of `n` samples. The final vote runs
  over both rounds' candidates.

Signals and decisions are events: `cyberv.signals` (per candidate), `cyberv.decision`,
`cyberv.feedback`. `Outcome.info` holds the answer, its weight share, whether the vote was weak.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from math import exp

from pydantic import BaseModel, ConfigDict

from agentic.core import (
    AnswerReader,
    BudgetExceeded,
    ConfigError,
    Context,
    GenerateRequest,
    Generation,
    Message,
    Outcome,
    SamplingParams,
    Task,
    Usage,
    emit,
    read_answer,
    span,
    task_messages,
)
from backends import Backend


class Signals(BaseModel):
    """What the sensor read off one candidate."""

    model_config = ConfigDict(frozen=True)

    index: int
    answer: str
    greedy: bool
    confidence: float | None
    entropy: float | None
    repetition: float
    agrees_with_greedy: bool
    attention_drift: float | None = None

    @property
    def weight(self) -> float:
        conf = 1.0 if self.confidence is None else self.confidence
        return conf * (1.0 - self.repetition)


def repetition(token_ids: Sequence[int], n: int = 4) -> float:
    """Share of token n-grams that repeat an earlier one: 0 for fresh text, near 1 for loops."""
    grams = [tuple(token_ids[i : i + n]) for i in range(len(token_ids) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


class CyberVLoop:
    def __init__(
        self,
        backend: Backend,
        *,
        n: int = 4,
        theta: float = 0.5,
        params: SamplingParams | None = None,
        answer_of: AnswerReader = read_answer,
        system_prompt: str | None = None,
        seed: int = 0,
    ) -> None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        if not 0.0 <= theta <= 1.0:
            raise ConfigError(f"theta must be in [0, 1], got {theta}")
        self.backend, self.n, self.theta = backend, n, theta
        self.params = params or SamplingParams(temperature=0.7, max_tokens=64)
        self.answer_of, self.system_prompt, self.seed = answer_of, system_prompt, seed

    def __repr__(self) -> str:
        return f"CyberVLoop({self.backend.name}, n={self.n}, theta={self.theta})"

    def _messages(
        self, task: Task, ctx: Context | None, feedback: str | None
    ) -> tuple[Message, ...]:
        *head, user = task_messages(
            task, self.system_prompt or (ctx.system_prompt if ctx else None)
        )
        if feedback is None:
            return (*head, user)
        return (*head, Message(role="user", content=f"{task.input}\n\n{feedback}"))

    async def _round(
        self, messages: tuple[Message, ...], greedy: bool, seed: int
    ) -> list[Generation]:
        base = self.params.model_copy(update={"logprobs": 5, "n": self.n, "seed": seed})
        requests = [GenerateRequest(messages=messages, params=base)]
        if greedy:
            g = base.model_copy(update={"temperature": 0.0, "n": 1, "seed": None})
            requests.insert(0, GenerateRequest(messages=messages, params=g))
        return [gen for gens in await self.backend.generate(requests) for gen in gens]

    def sense(
        self, task: Task, gens: Sequence[Generation], greedy_answer: str, first: int = 0
    ) -> list[Signals]:
        out = []
        for i, g in enumerate(gens):
            answer = self.answer_of(task, g.text)
            lo, hi = self._answer_tokens(g, answer)
            conf = ent = None
            if g.token_logprobs and hi > lo:
                span_lp = g.token_logprobs[lo:hi]
                conf = exp(sum(span_lp) / len(span_lp))
            if g.entropies and hi > lo:
                ent = sum(g.entropies[lo:hi]) / (hi - lo)
            out.append(
                Signals(
                    index=first + i,
                    answer=answer,
                    greedy=first == 0 and i == 0,
                    confidence=conf,
                    entropy=ent,
                    repetition=repetition(g.token_ids),
                    agrees_with_greedy=answer == greedy_answer,
                )
            )
        return out

    @staticmethod
    def _answer_tokens(g: Generation, answer: str) -> tuple[int, int]:
        """Token positions of the answer's last occurrence in the text: its character span
        scaled to token positions. Approximate by a token at the edges, but it needs nothing but
        the generation, so remote backends and replays (which have no tokenizer) agree."""
        total = len(g.token_ids) or len(g.token_logprobs or ())
        at = g.text.rfind(answer) if answer else -1
        if at < 0 or total == 0 or not g.text:
            return (max(total - 1, 0), total)
        lo = min(int(at * total / len(g.text)), total - 1)
        hi = min(max(-(-(at + len(answer)) * total // len(g.text)), lo + 1), total)
        return lo, hi

    def vote(self, signals: Sequence[Signals]) -> tuple[str, float, bool]:
        """The winning answer, its weight, and whether the vote is weak (weight < θ·n)."""
        weights: dict[str, float] = defaultdict(float)
        for s in signals:
            weights[s.answer] += s.weight
        winner = max(weights, key=lambda a: weights[a])
        return winner, weights[winner], weights[winner] < self.theta * len(signals)

    def feedback(self, signals: Sequence[Signals]) -> str:
        groups: dict[str, list[Signals]] = defaultdict(list)
        for s in signals:
            groups[s.answer].append(s)
        lines = ["Earlier attempts at this question disagreed:"]
        for answer, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            confs = [m.confidence for m in members if m.confidence is not None]
            conf = f", confidence {sum(confs) / len(confs):.2f}" if confs else ""
            lines.append(f"- answer {answer or '(none)'!r}: {len(members)} of {len(signals)}{conf}")
        loops = sum(1 for s in signals if s.repetition > 0.3)
        if loops:
            lines.append(f"{loops} attempt(s) repeated themselves.")
        lines.append("Work it out again carefully and give the final answer.")
        return "\n".join(lines)

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        usage = Usage()
        gens: list[Generation] = []
        with span("cyberv", task_id=task.id):
            try:
                gens = await self._round(self._messages(task, ctx, None), True, self.seed)
                usage = Usage.total(g.usage for g in gens)
                greedy_answer = self.answer_of(task, gens[0].text)
                signals = self.sense(task, gens, greedy_answer)
                for s in signals:
                    emit("cyberv.signals", **s.model_dump())
                answer, weight, weak = self.vote(signals)
                emit("cyberv.decision", round=1, answer=answer, weight=weight, weak=weak)
                rounds = 1
                if weak:
                    fb = self.feedback(signals)
                    emit("cyberv.feedback", text=fb)
                    more = await self._round(self._messages(task, ctx, fb), False, self.seed + 1)
                    usage = usage + Usage.total(g.usage for g in more)
                    extra = self.sense(task, more, greedy_answer, first=len(gens))
                    for s in extra:
                        emit("cyberv.signals", **s.model_dump())
                    gens, signals, rounds = gens + more, signals + extra, 2
                    answer, weight, _ = self.vote(signals)
                    emit("cyberv.decision", round=2, answer=answer, weight=weight, weak=False)
            except BudgetExceeded as e:
                so_far = gens[0].text if gens else ""
                return Outcome(task_id=task.id, output=so_far, usage=usage, error=str(e))
        best = max((s for s in signals if s.answer == answer), key=lambda s: s.weight)
        return Outcome(
            task_id=task.id,
            output=gens[best.index].text,
            usage=usage,
            info={
                "answer": answer,
                "share": weight / max(sum(s.weight for s in signals), 1e-9),
                "weak": weak,
                "rounds": rounds,
            },
        )
