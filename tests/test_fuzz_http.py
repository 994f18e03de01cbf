"""Property-based: generated requests thrown at ``/mcp`` of a daemon with API keys and OAuth
on. Whatever arrives, the answer is never a 5xx, never a stack trace, never a credential
echoed back; the daemon logs no traceback, and still serves a normal call afterwards.

Two generators. ``chaos`` mixes bodies, headers and credentials of every shape. ``typed``
takes a valid request of every method, on both protocol paths (a 2025-11-25 session, and a
stateless 2026-07-28 request), and puts a value of any JSON type in one of its fields: each
field the method's schema declares, to three levels deep.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp_types.methods import CLIENT_REQUESTS

from mcphost.testing import RunningDaemon
from tests.authkit import JwksServer, SigningKey, api_key, claims, connect, oauth_config

CHAOS_EXAMPLES = 2200
TYPED_EXAMPLES = 3300
LEAST_REQUESTS = 5000
"""Requests the module must have sent when its last test runs."""
LEGACY, MODERN = "2025-11-25", "2026-07-28"
CREDENTIAL_KINDS = ["alice", "bob", "jwt", "expired"]
VALID_KINDS = CREDENTIAL_KINDS[:3]
METHODS = sorted({method for method, _ in CLIENT_REQUESTS})
TOOLS = ["echo_echo", "echo_add", "echo_greet", "echo_whoami", "nope"]
ENVELOPE = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
BASES: dict[str, dict[str, Any]] = {
    "initialize": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "fuzz", "version": "1"}},
    "tools/call": {"name": "echo_echo", "arguments": {"text": "hi"}},
    "resources/read": {"uri": "echo://upper/x"},
    "resources/subscribe": {"uri": "echo://greeting"},
    "resources/unsubscribe": {"uri": "echo://greeting"},
    "prompts/get": {"name": "echo_review", "arguments": {"subject": "x"}},
    "completion/complete": {
        "ref": {"type": "ref/prompt", "name": "echo_review"},
        "argument": {"name": "subject", "value": "x"},
        "context": {"arguments": {}},
    },
    "logging/setLevel": {"level": "info"},
    "subscriptions/listen": {"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["echo://greeting"]}},
}
"""A valid ``params`` of each method that takes some; the others' is ``{}``."""
META_FIELDS = [
    ("_meta", "io.modelcontextprotocol/protocolVersion"),
    ("_meta", "io.modelcontextprotocol/clientCapabilities"),
    ("_meta", "io.modelcontextprotocol/logLevel"),
    ("_meta", "progressToken"),
]
NAME_PARAM = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

sent: Counter[tuple[str, str, int]] = Counter()
"""Requests sent by this module: (generator, path or method, status)."""


def field_paths(schema: dict[str, Any], node: dict[str, Any], depth: int = 3) -> Iterator[tuple[str, ...]]:
    """Every property path of ``node`` (a JSON schema) down to ``depth`` levels."""
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    for choice in node.get("anyOf", ()):
        yield from field_paths(schema, choice, depth)
    for name, child in node.get("properties", {}).items():
        yield (name,)
        if depth > 1:
            yield from ((name, *rest) for rest in field_paths(schema, child, depth - 1))


def typed_targets() -> dict[tuple[str, str], list[tuple[str, ...]]]:
    """The field paths of every method, by (protocol path, method), for each path it is served on."""
    targets = {}
    for (method, version), model in CLIENT_REQUESTS.items():
        if version not in (LEGACY, MODERN) or (method == "initialize" and version == MODERN):
            continue
        schema = model.model_json_schema()
        paths = {path for path in field_paths(schema, schema["properties"]["params"]) if path[0] != "_meta"}
        targets[version, method] = sorted(paths | set(META_FIELDS))
    return dict(sorted(targets.items()))


TARGETS = typed_targets()

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
        "name": names | json_values,
        "arguments": st.dictionaries(st.sampled_from(["text", "a", "b", "name"]), json_values, max_size=3)
        | json_values,
        "uri": st.sampled_from(["echo://greeting", "echo://upper/x", "file:///etc/passwd"]) | names | json_values,
        "protocolVersion": st.sampled_from([LEGACY, "2025-06-18", "1999-01-01"]),
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
# Credentials are named here and minted at use (the ``tokens`` fixture): a token must not
# depend on when the module was collected.
authorizations = (
    st.none()
    | st.sampled_from(CREDENTIAL_KINDS).map(lambda kind: ("bearer", kind))
    | st.tuples(
        st.just("changed"),  # a real token with one character changed
        st.sampled_from(CREDENTIAL_KINDS),
        st.integers(0, 40),
        st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    )
    | header_text.map(lambda t: ("raw", f"Bearer {t}"))
    | header_text.map(lambda t: ("raw", f"Bearer mcph_{t}"))
    | header_text.map(lambda t: ("raw", f"Bearer eyJ{t}"))
    | header_text.map(lambda t: ("raw", t))
)
chaos = st.fixed_dictionaries(
    {
        "generator": st.just("chaos"),
        "method": st.sampled_from(["POST"] * 6 + ["GET", "DELETE", "PUT"]),
        "body": bodies,
        "authorization": authorizations,
        "version": st.none() | st.sampled_from([LEGACY, MODERN, "2025-06-18"]) | header_text,
        "session": st.none() | header_text,
        "mcp_method": st.none() | st.sampled_from(METHODS) | header_text,
        "mcp_name": st.none() | st.sampled_from(TOOLS) | header_text,
        "content_type": st.sampled_from(["application/json", "text/plain", None]),
    }
)


