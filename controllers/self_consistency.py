"""`SelfConsistency`: sample n answers and return the most common final answer (Wang et al. 2023,
"Self-Consistency Improves Chain of Thought Reasoning in Language Models").

Symbols: the sampled reasoning paths r_i are the n generations, a_i = `answer_of(task, r_i)`
(the suite's `extract`, so the voted answer is the graded one), and the
answer is argmax_a Σ_i 1[a_i = a] (ties go to the answer seen first). The plain baseline that
every voting or verifying controller (CyberV, best-of-N with a reward) has to beat at equal tokens.
"""

from __future__ import annotations

from collections import Counter

from agentic.core import (
    AnswerReader,
    BudgetExceeded,
    ConfigError,
    Context,
    GenerateRequest,
    Outcome,
    SamplingParams,
    Task,
    Usage,
    read_answer,
    task_messages,
)
from backends import Backend


class SelfConsistency:
    def __init__(
        self,
        backend: Backend,
        *,
        n: int = 8,
        params: SamplingParams | None = None,
        answer_of: AnswerReader = read_answer,
        system_prompt: str | None = None,
        seed: int = 0,
    ) -> None:
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        self.backend, self.n, self.answer_of = backend, n, answer_of
        self.params = (
            params or SamplingParams(temperature=1.0, min_p=0.1, max_tokens=64)
        ).model_copy(update={"n": n, "seed": seed})
        self.system_prompt = system_prompt

    def __repr__(self) -> str:
        return f"SelfConsistency({self.backend.name}, n={self.n})"

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        request = GenerateRequest(
            messages=task_messages(
                task, self.system_prompt or (ctx.system_prompt if ctx else None)
            ),
            params=self.params,
        )
        try:
            [gens] = await self.backend.generate([request])
        except BudgetExceeded as e:
            return Outcome(task_id=task.id, output="", error=str(e))
        answers = [self.answer_of(task, g.text) for g in gens]
        winner, votes = Counter(answers).most_common(1)[0]
        text = gens[answers.index(winner)].text
        return Outcome(
            task_id=task.id,
            output=text,
            usage=Usage.total(g.usage for g in gens),
            info={"answer": winner, "votes": votes, "n": len(gens)},
        )
