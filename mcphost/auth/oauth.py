"""OAuth 2.1 resource server: JWT access tokens from one identity provider, checked against
its published signing keys, and the RFC 9728 metadata that tells clients where to get them.

A token is accepted when its signature verifies with a key from the issuer's JWKS (under an
allowed asymmetric algorithm: never ``none``, never a shared secret), its ``iss`` is the
issuer, its ``aud`` names this server's resource URL, and it has not expired (with a little
leeway for clock skew). The JWKS is fetched on first use, kept for ``jwks_cache_seconds``,
and fetched again early when a token names a key id it has not seen (a key rotation), at
most once per ``jwks_refresh_interval``. A verified token is remembered, by its hash, until
it expires or its key leaves the JWKS, so the token a client repeats on every request costs
one signature check. The token itself goes nowhere past this module.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

import httpx2
import jwt
import structlog
import trio
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.shared.auth import ProtectedResourceMetadata

from mcphost.auth.identity import Identity, scope_of
from mcphost.auth.rejections import InsufficientScope, KeysUnavailable, Rejected
from mcphost.core.config import OAuthConfig

log = structlog.get_logger("mcphost.oauth")

WELL_KNOWN = "/.well-known/oauth-protected-resource"
FETCH_TIMEOUT = 5.0
VERIFIED_CACHE_SIZE = 10_000
"""Tokens remembered as verified; a client sends the same token with every request."""


class JwksCache:
    """The issuer's signing keys by key id, fetched over HTTP and refreshed as described above."""

    def __init__(self, url: str, max_age: float, min_interval: float, algorithms: Iterable[str]):
        self.url = url
        self.max_age = max_age
        self.min_interval = min_interval
        self.algorithms = frozenset(algorithms)
        self.fetches = 0
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = -math.inf
        self._lock = trio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key with id ``kid`` (or the only key, for a token without one), or ``None``."""
        age = time.monotonic() - self._fetched_at
        if age > self.max_age or (kid not in self._keys and age >= self.min_interval):
            await self._refresh(self._fetched_at)
        if not self._keys and self._fetched_at > -math.inf:
            raise KeysUnavailable
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def holds(self, key: jwt.PyJWK) -> bool:
        """Whether ``key`` is still one of the issuer's keys, as last fetched and not yet due for a refetch."""
        fresh = time.monotonic() - self._fetched_at <= self.max_age
        return fresh and any(k is key for k in self._keys.values())

    async def _refresh(self, seen: float) -> None:
        async with self._lock:
            if self._fetched_at != seen:
                return  # another request refreshed while this one waited
            try:
                self.fetches += 1
                async with httpx2.AsyncClient(timeout=FETCH_TIMEOUT) as client:
                    response = await client.get(self.url, headers={"accept": "application/json"})
                response.raise_for_status()
                self._keys = self._parse(response.json())
                log.info("fetched signing keys", jwks_url=self.url, keys=sorted(map(str, self._keys)))
            except Exception as error:
                # Whatever went wrong (network, status, a document that is not a JWKS), keep
                # the keys we had: a brief outage at the issuer must not lock everyone out.
                log.warning("cannot fetch signing keys", jwks_url=self.url, error=str(error) or type(error).__name__)
            finally:
                self._fetched_at = time.monotonic()

    def _parse(self, document: Any) -> dict[str | None, jwt.PyJWK]:
        keys: dict[str | None, jwt.PyJWK] = {}
        for entry in document["keys"]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
                continue
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or curve we cannot use; the issuer may list several
            if key.algorithm_name in self.algorithms:
                keys[entry.get("kid")] = key
        return keys


