"""Prometheus metrics on real daemons: every series after a known sequence of calls, labels
that no client can multiply, the metrics token, ``mcphost status``, and the alert rules and
Grafana dashboard shipped in ``packaging/`` checked against what the daemon exposes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from mcp import Client

import mcphost
from mcphost.core.plugin_tables import DefaultLimits
from mcphost.ops.log import TOOL_STATUSES
from mcphost.ops.metrics import AUTH_REASONS, RATE_LIMIT_SCOPES, RELOAD_RESULTS
from mcphost.testing import RunningDaemon, free_port, start_daemon, stateless_request
from tests.authkit import api_key, bearer, connect
from tests.metricskit import key, scrape

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "packaging/prometheus/mcphost-alerts.yml"
ALERT_TESTS = ROOT / "packaging/prometheus/mcphost-alerts.test.yml"
DASHBOARD = ROOT / "packaging/grafana/mcphost.json"
DEFAULT_CONCURRENCY = DefaultLimits().max_concurrency
"""A plugin's concurrency cap where nothing sets one."""

ALICE = api_key("alice", ["*"])
BOB = api_key("bob", ["echo_*"])
"""May not use the faulty plugin's tools: his calls to them are ``denied``."""
DAVE = api_key("dave", ["*"], rate_limit="1/minute")
"""His second request is over his budget."""
CONFIG = {
    "auth": {"keys": {k.name: k.entry for k in (ALICE, BOB, DAVE)}},
    "rate_limits": {"tools": {"echo_add": "2/minute"}},
    "plugins": {
        "enable": ["echo", "faulty", "broken_import"],
        "echo": {"max_concurrency": 3, "tools": {"slow": {"timeout": 0.3}}},
    },
}
TOKEN = "metrics-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def daemon(module_daemon: Any) -> RunningDaemon:
    return module_daemon(CONFIG)


def post(
    daemon: RunningDaemon, method: str, params: Mapping[str, Any] | None = None, token: str | None = ALICE.token
) -> httpx.Response:
    """One raw 2026-07-28 request, answered in full."""
    body, headers = stateless_request(method, params)
    if token is not None:
        headers.update(bearer(token))
    return httpx.post(daemon.url, json=body, headers=headers, timeout=30)


