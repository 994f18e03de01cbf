"""Leaves things behind: processes in a group of their own and in the daemon's, and a
thread (not a daemon thread) that never ends."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import mcphost


def spawn() -> dict[str, int]:
    """Start what is never waited for; return the pids and the new process group."""
    group = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600"], start_new_session=True)
    same = subprocess.Popen(["sleep", "600"])
    threading.Thread(target=time.sleep, args=(3600,), name="never-ends", daemon=False).start()
    return {"group_leader": group.pid, "group": os.getpgid(group.pid), "same_group": same.pid}


@mcphost.hookimpl
def mcphost_tools():
    return [spawn]
