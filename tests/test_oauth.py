"""mcphost as an OAuth 2.1 resource server: JWT access tokens checked against a real JWKS
served over HTTP by the test (RSA and EC keys made here), RFC 9728 metadata, scope-to-tool
mapping, key rotation, and every way a token can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization

from mcphost.auth.oauth import TokenVerifier
from mcphost.auth.rejections import Rejected
from mcphost.core.config import OAuthConfig
from mcphost.core.errors import AUTHENTICATION_REQUIRED, NOT_PERMITTED
from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request
from tests.authkit import (
    ISSUER,
    RESOURCE,
    SECRETS,
    JwksServer,
    SigningKey,
    api_key,
    bearer,
    claims,
    connect,
    oauth_config,
    unsigned,
)
from tests.conftest import MODES

RSA = SigningKey.rsa("rsa-1")
EC = SigningKey.ec("ec-1")
STRANGER = SigningKey.rsa("rsa-1")
"""Not published, yet claims the published key's id: its signatures must not verify."""
KEY = api_key("ci", ["echo_echo"])
METADATA_URL = "https://mcp.example.test/.well-known/oauth-protected-resource/mcp"
HEADERS = ACCEPT_HEADERS
INITIALIZE = initialize_request()

# A tool that reports every header it can reach through the SDK's request object.
PEEK_PLUGIN = '''
import mcphost

@mcphost.hookimpl
def mcphost_tools():
    async def headers(ctx: mcphost.ToolContext) -> dict[str, str]:
        """The HTTP headers visible to a tool."""
        request = getattr(ctx._request, "request", None)
        return dict(getattr(request, "headers", {}) or {})
    return [headers]
'''


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([RSA, EC])
    yield server
    server.close()


@pytest.fixture(scope="module")
def daemon(module_daemon, jwks: JwksServer, tmp_path_factory) -> RunningDaemon:
    plugin = tmp_path_factory.mktemp("peek") / "peek.py"
    plugin.write_text(PEEK_PLUGIN)
    config = {
        "auth": {"oauth": oauth_config(jwks), "keys": {KEY.name: KEY.entry}},
        # Inline: only there does a tool's context hold the SDK's HTTP request at all (a
        # worker's holds no request object), so only there could the header leak.
        "plugins": {"enable": ["echo", "peek"], "paths": [str(plugin)], "peek": {"isolation": "inline"}},
    }
    return module_daemon(config)


def post(daemon: RunningDaemon, token: str | None, body: Any = INITIALIZE, **headers: str) -> httpx.Response:
    auth = bearer(token) if token else {}
    return httpx.post(daemon.url, json=body, headers={**HEADERS, **auth, **headers}, timeout=30)


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"])
def test_protected_resource_metadata(daemon: RunningDaemon, path: str) -> None:
    response = httpx.get(daemon.base_url + path, timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["tools:all", "tools:echo"],
        "bearer_methods_supported": ["header"],
        "resource_name": "mcphost",
    }
    assert response.headers["access-control-allow-origin"] == "*"


def test_401_points_clients_at_the_metadata(daemon: RunningDaemon) -> None:
    response = post(daemon, None)
    assert response.status_code == 401
    assert response.json()["error"] == {"code": AUTHENTICATION_REQUIRED, "message": "Authentication required"}
    assert response.headers["www-authenticate"] == f'Bearer resource_metadata="{METADATA_URL}"'


def test_the_identity_provider_alone_does_authorization_server_work(daemon: RunningDaemon) -> None:
    """With OAuth, mcphost is the resource only: what an authorization server serves is not
    here (not even the API-key deployment's explanations; API keys still work beside)."""
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration", "/register"):
        response = (
            httpx.post(daemon.base_url + path, timeout=10) if path == "/register" else httpx.get(daemon.base_url + path)
        )
        assert response.status_code == 404, path
        assert "API keys" not in response.text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", [RSA, EC], ids=["RS256", "ES256"])
async def test_valid_tokens_are_accepted(daemon: RunningDaemon, key: SigningKey, mode: str) -> None:
    async with connect(daemon.url, key.sign(claims()), mode) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        whoami = await client.call_tool("echo_whoami", {})
    assert {"echo_echo", "echo_add", "peek_headers"} <= tools
    assert whoami.structured_content["identity"] == "user-123"


async def test_api_keys_work_beside_oauth(daemon: RunningDaemon) -> None:
    async with connect(daemon.url, KEY.token, "2026-07-28") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
    assert tools == {"echo_echo"}


@pytest.mark.parametrize("mode", MODES)
async def test_scopes_map_to_tools(daemon: RunningDaemon, mode: str) -> None:
    async with connect(daemon.url, RSA.sign(claims(scope="openid tools:echo")), mode) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
    assert tools == {"echo_echo", "echo_add", "echo_greet", "echo_slow", "echo_sleep_sync", "echo_whoami"}


def test_a_token_without_a_granting_scope_is_403_insufficient_scope(daemon: RunningDaemon) -> None:
    response = post(daemon, RSA.sign(claims(scope="openid profile")))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == NOT_PERMITTED
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="tools:all tools:echo"' in challenge


async def test_the_token_never_reaches_a_tool(daemon: RunningDaemon) -> None:
    token = RSA.sign(claims())
    async with connect(daemon.url, token, "2026-07-28") as client:
        seen = (await client.call_tool("peek_headers", {})).structured_content
    assert seen, "the tool saw no headers at all, so this test proves nothing"
    assert "authorization" not in {name.lower() for name in seen}
    assert token not in str(seen)


