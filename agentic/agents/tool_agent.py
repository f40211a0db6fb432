"""`ToolAgent`: a ReAct loop (Yao et al. 2023, "ReAct: Synergizing Reasoning and Acting in
Language Models") over typed tools, that even a 135M model drives without malformed calls.

Each turn the model writes one JSON *action*: either a tool call
`{"thought": ..., "tool": NAME, "arguments": {...}}` or an answer
`{"thought": ..., "final_answer": ...}`. The JSON schema of the actions (one branch per tool,
with that tool's argument schema, plus the answer branch) goes to the backend as
`GenerateRequest.response_format`, so a local backend can only emit a valid action and a server
enforces it with its own structured output. The tool's result comes back to the model as the
next user turn, an *observation*; so do bad actions (cut-off JSON, unknown tools, bad arguments)
and tool failures: they are fed back, never raised, and the loop goes on.

ReAct's symbols: thought t_i = `thought`, action a_i = `tool` + `arguments`, observation o_i = the
tool's `ToolResult.content`. The loop stops at the first answer, after `max_steps` actions, or
when the shared `Budget` runs out (the answer is then the best so far: empty, with the error).

Every action and observation is an event (`agent.action`, `agent.observation`, `agent.answer`),
inside an `agent` span; the model calls are ordinary backend events, so a recorded run replays
through `ReplayBackend` (tools run again on replay; they are deterministic for a given input).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from agentic.agents.tools import Tool
from agentic.core import (
    BudgetExceeded,
    ConfigError,
    Context,
    GenerateRequest,
    Message,
    Outcome,
    ResponseFormat,
    SamplingParams,
    Task,
    ToolCall,
    Usage,
    emit,
    span,
)
from backends import Backend

INSTRUCTIONS = """You can use tools. Reply with one JSON object per turn.
To use a tool: {{"thought": "<why>", "tool": "<tool name>", "arguments": {{...}}}}
To answer: {{"thought": "<why>", "final_answer": "<the answer>"}}
After a tool call you get its result and then reply again.

