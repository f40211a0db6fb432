"""Contracts shared by every layer of agentic. Imports nothing from the rest of the repository."""

from agentic.core.budget import Budget, BudgetExceeded, charge_budget, check_budget
from agentic.core.errors import (
    AgenticError,
    BackendUnavailable,
    ConfigError,
    ModelNotInstalled,
    NotSupported,
    ReplayMiss,
    RequestRejected,
    TraceFormatError,
)
from agentic.core.events import ConsoleSink, Event, JSONLSink, Tracer, emit, read_events, span
from agentic.core.tasks import Context, Controller, Outcome, Task, TaskSuite
from agentic.core.types import (
    GenerateRequest,
    Generation,
    Message,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    ToolCall,
    TopLogprob,
    Usage,
)

__all__ = [
    "AgenticError",
    "BackendUnavailable",
    "Budget",
    "BudgetExceeded",
    "ConfigError",
    "ConsoleSink",
    "Context",
    "Controller",
    "Event",
    "GenerateRequest",
    "Generation",
    "JSONLSink",
    "Message",
    "ModelNotInstalled",
    "NotSupported",
    "Outcome",
    "ReplayMiss",
    "RequestRejected",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
    "Task",
    "TaskSuite",
    "ToolCall",
    "TopLogprob",
    "TraceFormatError",
    "Tracer",
    "Usage",
    "charge_budget",
    "check_budget",
    "emit",
    "read_events",
    "span",
]
