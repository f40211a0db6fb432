"""Agents and what they act with: `ToolAgent` (`tool_agent`, a ReAct loop over typed tools),
`tools` (typed tools: calculator, Python sandbox, document search), and `verifiers` (the
program-aided reward run in the sandbox)."""

from agentic.agents.tool_agent import ToolAgent, action_schema

__all__ = ["ToolAgent", "action_schema"]
