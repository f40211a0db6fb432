"""The `agentic` command (the console script `agentic = agentic.cli:main`).

`commands.py` holds the app and the core commands (generate, run, replay); each command group
lives in its own module (`inspect`: trace and plot, `memory`, `route`, `steer`), beside what they
share (`common`: the stderr console and loading a backend; `spec`: controller specs and suite
settings from the arguments; `progress`: the progress of `agentic run`); `serve` starts the
gateway and `view` the run viewer.
"""

from agentic.cli.commands import app, main

__all__ = ["app", "main"]