def call(daemon: RunningDaemon, tool: str, arguments: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """``tools/call`` and its JSON-RPC response (from a JSON body or the SSE stream's last event)."""
    response = post(daemon, "tools/call", {"name": tool, "arguments": dict(arguments or {})}, **kwargs)
    assert response.status_code in (200, 400), response.text  # 400: a 2026-07-28 JSON-RPC error
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [
            json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        return next(e for e in reversed(events) if "id" in e)
    return dict(response.json())


def test_every_series_after_a_known_sequence(daemon: RunningDaemon) -> None:
    before = scrape(daemon)
    for _ in range(2):
        assert not call(daemon, "echo_add", {"a": 1, "b": 2})["result"].get("isError")
    assert call(daemon, "echo_add", {"a": 1, "b": 2})["result"]["isError"]  # over 2/minute
    assert call(daemon, "faulty_crash")["result"]["isError"]
    assert call(daemon, "echo_slow", {"seconds": 2})["result"]["isError"]  # timeout 0.3 s
    assert call(daemon, "echo_echo", {})["result"]["isError"]  # no text
    assert call(daemon, "faulty_crash", token=BOB.token)["error"]["code"] == -32602  # not his
    assert call(daemon, "no_such_tool")["error"]["code"] == -32602
    assert post(daemon, "tools/list", token=None).status_code == 401
    assert post(daemon, "tools/list", token="mcph_" + "x" * 43).status_code == 401
    assert post(daemon, "tools/list", token=DAVE.token).status_code == 200
    assert post(daemon, "tools/list", token=DAVE.token).status_code == 429
    after = scrape(daemon)

    def delta(name: str, **labels: str) -> float:
        return after[key(name, **labels)] - before.get(key(name, **labels), 0.0)

    calls = "mcp_tool_calls_total"
    assert delta(calls, plugin="echo", tool_name="echo_add", status="ok") == 2
    assert delta(calls, plugin="echo", tool_name="echo_add", status="rate_limited") == 1
    assert delta(calls, plugin="faulty", tool_name="faulty_crash", status="error") == 1
    assert delta(calls, plugin="echo", tool_name="echo_slow", status="timeout") == 1
    assert delta(calls, plugin="echo", tool_name="echo_echo", status="invalid_arguments") == 1
    assert delta(calls, plugin="faulty", tool_name="faulty_crash", status="denied") == 1
    assert delta(calls, plugin="_unknown", tool_name="_unknown", status="not_found") == 1
    for status in TOOL_STATUSES:  # every status of every served tool exists, at 0 if need be
        assert key(calls, plugin="echo", tool_name="echo_greet", status=status) in after
    histogram = "mcp_tool_call_duration_seconds"
    assert delta(f"{histogram}_count", plugin="echo", tool_name="echo_add") == 2  # the refusal did not run
    assert delta(f"{histogram}_count", plugin="echo", tool_name="echo_echo") == 0
    assert delta(f"{histogram}_count", plugin="echo", tool_name="echo_slow") == 1
    assert 0.3 <= delta(f"{histogram}_sum", plugin="echo", tool_name="echo_slow") < 2
    assert after[key(f"{histogram}_bucket", plugin="echo", tool_name="echo_slow", le="+Inf")] >= 1
    assert delta("mcphost_plugin_timeouts_total", plugin="echo") == 1
    assert delta("mcphost_plugin_timeouts_total", plugin="faulty") == 0

    requests = "mcp_requests_total"
    modern = {"protocol_version": "2026-07-28"}
    assert delta(requests, method="tools/call", code="ok", **modern) == 6  # isError results are answers
    assert delta(requests, method="tools/call", code="-32602", **modern) == 2
    assert delta(requests, method="tools/list", code="ok", **modern) == 1
    assert delta(requests, method="tools/list", code="-32001", **modern) == 1  # no credentials
    assert delta(requests, method="tools/list", code="-32002", **modern) == 1  # a key nobody has
    assert delta(requests, method="tools/list", code="-32003", **modern) == 1  # over budget

    assert delta("mcphost_rate_limited_total", scope="tool") == 1
    assert delta("mcphost_rate_limited_total", scope="identity") == 1
    assert delta("mcphost_rate_limited_total", scope="plugin") == 0
    assert delta("mcphost_auth_failures_total", reason="missing") == 1
    assert delta("mcphost_auth_failures_total", reason="invalid") == 1
    for scope in RATE_LIMIT_SCOPES:
        assert key("mcphost_rate_limited_total", scope=scope) in after
    for reason in AUTH_REASONS:
        assert key("mcphost_auth_failures_total", reason=reason) in after
    for result in RELOAD_RESULTS:
        assert after[key("mcphost_reloads_total", result=result)] == 0
    assert after[key("mcphost_last_reload_success")] == 1

    assert after[key("mcphost_plugin_up", plugin="echo", version="0.1.0")] == 1
    assert after[key("mcphost_plugin_up", plugin="faulty", version="0.1.0")] == 1
    assert after[key("mcphost_plugin_up", plugin="broken_import", version="0.1.0")] == 0
    assert not any(k[0] == "mcphost_plugin_up" and ("plugin", "files") in k[1] for k in after)  # disabled
    assert after[key("mcphost_plugin_concurrency_limit", plugin="echo")] == 3
    # block_long has a pool of its own
    assert after[key("mcphost_plugin_concurrency_limit", plugin="faulty")] == DEFAULT_CONCURRENCY + 1
    assert after[key("mcphost_plugin_inflight", plugin="echo")] == 0
    assert after[key("mcphost_plugin_queued", plugin="echo")] == 0
    assert after[key("mcphost_build_info", version=mcphost.__version__)] == 1
    assert after[key("mcp_active_sessions")] == 0
    for standard in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"):
        assert key(standard) in after
    assert any(k[0] == "python_info" for k in after)
    assert any(k[0] == "python_gc_objects_collected_total" for k in after)


def test_in_flight_and_queued_calls_per_plugin(daemon: RunningDaemon) -> None:
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(call, daemon, "echo_sleep_sync", {"seconds": 1.5}) for _ in range(4)]
        deadline = time.monotonic() + 10
        while (samples := scrape(daemon))[key("mcphost_plugin_queued", plugin="echo")] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert samples[key("mcphost_plugin_inflight", plugin="echo")] == 3  # its max_concurrency
        assert samples[key("mcphost_plugin_queued", plugin="echo")] == 1
        assert all(not c.result()["result"].get("isError") for c in calls)
    assert scrape(daemon)[key("mcphost_plugin_inflight", plugin="echo")] == 0


async def test_open_sessions_are_counted(daemon: RunningDaemon) -> None:
    async with connect(daemon.url, ALICE.token, "legacy") as client:
        await client.call_tool("echo_echo", {"text": "hi"})
        assert scrape(daemon)[key("mcp_active_sessions")] == 1
        samples = scrape(daemon)
        assert samples[key("mcp_requests_total", method="initialize", protocol_version="2025-11-25", code="ok")] >= 1


def test_a_flood_of_made_up_names_adds_no_series(daemon: RunningDaemon) -> None:
    def flood(count: int) -> None:
        with httpx.Client(timeout=30) as client:
            for n in range(count):
                name = f"tool_{uuid.uuid4().hex}"
                body, headers = stateless_request("tools/call", {"name": name, "arguments": {}})
                client.post(daemon.url, json=body, headers={**headers, **bearer(ALICE.token)})
                # An unknown method, and an unknown protocol version, each with a fresh value.
                body, headers = stateless_request(f"x/{n}{uuid.uuid4().hex}")
                client.post(daemon.url, json=body, headers={**headers, **bearer(ALICE.token)})
                headers["mcp-protocol-version"] = f"2099-{n}"
                client.post(daemon.url, json=body, headers={**headers, **bearer(ALICE.token)})

    flood(5)  # the first time may add the fixed "other"/"unknown" series, once
    series = set(scrape(daemon))
    flood(60)
    after = scrape(daemon)
    assert set(after) == series
    unknown = after[key("mcp_tool_calls_total", plugin="_unknown", tool_name="_unknown", status="not_found")]
    assert unknown >= 65


def test_metrics_are_not_on_the_mcp_listener_by_default(daemon: RunningDaemon) -> None:
    assert daemon.get("/metrics")[0] == 404


def test_check_config_refuses_public_metrics_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "mcphost.toml"
    config.write_text('[server]\nhost = "0.0.0.0"\n[auth]\nallow_unauthenticated = true\n[metrics]\npublic = true\n')
    result = subprocess.run(
        [sys.executable, "-m", "mcphost", "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "metrics.public: /metrics would be served on 0.0.0.0 to anyone: set [admin] metrics_token" in result.stderr


# --- mcphost status, the metrics token, reloads ---------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Any:
    """A daemon whose /metrics and /status want a token, also serving /metrics publicly."""
    config = {
        "admin": {"metrics_token": TOKEN},
        "metrics": {"public": True},
        "plugins": {"enable": ["echo", "broken_import"]},
    }
    daemon = start_daemon(tmp_path, config)
    yield daemon
    daemon.stop()


def status_command(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    """``mcphost status`` as a sysadmin runs it: with the daemon's config (and its admin port)."""
    env = {"MCPHOST_ADMIN__PORT": str(daemon.admin_port), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "mcphost", "status", "--config", str(daemon.config_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def reload(daemon: RunningDaemon, count: int) -> None:
    """SIGHUP, and wait for the ``count``-th reload to be done."""
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while sum(str(r.get("event")).startswith(("reloaded", "reload refused")) for r in daemon.log_records()) < count:
        assert time.monotonic() < deadline, daemon.logs()[-2000:]
        time.sleep(0.05)


def test_the_token_guards_metrics_and_status_wherever_served(guarded: RunningDaemon) -> None:
    for path, admin in (("/metrics", True), ("/status", True), ("/metrics", False)):
        status, _ = guarded.get(path, admin=admin)
        assert status == 401, path
        status, _ = guarded.get(path, bearer("wrong-token-0123456789"), admin=admin)
        assert status == 401, path
        status, body = guarded.get(path, bearer(TOKEN), admin=admin)
        assert status == 200, path
    assert b"mcphost_build_info" in body
    assert guarded.get("/status", bearer(TOKEN))[0] == 404  # the report stays on the admin listener


def test_status_command_table_and_json(guarded: RunningDaemon) -> None:
    for n in range(3):
        response = post(guarded, "tools/call", {"name": "echo_add", "arguments": {"a": n, "b": 1}}, token=None)
        assert response.status_code == 200
    reload(guarded, 1)

    table = status_command(guarded)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert re.match(rf"mcphost {re.escape(mcphost.__version__)} \(pid \d+\): ready, up \d+s", lines[0])
    assert lines[1] == f"config:        {guarded.config_path}"
    assert lines[2] == "sessions:      0 open"
    assert lines[3] == "tasks:         running 0, created 0, completed 0, failed 0, cancelled 0, lost 0, expired 0"
    # broken_import fails again at the reload, which tries it again: the reload failed.
    assert re.match(r"last reload:   failed, \d+s ago \(SIGHUP\); failed: broken_import$", lines[4])
    assert lines[5] == "rate limited:  identity 0, plugin 0, tool 0"
    rows = {line.split()[0]: line.split() for line in lines if line and not line.endswith(":")}
    assert rows["PLUGIN"] == ["PLUGIN", "VERSION", "STATUS", "READY", "TOOLS", "IN", "FLIGHT", "ERROR"]
    assert rows["echo"][:6] == ["echo", "0.1.0", "loaded", "yes", "6", f"0/{DEFAULT_CONCURRENCY}"]
    assert rows["broken_import"][:6] == ["broken_import", "0.1.0", "failed", "-", "0", "-"]
    assert "import failed: ModuleNotFoundError" in " ".join(rows["broken_import"])
    add = rows["echo_add"]
    assert add[:6] == ["echo_add", "echo", "3", "0", "0", "0"]
    assert all(re.fullmatch(r"\d+\.\dms", value) for value in add[6:8]), add
    assert rows["echo_greet"] == ["echo_greet", "echo", "0", "0", "0", "0", "-", "-"]
    assert any(line.startswith("disabled: ") and "sysinfo" in line for line in lines)

    as_json = status_command(guarded, "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["version"] == mcphost.__version__ and report["pid"] == guarded.process.pid
    assert report["ready"] is True and report["status"] == "ready"  # broken_import is not required
    tool = next(t for t in report["tools"] if t["name"] == "echo_add")
    assert tool["calls"] == 3 and tool["statuses"] == {"ok": 3} and tool["recent_calls"] == 3
    assert 0 < tool["p50_ms"] <= tool["p99_ms"]
    assert report["last_reload"]["result"] == "failed" and report["last_reload"]["reason"] == "SIGHUP"
    echo = next(p for p in report["plugins"] if p["name"] == "echo")
    assert echo == {
        "name": "echo",
        "version": "0.1.0",
        "status": "loaded",
        "isolation": "process",
        "restarts": 0,
        "tools": 6,
        "inflight": 0,
        "concurrency_limit": DEFAULT_CONCURRENCY,
        "queued": 0,
        "error": None,
        "reload_error": None,
        "ready": True,
    }


def test_status_command_reports_a_refused_reload(guarded: RunningDaemon) -> None:
    good = guarded.config_path.read_text()
    guarded.config_path.write_text(good + "\n[log]\nlevel = 'loud'\n")
    reload(guarded, 1)
    status, body = guarded.get("/status", bearer(TOKEN), admin=True)  # the config cannot tell the CLI now
    assert status == 200 and json.loads(body)["last_reload"]["result"] == "invalid_config"
    samples = scrape(guarded, TOKEN)
    assert samples[key("mcphost_reloads_total", result="invalid_config")] == 1
    assert samples[key("mcphost_last_reload_success")] == 0
    assert samples[key("mcphost_last_reload_timestamp_seconds")] > 0
    guarded.config_path.write_text(good.replace('"broken_import"', ""))  # and nothing fails to load
    reload(guarded, 2)
    samples = scrape(guarded, TOKEN)
    assert samples[key("mcphost_reloads_total", result="ok")] == 1
    assert samples[key("mcphost_last_reload_success")] == 1


def test_status_command_when_the_daemon_is_not_there(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "mcphost", "status", "--admin-url", url, "--config", str(tmp_path / "missing.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert f"no daemon answers at {url}" in result.stderr


def test_status_command_without_the_token(guarded: RunningDaemon) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcphost", "status", "--admin-url", guarded.admin_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "MCPHOST_CONFIG": "/nonexistent/mcphost.toml"},
    )
    assert result.returncode == 3
    assert "answered 401 (set [admin] metrics_token to the daemon's)" in result.stderr


# --- packaging/: the alert rules and the dashboard ------------------------------------------


def _metric_references(expr: str) -> list[tuple[str, set[str]]]:
    """Each metric an expression reads, with the label names its selector matches on."""
    found = []
    for match in re.finditer(r"\b((?:mcp|mcphost|process|python)_[a-z_]+)\b(\{[^}]*\})?", expr):
        labels = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", match[2] or ""))
        found.append((match[1], labels))
    return found


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", ())]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def _alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_dashboard_and_alerts_query_only_what_is_exposed(daemon: RunningDaemon) -> None:
    exposed: dict[str, set[str]] = {}
    for name, labels in scrape(daemon):
        exposed.setdefault(name, set()).update(k for k, _ in labels)
    exprs = _dashboard_exprs() + [rule["expr"] for rule in _alert_rules()]
    references = [ref for expr in exprs for ref in _metric_references(expr)]
    assert len(references) > 30
    for metric, labels in references:
        assert metric in exposed, f"{metric} is not exposed"
        # instance and job are added by Prometheus; le comes with every _bucket sample.
        assert labels - {"instance", "job"} <= exposed[metric], f"{metric}{{{labels}}}"
    used = {metric for metric, _ in references}
    for family in ("mcp_tool_calls_total", "mcp_tool_call_duration_seconds_bucket", "mcp_requests_total"):
        assert family in used
    assert {m for m in exposed if m.startswith("mcphost_") and m != "mcphost_last_reload_timestamp_seconds"} <= used


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mcphost" and dashboard["title"] == "mcphost"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance", "plugin"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            assert set(panel["gridPos"]) == {"h", "w", "x", "y"}


def test_alert_rules_cover_what_matters() -> None:
    rules = {rule["alert"]: rule for rule in _alert_rules()}
    assert {
        "McphostPluginDown",
        "McphostReloadFailed",
        "McphostToolErrorRatioHigh",
        "McphostToolLatencyHigh",
        "McphostPluginSaturated",
        "McphostLogLinesDropped",
    } <= set(rules)
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_alert_rules_pass_promtool() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alert_rules())} rules found" in checked.stdout
    # The unit tests: each alert fires on the series it is for, and stays quiet on the others.
    tested = subprocess.run(["promtool", "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Prometheus is not installed (Debian package prometheus)"
)
def test_dashboard_queries_and_alert_rules_run_on_a_real_prometheus(daemon: RunningDaemon, tmp_path: Path) -> None:
    """A real Prometheus scrapes the daemon and evaluates the alert rules; every dashboard
    query runs on it without error, and those that should have data do."""
    call(daemon, "echo_add", {"a": 1, "b": 1})  # a call, so the latency panels have data
    port = free_port()
    rules = tmp_path / "mcphost-alerts.yml"
    shutil.copy(ALERTS, rules)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "mcphost", "static_configs": [{"targets": [f"127.0.0.1:{daemon.admin_port}"]}]}
                ],
            }
        )
    )
    command = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[Any]:
        response = httpx.get(f"{api}/query", params={"query": expr}, timeout=10)
        assert response.headers.get("content-type", "").startswith("application/json"), (expr, response.text)
        answer = response.json()
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    try:
        deadline = time.monotonic() + 30
        while not _ready(f"http://127.0.0.1:{port}/-/ready"):
            assert time.monotonic() < deadline, "Prometheus did not start"
            time.sleep(0.2)
        while _scrapes(query) < 3:  # so rate() has something to work on
            assert time.monotonic() < deadline, "Prometheus did not scrape the daemon"
            time.sleep(0.5)
        substitutions = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*", "$plugin": ".*"}
        empty = []
        for expr in _dashboard_exprs():
            if expr.startswith("label_values("):
                continue
            for variable, value in substitutions.items():
                expr = expr.replace(variable, value)
            if not query(expr):
                empty.append(expr)
        # Only the panels of what has not happened here may be empty.
        assert all(re.search(r"error\|timeout|_unknown|code!=", expr) for expr in empty), empty
        rules_state = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"][0]["rules"]
        assert len(rules_state) == len(_alert_rules())
        assert all(rule["health"] in ("ok", "unknown") for rule in rules_state), rules_state  # not "err"
    finally:
        server.terminate()
        server.wait(10)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _scrapes(query: Callable[[str], list[Any]]) -> int:
    """How many times Prometheus has scraped the daemon in the last minute."""
    result = query("mcphost_build_info[1m]")
    return len(result[0]["values"]) if result else 0


async def test_a_daemon_whose_stderr_reader_is_gone_serves_on_and_counts_the_lines_it_drops(tmp_path: Path) -> None:
    """stderr a pipe whose reader went away (``mcphost serve 2>&1 | head``, a log shipper
    that died): every line then fails to write, and each is dropped, not raised into the
    request that logged it; the count is the only place left to say so."""
    port = free_port()
    fifo = tmp_path / f"mcphost-{port}.log"  # where start_daemon sends stdout and stderr
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo"]}}, port=port)
    try:
        seen = b""
        while b'"serving"' not in seen:  # read until it serves, so no line so far was dropped
            with contextlib.suppress(BlockingIOError):
                seen += os.read(reader, 1 << 16)
            await trio.sleep(0.01)
        os.close(reader)
        assert scrape(daemon)[key("mcphost_log_lines_dropped_total")] == 0
        async with Client(daemon.url) as client:
            for n in range(3):
                result = await client.call_tool("echo_echo", {"text": f"call {n}"})
                assert not result.is_error and result.content[0].text == f"call {n}", result
        # Each request logs its line after its response is sent.
        for _ in range(200):
            if (dropped := scrape(daemon)[key("mcphost_log_lines_dropped_total")]) >= 3:
                break
            await trio.sleep(0.05)
        assert dropped >= 3
        assert daemon.process.poll() is None
    finally:
        status = daemon.stop()
        fifo.unlink()  # read by nothing else: a FIFO without a writer blocks its reader
    assert status == 0
