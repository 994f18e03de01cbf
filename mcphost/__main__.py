"""The ``mcphost`` command, also run as ``python -m mcphost``."""

import sys

from mcphost.daemon import startup_signals
from mcphost.ops import heap
from mcphost.plugins.worker import cgroups, zygote_client
from mcphost.protocol import sdk_models


def prepare() -> None:
    """What the command does before importing the daemon: keep a SIGHUP from ending it while
    it starts (:mod:`mcphost.daemon.startup_signals`), pause the garbage collector
    (:func:`mcphost.ops.heap.pause`; the daemon resumes it once started) and leave the SDK's wire
    models to build on first use (:mod:`mcphost.protocol.sdk_models`)."""
    startup_signals.hold_reloads()
    heap.pause()
    sdk_models.build_on_first_use()


def main() -> None:
    """Entry point of the ``mcphost`` command: :func:`mcphost.cli.main.main`, imported after :func:`prepare`."""
    prepare()
    if next((a for a in sys.argv[1:] if not a.startswith("-")), None) in ("serve", "stdio"):
        # Before any process of the daemon's is started: the fork server starts in its leaf.
        cgroups.set_up()
        # Isolated plugins' fork server imports the worker runtime meanwhile (the daemon ends
        # it if no plugin runs isolated).
        zygote_client.start_early()
    from mcphost.cli.main import main as run  # most of start-up: the daemon and the MCP SDK

    run()


if __name__ == "__main__":
    main()
