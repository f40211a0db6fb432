"""Contracts shared by every layer of agentic. Imports nothing from the rest of the repository."""

from agentic.core.affinity import affinity, affinity_key
from agentic.core.answers import AnswerReader, extract_answer, read_answer
from agentic.core.budget import Budget, BudgetExceeded, charge_budget, check_budget
from agentic.core.errors import (
    AgenticError,
    BackendUnavailable,
    ConfigError,
    ModelNotInstalled,
    NotSupported,
    ReplayMiss,
    RequestRejected,
    StoreError,
    StructuredOutputError,
    TraceFormatError,
)
from agentic.core.events import (
    ConsoleSink,
    Event,
    JSONLSink,
    Tracer,
    emit,
    forward,
    read_events,
    span,
)
from agentic.core.otel import OTelExport, OTelSink
from agentic.core.prices import Price, PriceTable
from agentic.core.redact import redact_uri
from agentic.core.sync import run
from agentic.core.tasks import Context, Controller, Outcome, Task, TaskSuite
from agentic.core.types import (
    GenerateRequest,
    Generation,
    InterventionRef,
    Message,
    ResponseFormat,
    SamplingParams,
    ScoreRequest,
    ScoreResult,
    ToolCall,
    TopLogprob,
    Usage,
    task_messages,
)

__all__ = [
    "AgenticError",
    "AnswerReader",
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
    "InterventionRef",
    "JSONLSink",
    "Message",
    "ModelNotInstalled",
    "NotSupported",
    "OTelExport",
    "OTelSink",
    "Outcome",
    "Price",
    "PriceTable",
    "ReplayMiss",
    "RequestRejected",
    "ResponseFormat",
    "SamplingParams",
    "ScoreRequest",
    "ScoreResult",
    "StoreError",
    "StructuredOutputError",
    "Task",
    "TaskSuite",
    "ToolCall",
    "TopLogprob",
    "TraceFormatError",
    "Tracer",
    "Usage",
    "affinity",
    "affinity_key",
    "charge_budget",
    "check_budget",
    "emit",
    "extract_answer",
    "forward",
    "read_answer",
    "read_events",
    "redact_uri",
    "run",
    "span",
    "task_messages",
]
