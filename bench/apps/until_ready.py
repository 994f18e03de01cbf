"""A server's start-up and nothing else: the process exits the moment it would serve, so a
counter run over the whole process (callgrind) measures exec → ready.

``python bench/apps/until_ready.py mcphost serve --config X --port N`` runs the ``mcphost``
command as its script does and exits when it announces ``READY=1``;
``python bench/apps/until_ready.py reference --server uvicorn --port N [--plugins P]`` runs
``sdk_app.py`` and exits once uvicorn has started its app and bound its socket.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def mcphost(argv: list[str]) -> None:
    """The ``mcphost`` command, ending at ``READY=1`` (sent first, as systemd would see it)."""
    from mcphost import __main__ as command

    command.prepare()
    from mcphost.cli import main as cli
    from mcphost.ops import systemd

    notify = systemd.Notifier.ready

    def ready(self: systemd.Notifier, status: str) -> None:
        notify(self, status)
        os._exit(0)

    setattr(systemd.Notifier, "ready", ready)  # noqa: B010 (mypy: a function standing in for a method)
    sys.argv = ["mcphost", *argv]
    cli.main()


def reference(argv: list[str]) -> None:
    """``sdk_app.py`` on uvicorn, ending when uvicorn's start-up (lifespan, sockets) is done."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import uvicorn
    from sdk_app import main

    start = uvicorn.Server.startup

    async def startup(self: uvicorn.Server, *args: Any, **kwargs: Any) -> None:
        await start(self, *args, **kwargs)
        os._exit(0)

    setattr(uvicorn.Server, "startup", startup)  # noqa: B010
    sys.argv = ["sdk_app.py", *argv]
    main()


if __name__ == "__main__":
    {"mcphost": mcphost, "reference": reference}[sys.argv[1]](sys.argv[2:])
