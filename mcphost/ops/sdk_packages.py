"""The MCP SDK's package ``__init__`` modules, run when a name is first asked of the package
instead of whenever one of its modules is imported.

Each of the SDK's packages re-exports its whole subtree: ``import mcp.shared.exceptions``
runs ``mcp/__init__``, which imports the client (``httpx2``, the stdio client, the session
group), and through ``mcp.server`` and ``mcp.server.lowlevel`` the high-level server, the
HTTP transport, Starlette, ``sse_starlette`` and uvicorn. mcphost imports each module it uses
by its full path and needs none of those re-exports: the daemon never uses the client or
``MCPServer``, and a worker (forked from the fork server) none of the HTTP transport. Left to
the packages, that is some 15 % of the fork server's start and 7 % of the daemon's (in
instructions), both on the way to ``READY=1``.

:func:`defer_inits` puts each package in ``sys.modules`` as the import system would, but
without running its ``__init__``: importing a module of the package works as before, and the
first name asked of the package itself (``from mcp import Client``, ``mcp.server.Server``,
``from mcp import *``) runs the ``__init__`` then, so a plugin that uses the SDK's top-level
names gets them as ever.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from typing import Any

PACKAGES = ("mcp", "mcp.server", "mcp.server.lowlevel", "mcp.server.mcpserver")
"""The SDK's packages whose ``__init__`` imports far more than mcphost uses of them, parents first."""

_lock = threading.RLock()
_running: set[str] = set()
"""The packages whose ``__init__`` runs now (a name it asks of its own package is missing)."""


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` has not run yet: it runs on the first name asked of it."""

    def __getattr__(self, name: str) -> Any:
        # Only names the module does not have come here; the import system's own (__path__,
        # __spec__, ...) are set, and another dunder is missing from any module.
        if name.startswith("__") and name != "__all__":
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        with _lock:
            if type(self) is _DeferredPackage and self.__name__ not in _running:
                _running.add(self.__name__)
                try:
                    assert self.__spec__ is not None and self.__spec__.loader is not None
                    self.__spec__.loader.exec_module(self)
                    # A plain package from now on.
                    self.__class__ = types.ModuleType  # type: ignore[assignment]
                finally:
                    _running.discard(self.__name__)
        # A name the __init__ does not define (or not yet, asked while it runs) is missing as ever.
        return types.ModuleType.__getattribute__(self, name)


def defer_inits() -> bool:
    """Leave the :data:`PACKAGES`' ``__init__`` to the first name asked of each. Call before
    anything imports the SDK; returns ``False`` when that is too late or the SDK is not there."""
    if any(name in sys.modules for name in PACKAGES):
        return False
    for name in PACKAGES:
        parent, _, child = name.rpartition(".")
        found = importlib.util.find_spec(name)  # a parent is in sys.modules by now: not run
        if found is None or found.submodule_search_locations is None:
            return False
        package = importlib.util.module_from_spec(found)
        package.__class__ = _DeferredPackage
        sys.modules[name] = package
        if parent:
            setattr(sys.modules[parent], child, package)
    return True
