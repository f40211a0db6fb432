"""The OpenAI-compatible gateway: `agentic serve`, or `create_app` for your own ASGI server.

Needs the `server` extra (fastapi, uvicorn, prometheus-client); importing `agentic` does not
import this package.
"""

from agentic.server.app import create_app
from agentic.server.config import (
    BudgetLimits,
    GatewayConfig,
    KeyConfig,
    OTelConfig,
    RecordConfig,
)
from agentic.server.service import Gateway, RequestError

__all__ = [
    "BudgetLimits",
    "Gateway",
    "GatewayConfig",
    "KeyConfig",
    "OTelConfig",
    "RecordConfig",
    "RequestError",
    "create_app",
]
