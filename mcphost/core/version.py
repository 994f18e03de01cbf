"""The version of the installed mcphost: what ``mcphost --version``, ``/status``, the
``mcphost_build_info`` metric and traces report, and ``mcphost.__version__``."""

from __future__ import annotations

import functools


@functools.cache
def version() -> str:
    """The installed distribution's version; ``0.0.0`` in a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("mcphost")
    except PackageNotFoundError:
        return "0.0.0"