def routed(version: str, method: str, given: dict[str, Any], request_id: int) -> dict[str, Any]:
    """A POST of ``method`` with ``given`` params on the 2025-11-25 session or the 2026-07-28 path."""
    modern = version == MODERN
    if modern:
        given = {**given, "_meta": {**ENVELOPE, **(given.get("_meta") if isinstance(given.get("_meta"), dict) else {})}}
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": given}
    name = given.get(NAME_PARAM.get(method, ""))
    return {
        "method": "POST",
        "body": json.dumps(body).encode(),
        "version": version if modern or method != "initialize" else None,
        "session": None if modern or method == "initialize" else "own",
        "mcp_method": method if modern else None,
        # A header carries ASCII only: a client sends a name it cannot put there in the body alone.
        "mcp_name": name if modern and isinstance(name, str) and name.isascii() and name.isprintable() else None,
        "content_type": "application/json",
    }


@st.composite
def well_formed(draw: st.DrawFn) -> dict[str, Any]:
    """A request a client could send, with valid credentials: it gets past authentication
    to the protocol handlers and the tools."""
    method, version = draw(st.sampled_from(METHODS)), draw(st.sampled_from([LEGACY, MODERN]))
    request = routed(version, method, draw(params), draw(st.integers(0, 2**31)))
    return {**request, "generator": "chaos", "authorization": ("bearer", draw(st.sampled_from(VALID_KINDS)))}


@st.composite
def typed(draw: st.DrawFn) -> dict[str, Any]:
    """A valid request of one method on one path, with one field given a value of any type."""
    version, method = draw(st.sampled_from(list(TARGETS)))
    path = draw(st.sampled_from(TARGETS[version, method]))
    given = json.loads(json.dumps(BASES.get(method, {})))
    if version == MODERN:
        given["_meta"] = dict(ENVELOPE)
    node = given
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = draw(json_values)
    request = routed(version, method, given, draw(st.integers(0, 2**31)))
    if version == MODERN and method in NAME_PARAM:
        # The routing header follows the body (or, for a value no header can carry, is left out).
        request["mcp_name"] = draw(st.none() | st.just(request["mcp_name"]))
    credential = ("bearer", draw(st.sampled_from(VALID_KINDS)))
    return {**request, "generator": "typed", "authorization": credential, "target": f"{version} {method}"}


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return SigningKey.ec("fuzz")


@pytest.fixture(scope="module")
def jwks(signer: SigningKey) -> Iterator[JwksServer]:
    server = JwksServer([signer])
    yield server
    server.close()


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {"alice": api_key("alice", ["echo_echo", "echo_review", "echo://*"]), "bob": api_key("bob", ["*"])}


@pytest.fixture(scope="module")
def daemon(module_daemon, jwks: JwksServer, keys: dict[str, Any]) -> RunningDaemon:
    config = {
        "auth": {"oauth": oauth_config(jwks), "keys": {k.name: k.entry for k in keys.values()}},
        "plugins": {"enable": ["echo"], "echo": {"timeout": 2.0}},
    }
    return module_daemon(config)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as client:
        yield client


@pytest.fixture(scope="module")
def tokens(signer: SigningKey, keys: dict[str, Any]) -> dict[str, str]:
    """The credentials by kind, minted now; a good token lives an hour, longer than the module runs."""
    good = signer.sign(claims(exp=int(time.time()) + 3600))
    return {"alice": keys["alice"].token, "bob": keys["bob"].token, "jwt": good, "expired": signer.sign(claims(exp=1))}


