"""Requests that come through a reverse proxy: the client, scheme and host the proxy saw.

Behind Caddy or nginx every request's peer is the proxy, its ``Host`` may be the upstream's
name, and its scheme plain HTTP. The proxy says what the client really used in
``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host``; :class:`TrustedProxies`
rewrites the ASGI scope with them, so the log shows the real client address and the SDK's
Host/Origin check (``[server] allowed_hosts``) sees the public name. Only a peer listed in
``[proxy] trusted`` is believed: anyone else could send these headers to spoof an address
or slip past the Host check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, MutableMapping
from typing import Any

_MAX_CACHED = 1024
"""Addresses whose verdict is remembered; all are forgotten when there are more, so memory
stays bounded whatever clients put in ``X-Forwarded-For``."""
_HOST = re.compile(rb"^[A-Za-z0-9.:\[\]_-]{1,255}$")
"""What a forwarded host may be: a name or address and a port, nothing a header could smuggle."""


class TrustedProxies:
    """The ``[proxy] trusted`` networks, and the scope rewrite for requests from them."""

    def __init__(self, networks: Iterable[str]):
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._verdicts: dict[str, bool] = {}

    def trusts(self, address: str) -> bool:
        """Whether ``address`` (a peer or a hop of ``X-Forwarded-For``) is a trusted proxy."""
        verdict = self._verdicts.get(address)
        if verdict is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                return False
            verdict = any(ip in network for network in self.networks)
            if len(self._verdicts) >= _MAX_CACHED:
                self._verdicts.clear()
            self._verdicts[address] = verdict
        return verdict

    def apply(self, scope: MutableMapping[str, Any]) -> None:
        """Rewrite ``scope`` (``client``, ``scheme``, the ``host`` header) from the forwarded
        headers when its peer is trusted; leave it untouched otherwise."""
        client = scope.get("client")
        if not client or not self.trusts(client[0]):
            return
        forwarded_for: list[bytes] = []
        proto = host = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.extend(value.split(b","))  # several headers are one list
            elif name == b"x-forwarded-proto":
                proto = value
            elif name == b"x-forwarded-host":
                host = value
        if forwarded_for:
            scope["client"] = (self._client(forwarded_for), 0)
        if proto is not None:
            # The first hop's: proxies that append put the client-facing scheme first.
            scheme = proto.split(b",")[0].strip().lower()
            if scheme in (b"http", b"https"):
                scope["scheme"] = scheme.decode()
        if host is not None:
            public = host.split(b",")[0].strip()
            if _HOST.match(public):
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"host"] + [(b"host", public)]

    def _client(self, hops: list[bytes]) -> str:
        # Right to left: each proxy appends the address it saw, so the first hop that is not
        # a trusted proxy is the client; anything left of it may be forged by that client.
        address = ""
        for raw in reversed(hops):
            address = raw.strip().decode("latin-1")
            if address.startswith("[") and "]" in address:
                address = address[1 : address.index("]")]  # [v6]:port
            elif address.count(":") == 1:
                address = address.partition(":")[0]  # v4:port
            if not self.trusts(address):
                return address
        return address  # every hop was a proxy: the leftmost is as close as we get
