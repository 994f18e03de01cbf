"""The ``mcphost`` command, also run as ``python -m mcphost``."""

import sys

from mcphost.daemon import startup_signals
from mcphost.ops import heap, sdk_models, sdk_packages
from mcphost.plugins.worker import cgroups, launch, zygote


def prepare(*, fork_server: bool = False) -> None:
    """What the command does before importing the daemon: keep a SIGHUP from ending it while
    it starts (:mod:`mcphost.daemon.startup_signals`), pause the garbage collector
    (:func:`mcphost.ops.heap.pause`; the daemon resumes it once started), leave the SDK's wire
    models to build on first use (:mod:`mcphost.ops.sdk_models`) and its packages' re-exports
    to the first name asked of them (:mod:`mcphost.ops.sdk_packages`). With ``fork_server``
    (the daemon's commands) it also lets a SIGINT end it as SIGTERM does until it handles
    both, prepares a delegated cgroup (:func:`mcphost.plugins.worker.cgroups.set_up`) and forks
    the fork server of isolated plugins (:func:`mcphost.plugins.worker.launch.start_early`)."""
    startup_signals.hold_reloads()
    if fork_server:
        startup_signals.end_on_interrupt()  # the daemon's commands: no traceback on Ctrl-C
    heap.pause()
    sdk_models.build_on_first_use()
    sdk_packages.defer_inits()
    if fork_server:
        # Before any process of the daemon's is started: the fork server starts in its leaf.
        cgroups.set_up()
        # Forked once the worker runtime is imported, which the daemon then shares with it,
        # and before the daemon reads its config or a credential (the daemon ends it if no
        # plugin runs isolated).
        zygote.import_runtime()
        launch.start_early(zygote.run_forked)


def main() -> None:
    """Entry point of the ``mcphost`` command: :func:`mcphost.cli.main.main`, imported after :func:`prepare`."""
    prepare(fork_server=next((a for a in sys.argv[1:] if not a.startswith("-")), None) in ("serve", "stdio"))
    from mcphost.cli.main import main as run  # most of start-up: the daemon and the MCP SDK

    run()


if __name__ == "__main__":
    main()
