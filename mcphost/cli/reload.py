"""``mcphost reload``: send the daemon SIGHUP, then wait until it reports the reload applied.

systemd 253 and later do this themselves for a ``Type=notify-reload`` service: they send the
signal and wait for ``RELOADING=1`` and then ``READY=1``. systemd 252 (Debian 12) has no such
type. For a ``Type=notify`` service its ``systemctl reload`` returns as soon as the
``ExecReload=`` command exits, and with ``kill -HUP`` that is before the reload is applied,
unless the daemon's ``RELOADING=1`` happened to reach systemd before ``kill`` exited; it does
not while the event loop is busy, nor through the worker master. So the shipped unit's
``ExecReload=`` runs this command, which returns once the admin listener's ``/status``
reports a reload that began after the signal was sent, and says how it went.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
from typing import Any

from mcphost.cli import status
from mcphost.core.config import LoadedConfig

TIMEOUT = 60.0
"""Default seconds to wait; systemd gives a reload 90 (``TimeoutStartSec=``'s default)."""
POLL_INTERVAL = 0.1
EXIT_CONFIG = 2
"""The config is invalid: nothing was signalled, or the daemon refused it."""
EXIT_SIGNAL = 1
"""The process could not be signalled."""


def reload(pid: int, loaded: LoadedConfig, timeout: float = TIMEOUT) -> int:
    """Signal ``pid`` to reload and wait for the outcome, asking the admin listener that
    ``loaded`` (the config just checked) names; returns the command's exit status."""
    url, token = status.admin_endpoint(loaded)
    began = time.monotonic()
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as error:
        print(f"mcphost reload: cannot signal process {pid}: {error.strerror}", file=sys.stderr)
        return EXIT_SIGNAL
    if url is None:
        print(
            f"mcphost reload: sent SIGHUP to {pid}; the admin listener is off ([admin] enabled = false), "
            "so the reload is not waited for",
            file=sys.stderr,
        )
        return 0
    deadline = began + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"mcphost reload: sent SIGHUP to {pid}; no reload was reported within {timeout:g}s", file=sys.stderr)
            return status.EXIT_UNREACHABLE
        try:
            report = status.fetch(url, token, timeout=remaining)
        except urllib.error.HTTPError as error:
            print(f"mcphost reload: sent SIGHUP to {pid}, but {url}/status answered {error.code}", file=sys.stderr)
            return status.EXIT_UNREACHABLE
        except (OSError, ValueError):
            report = {}  # busy or not answering yet: ask again
        last = report.get("last_reload")
        if last is not None and last.get("began_monotonic", 0) >= began:
            return _outcome(last, report)
        time.sleep(POLL_INTERVAL)


def _outcome(last: dict[str, Any], report: dict[str, Any]) -> int:
    if last["result"] == "invalid_config":
        print(
            "mcphost reload: refused: the config is invalid and the running config stays (see the daemon's log)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    changed = ", ".join(last["changed"]) or "no plugin"
    print(f"mcphost reload: applied ({changed} changed, {len(report['tools'])} tools served)")
    plugins = {p["name"]: p for p in report["plugins"]}
    for name in last["failed"]:
        plugin = plugins.get(name, {})
        error = plugin.get("reload_error") or plugin.get("error") or "see the daemon's log"
        print(f"mcphost reload: plugin {name} failed to load: {error}", file=sys.stderr)
    return 0
