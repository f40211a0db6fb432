"""What `agentic run` builds from its arguments: the controller spec from `--controller` and the
flags given with it, and suite settings from `-c KEY=VALUE`; each problem is one `ConfigError`
line. Apart from `commands.py` so the command module stays the commands."""

from __future__ import annotations

import json
from typing import Any

from agentic.core import ConfigError, redact_uri
from agentic.specs.registry import Spec, controller_types, parse_controller_spec, spec_class


def parse_config(pairs: list[str]) -> dict[str, Any]:
    """`-c KEY=VALUE` pairs: a VALUE that reads as JSON is that value, any other is a string (the
    suite checks each value's type and range)."""
    cfg: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--config takes KEY=VALUE, got {_brief(pair)}")
        try:
            cfg[key] = json.loads(value)
        except RecursionError:
            raise ConfigError(f"--config {key}: the value is nested too deeply") from None
        except ValueError:  # not JSON, or an integer too long to read: taken as a string
            cfg[key] = value
    return cfg


def _brief(text: str, limit: int = 80) -> str:
    """`text` quoted for an error message, cut so one line stays one line."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 5] + "...'"


def read_controller(controller: str, flags: dict[str, Any]) -> Spec:
    """`controller_spec`, with what reading a spec file can raise said in one line."""
    if not controller.strip():
        raise ConfigError(
            "--controller is empty: give a controller type (see --help), a spec file or inline JSON"
        )
    try:
        return controller_spec(controller, flags)
    except IsADirectoryError:
        raise ConfigError(
            f"--controller {_brief(controller)} is a directory, not a spec file"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"--controller {_brief(controller)}: the spec file is not UTF-8 text (byte {e.start})"
        ) from None
    except OSError as e:
        raise ConfigError(f"--controller {_brief(controller)}: {e.strerror or e}") from None
    except RecursionError:
        raise ConfigError(
            f"--controller {_brief(controller)}: the spec is nested too deeply"
        ) from None


# the options as `agentic run --help` spells them, where that is not the field's name
_FLAG_NAMES = {"cost": "astar-cost", "tokens_per_step": "tokens-per-step", "max_steps": "max-steps"}


def controller_spec(controller: str, flags: dict[str, Any]) -> Spec:
    """The spec `--controller` and the flags given with it describe. A type takes the flags its
    spec lists in `cli_flags` (sc and cyberv call N `n`); a flag the controller does not take is
    refused, never silently dropped. Spec files and inline JSON carry their own fields, so they
    take no flags."""
    known = controller in controller_types()
    if known:
        fields = spec_class(controller).cli_flags
        wrong = [f for f in flags if f not in fields]
        if not wrong:
            mapped = {fields[f]: v for f, v in flags.items()}
            return parse_controller_spec({"type": controller, **mapped})
    else:
        wrong = list(flags)
    if wrong:
        names = ", ".join("--" + _FLAG_NAMES.get(f, f.replace("_", "-")) for f in wrong)
        raise ConfigError(
            f"{names} does not apply to --controller "
            f"{controller if known else _brief(controller)}; set it in a spec file "
            "or inline JSON"
        )
    return parse_controller_spec(controller)


def redacted(value: Any) -> Any:
    """`value` (JSON data) with `redact_uri` applied to every string in it."""
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value
