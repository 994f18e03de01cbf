"""The ``mcphost`` command, also run as ``python -m mcphost``."""

import sys

from mcphost.daemon import startup_signals
from mcphost.ops import heap, sdk_models, sdk_packages
from mcphost.plugins.worker import cgroups, launch


def prepare(*, fork_server: bool = False) -> None:
    """What the command does before importing the daemon: keep a SIGHUP from ending it while
    it starts (:mod:`mcphost.daemon.startup_signals`), with ``fork_server`` (the daemon's
    commands) let a SIGINT end it as SIGTERM does until it handles both, prepare a delegated
    cgroup (:func:`mcphost.plugins.worker.cgroups.set_up`) and start the fork server of isolated
    plugins (:func:`mcphost.plugins.worker.launch.start_early`), pause the
    garbage collector (:func:`mcphost.ops.heap.pause`; the daemon resumes it once started),
    leave the SDK's wire models to build on first use (:mod:`mcphost.ops.sdk_models`) and its
    packages' re-exports to the first name asked of them (:mod:`mcphost.ops.sdk_packages`)."""
    startup_signals.hold_reloads()
    if fork_server:
        startup_signals.end_on_interrupt()  # the daemon's commands: no traceback on Ctrl-C
        # Before any process of the daemon's is started: the fork server starts in its leaf.
        cgroups.set_up()
        # It imports the worker runtime while the daemon imports the rest of itself and reads
        # its config (the daemon ends it if no plugin runs isolated): started any later, its
        # import is what READY=1 waits for.
        launch.start_early()
    heap.pause()
    sdk_models.build_on_first_use()
    sdk_packages.defer_inits()


def main() -> None:
    """Entry point of the ``mcphost`` command: :func:`mcphost.cli.main.main`, imported after :func:`prepare`."""
    prepare(fork_server=next((a for a in sys.argv[1:] if not a.startswith("-")), None) in ("serve", "stdio"))
    from mcphost.cli.main import main as run  # most of start-up: the daemon and the MCP SDK

    run()


if __name__ == "__main__":
    main()
