"""Property-based: generated JSON-RPC bodies, headers and credentials thrown at ``/mcp`` of a
daemon with API keys and OAuth on. Whatever arrives, the answer is never a 5xx, never a
stack trace, never a credential echoed back, and the daemon still serves a normal call
afterwards."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcphost.testing import RunningDaemon
from tests.authkit import JwksServer, SigningKey, api_key, claims, connect, oauth_config

EXAMPLES = 3000
SIGNER = SigningKey.ec("fuzz")
ALICE = api_key("alice", ["echo_echo"])
BOB = api_key("bob", ["*"])
CREDENTIALS = ["alice", "bob", "jwt", "expired-jwt"]
"""The credentials requests are drawn with, by name; the tokens are made when the test
starts (:func:`tokens`), not at import: by the time this module runs, a token minted at
import may have expired, and every "valid" request would stop at authentication."""
JWT_LIFETIME = 3600
"""Seconds the drawn JWT stays valid: the whole test, however slow the machine."""
METHODS = [
    "initialize",
    "notifications/initialized",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
]
TOOLS = ["echo_echo", "echo_add", "echo_greet", "echo_whoami", "nope"]
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
names = st.sampled_from(TOOLS) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
params = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "arguments": st.dictionaries(st.sampled_from(["text", "a", "b", "name"]), json_values, max_size=3),
        "uri": st.sampled_from(["echo://greeting", "echo://upper/x", "file:///etc/passwd"]) | names,
        "protocolVersion": st.sampled_from(["2025-11-25", "2025-06-18", "1999-01-01"]),
        "capabilities": st.just({}),
        "clientInfo": st.just({"name": "fuzz", "version": "1"}),
        "_meta": st.just(ENVELOPE) | json_values,
    },
)
messages = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | json_values},
    optional={
        "id": st.integers() | st.text(max_size=10) | json_values,
        "method": st.sampled_from(METHODS) | st.text(max_size=20),
        "params": params | json_values,
    },
)
bodies = (
    messages.map(lambda m: json.dumps(m).encode())
    | st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
)
# An authorization is drawn as what to send, made into a header by authorization() once the
# tokens exist: None, ("token", name), ("changed", name, index, character) for the token
# with one character changed, or ("header", value).
valid_authorizations = st.sampled_from(CREDENTIALS[:3]).map(lambda name: ("token", name))
authorizations = (
    st.none()
    | st.sampled_from(CREDENTIALS).map(lambda name: ("token", name))
    | st.tuples(
        st.just("changed"),
        st.sampled_from(CREDENTIALS),
        st.integers(0, 40),
        st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    )
    | header_text.map(lambda t: ("header", f"Bearer {t}"))
    | header_text.map(lambda t: ("header", f"Bearer mcph_{t}"))
    | header_text.map(lambda t: ("header", f"Bearer eyJ{t}"))
    | header_text.map(lambda t: ("header", t))
)
chaos = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["POST"] * 6 + ["GET", "DELETE", "PUT"]),
        "body": bodies,
        "authorization": authorizations,
        "version": st.none() | st.sampled_from(["2025-11-25", "2026-07-28", "2025-06-18"]) | header_text,
        "session": st.none() | header_text,
        "mcp_method": st.none() | st.sampled_from(METHODS) | header_text,
        "mcp_name": st.none() | st.sampled_from(TOOLS) | header_text,
        "content_type": st.sampled_from(["application/json", "text/plain", None]),
    }
)


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, Any]:
    """A request a client could send, with valid credentials: these get past authentication
    to the protocol handlers and the tools."""
    method, modern, given = draw(st.sampled_from(METHODS)), draw(st.booleans()), draw(params)
    body = {"jsonrpc": "2.0", "id": draw(st.integers(0, 2**31)), "method": method, "params": given}
    name = given.get("name") if method == "tools/call" else given.get("uri") if method == "resources/read" else None
    if modern:
        body["params"] = {**given, "_meta": ENVELOPE}
    return {
        "method": "POST",
        "body": json.dumps(body).encode(),
        "authorization": draw(valid_authorizations),
        "version": "2026-07-28" if modern else draw(st.sampled_from([None, "2025-11-25"])),
        "session": None,
        "mcp_method": method if modern else None,
        "mcp_name": name if modern and isinstance(name, str) else None,
        "content_type": "application/json",
    }


requests = chaos | well_formed()


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer([SIGNER])
    yield server
    server.close()


@pytest.fixture(scope="module")
def daemon(module_daemon, jwks: JwksServer) -> RunningDaemon:
    config = {
        "auth": {"oauth": oauth_config(jwks), "keys": {ALICE.name: ALICE.entry, BOB.name: BOB.entry}},
        "plugins": {"enable": ["echo"], "echo": {"timeout": 2.0}},
    }
    return module_daemon(config)


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    """The tokens of :data:`CREDENTIALS`, made as the module's tests start."""
    jwt = SIGNER.sign(claims(exp=int(time.time()) + JWT_LIFETIME))
    return {"alice": ALICE.token, "bob": BOB.token, "jwt": jwt, "expired-jwt": SIGNER.sign(claims(exp=1))}


def authorization(drawn: tuple[Any, ...] | None, tokens: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header a drawn authorization stands for."""
    if drawn is None:
        return None
    if drawn[0] == "header":
        return str(drawn[1])
    token = tokens[drawn[1]]
    if drawn[0] == "changed":
        index, character = drawn[2], drawn[3]
        token = f"{token[:index]}{character}{token[index + 1 :]}"
    return f"Bearer {token}"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


def headers_for(request: dict[str, Any], tokens: Mapping[str, str]) -> dict[str, str]:
    values = {
        "accept": "application/json, text/event-stream",
        "content-type": request["content_type"],
        "authorization": authorization(request["authorization"], tokens),
        "mcp-protocol-version": request["version"],
        "mcp-session-id": request["session"],
        "mcp-method": request["mcp_method"],
        "mcp-name": request["mcp_name"],
    }
    # httpx refuses header values with surrounding whitespace; a real client sends none either.
    return {k: v.strip() for k, v in values.items() if v is not None and v.strip()}


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests)
def test_generated_requests_never_break_the_daemon(
    daemon: RunningDaemon, http: httpx.Client, tokens: dict[str, str], request: Any
) -> None:
    headers = headers_for(request, tokens)
    response = http.request(request["method"], daemon.url, content=request["body"], headers=headers)
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text[:500])
    assert "Traceback" not in response.text
    echoed = response.text + json.dumps(dict(response.headers))
    assert not any(token in echoed for token in tokens.values())


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_daemon_still_serves_afterwards(daemon: RunningDaemon, mode: str) -> None:
    assert daemon.process.poll() is None
    async with connect(daemon.url, BOB.token, mode) as client:
        result = await client.call_tool("echo_echo", {"text": "still here"})
    assert result.content[0].text == "still here"
    requests = [r for r in daemon.log_records() if r.get("event") == "request"]
    assert len(requests) > 1000 and not [r for r in requests if r["status"] >= 500 and r["status"] != 503]
    # Every credential that should get through did, the JWT included (it had not expired).
    callers = {r.get("identity") for r in requests if r["status"] < 400}
    assert {"alice", "bob", "user-123"} <= callers, callers
