"""What stops the daemon from starting, said in two lines an operator can act on: what
failed (which listener on which address, which file), the system's reason, and what to do.

The command prints a :class:`StartupError` instead of a traceback. The daemon's listening
sockets are bound here, before anything serves on them, so that a failed bind is one.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterator
from dataclasses import dataclass

BACKLOG = 4096
"""Connections the kernel queues for a listener (it caps this at net.core.somaxconn)."""


class StartupError(Exception):
    """The daemon cannot start: ``what`` failed ``because``; ``fix`` says what to do."""

    def __init__(self, what: str, because: str, fix: str):
        super().__init__(f"{what}: {because}\n{fix}")
        self.what, self.because, self.fix = what, because, fix


@dataclass(frozen=True, slots=True)
class Listener:
    """One of the daemon's listeners, as the operator knows it."""

    name: str
    """What it serves, and where it is set."""
    other_port: str
    """How to give it another port."""
    other_host: str
    """How to give it another address."""


MCP_LISTENER = Listener(
    "MCP ([server] host and port)",
    "serve on another port: mcphost serve --port N, or [server] port",
    "listen on an address of this machine: mcphost serve --host ADDRESS, or [server] host",
)
ADMIN_LISTENER = Listener(
    "the admin listener ([admin] host and port)",
    "set [admin] port to a free port, or turn the admin listener off: [admin] enabled = false",
    "set [admin] host to an address of this machine, or turn the admin listener off: [admin] enabled = false",
)


def listen(host: str, port: int, listener: Listener, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening; raises :class:`StartupError`
    naming ``listener`` and the address when it cannot be. With ``reuse_port``, other
    sockets of this user may listen on the same port, the kernel spreading connections
    between them (``SO_REUSEPORT``)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted connections inherit it: small writes (SSE events) go out at once.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            fix = f"another process listens there (ss -ltnp 'sport = :{port}' says which): stop it, or "
            fix += listener.other_port
        elif error.errno == errno.EACCES:
            fix = f"ports below 1024 need privileges (a proxy in front can listen there): {listener.other_port}"
        elif error.errno == errno.EADDRNOTAVAIL or isinstance(error, socket.gaierror):
            fix = f"{host} is not an address of this machine: {listener.other_host}"
        else:
            fix = listener.other_port
        reason = error.strerror or str(error)
        raise StartupError(f"cannot listen on {address} for {listener.name}", reason, fix) from None
    return sock


@contextlib.contextmanager
def failing_as(what: str, fix: str, *kinds: type[Exception]) -> Iterator[None]:
    """Turn an :class:`OSError` (or one of ``kinds``) raised inside into a
    :class:`StartupError`: ``what`` failed, the system's reason, and ``fix``."""
    catching: tuple[type[Exception], ...] = (OSError, *kinds)
    try:
        yield
    except catching as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        filename = getattr(error, "filename", None)
        if filename and str(filename) not in what:
            reason += f": {filename}"
        raise StartupError(what, reason, fix) from None
