"""`CaseMemoryAgent`: the planner–executor loop of AgentFly (Zhou et al. 2025, "AgentFly:
Fine-tuning LLM Agents without Fine-tuning LLMs", Memento), which improves at test time by
reading and writing a case bank instead of updating weights.

One task s_t, in the paper's steps:
1. Read. `selection="similarity"` (non-parametric): the k most similar successful cases and the
   k most similar failed ones, by cosine of their task embeddings. `selection="q"`
   (parametric): the top `candidates` of each label by cosine, then k of each drawn from
   μ(c | s_t) = softmax(Q(s_t, c)/α) of the `CasePolicy`.
2. Plan. The planner backend writes a short plan for s_t, shown the successful cases' plans as
   "worked before" and the failed ones' as "avoid".
3. Execute. The executor controller (a `ToolAgent` in practice) solves the task with the plan
   appended to its input (`execute_template`).
4. Judge. r_t = the `checker`'s score if one is given, else an LLM judge's P(Yes) against P(No)
   from `Backend.score` (`search.rewards.JudgeReward`); the label is r_t >= `threshold`.
5. Write. The case (s_t, plan, short trajectory, r_t, label) goes into the bank, reusing the
   query embedding; then each retrieved case is labelled with whether this task succeeded (did
   retrieving it help?), the policy takes its online update on those (s_t, c, label) triples
   and is saved beside the bank. Bank writes and training run off the event loop.
   `write=False` leaves the bank as it is; `learn=False` freezes the policy.

Events, inside a `case_memory` span: `case_memory.retrieve`, `.plan`, `.execute`, `.judge`,
`.write`, `.update`. A used-up `Budget` ends the task with the best so far and writes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import numpy as np

from agentic.core import (
    BudgetExceeded,
    ConfigError,
    Context,
    Controller,
    GenerateRequest,
    Message,
    Outcome,
    SamplingParams,
    Task,
    check_budget,
    emit,
    span,
)
from backends import Backend
from memory.case_bank import CaseBank
from memory.case_policy import CasePolicy
from memory.cases import Case, CaseHit
from search.rewards import JudgeReward

Checker = Callable[[Task, str], Awaitable[float]]

PLANNER_SYSTEM = (
    "You write short plans. Given a task, reply with a plan of at most three short numbered "
    "steps for solving it. Do not solve the task yourself."
)
JUDGE_PROMPT = (
    "Question: {question}\n\nAnswer:\n{answer}\n\nIs this answer correct? Answer Yes or No."
)
EXECUTE_TEMPLATE = "{task}\n\nPlan:\n{plan}"


def _cases_block(title: str, hits: list[CaseHit]) -> str:
    lines = [title]
    for h in hits:
        lines.append(f"- Task: {h.case.task}\n  Plan: {h.case.plan}")
        if h.case.trajectory:
            lines.append(f"  Outcome: {h.case.trajectory}")
    return "\n".join(lines)


def plan_prompt(task: str, positive: list[CaseHit], negative: list[CaseHit]) -> str:
    """The planner's user turn: the task, what worked before and what to avoid."""
    parts = [f"Task: {task}"]
    if positive:
        parts.append(_cases_block("Plans that worked on similar tasks:", positive))
    if negative:
        parts.append(_cases_block("Plans that failed on similar tasks (avoid them):", negative))
    parts.append("Write a short plan for the task.")
    return "\n\n".join(parts)