Tools:
{tools}"""


def action_schema(
    tools: Sequence[Tool],
    thought_chars: int = 100,
    answer_chars: int = 200,
    *,
    answer: bool = True,
) -> dict[str, Any]:
    """The JSON schema of one action: a call of one of `tools`, or (if `answer`) the final
    answer. Strings have a length cap so a small model cannot ramble past the token limit."""
    thought = {"type": "string", "maxLength": thought_chars}
    defs: dict[str, Any] = {}
    branches: list[dict[str, Any]] = []
    for t in tools:
        params = dict(t.json_schema()["parameters"])
        defs.update(params.pop("$defs", {}))
        branches.append(
            {
                "type": "object",
                "properties": {"thought": thought, "tool": {"const": t.name}, "arguments": params},
                "required": ["thought", "tool", "arguments"],
                "additionalProperties": False,
            }
        )
    if answer:
        branches.append(
            {
                "type": "object",
                "properties": {
                    "thought": thought,
                    "final_answer": {"type": "string", "maxLength": answer_chars},
                },
                "required": ["thought", "final_answer"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"anyOf": branches}
    if defs:
        schema["$defs"] = defs
    return schema


def demonstration(tools: Sequence[Tool]) -> list[Message]:
    """A worked exchange shown before the task, for the calculator when it is among the tools:
    small models copy the pattern (call, read the result, answer) far more reliably than they
    follow the instructions alone."""
    if "calculator" not in {t.name for t in tools}:
        return []
    call = {"thought": "Use the calculator.", "tool": "calculator"}
    return [
        Message(role="user", content="What is 12 * 34?"),
        Message(
            role="assistant", content=json.dumps({**call, "arguments": {"expression": "12 * 34"}})
        ),
        Message(role="user", content="Tool calculator result: 408"),
        Message(
            role="assistant",
            content=json.dumps({"thought": "The calculator gave 408.", "final_answer": "408"}),
        ),
    ]


def _describe(tool: Tool) -> str:
    args = json.dumps(tool.json_schema()["parameters"].get("properties", {}))
    return f"- {tool.name}: {tool.description} Arguments: {args}"


class ToolAgent:
    """`await ToolAgent(backend, tools)(task) -> Outcome`; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        tools: Sequence[Tool],
        *,
        max_steps: int = 6,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        constrained: bool | None = None,
        examples: Sequence[Message] | None = None,
        tool_choice: Literal["auto", "required"] = "auto",
    ) -> None:
        if max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
        if tool_choice not in ("auto", "required"):
            raise ConfigError(f"tool_choice must be 'auto' or 'required', got {tool_choice!r}")
        if tool_choice == "required" and not tools:
            raise ConfigError("tool_choice 'required' needs at least one tool")
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"tools must have distinct names, got {names}")
        self.backend = backend
        self.tools = {t.name: t for t in tools}
        self.max_steps = max_steps
        self.params = params or SamplingParams(temperature=0.0, max_tokens=160)
        self.system_prompt = system_prompt
        self.examples = list(demonstration(tools) if examples is None else examples)
        if constrained is None:
            constrained = bool(getattr(backend.capabilities, "structured_output", False))
        self.tool_choice = tool_choice
        self.formats: dict[bool, ResponseFormat] = {}
        if constrained:
            for may_answer in (True, False):
                schema = action_schema(tools, answer=may_answer) if tools or may_answer else {}
                if schema:
                    self.formats[may_answer] = ResponseFormat(
                        type="json_schema", json_schema=schema, name="action"
                    )

    @property
    def response_format(self) -> ResponseFormat | None:
        """The format of an action once answering is allowed (None: unconstrained)."""
        return self.formats.get(True)

    def __repr__(self) -> str:
        return f"ToolAgent({self.backend.name}, tools={list(self.tools)})"

    def instructions(self, ctx: Context | None) -> str:
        text = INSTRUCTIONS.format(tools="\n".join(_describe(t) for t in self.tools.values()))
        extra = self.system_prompt or (ctx.system_prompt if ctx else None)
        return f"{extra}\n\n{text}" if extra else text

    async def __call__(self, task: Task, ctx: Context | None = None) -> Outcome:
        messages = [
            Message(role="system", content=self.instructions(ctx)),
            *self.examples,
            Message(role="user", content=task.input),
        ]
        usage, steps, used, worked = Usage(), 0, list[str](), 0
        with span("agent", task_id=task.id, tools=list(self.tools)):
            try:
                for steps in range(1, self.max_steps + 1):
                    # tool_choice "required": no answer before one tool call has worked
                    may_answer = self.tool_choice == "auto" or worked > 0
                    request = GenerateRequest(
                        messages=tuple(messages),
                        params=self.params,
                        response_format=self.formats.get(may_answer),
                    )
                    [[gen, *_]] = await self.backend.generate([request])
                    usage = usage + gen.usage
                    action, error = self._parse(gen.text, gen.finish_reason, may_answer)
                    if action is not None and "final_answer" in action:
                        answer = str(action["final_answer"])
                        emit("agent.answer", step=steps, thought=action.get("thought"))
                        return self._outcome(task, answer, usage, steps, used)
                    call = None
                    if action is not None:
                        call = ToolCall(
                            id=f"call_{steps}", name=action["tool"], arguments=action["arguments"]
                        )
                    messages.append(
                        Message(
                            role="assistant",
                            content=gen.text,
                            tool_calls=(call,) if call else None,
                        )
                    )
                    if call is None:
                        observation = f"Error: {error} Reply with one JSON action."
                        emit("agent.action", step=steps, error=error, text=gen.text[:500])
                    else:
                        emit(
                            "agent.action",
                            step=steps,
                            tool=call.name,
                            arguments=call.arguments,
                            thought=action.get("thought") if action else None,
                        )
                        ok, observation = await self._observe(call)
                        used.append(call.name)
                        worked += ok
                    messages.append(Message(role="user", content=observation))
            except BudgetExceeded as e:
                return self._outcome(task, "", usage, steps, used, error=str(e))
        return self._outcome(
            task, "", usage, steps, used, error=f"no final answer after {self.max_steps} steps"
        )

    def _parse(
        self, text: str, finish: str, may_answer: bool = True
    ) -> tuple[dict[str, Any] | None, str]:
        """The action in `text`, or None and what is wrong with it (fed back to the model)."""
        try:
            action = json.loads(text)
        except json.JSONDecodeError as e:
            cut = " (the reply was cut off: keep the thought short)" if finish == "length" else ""
            return None, f"your reply is not valid JSON: {e.msg} at char {e.pos}{cut}."
        if not isinstance(action, dict):
            return None, "your reply must be a JSON object."
        if "final_answer" in action:
            if not may_answer:
                return None, "call a tool before you answer."
            return action, ""
        name = action.get("tool")
        if name not in self.tools:
            return None, f"unknown tool {name!r}; the tools are {', '.join(self.tools)}."
        if not isinstance(action.get("arguments"), dict):
            return None, f"tool {name!r} needs an 'arguments' object."
        return action, ""

    async def _observe(self, call: ToolCall) -> tuple[bool, str]:
        result = await self.tools[call.name].run(call.arguments)
        emit(
            "agent.observation",
            tool=call.name,
            ok=result.ok,
            content=result.content[:2000],
            seconds=result.seconds,
        )
        status = "result" if result.ok else "error"
        return result.ok, f"Tool {call.name} {status}: {result.content}"

    def _outcome(
        self,
        task: Task,
        answer: str,
        usage: Usage,
        steps: int,
        used: list[str],
        error: str | None = None,
    ) -> Outcome:
        return Outcome(
            task_id=task.id,
            output=answer,
            usage=usage,
            error=error,
            info={"steps": steps, "tool_calls": used},
        )
