"""systemd integration without a dependency: sd_notify and socket activation (LISTEN_FDS).

Everything here is a no-op when the daemon does not run under systemd, so the daemon calls
it unconditionally. Protocol references: sd_notify(3), sd_listen_fds(3).
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger("mcphost.systemd")

LISTEN_FDS_START = 3
"""The first file descriptor systemd passes (SD_LISTEN_FDS_START)."""


class Notifier:
    """Sends state changes to the service manager over ``$NOTIFY_SOCKET``."""

    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._socket: socket.socket | None = None
        self._address = ""
        if address:
            # A leading "@" names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Sent from the event loop, which must never wait on the manager: a unix datagram
            # socket holds only a few unread messages (net.unix.max_dgram_qlen, 10 by default),
            # and a manager that stops reading would otherwise freeze every request.
            self._socket.setblocking(False)
        self._failing = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._socket is not None

    def notify(self, *fields: str) -> None:
        """Send ``KEY=VALUE`` fields without waiting; a failure is logged (once until a send
        succeeds again), never raised: systemd may be gone, or not reading."""
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as error:
            if not self._failing:
                log.warning("sd_notify failed; notifications are dropped until it works again", error=str(error))
            self._failing = True
        else:
            self._failing = False

    def ready(self, status: str = "") -> None:
        """``READY=1``: start-up (or a reload) finished."""
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        """``RELOADING=1`` with the monotonic timestamp systemd uses to match the reload."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self, status: str = "draining") -> None:
        """``STOPPING=1``: shutdown has begun."""
        self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the event loop is alive."""
        self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or ``None`` when none is asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


def listen_fds() -> list[int]:
    """File descriptors of sockets systemd passed to this process (empty when none were).

    The variables are removed once read, so child processes do not take the sockets for theirs.
    """
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not count or pid != str(os.getpid()):
        return []
    try:
        fds = list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))
    except ValueError:
        return []
    for fd in fds:
        os.set_inheritable(fd, False)
    return fds


def listen_host(fd: int) -> str:
    """The local address a passed socket listens on (``"localhost"`` for a unix socket)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.family == socket.AF_UNIX:
            return "localhost"
        return str(sock.getsockname()[0])
