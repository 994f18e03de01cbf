"""The ``mcphost`` command, also run as ``python -m mcphost``."""

from mcphost import heap


def main() -> None:
    """Entry point of the ``mcphost`` command: :func:`mcphost.cli.main`, imported with the
    garbage collector paused (:func:`mcphost.heap.pause`; the daemon resumes it once
    started)."""
    heap.pause()
    from mcphost.cli import main as run  # most of start-up: the daemon and the MCP SDK

    run()


if __name__ == "__main__":
    main()
