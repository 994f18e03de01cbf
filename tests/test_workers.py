"""Several worker processes on one socket ([server] workers): a session moves freely
between them, and the master forwards reloads and drains."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from mcphost.testing import ACCEPT_HEADERS, initialize_request, start_daemon


def _data(response: httpx.Response) -> dict:
    lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(lines[-1]) if lines else response.json()


def test_a_session_is_served_by_whichever_worker_a_request_lands_on(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"server": {"workers": 2}, "plugins": {"enable": ["echo"]}})
    try:
        # A new connection per request, so the kernel spreads them over both workers.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as http:
            opened = http.post(daemon.url, json=initialize_request(), headers=ACCEPT_HEADERS)
            headers = {
                **ACCEPT_HEADERS,
                "mcp-session-id": opened.headers["mcp-session-id"],
                "mcp-protocol-version": "2025-11-25",
            }
            assert (
                http.post(
                    daemon.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
                ).status_code
                == 202
            )

            # Concurrent requests, so one worker cannot take every connection while the
            # other sits idle in accept().
            def call(n: int) -> None:
                body = {
                    "jsonrpc": "2.0",
                    "id": n + 2,
                    "method": "tools/call",
                    "params": {"name": "echo_echo", "arguments": {"text": f"call {n}"}},
                }
                with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as own:
                    response = own.post(daemon.url, json=body, headers=headers)
                assert response.status_code == 200, response.text
                assert _data(response)["result"]["content"][0]["text"] == f"call {n}"

            with ThreadPoolExecutor(8) as pool:
                for batch in range(10):
                    list(pool.map(call, range(batch * 8, batch * 8 + 8)))
                    if any(r.get("event") == "session rebuilt" for r in daemon.log_records()):
                        break
        assert any(r.get("event") == "session rebuilt" for r in daemon.log_records()), "one worker served it all"
        pids = {r["pids"][0] for r in daemon.log_records() if r.get("event") == "workers started"}
        assert pids, "the master started its workers"
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log(lambda r: r.get("event") == "reloaded")
        assert daemon.stop(signal.SIGTERM) == 0
        stopped = [r for r in daemon.log_records() if r.get("event") == "stopped"]
        assert len(stopped) == 2, "both workers drained and stopped"
    finally:
        daemon.stop()
