"""The parts of mcphost the documentation is generated from: the one place that imports
mcphost's internal modules, so that moving a module means changing an import here only."""

from __future__ import annotations

import argparse
from pathlib import Path

from prometheus_client import CollectorRegistry

import mcphost
from mcphost import testing
from mcphost.cli.main import _parser
from mcphost.core.config import DEFAULT_PATHS, ENV_PREFIX, HostConfig
from mcphost.ops.metrics import Metrics
from mcphost.plugins import hookspecs
from mcphost.protocol.wire import SUPPORTED_VERSIONS

ROOT = Path(__file__).resolve().parent.parent
"""The checkout."""

__all__ = [
    "DEFAULT_PATHS",
    "ENV_PREFIX",
    "ROOT",
    "HostConfig",
    "api_names",
    "hookspecs",
    "metrics_registry",
    "parser",
    "testing",
    "version",
]


def parser() -> argparse.ArgumentParser:
    """The ``mcphost`` command's argument parser."""
    return _parser()


def metrics_registry() -> CollectorRegistry:
    """The Prometheus registry a daemon builds (before any plugin has loaded)."""
    return Metrics(version(), versions=SUPPORTED_VERSIONS).registry


def api_names() -> list[str]:
    """The plugin API: the names of ``mcphost.__all__``."""
    return list(mcphost.__all__)


def version() -> str:
    """The installed mcphost's version."""
    return str(mcphost.__version__)