class TokenVerifier:
    """Checks access tokens for ``[auth.oauth]`` and makes an :class:`Identity` of each good one."""

    def __init__(self, config: OAuthConfig, server_name: str):
        self.config = config
        self.algorithms = list(config.algorithms)
        self.audiences = sorted({config.resource, config.resource.rstrip("/"), *config.audiences})
        self.jwks = JwksCache(config.jwks_url, config.jwks_cache_seconds, config.jwks_refresh_interval, self.algorithms)
        self.metadata_url = metadata_url(config.resource)
        self.metadata_paths = frozenset({urlparse(self.metadata_url).path, WELL_KNOWN})
        self.metadata = (
            ProtectedResourceMetadata(
                resource=config.resource,
                authorization_servers=config.authorization_servers or [config.issuer],
                scopes_supported=sorted(config.scopes) or None,
                resource_name=server_name,
            )
            .model_dump_json(exclude_none=True)
            .encode()
        )
        """The RFC 9728 document, served as is."""
        # SHA-256 of the token -> (its identity, its exp, the key that verified it). A
        # signature check costs a few hundred microseconds; a client repeats its token on
        # every request until it expires. Keyed by hash, so no token is kept in memory.
        self._verified: dict[bytes, tuple[Identity, float, jwt.PyJWK]] = {}

    async def verify(self, token: str) -> Identity:
        """The identity of a valid token; raises :class:`Rejected` or :class:`KeysUnavailable`."""
        digest = hashlib.sha256(token.encode()).digest()
        if (known := self._verified.get(digest)) is not None:
            identity, expires, key = known
            if time.time() <= expires + self.config.leeway and self.jwks.holds(key):
                return identity
            del self._verified[digest]
        identity, expires, key = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = (identity, expires, key)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float, jwt.PyJWK]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Rejected("the token is not a well-formed JWT") from None
        if header.get("alg") not in self.algorithms:
            raise Rejected("the token's signature algorithm is not accepted")
        kid = header.get("kid")
        key = await self.jwks.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise Rejected("the token is signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audiences,
                issuer=self.config.issuer,
                leeway=self.config.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Rejected("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise Rejected("the token was not issued for this server") from None
        except jwt.InvalidIssuerError:
            raise Rejected("the token is from another issuer") from None
        except jwt.PyJWTError:
            raise Rejected("the token is invalid") from None
        for name in ("exp", "nbf", "iat"):
            # NumericDate is a JSON number (RFC 7519 §2); PyJWT also takes "1700000000".
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise Rejected(f"the token's {name} is not a number")
        return self._identity(claims), claims["exp"], key

    def _identity(self, claims: dict[str, Any]) -> Identity:
        client_id = claims.get("client_id") or claims.get("azp")
        subject = claims.get("sub") or client_id
        if not isinstance(subject, str) or not subject:
            raise Rejected("the token names no subject")
        scopes = _scopes(claims)
        if self.config.scopes:
            patterns = frozenset(p for scope in scopes for p in self.config.scopes.get(scope, ()))
            if not patterns:
                raise InsufficientScope("the token has no scope that grants a tool")
        else:
            patterns = frozenset({"*"})
        user = AuthenticatedUser(
            AccessToken(
                token="",  # the token stays here: nothing downstream may replay it
                client_id=str(client_id or subject),
                scopes=scopes,
                expires_at=int(claims["exp"]),
                resource=self.config.resource,
                subject=subject,
                claims={"iss": claims["iss"]},
            )
        )
        return Identity(subject, "oauth", scope_of(patterns), user=user)


def _scopes(claims: dict[str, Any]) -> list[str]:
    # RFC 9068 uses a space-separated "scope"; some providers send a "scp" list instead.
    value = claims.get("scope", claims.get("scp", ""))
    if isinstance(value, str):
        return value.split()
    return [s for s in value if isinstance(s, str)] if isinstance(value, list) else []


def metadata_url(resource: str) -> str:
    """Where RFC 9728 §3.1 puts the metadata of ``resource``: the well-known path, then the resource's path."""
    parsed = urlparse(resource)
    path = parsed.path.rstrip("/")
    return f"{parsed.scheme}://{parsed.netloc}{WELL_KNOWN}{path}"
