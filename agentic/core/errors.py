"""Errors every layer raises, so callers can catch one family (`AgenticError`)."""

from __future__ import annotations


class AgenticError(Exception):
    """Base class of every error agentic raises on purpose."""


class ConfigError(AgenticError, ValueError):
    """A value given by the user is invalid; the message names the field or value."""


class NotSupported(AgenticError):
    """The backend cannot do what was asked (for example `score` on a server without echo)."""


class BackendUnavailable(AgenticError):
    """The backend could not be reached or kept failing after retries."""


class RequestRejected(AgenticError):
    """The backend refused a request (HTTP 4xx other than 429): retrying would not help."""


class ModelNotInstalled(AgenticError):
    """An embedded model's wheel is missing; the message says which command installs it."""


class ReplayMiss(AgenticError):
    """A replayed run asked for a request that the recording does not hold."""


class StructuredOutputError(AgenticError, ValueError):
    """The output did not parse or validate against the requested format, even after the
    retry with the error fed back; the message carries the last output and the error."""


class TraceFormatError(AgenticError, ValueError):
    """A trace/recording file has a line that is not a valid event."""


class StoreError(AgenticError, ValueError):
    """A memory store file cannot be used: not SQLite, corrupt, written by another program, or
    by a newer version. The message names the file; the file is left untouched."""
