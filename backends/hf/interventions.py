"""Interventions on a local model: `InterventionHost`, the part of `TransformersBackend` that
attaches and detaches them and installs the layer hooks. The table of per-request slots and the
hooks themselves are `backends/interventions/` (`table.py`, `hooks.py`); `forward.py` tells the
hooks which slot each row of a forward belongs to.
"""

from __future__ import annotations

from typing import Any

from agentic.core import ConfigError
from backends.hf.forward import Forwards
from backends.interventions.base import Intervention
from backends.interventions.hooks import HookedLayers
from backends.interventions.table import Interventions


class InterventionHost:
    """Mixin for `TransformersBackend`. The attributes below are the backend's, which the mixin
    reads."""

    model: Any
    forwards: Forwards
    interventions: Interventions

    def attach(self, name: str, intervention: Intervention) -> None:
        """Make an intervention available to requests that name it
        (`GenerateRequest(..., interventions=(InterventionRef(name=name),))`). The layer hooks
        are installed on the first attach; a backend that never attaches runs the bare model."""
        self.interventions.attach(name, intervention)
        self.hooks()

    def hooks(self) -> HookedLayers:
        """The layer hooks, installed on first use."""
        if self.forwards.hooks is None:
            self.forwards.hooks = HookedLayers(self.model, self.interventions)
        return self.forwards.hooks

    def detach(self, name: str) -> Intervention:
        """Remove an intervention; requests already running keep their plan."""
        return self.interventions.detach(name)

    def clear_interventions(self) -> None:
        """Detach everything and take the layer hooks off the model (the model is then exactly
        as loaded). Only between requests: `ConfigError` while one with interventions runs."""
        if self.interventions.open_slots():
            raise ConfigError("clear_interventions: requests with interventions are running")
        for name in list(self.interventions.attached):
            self.interventions.detach(name)
        if self.forwards.hooks is not None:
            self.forwards.hooks.remove()
            self.forwards.hooks = None

    def _close(self, slot: int) -> dict[str, Any]:
        """Free a finished request's slot: what its interventions did, for the trace."""
        described = self.interventions.describe(slot)
        plan, activity = self.interventions.close(slot)
        return {
            "interventions": described,
            "decisions": plan.notes,
            "skip": sorted(plan.skip | plan.decode_skip),
            "ffn_skip": sorted(plan.ffn_skip),
            "repeat": sorted(plan.repeat),
            "steered_layers": sorted(plan.steer),
            "activity": activity.model_dump() if activity is not None else None,
        }
