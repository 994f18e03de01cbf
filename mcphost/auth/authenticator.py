"""Authentication of requests to ``/mcp``: an ``Authorization: Bearer`` API key or OAuth
access token in, an :class:`~mcphost.auth.identity.Identity` or a :class:`Denial` out.

Which credential a token is, is told by its shape: API keys start with ``mcph_``, anything
else is taken for a JWT when ``[auth.oauth]`` is set. Authentication is on as soon as any
key source or ``[auth.oauth]`` is configured; with none, a loopback daemon serves everyone
and a daemon on any other address refuses to start (unless ``allow_unauthenticated``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from mcphost.auth.identity import Identity, scope_of
from mcphost.auth.keys import TOKEN_PREFIX, KeyStore, read_keys
from mcphost.auth.rejections import InsufficientScope, KeysUnavailable, Rejected
from mcphost.core.config import ConfigError, KeyConfig, LoadedConfig
from mcphost.core.errors import AUTHENTICATION_REQUIRED, NOT_PERMITTED, UNAVAILABLE
from mcphost.core.rate import Rate

if TYPE_CHECKING:
    from mcphost.auth.oauth import TokenVerifier

MAX_TOKEN_BYTES = 16_384
"""Longer credentials are refused unread (a JWT with many claims is a few KiB)."""
KEY_WANTED = "this server takes API keys, not an OAuth sign-in: send one in the header Authorization: Bearer <key>"
"""What a deployment with API keys only tells a client that came without one."""
KEY_WANTED_HOW = (
    KEY_WANTED + ' (Claude Code: claude mcp add --transport http NAME URL --header "Authorization: Bearer <key>")'
)
"""The same, with how Claude Code is given the key: for bodies, which a person reads."""
OAUTH_DISCOVERY = (
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
)
"""Where a client refused with 401 looks for OAuth metadata (RFC 9728, RFC 8414, OpenID
Connect Discovery), each also with the resource's path appended."""
REGISTRATION = "/register"
"""Where a client registers itself with the server's origin when it finds no authorization
server metadata (the MCP authorization spec's fallback, which the official clients keep)."""


def is_loopback(host: str) -> bool:
    """Whether a listen address accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or "" (every interface)


def challenge(
    metadata_url: str | None, error: str | None = None, description: str | None = None, scope: str | None = None
) -> bytes:
    """A ``WWW-Authenticate: Bearer`` value (RFC 6750 §3); with OAuth it points clients at the
    protected resource metadata (RFC 9728 §5.1), without it (API keys only) it says, in
    ``error_description``, that a key is wanted."""
    parts = [f'resource_metadata="{metadata_url}"'] if metadata_url else ['realm="mcphost"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f"error_description={json.dumps(description)}")
    if scope:
        parts.append(f'scope="{scope}"')
    return ("Bearer " + ", ".join(parts)).encode()


@dataclass(frozen=True, slots=True)
class Denial:
    """A request refused before it reaches MCP: its HTTP status, JSON-RPC code and reason."""

    status: int
    code: int
    message: str
    challenge: bytes | None = None
    """The ``WWW-Authenticate`` value, on 401 and 403."""

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The response headers this denial adds."""
        if self.status == 503:
            return [(b"retry-after", b"5")]
        return [(b"www-authenticate", self.challenge)] if self.challenge else []