class CaseMemoryAgent:
    """`await agent(task, ctx) -> Outcome`; see the module docstring."""

    def __init__(
        self,
        planner: Backend,
        executor: Controller,
        bank: CaseBank,
        *,
        checker: Checker | None = None,
        judge: Backend | None = None,
        selection: Literal["similarity", "q"] = "similarity",
        policy: CasePolicy | None = None,
        k: int = 2,
        candidates: int = 8,
        threshold: float = 0.5,
        plan_params: SamplingParams | None = None,
        execute_template: str = EXECUTE_TEMPLATE,
        trajectory_chars: int = 300,
        write: bool = True,
        learn: bool = True,
    ) -> None:
        if selection not in ("similarity", "q"):
            raise ConfigError(f"selection must be 'similarity' or 'q', got {selection!r}")
        if k < 1 or candidates < k:
            raise ConfigError(f"need 1 <= k <= candidates, got k={k}, candidates={candidates}")
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold}")
        if "{task}" not in execute_template or "{plan}" not in execute_template:
            raise ConfigError("execute_template must contain {task} and {plan}")
        if bank.embedder is None:
            raise ConfigError(f"case bank {bank.name!r} needs an embedder to retrieve by task")
        if policy is not None and policy.config.dim != bank.dim:
            raise ConfigError(f"policy dim {policy.config.dim} != bank dim {bank.dim}")
        self.planner, self.executor, self.bank = planner, executor, bank
        self.checker, self.selection, self.policy = checker, selection, policy
        self.judge = None
        if checker is None:
            self.judge = JudgeReward(judge or planner, prompt=JUDGE_PROMPT)
        self.k, self.candidates, self.threshold = k, candidates, threshold
        self.plan_params = plan_params or SamplingParams(temperature=0.0, max_tokens=96)
        self.execute_template, self.trajectory_chars = execute_template, trajectory_chars
        self.write, self.learn = write, learn
        self._policy_ready, self._learning = asyncio.Lock(), asyncio.Lock()

    def __repr__(self) -> str:
        return f"CaseMemoryAgent({self.planner.name}, {self.executor!r}, {self.selection})"

    async def _get_policy(self) -> CasePolicy | None:
        """The policy to select with and train: the one given, else the one saved in the bank,
        else a fresh one (only in "q" mode: similarity mode trains a policy only if given)."""
        if self.policy is None and self.selection == "q":
            async with self._policy_ready:
                if self.policy is None:
                    assert self.bank.dim is not None
                    self.policy = await CasePolicy.load(self.bank) or CasePolicy(self.bank.dim)
        return self.policy

    async def _read(self, query: np.ndarray) -> tuple[list[CaseHit], list[CaseHit]]:
        policy = await self._get_policy() if self.selection == "q" else None
        fetch = self.candidates if policy is not None else self.k
        found = await asyncio.gather(
            *(self.bank.search(query, fetch, label=lab) for lab in (True, False))
        )
        if policy is None:
            return found[0], found[1]
        picked = []
        for hits in found:
            if len(hits) <= self.k:
                picked.append(hits)
                continue
            vecs = await self.bank.vectors([h.case.id for h in hits])
            order = await asyncio.to_thread(policy.select, query, vecs, self.k)
            picked.append([hits[i] for i in order])
        return picked[0], picked[1]

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        ctx = ctx or Context()
        with span("case_memory", task_id=task.id, selection=self.selection):
            query = await self.bank.embed_query(task.input)
            positive, negative = await self._read(query)
            emit(
                "case_memory.retrieve",
                positive=[{"id": h.case.id, "score": h.score} for h in positive],
                negative=[{"id": h.case.id, "score": h.score} for h in negative],
            )
            prompt = plan_prompt(task.input, positive, negative)
            request = GenerateRequest(
                messages=(
                    Message(role="system", content=PLANNER_SYSTEM),
                    Message(role="user", content=prompt),
                ),
                params=self.plan_params,
            )
            try:
                [[gen, *_]] = await self.planner.generate([request])
            except BudgetExceeded as e:
                return Outcome(task_id=task.id, output="", error=str(e))
            plan = gen.text.strip()
            emit("case_memory.plan", plan=plan)

            run = task.model_copy(
                update={"input": self.execute_template.format(task=task.input, plan=plan)}
            )
            result = await self.executor(run, ctx)
            emit("case_memory.execute", output=result.output[:500], error=result.error)
            usage = gen.usage + result.usage
            info: dict[str, Any] = {
                "plan": plan,
                "retrieved": {
                    "positive": [h.case.id for h in positive],
                    "negative": [h.case.id for h in negative],
                },
                "executor": result.info,
            }
            try:
                if result.error is not None:
                    check_budget()  # cut short by the budget, the run says nothing about the plan
                reward = await self._judge(task, result.output)
            except BudgetExceeded as e:
                return Outcome(
                    task_id=task.id, output=result.output, usage=usage, error=str(e), info=info
                )
            label = reward >= self.threshold
            emit(
                "case_memory.judge",
                reward=reward,
                label=label,
                by="checker" if self.checker is not None else "judge",
            )
            info.update(reward=reward, label=label)
            if self.write:
                info["case_id"] = await self._write(task, plan, result, reward, label, query)
            if self.learn:
                await self._learn(query, positive + negative, label)
        return Outcome(
            task_id=task.id, output=result.output, usage=usage, error=result.error, info=info
        )

    async def _judge(self, task: Task, output: str) -> float:
        if self.checker is not None:
            return float(await self.checker(task, output))
        assert self.judge is not None
        [p] = await self.judge.judge(task, [output])
        return float(p)

    def _trajectory(self, result: Outcome) -> str:
        tools = result.info.get("tool_calls") or []
        parts = [f"answer: {result.output.strip()}"]
        if tools:
            parts.append(f"tools: {', '.join(map(str, tools))}")
        if result.error:
            parts.append(f"error: {result.error}")
        text = "; ".join(parts)
        return text if len(text) <= self.trajectory_chars else text[: self.trajectory_chars] + "…"

    async def _write(
        self, task: Task, plan: str, result: Outcome, reward: float, label: bool, query: np.ndarray
    ) -> str:
        case = Case(
            task=task.input,
            plan=plan,
            trajectory=self._trajectory(result),
            reward=reward,
            label=label,
            metadata={"task_id": task.id, "selection": self.selection},
        )
        await self.bank.add(case, vector=query)
        emit("case_memory.write", case_id=case.id, label=label, reward=reward)
        return case.id

    async def _learn(self, query: np.ndarray, used: list[CaseHit], label: bool) -> None:
        """Each case shown to the planner helped iff the task succeeded: one BCE update."""
        policy = self.policy
        if policy is None or not used:
            return
        vecs = await self.bank.vectors([h.case.id for h in used])
        labels = np.full(len(used), float(label))
        async with self._learning:  # tasks run concurrently; the last save holds every update
            loss = await asyncio.to_thread(policy.update, query, vecs, labels)
            await policy.save(self.bank)
        emit("case_memory.update", cases=len(used), label=label, loss=loss)