@pytest.fixture(scope="module")
def sessions(daemon: RunningDaemon, http: httpx.Client, tokens: dict[str, str]) -> dict[str, str]:
    """A 2025-11-25 session of each valid credential, for the requests that need one."""
    found = {}
    for kind in VALID_KINDS:
        headers = {"accept": "application/json, text/event-stream", "authorization": f"Bearer {tokens[kind]}"}
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": BASES["initialize"]}
        response = http.post(daemon.url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        found[kind] = response.headers["mcp-session-id"]
        headers |= {"mcp-session-id": found[kind], "mcp-protocol-version": LEGACY}
        ack = http.post(daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
        assert ack.status_code == 202, ack.text
    return found


def authorization(value: Any, tokens: dict[str, str]) -> str | None:
    """The ``Authorization`` header a generated credential stands for."""
    if value is None:
        return None
    if value[0] == "bearer":
        return f"Bearer {tokens[value[1]]}"
    if value[0] == "changed":  # a real token with one character changed
        _, kind, at, char = value
        token = tokens[kind]
        return f"Bearer {token[:at]}{char}{token[at + 1 :]}"
    return str(value[1])


def headers_for(request: dict[str, Any], tokens: dict[str, str], sessions: dict[str, str]) -> dict[str, str]:
    credential = request["authorization"]
    session = request["session"]
    if session == "own":
        kind = credential[1] if credential and credential[0] == "bearer" else None
        session = sessions.get(kind or "", "unknown")
    values = {
        "accept": "application/json, text/event-stream",
        "content-type": request["content_type"],
        "authorization": authorization(credential, tokens),
        "mcp-protocol-version": request["version"],
        "mcp-session-id": session,
        "mcp-method": request["mcp_method"],
        "mcp-name": request["mcp_name"],
    }
    # httpx refuses header values with surrounding whitespace or outside Latin-1; a real
    # client sends none either.
    return {k: v.strip() for k, v in values.items() if v is not None and v.strip() and v.isprintable()}


def send(http: httpx.Client, daemon: RunningDaemon, request: Any, tokens: dict[str, str], sessions: dict[str, str]):
    """Send one generated request; the answer must be no 5xx (503 aside), no traceback, no credential."""
    headers = headers_for(request, tokens, sessions)
    with http.stream(request["method"], daemon.url, content=request["body"], headers=headers) as response:
        # A stream that stays open (a subscriptions/listen, a GET) is read up to its first event.
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if response.headers.get("content-type", "").startswith("text/event-stream") and (
                "\n\n" in text or "\r\n\r\n" in text
            ):
                break
    sent[request["generator"], request.get("target", request["method"]), response.status_code] += 1
    assert response.status_code < 500 or response.status_code == 503, (response.status_code, text[:500])
    assert "Traceback" not in text
    echoed = text + json.dumps(dict(response.headers))
    assert not any(token in echoed for token in tokens.values())


FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(FUZZ_SETTINGS, max_examples=CHAOS_EXAMPLES)
@given(request=chaos | well_formed())
def test_generated_requests_never_break_the_daemon(daemon, http, tokens, sessions, request: Any) -> None:
    send(http, daemon, request, tokens, sessions)


@settings(FUZZ_SETTINGS, max_examples=TYPED_EXAMPLES)
@given(request=typed())
def test_a_field_of_any_type_in_any_method_is_a_clean_error(daemon, http, tokens, sessions, request: Any) -> None:
    send(http, daemon, request, tokens, sessions)


@pytest.mark.parametrize("mode", ["legacy", MODERN])
async def test_the_daemon_still_serves_afterwards(daemon: RunningDaemon, keys: dict[str, Any], mode: str) -> None:
    assert daemon.process.poll() is None
    async with connect(daemon.url, keys["bob"].token, mode) as client:
        result = await client.call_tool("echo_echo", {"text": "still here"})
    assert result.content[0].text == "still here"


def test_every_request_was_logged_and_none_left_a_traceback(daemon: RunningDaemon) -> None:
    total = sum(sent.values())
    by_target: Counter[str] = Counter()
    by_status: Counter[int] = Counter()
    for (generator, target, status), count in sent.items():
        by_status[status] += count
        if generator == "typed":
            by_target[target] += count
    print(f"\n{total} generated requests; by status {dict(sorted(by_status.items()))}")
    print("typed-field requests by path and method:", dict(sorted(by_target.items())))
    assert total >= LEAST_REQUESTS
    # Every (path, method) pair has had fields of other types.
    assert set(by_target) == {f"{version} {method}" for version, method in TARGETS}
    records = daemon.log_records()
    requests = [r for r in records if r.get("event") == "request"]
    assert len(requests) >= total
    assert [r for r in requests if r["status"] >= 500 and r["status"] != 503] == []
    # Every credential that should get through did, the JWT included (it had not expired).
    callers = {r.get("identity") for r in requests if r["status"] < 400}
    assert {"alice", "bob", "user-123"} <= callers, callers
    with_traceback = [r for r in records if "exception" in r or "Traceback" in json.dumps(r)]
    assert with_traceback == []
