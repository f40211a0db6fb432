"""Composable controllers: async callables `await controller(task, ctx) -> Outcome` built on
backends, search and memory. Composition is plain construction."""

from controllers.direct import Direct

__all__ = ["Direct"]
