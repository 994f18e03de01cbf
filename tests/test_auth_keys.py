"""API keys over real HTTP: who gets in, what each key sees and may call, where keys come
from, and what the daemon refuses to do without them.

One daemon serves the module, with keys from each source: ``[auth.keys]`` in its config
(alice, scoped to two tools; bob, every tool), a keys file made with ``mcphost keys new``
(carol), and a systemd credential (dave).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from mcphost.core.errors import AUTHENTICATION_REQUIRED, NOT_PERMITTED
from mcphost.ops import log
from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, to_toml
from tests.authkit import SECRETS, ApiKey, api_key, bearer, connect
from tests.conftest import MODES
from tests.services import sign_in

ALICE = api_key("alice", ["echo_echo", "echo_who*"])
BOB = api_key("bob", ["*"])
DAVE = api_key("dave", ["echo_add"])

HEADERS = ACCEPT_HEADERS
INITIALIZE = initialize_request()


def mcphost_command(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``mcphost`` command line."""
    return subprocess.run(
        [sys.executable, "-m", "mcphost", *args], capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


def keys_new(name: str, *tools: str) -> ApiKey:
    """A key made by ``mcphost keys new``: the token it printed and the config line."""
    result = mcphost_command("keys", "new", name, *(f"--tools={t}" for t in tools))
    assert result.returncode == 0, result.stderr
    token = re.search(r"^token:\s+(\S+)$", result.stdout, re.M)
    line = re.search(r"^config:\s+(.+)$", result.stdout, re.M)
    assert token and line, result.stdout
    SECRETS.add(token[1])
    assert token[1].startswith("mcph_") and token[1] not in line[1]
    return ApiKey(name, token[1], {"line": line[1]})


@pytest.fixture(scope="module")
def carol() -> ApiKey:
    return keys_new("carol", "echo_greet")


@pytest.fixture(scope="module")
def daemon(module_daemon, tmp_path_factory, carol: ApiKey) -> RunningDaemon:
    directory = tmp_path_factory.mktemp("keys")
    keys_file = directory / "keys.toml"
    keys_file.write_text(f"[keys]\n{carol.entry['line']}\n")
    credentials = directory / "credentials"
    credentials.mkdir()
    (credentials / "mcphost-keys").write_text(to_toml({"keys": {DAVE.name: DAVE.entry}}))
    config = {
        "auth": {
            "keys_file": str(keys_file),
            "credential": "mcphost-keys",
            "keys": {ALICE.name: ALICE.entry, BOB.name: BOB.entry},
        },
        "plugins": {"enable": ["echo"]},
    }
    started = module_daemon(config, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    started.extra["credentials"] = credentials
    return started


def post(daemon: RunningDaemon, body: Any = INITIALIZE, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(daemon.url, json=body, headers={**HEADERS, **(headers or {})}, timeout=30)


KEY_WANTED = "this server takes API keys, not an OAuth sign-in: send one in the header Authorization: Bearer <key>"
CLAUDE_CODE_HINT = 'claude mcp add --transport http NAME URL --header "Authorization: Bearer <key>"'


def test_no_credentials_is_401_authentication_required(daemon: RunningDaemon) -> None:
    """The 401 says that an API key is wanted, and how to send one: there is no OAuth here."""
    for method in ("POST", "GET", "DELETE"):
        response = httpx.request(method, daemon.url, json=INITIALIZE, headers=HEADERS, timeout=30)
        assert response.status_code == 401, (method, response.text)
        error = response.json()["error"]
        assert error["code"] == AUTHENTICATION_REQUIRED
        assert (
            error["message"].startswith(f"Authentication required: {KEY_WANTED}")
            and CLAUDE_CODE_HINT in error["message"]
        )
        assert response.headers["www-authenticate"] == f'Bearer realm="mcphost", error_description="{KEY_WANTED}"'
        assert "resource_metadata" not in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/mcp",
        "/.well-known/openid-configuration",
    ],
)
def test_oauth_discovery_says_that_a_key_is_wanted(daemon: RunningDaemon, path: str) -> None:
    """Where a client refused with 401 looks for an authorization server, it finds none
    (404), and the reason, in OAuth's error shape."""
    status, body = daemon.get(path)
    assert status == 404
    assert json.loads(body) == {
        "error": "not_found",
        "error_description": f"{KEY_WANTED} (Claude Code: {CLAUDE_CODE_HINT})",
    }


def test_client_registration_is_refused_saying_that_a_key_is_wanted(daemon: RunningDaemon) -> None:
    """Finding no authorization server, clients register with the server's origin: the
    refusal is what they report, so it names the fix."""
    response = httpx.post(f"{daemon.base_url}/register", json={"client_name": "x", "redirect_uris": []}, timeout=30)
    assert response.status_code == 403
    assert response.json() == {
        "error": "access_denied",
        "error_description": f"{KEY_WANTED} (Claude Code: {CLAUDE_CODE_HINT})",
    }


def test_a_client_that_signs_in_with_oauth_learns_that_a_key_is_wanted(daemon: RunningDaemon) -> None:
    """The official TypeScript client, set up as Claude Code is (an OAuth provider, no
    token), reports that this server wants an API key and how to give Claude Code one,
    instead of a failed dynamic client registration."""
    report = sign_in(daemon.url)
    assert report["event"] == "error", report
    assert report["name"] == "AccessDeniedError"
    assert report["message"] == f"{KEY_WANTED} (Claude Code: {CLAUDE_CODE_HINT})"


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer",
        f"Bearer {BOB.token} {BOB.token}",
        "Bearer mcph_not-a-key-we-issued",
        "Bearer not-even-shaped-like-a-key",
        f"Bearer {BOB.token[:-1]}",
        f"Bearer {BOB.token}x",
        "Bearer " + "x" * 20_000,
    ],
    ids=["basic", "empty", "twice", "unknown", "unshaped", "truncated", "extended", "huge"],
)
def test_bad_credentials_are_401_invalid_token(daemon: RunningDaemon, authorization: str) -> None:
    response = post(daemon, headers={"authorization": authorization})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == {"code": NOT_PERMITTED, "message": "Invalid credentials"}
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_key_lists_only_the_tools_its_scopes_allow(daemon: RunningDaemon, mode: str) -> None:
    async with connect(daemon.url, ALICE.token, mode) as client:
        alice = {tool.name for tool in (await client.list_tools()).tools}
    async with connect(daemon.url, BOB.token, mode) as client:
        bob = {tool.name for tool in (await client.list_tools()).tools}
    assert alice == {"echo_echo", "echo_whoami"}
    assert {"echo_echo", "echo_add", "echo_greet", "echo_whoami"} <= bob


