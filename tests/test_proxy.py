"""Behind a reverse proxy: ``X-Forwarded-*`` believed from ``[proxy] trusted`` peers only,
so the Host check passes with the public name and logs show the real client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mcphost.core import config
from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request
from mcphost.transport.proxy import TrustedProxies


def scope(peer: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "client": (peer, 40000), "scheme": "http", "headers": [(b"host", b"upstream"), *headers]}


def test_headers_from_an_untrusted_peer_change_nothing() -> None:
    original = scope("198.51.100.7", (b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-host", b"evil.example"))
    rewritten = {**original, "headers": list(original["headers"])}
    TrustedProxies(["10.0.0.0/8"]).apply(rewritten)
    assert rewritten == original


def test_a_trusted_proxy_gives_client_scheme_and_host() -> None:
    request = scope(
        "10.0.0.1",
        # What a client claimed, then what each proxy appended: the client is the last
        # address no trusted proxy owns.
        (b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"),
        (b"x-forwarded-for", b"10.0.0.2"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"mcp.example.com"),
    )
    TrustedProxies(["10.0.0.0/8"]).apply(request)
    assert request["client"] == ("203.0.113.9", 0)
    assert request["scheme"] == "https"
    assert [v for k, v in request["headers"] if k == b"host"] == [b"mcp.example.com"]


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [(b"[2001:db8::1]:443", "2001:db8::1"), (b"2001:db8::2", "2001:db8::2"), (b"192.0.2.1:5555", "192.0.2.1")],
)
def test_forwarded_addresses_may_carry_ports(forwarded_for: bytes, client: str) -> None:
    request = scope("127.0.0.1", (b"x-forwarded-for", forwarded_for))
    TrustedProxies(["127.0.0.1"]).apply(request)
    assert request["client"] == (client, 0)


def test_odd_forwarded_values_are_ignored() -> None:
    request = scope("::1", (b"x-forwarded-proto", b"gopher"), (b"x-forwarded-host", b"a b\r\nx: y"))
    TrustedProxies(["::1"]).apply(request)
    assert request["scheme"] == "http"
    assert request["headers"][0] == (b"host", b"upstream")


def test_trusted_must_be_addresses_or_networks() -> None:
    with pytest.raises(config.ConfigError, match=r"proxy\.trusted"):
        config.parse('[proxy]\ntrusted = ["10.0.0.0/8", "proxy.example.com"]\n')


@pytest.fixture(scope="module")
def daemon(module_daemon: Any) -> RunningDaemon:
    # The proxy is 127.0.0.2: requests from 127.0.0.1 stand for clients reaching mcphost directly.
    return module_daemon(
        {
            "plugins": {"enable": ["echo"]},
            "server": {"allowed_hosts": ["mcp.example.test"]},
            "proxy": {"trusted": ["127.0.0.2"]},
        }
    )


def post_initialize(daemon: RunningDaemon, source: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.post(daemon.url, json=initialize_request(), headers={**ACCEPT_HEADERS, **headers})


def test_behind_a_trusted_proxy_the_public_host_passes_and_logs_show_the_client(daemon: RunningDaemon) -> None:
    forwarded = {"host": "mcphost-upstream:8080", "x-forwarded-host": "mcp.example.test", "x-request-id": "via-proxy"}
    response = post_initialize(daemon, "127.0.0.2", {**forwarded, "x-forwarded-for": "203.0.113.9"})
    assert response.status_code == 200, response.text
    line = daemon.wait_for_log(lambda r: r.get("request_id") == "via-proxy" and r["event"] == "request")
    assert line["client"] == "203.0.113.9"


def test_forwarded_headers_from_anyone_else_are_not_believed(daemon: RunningDaemon) -> None:
    # The upstream name is not an allowed host: without a proxy to vouch for the public one, 421.
    forwarded = {"host": "mcphost-upstream:8080", "x-forwarded-host": "mcp.example.test", "x-request-id": "direct"}
    response = post_initialize(daemon, "127.0.0.1", {**forwarded, "x-forwarded-for": "203.0.113.9"})
    assert response.status_code == 421
    assert (
        daemon.wait_for_log(lambda r: r.get("request_id") == "direct" and r["event"] == "request")["client"]
        == "127.0.0.1"
    )