def _hs256_with_public_key() -> str:
    # The classic confusion attack: the RSA public key used as an HMAC secret. Made by hand,
    # since a JWT library refuses to.
    pem = RSA.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    head = unsigned(claims()).split(".")[1]
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": RSA.kid}).encode()).rstrip(b"=").decode()
    signature = hmac.new(pem, f"{header}.{head}".encode(), hashlib.sha256).digest()
    token = f"{header}.{head}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    SECRETS.add(token)
    return token


BAD: dict[str, tuple[Callable[[], str], str]] = {
    "expired": (lambda: RSA.sign(claims(exp=int(time.time()) - 120)), "the token has expired"),
    "wrong-audience": (lambda: RSA.sign(claims(aud="https://other.example.test/mcp")), "not issued for this server"),
    "wrong-issuer": (lambda: RSA.sign(claims(iss="https://evil.example.test")), "from another issuer"),
    "unknown-kid": (lambda: SigningKey.rsa("nobody").sign(claims()), "unknown key"),
    "alg-none": (lambda: unsigned(claims()), "algorithm is not accepted"),
    "hs256-confusion": (_hs256_with_public_key, "algorithm is not accepted"),
    "forged-signature": (lambda: STRANGER.sign(claims()), "the token is invalid"),
    "no-expiry": (lambda: RSA.sign(claims(exp=None)), "the token is invalid"),
    "not-a-jwt": (lambda: "eyJhbGciOi.not-a-jwt", "not a well-formed JWT"),
    "ec-key-named-as-rsa": (lambda: EC.sign(claims(), kid=RSA.kid), "the token is invalid"),
    # Time claims must be JSON numbers; PyJWT takes a numeric string, which the
    # remembered-token check then could not compare.
    "exp-as-string": (lambda: RSA.sign(claims(exp=str(int(time.time()) + 300))), "exp"),
    "nbf-as-string": (lambda: RSA.sign(claims(nbf=str(int(time.time()) - 60))), "nbf"),
    "iat-as-list": (lambda: RSA.sign(claims(iat=[int(time.time())])), "the token is invalid"),
    "exp-as-boolean": (lambda: RSA.sign(claims(exp=True)), "exp"),
}
"""Case → how to mint its token (at use: a token minted at import may have expired by the
time its test runs, and fail for that reason instead of its own) and the reason the client
is told."""


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_tokens_are_401_invalid_token_every_time(daemon: RunningDaemon, case: str) -> None:
    mint, reason = BAD[case]
    token = mint()
    for _ in range(2):  # and the second time too, when a verified token would be remembered
        response = post(daemon, token)
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert error["code"] == NOT_PERMITTED and reason in error["message"]
        challenge = response.headers["www-authenticate"]
        assert f'resource_metadata="{METADATA_URL}"' in challenge and 'error="invalid_token"' in challenge
        assert "Traceback" not in response.text and token not in response.text


def test_expiry_has_a_little_leeway(daemon: RunningDaemon) -> None:
    assert post(daemon, RSA.sign(claims(exp=int(time.time()) - 5))).status_code == 200


def test_a_session_belongs_to_the_subject_across_token_refreshes(daemon: RunningDaemon) -> None:
    opened = post(daemon, RSA.sign(claims(sub="ann")))
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    refreshed = RSA.sign(claims(sub="ann", iat=int(time.time()) + 1, jti="second"))
    assert post(daemon, RSA.sign(claims(sub="ben")), listing, **session).status_code == 404
    assert post(daemon, refreshed, listing, **session).status_code == 200


def test_unknown_key_ids_refresh_the_keys_at_a_limited_rate(daemon: RunningDaemon, jwks: JwksServer) -> None:
    before, start = jwks.fetches, time.monotonic()
    for n in range(20):
        assert post(daemon, SigningKey.ec(f"unknown-{n}").sign(claims())).status_code == 401
    elapsed = time.monotonic() - start
    # jwks_refresh_interval is 1s: at most one fetch per second of the burst, plus the first.
    assert jwks.fetches - before <= 1 + math.ceil(elapsed)


def test_rotated_keys_are_picked_up(daemon: RunningDaemon, jwks: JwksServer) -> None:
    rotated = SigningKey.rsa("rsa-2")
    old_token = RSA.sign(claims())
    assert post(daemon, old_token).status_code == 200
    jwks.keys = [rotated, EC]
    try:
        new_token = rotated.sign(claims())
        deadline = time.monotonic() + 15
        while (status := post(daemon, new_token).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)  # the unknown kid refreshes the keys at most once a second
        assert status == 200
        assert post(daemon, old_token).status_code == 401
    finally:
        jwks.keys = [RSA, EC]


def test_an_unreachable_identity_provider_is_503_not_401(module_daemon, tmp_path: Path) -> None:
    closed = JwksServer([RSA])
    closed.close()
    daemon = module_daemon({"auth": {"oauth": oauth_config(closed)}, "plugins": {"enable": ["echo"]}})
    response = post(daemon, RSA.sign(claims()))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "Traceback" not in response.text


async def test_a_remembered_token_still_expires(jwks: JwksServer) -> None:
    """Verified tokens are remembered between requests, but not past their expiry."""
    verifier = TokenVerifier(OAuthConfig(**oauth_config(jwks, leeway=0)), "mcphost")
    token = RSA.sign(claims(exp=int(time.time()) + 2))
    assert (await verifier.verify(token)).name == "user-123"
    assert (await verifier.verify(token)).name == "user-123"
    with pytest.raises(Rejected, match="expired"):
        while True:
            await verifier.verify(token)
            await trio.sleep(0.2)