class Authenticator:
    """Checks credentials against the configured API keys and identity provider."""

    def __init__(self, keys: KeyStore, verifier: TokenVerifier | None = None):
        self.keys = keys
        self.verifier = verifier
        self.metadata_url = verifier.metadata_url if verifier else None
        if verifier is None:
            # A client that can sign in with OAuth would otherwise go looking for an
            # authorization server there is none of, and report that it found none.
            reason, wanted = f"Authentication required: {KEY_WANTED_HOW}", challenge(None, description=KEY_WANTED)
            self.missing = Denial(401, AUTHENTICATION_REQUIRED, reason, wanted)
        else:
            self.missing = Denial(401, AUTHENTICATION_REQUIRED, "Authentication required", challenge(self.metadata_url))
        self.invalid = self._rejected("Invalid credentials")

    async def authenticate(self, authorization: bytes | None) -> Identity | Denial:
        """The caller named by an ``Authorization`` header value (``None``: there was none)."""
        if authorization is None:
            return self.missing
        scheme, _, raw = authorization.partition(b" ")
        raw = raw.strip()
        if scheme.lower() != b"bearer" or not raw or len(raw) > MAX_TOKEN_BYTES:
            return self.invalid
        token = raw.decode("latin-1")
        if token.startswith(TOKEN_PREFIX) or self.verifier is None:
            return self.keys.lookup(token) or self.invalid
        try:
            return await self.verifier.verify(token)
        except InsufficientScope as error:
            scopes = " ".join(sorted(self.verifier.config.scopes))
            denied = challenge(self.metadata_url, "insufficient_scope", str(error), scopes)
            return Denial(403, NOT_PERMITTED, str(error), denied)
        except Rejected as error:
            return self._rejected(str(error))
        except KeysUnavailable:
            return Denial(503, UNAVAILABLE, "Access tokens cannot be checked right now; try again shortly")

    def not_oauth(self, path: str) -> tuple[int, dict[str, str]] | None:
        """With API keys only, the answer to a request for OAuth metadata or for client
        registration, which is what a client refused with 401 tries next: that a key is
        wanted, in OAuth's error shape, which clients show (the TypeScript SDK as its error,
        Claude Code after "Dynamic Client Registration rejected"). ``None`` for other paths,
        and with ``[auth.oauth]``, whose metadata is served as it is."""
        if self.verifier is not None:
            return None
        if path == REGISTRATION:
            return 403, {"error": "access_denied", "error_description": KEY_WANTED_HOW}
        if any(path == p or path.startswith(p + "/") for p in OAUTH_DISCOVERY):
            return 404, {"error": "not_found", "error_description": KEY_WANTED_HOW}
        return None

    def _rejected(self, reason: str) -> Denial:
        # 401, not 403: the MCP authorization spec has invalid and expired tokens answered
        # with 401, which is what makes a client fetch a new one.
        return Denial(401, NOT_PERMITTED, reason, challenge(self.metadata_url, "invalid_token", reason))


def _key_identity(name: str, key: KeyConfig) -> Identity:
    # A session opened with this key is bound to it (the SDK compares this principal).
    user = AuthenticatedUser(AccessToken(token="", client_id=f"key:{name}", scopes=[]))
    rate = Rate.parse(key.rate_limit) if key.rate_limit else None
    return Identity(name, "key", scope_of(frozenset(key.tools)), rate, user)


def load(loaded: LoadedConfig, hosts: Sequence[str] = (), *, credential: bool = True) -> Authenticator | None:
    """The authenticator ``[auth]`` asks for, ``None`` when authentication is off.

    ``hosts`` are the addresses actually served (systemd's sockets), default ``[server] host``.
    Reads the keys file and (unless ``credential`` is false) the credential; raises
    :class:`ConfigError` when one is invalid, and when the daemon would serve a non-loopback
    address to anyone at all.
    """
    return authenticator(loaded, hosts, _verifier(loaded), credential=credential)


def authenticator(
    loaded: LoadedConfig, hosts: Sequence[str], verifier: TokenVerifier | None, *, credential: bool = True
) -> Authenticator | None:
    """As :func:`load`, with the given token verifier instead of ``[auth.oauth]``'s: a reload
    keeps the running one, and reads only the keys again."""
    config = loaded.config
    auth = config.auth
    keys = read_keys(auth, loaded.source, credential=credential)
    if keys or auth.keys_file or auth.credential or verifier is not None:
        store = KeyStore((key.hash, _key_identity(name, key)) for name, (key, _) in keys.items())
        return Authenticator(store, verifier)
    public = [h for h in (hosts or [config.server.host]) if not is_loopback(h)]
    if public and not auth.allow_unauthenticated:
        message = (
            f"{public[0] or '*'} is not a loopback address and no authentication is configured: "
            "add API keys (mcphost keys new; [auth] keys_file) or [auth.oauth], or set "
            "[auth] allow_unauthenticated = true behind a proxy that authenticates"
        )
        raise ConfigError(loaded.source, [loaded.problem(("server", "host"), message)])
    return None


def _verifier(loaded: LoadedConfig) -> TokenVerifier | None:
    # Imported only when configured: the JWT and HTTP client libraries cost start-up time.
    if loaded.config.auth.oauth is None:
        return None
    from mcphost.auth.oauth import TokenVerifier

    return TokenVerifier(loaded.config.auth.oauth, loaded.config.server.name)
