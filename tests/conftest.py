"""Shared fixtures (daemons started once per module, since each start costs about a second)
and what several test modules use alike."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcphost.testing import RunningDaemon, start_daemon

MODES = ["legacy", "2026-07-28"]
"""The two protocol paths: a 2025-11-25 session (initialize handshake) and 2026-07-28 stateless requests."""
ISOLATIONS = ["inline", "process"]
"""Where a plugin runs: in the daemon's process, or in a worker process of its own."""


def fresh(code: str) -> dict[str, object]:
    """What ``code`` prints (JSON), run in a fresh interpreter: this one imported the SDK long ago."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def memory(pid: int, field: str) -> int:
    """A memory field of ``/proc/<pid>/status`` (``VmRSS``, or the peak, ``VmHWM``), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)[1]) * 1024  # type: ignore[index]


def isolated(config: dict[str, Any], isolation: str) -> dict[str, Any]:
    """``config`` with ``isolation`` set for each plugin its ``[plugins] enable`` names."""
    plugins = config["plugins"]
    tables = {name: {**plugins.get(name, {}), "isolation": isolation} for name in plugins["enable"]}
    return {**config, "plugins": {**plugins, **tables}}


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., RunningDaemon]]:
    """A factory of daemons that live until the end of the test module."""
    started: list[RunningDaemon] = []

    def factory(config: dict[str, Any] | str | None = None, **kwargs: Any) -> RunningDaemon:
        daemon = start_daemon(tmp_path_factory.mktemp("daemon"), config, **kwargs)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: no token a test made (``tests.authkit.SECRETS``) is in any daemon's log."""
    yield
    from tests.authkit import SECRETS

    needles = set(SECRETS)
    needles |= {s.removeprefix("mcph_") for s in SECRETS}
    needles |= {s.rsplit(".", 1)[1] for s in SECRETS if s.count(".") == 2 and not s.endswith(".")}
    leaked = [
        f"{log.name}: {needle[:10]}…"
        for log in tmp_path_factory.getbasetemp().rglob("*.log")
        for text in [log.read_text(errors="replace")]
        for needle in needles
        if needle in text
    ]
    assert leaked == [], f"credentials found in daemon logs: {leaked}"
