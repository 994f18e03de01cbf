"""Host and Origin checks (DNS-rebinding protection) for every listener: the MCP endpoint and
the admin listener answer only requests whose ``Host`` (and ``Origin``, when sent) is allowed.

The allowlists are the SDK's :class:`TransportSecuritySettings` (loopback names plus
``[server] allowed_hosts`` and ``allowed_origins``), read as the SDK reads them but for one
thing: a ``name:*`` entry allows ``name`` with any port, a port being digits and nothing
else, where the SDK takes any text after the colon (``localhost:1234.evil.com`` too).
"""

from __future__ import annotations

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Scope, Send

from mcphost.transport.asgi import send_text


class HostCheck:
    """The allowed ``Host`` and ``Origin`` values, and the refusal of a request with others."""

    def __init__(self, settings: TransportSecuritySettings):
        self.enabled = settings.enable_dns_rebinding_protection
        self.hosts = _Allowed(settings.allowed_hosts)
        self.origins = _Allowed(settings.allowed_origins)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """The status and reason to refuse ``scope`` with, or ``None`` when it may pass."""
        if not self.enabled:
            return None
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host" and host is None:
                host = value.decode("latin-1")
            elif name == b"origin" and origin is None:
                origin = value.decode("latin-1")
        if not host or not self.hosts.allows(host):
            return 421, "Invalid Host header"
        if origin and not self.origins.allows(origin):  # absent: a same-origin or non-browser request
            return 403, "Invalid Origin header"
        return None

    async def refused(self, scope: Scope, send: Send) -> bool:
        """Answer a request this check refuses (as the SDK does: plain text); whether it did."""
        refusal = self.refusal(scope)
        if refusal is not None:
            await send_text(send, *refusal)
        return refusal is not None


class _Allowed:
    def __init__(self, entries: list[str]):
        self.exact = frozenset(e for e in entries if not e.endswith(":*"))
        self.any_port = tuple(e[:-1] for e in entries if e.endswith(":*"))  # "name:"

    def allows(self, value: str) -> bool:
        if value in self.exact:
            return True
        return any(value.startswith(base) and _is_port(value[len(base) :]) for base in self.any_port)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit()
