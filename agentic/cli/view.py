"""`agentic view`: the run and search-tree viewer (`agentic.view`) on a local web page.

agentic view run.jsonl                   one run: its tasks, timelines and search trees
agentic view pf.jsonl bon.jsonl          two runs side by side, and the curves of all
agentic view --live run.jsonl            follow a run in progress
agentic view --live traces/              follow the gateway's per-request recordings
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from agentic.core import ConfigError


def view(
    recordings: Annotated[
        list[Path],
        typer.Argument(
            help="Recordings of `agentic run --record`, or folders of them (the gateway's "
            "--record-dir).",
            show_default=False,
            metavar="RECORDING...",
        ),
    ],
    live: Annotated[
        bool,
        typer.Option(
            help="Follow the recordings as they grow (a run in progress; new files in a "
            "folder), updating the page each second."
        ),
    ] = False,
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0: any free port; the URL is printed).")
    ] = 8765,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
) -> None:
    """Show recorded runs on a local web page (127.0.0.1 only): summaries, two runs side by
    side, each task's timeline and search tree, accuracy-vs-cost curves."""
    try:
        import uvicorn

        from agentic.view.app import create_app
    except ImportError as e:
        raise ConfigError(
            f"agentic view needs the server extra ({e.name} is missing): "
            "pip install 'agentic[server]'"
        ) from None
    from agentic.cli.common import err
    from agentic.view.follow import Library

    if not 0 <= port < 65536:
        raise ConfigError(f"--port must be 0-65535, got {port}")
    library = Library.open(recordings, live=live)
    # bound here, not by uvicorn, so that --port 0 can print the port the system picked, and
    # a port in use is one clear line
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        # listening before the URL is printed: a client that connects at once waits in the
        # backlog until uvicorn accepts, instead of being refused
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    runs = len(library.recordings)
    err.print(
        f"agentic view: {url} ({runs} recording{'s' if runs != 1 else ''}"
        f"{', live' if live else ''}; Ctrl-C stops it)",
        highlight=False,
    )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    config = uvicorn.Config(create_app(library), log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