@pytest.mark.parametrize("mode", MODES)
async def test_calling_a_tool_outside_the_scopes_fails_like_an_unknown_tool(daemon: RunningDaemon, mode: str) -> None:
    async with connect(daemon.url, ALICE.token, mode) as client:
        allowed = await client.call_tool("echo_echo", {"text": "hi"})
        with pytest.raises(MCPError) as forbidden:
            await client.call_tool("echo_add", {"a": 1, "b": 2})
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("echo_nothing", {"a": 1, "b": 2})
    assert allowed.content[0].text == "hi"
    assert forbidden.value.error.code == unknown.value.error.code
    assert forbidden.value.error.message.replace("echo_add", "X") == unknown.value.error.message.replace(
        "echo_nothing", "X"
    )
    assert forbidden.value.error.data == unknown.value.error.data


@pytest.mark.parametrize("mode", MODES)
async def test_the_tool_and_the_log_see_the_callers_identity(daemon: RunningDaemon, mode: str) -> None:
    async with connect(daemon.url, ALICE.token, mode) as client:
        result = await client.call_tool("echo_whoami", {}, meta={"trace": mode})
    assert result.structured_content["identity"] == "alice"
    line = daemon.wait_for_log(
        lambda r: r.get("event") == "request" and r.get("tool") == "echo_whoami" and r.get("identity") == "alice"
    )
    assert line["status"] == 200


@pytest.mark.parametrize("mode", MODES)
async def test_keys_from_a_keys_file_and_a_systemd_credential(daemon: RunningDaemon, carol: ApiKey, mode: str) -> None:
    async with connect(daemon.url, carol.token, mode) as client:
        carols = {tool.name for tool in (await client.list_tools()).tools}
    async with connect(daemon.url, DAVE.token, mode) as client:
        added = await client.call_tool("echo_add", {"a": 2, "b": 3})
    assert carols == {"echo_greet"}
    assert added.structured_content["total"] == 5


