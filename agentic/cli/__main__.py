"""`python -m agentic.cli`: the `agentic` command."""

from agentic.cli.commands import main

main()
