"""Helpers for the authentication tests: API keys, a real JWKS server with keys made here,
signed tokens, and an MCP client that sends a bearer token.

Every credential made here is remembered in :data:`SECRETS`; at the end of the test run
``conftest.py`` checks that none of them reached any daemon's log.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcphost.auth import keys

SECRETS: set[str] = set()
"""Every token the tests made; none may appear in a log."""

ISSUER = "https://idp.example.test"
RESOURCE = "https://mcp.example.test/mcp"


@dataclass(frozen=True)
class ApiKey:
    """A freshly minted API key: its token and the config entry that stores its hash."""

    name: str
    token: str
    entry: dict[str, Any]


def api_key(name: str, tools: list[str], rate_limit: str | None = None) -> ApiKey:
    """Mint a key the way ``mcphost keys new`` does."""
    token = keys.new_token()
    SECRETS.add(token)
    entry: dict[str, Any] = {"hash": keys.hash_token(token), "tools": tools}
    if rate_limit:
        entry["rate_limit"] = rate_limit
    return ApiKey(name, token, entry)


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def connect(url: str, token: str | None, mode: str, **options: Any) -> AsyncIterator[Client]:
    """The official MCP client, sending ``token`` as a bearer token on every request
    (``options`` go to the client: ``elicitation_callback=…``)."""
    http = create_mcp_http_client(headers=bearer(token) if token else None)
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode=mode, **options) as client:  # type: ignore[arg-type]
        yield client


@dataclass
class SigningKey:
    """A private key the test identity provider signs with, and its public JWK."""

    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls, kid: str, alg: str = "RS256") -> SigningKey:
        """A fresh 2048-bit RSA key."""
        return cls(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        """A fresh P-256 key (ES256)."""
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        """The public half as a JWK."""
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg.startswith(("RS", "PS")) else jwt.algorithms.ECAlgorithm
        data = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        """A JWT of ``claims`` signed with this key (``headers`` override the JOSE header)."""
        token = jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers})
        SECRETS.add(token)
        return token


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a good access token for :data:`RESOURCE`; ``None`` values are left out."""
    now = int(time.time())
    values = {
        "iss": ISSUER,
        "aud": RESOURCE,
        "sub": "user-123",
        "client_id": "claude-code",
        "exp": now + 300,
        "iat": now,
        "scope": "tools:all",
        **overrides,
    }
    return {k: v for k, v in values.items() if v is not None}


def unsigned(claims: dict[str, Any]) -> str:
    """A token with ``alg: none`` and no signature."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    SECRETS.add(token)
    return token


@dataclass
class JwksServer:
    """A real HTTP server on 127.0.0.1 publishing a JWKS the test can change, counting fetches."""

    keys: list[SigningKey] = field(default_factory=list)
    fetches: int = 0

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": [k.jwk() for k in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Where the JWKS is served."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def oauth_config(jwks: JwksServer, **overrides: Any) -> dict[str, Any]:
    """An ``[auth.oauth]`` table for the test identity provider."""
    return {
        "issuer": ISSUER,
        "jwks_url": jwks.url,
        "resource": RESOURCE,
        "scopes": {"tools:all": ["*"], "tools:echo": ["echo_*"]},
        "jwks_refresh_interval": 1.0,
        **overrides,
    }