def test_a_session_belongs_to_the_key_that_opened_it(daemon: RunningDaemon) -> None:
    opened = post(daemon, headers=bearer(ALICE.token))
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert post(daemon, listing, {**session, **bearer(BOB.token)}).status_code == 404
    assert post(daemon, listing, {**session, **bearer(ALICE.token)}).status_code == 200


def test_token_shaped_header_values_are_redacted_from_the_log(daemon: RunningDaemon) -> None:
    """A client that puts a token in a header the log records (here the request id, which
    a 48-character API key happens to be shaped like) still leaves no token in the log."""
    leaked = api_key("leaked", ["*"]).token
    response = post(daemon, headers={**bearer(BOB.token), "x-request-id": leaked, "mcp-session-id": leaked})
    assert response.headers["x-request-id"] == leaked  # the client's own id, echoed to it
    line = daemon.wait_for_log(lambda r: r.get("event") == "request" and r.get("request_id") == "mcph_[redacted]")
    assert line["session_id"] == "mcph_[redacted]"
    assert leaked not in daemon.logs()


def test_public_ready_says_only_ready_and_admin_ready_has_the_detail(daemon: RunningDaemon) -> None:
    public = httpx.get(f"{daemon.base_url}/ready", timeout=10)
    admin = httpx.get(f"{daemon.admin_url}/ready", timeout=10)
    assert public.status_code == 200 and public.json() == {"status": "ready"}
    assert admin.status_code == 200 and admin.json()["plugins"]["echo"]["status"] == "loaded"
    assert httpx.get(f"{daemon.base_url}/health", timeout=10).json() == {"status": "ok"}


def test_refuses_to_serve_a_non_loopback_address_without_authentication(tmp_path: Path) -> None:
    config = tmp_path / "mcphost.toml"
    config.write_text(to_toml({"server": {"host": "0.0.0.0"}, "plugins": {"enable": []}}))
    served = mcphost_command("serve", "--config", str(config))
    checked = mcphost_command("check-config", str(config))
    for result in (served, checked):
        assert result.returncode == 2, result.stderr
        assert "0.0.0.0 is not a loopback address and no authentication is configured" in result.stderr
    config.write_text(
        to_toml({"server": {"host": "0.0.0.0"}, "auth": {"allow_unauthenticated": True}, "plugins": {"enable": []}})
    )
    assert mcphost_command("check-config", str(config)).returncode == 0


def test_invalid_keys_file_is_reported_with_its_line(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.toml"
    keys_file.write_text('[keys]\neve = { hash = "sha256:1234", tools = ["*"] }\n')
    config = tmp_path / "mcphost.toml"
    config.write_text(to_toml({"auth": {"keys_file": str(keys_file)}, "plugins": {"enable": []}}))
    result = mcphost_command("check-config", str(config))
    assert result.returncode == 2
    assert f"{keys_file}:2: keys.eve.hash" in result.stderr


def test_keys_list_shows_names_sources_and_scopes_but_no_secret(daemon: RunningDaemon) -> None:
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(daemon.extra["credentials"])}
    result = mcphost_command("keys", "list", "--config", str(daemon.config_path), env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"alice", "bob", "carol", "dave"}
    assert "echo_echo, echo_who*" in rows["alice"]
    assert "sha256" not in result.stdout and not any(s in result.stdout for s in SECRETS)


def test_the_log_redactor_masks_every_credential_shape() -> None:
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl"
    event = {
        "event": "request",
        "request_id": BOB.token,
        "exception": f"Traceback …\nValueError: bad header 'Authorization: Bearer {jwt_like}'",
        "detail": "a client that wrote bEaReR opaque-token-1234",
        "headers": {"Authorization": "Basic YWxpY2U6c2VjcmV0", "x": [f"token {jwt_like}"]},
        "authorization": "anything at all",
        "status": 200,
        "tool": "echo_echo",
    }
    redacted = json.dumps(log.redact(None, "info", event))
    assert BOB.token not in redacted and jwt_like not in redacted and "YWxpY2U6c2VjcmV0" not in redacted
    assert "opaque-token-1234" not in redacted
    assert event["request_id"] == "mcph_[redacted]" and event["tool"] == "echo_echo" and event["status"] == 200
