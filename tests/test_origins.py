"""DNS-rebinding protection: every listener, the admin listener included, answers only requests
whose Host (and Origin, when a browser sends one) it serves; ``name:*`` means any port, and
only a port."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from mcphost.testing import ACCEPT_HEADERS, RunningDaemon, initialize_request, stateless_request

TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
def daemon(module_daemon: Callable[..., RunningDaemon]) -> RunningDaemon:
    config = {
        "server": {"allowed_origins": ["https://app.example.test:*"]},
        "admin": {"metrics_token": TOKEN},
        "plugins": {"enable": ["echo"]},
    }
    return module_daemon(config)


def admin_get(daemon: RunningDaemon, path: str, **headers: str) -> httpx.Response:
    # httpx sets Host from the URL unless told otherwise, as a browser would from the page's.
    return httpx.get(daemon.admin_url + path, headers={"authorization": f"Bearer {TOKEN}", **headers}, timeout=10)


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/status"])
def test_the_admin_listener_refuses_a_foreign_host_and_origin(daemon: RunningDaemon, path: str) -> None:
    assert admin_get(daemon, path).status_code == 200
    # What a page on evil.example.test gets once its name resolves to 127.0.0.1.
    rebound = admin_get(daemon, path, host=f"evil.example.test:{daemon.admin_port}")
    assert (rebound.status_code, rebound.text) == (421, "Invalid Host header")
    cross = admin_get(daemon, path, origin="http://evil.example.test")
    assert (cross.status_code, cross.text) == (403, "Invalid Origin header")
    assert "plugins" not in rebound.text + cross.text


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:1234", True),
        ("http://127.0.0.1:8080", True),
        ("https://app.example.test:8443", True),
        ("http://localhost:1234.evil.example.test", False),
        ("http://localhost:.evil.example.test", False),
        ("http://localhost:", False),
        ("https://app.example.test:443@evil.example.test", False),
        ("https://app.example.test.evil.example.test:443", False),
    ],
)
@pytest.mark.parametrize("path", ["2025-11-25", "2026-07-28"])
def test_a_port_wildcard_matches_a_port_only(daemon: RunningDaemon, origin: str, allowed: bool, path: str) -> None:
    if path == "2026-07-28":
        body, headers = stateless_request("tools/list")
    else:
        body, headers = initialize_request(), dict(ACCEPT_HEADERS)
    response = httpx.post(daemon.url, json=body, headers={**headers, "origin": origin}, timeout=10)
    assert (response.status_code == 200) is allowed, (origin, response.status_code, response.text)
    if not allowed:
        assert (response.status_code, response.text) == (403, "Invalid Origin header")


@pytest.mark.parametrize(("host", "allowed"), [("localhost:1234", True), ("localhost:1234.evil.example.test", False)])
def test_a_host_port_wildcard_matches_a_port_only(daemon: RunningDaemon, host: str, allowed: bool) -> None:
    body, headers = stateless_request("tools/list")
    response = httpx.post(daemon.url, json=body, headers={**headers, "host": host}, timeout=10)
    assert (response.status_code == 200) is allowed, (host, response.status_code, response.text)
