"""Tools for agents: typed Python functions with JSON schemas, and the built-in tools.

`calculator` evaluates arithmetic safely, `python_tool()` runs code in a contained subprocess,
`search_docs_tool(folder)` retrieves passages from local text files with BM25.
"""

from agentic.agents.tools.base import Tool, ToolResult, tool
from agentic.agents.tools.calculator import CalculatorError, calculator, evaluate
from agentic.agents.tools.sandbox import (
    KernelIsolation,
    PythonSandbox,
    SandboxError,
    SandboxResult,
    kernel_isolation,
    python_tool,
)
from agentic.agents.tools.search_docs import DocIndex, Passage, search_docs_tool

__all__ = [
    "CalculatorError",
    "DocIndex",
    "KernelIsolation",
    "Passage",
    "PythonSandbox",
    "SandboxError",
    "SandboxResult",
    "Tool",
    "ToolResult",
    "calculator",
    "evaluate",
    "kernel_isolation",
    "python_tool",
    "search_docs_tool",
    "tool",
]
