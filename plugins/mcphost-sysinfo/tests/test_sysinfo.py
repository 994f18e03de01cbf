"""Tests of mcphost-sysinfo: the tools called directly, then through a real ``mcphost serve``."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mcp
import mcphost_sysinfo as sysinfo
import pydantic
import pytest
from mcphost_sysinfo.redact import redacted

import mcphost

MODES = ["legacy", "2026-07-28"]
"""A 2025-11-25 session (initialize handshake) and the stateless 2026-07-28 protocol."""

HAS_SYSTEMCTL = shutil.which("systemctl") is not None


def ctx(**settings: Any) -> mcphost.ToolContext:
    """The context the host would pass a sysinfo tool, with these settings."""
    return mcphost.ToolContext(plugin="sysinfo", tool="sysinfo_test", settings=sysinfo.Settings(**settings))


# --- settings ------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = sysinfo.Settings()
    assert settings.mounts == ["/"]
    assert settings.units == []
    assert settings.max_processes == 100


@pytest.mark.parametrize(
    "bad",
    [{"mounts": ["var"]}, {"mounts": []}, {"max_processes": 0}, {"max_processes": 101}, {"mount": ["/"]}],
)
def test_settings_refuse_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        sysinfo.Settings(**bad)


def test_hooks_return_the_model_and_tools() -> None:
    assert sysinfo.mcphost_settings_model() is sysinfo.Settings
    names = [fn.__name__ for fn in sysinfo.mcphost_tools(sysinfo.Settings())]
    expected = ["load", "memory", "disk_usage", "uptime", "top_processes"]
    assert names == ([*expected, "unit_status"] if HAS_SYSTEMCTL else expected)


def test_unit_status_not_offered_without_systemctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    names = [fn.__name__ for fn in sysinfo.mcphost_tools(sysinfo.Settings())]
    assert "unit_status" not in names


# --- load, memory, uptime --------------------------------------------------------------


def test_load() -> None:
    result = sysinfo.load()
    averages = (result.load_1m, result.load_5m, result.load_15m)
    assert all(isinstance(x, float) and x >= 0 for x in averages)
    assert result.cpu_count is not None and result.cpu_count >= 1


def test_memory() -> None:
    result = sysinfo.memory()
    assert result.ram.total > 0
    assert result.ram.total >= result.ram.used >= 0
    assert result.ram.total >= result.ram.available >= 0
    assert 0 <= result.ram.percent <= 100
    assert result.swap.total >= result.swap.used >= 0
    assert 0 <= result.swap.percent <= 100


def test_uptime() -> None:
    result = sysinfo.uptime()
    now = datetime.now(UTC)
    assert result.boot_time.tzinfo is not None
    assert result.boot_time < now
    assert result.uptime_seconds > 0
    assert abs((now - result.boot_time).total_seconds() - result.uptime_seconds) < 5


# --- disk_usage --------------------------------------------------------------------------


def test_disk_usage_defaults_to_first_mount() -> None:
    result = sysinfo.disk_usage(ctx())
    assert result.mount == "/"
    assert result.total > 0
    # free excludes root-reserved blocks, so used + free may fall short of total.
    assert result.used + result.free <= result.total
    assert 0 <= result.percent <= 100


def test_disk_usage_of_a_configured_mount(tmp_path: Path) -> None:
    context = ctx(mounts=["/", str(tmp_path)])
    result = sysinfo.disk_usage(context, str(tmp_path) + "/")  # a trailing slash names the same mount
    assert result.mount == str(tmp_path)
    assert result.total >= result.used
    assert sysinfo.disk_usage(context, "/").mount == "/"


def test_disk_usage_refuses_unlisted_mount(tmp_path: Path) -> None:
    with pytest.raises(mcphost.ToolError) as error:
        sysinfo.disk_usage(ctx(mounts=["/", str(tmp_path)]), "/etc")
    message = str(error.value)
    assert "'/etc' is not allowed" in message
    assert f"allowed mounts: /, {tmp_path}" in message


def test_disk_usage_refuses_parent_escape(tmp_path: Path) -> None:
    with pytest.raises(mcphost.ToolError, match="not allowed"):
        sysinfo.disk_usage(ctx(mounts=[str(tmp_path)]), str(tmp_path) + "/..")


def test_disk_usage_of_missing_mount_is_a_tool_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    with pytest.raises(mcphost.ToolError, match="cannot stat"):
        sysinfo.disk_usage(ctx(mounts=[missing]))


# --- top_processes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["postgres", "--db-password=hunter2", "-D", "/srv"], ["postgres", "--db-password=[redacted]", "-D", "/srv"]),
        (["mysqldump", "--password", "hunter2", "db"], ["mysqldump", "--password", "[redacted]", "db"]),
        (["app", "--api-key", "--verbose"], ["app", "--api-key", "--verbose"]),  # no value follows
        (["env", "PGPASSWORD=hunter2", "LANG=C", "psql"], ["env", "PGPASSWORD=[redacted]", "LANG=[redacted]", "psql"]),
        (["worker", "redis://:hunter2@db:6379/0"], ["worker", "redis://:[redacted]@db:6379/0"]),
        (["curl", "https://ann:hunter2@example.test/a@b"], ["curl", "https://ann:[redacted]@example.test/a@b"]),
        (["nginx", "-g", "daemon off;"], ["nginx", "-g", "daemon off;"]),
        (["git", "--no-pager", "https://example.test/repo"], ["git", "--no-pager", "https://example.test/repo"]),
    ],
)
def test_secret_looking_arguments_are_masked(argv: list[str], shown: list[str]) -> None:
    assert redacted(argv) == shown


def test_masking_is_linear_in_the_command_line() -> None:
    # Any local user writes command lines: none may make the tool slow (a backtracking
    # regex would take minutes on these).
    long = "a" * 100_000
    started = time.monotonic()
    redacted([long, f"{long}://{long}:{long}", f"--{long}", f"{long}={long}"])
    assert time.monotonic() - started < 2.0


def test_top_processes_by_cpu() -> None:
    started = time.monotonic()
    result = sysinfo.top_processes(ctx(), limit=5, sort_by="cpu")
    assert time.monotonic() - started < 1.0
    assert result.sort_by == "cpu"
    assert 1 <= len(result.processes) <= 5
    cpu = [p.cpu_percent for p in result.processes]
    assert cpu == sorted(cpu, reverse=True)
    assert all(p.pid > 0 and p.name and p.cmdline for p in result.processes)
    assert all(len(p.cmdline) <= sysinfo.models.CMDLINE_MAX for p in result.processes)


def test_top_processes_by_memory() -> None:
    result = sysinfo.top_processes(ctx(), limit=100, sort_by="memory")
    rss = [p.rss_bytes or 0 for p in result.processes]
    assert rss == sorted(rss, reverse=True)
    assert len({p.pid for p in result.processes}) == len(result.processes)
    if len(result.processes) < 100:  # then every process is listed, this one included
        assert os.getpid() in {p.pid for p in result.processes}


def test_top_processes_capped_by_settings() -> None:
    result = sysinfo.top_processes(ctx(max_processes=2), limit=50)
    assert len(result.processes) == 2


def test_truncate_long_command_lines() -> None:
    assert sysinfo._truncate("x" * 500) == "x" * (sysinfo.models.CMDLINE_MAX - 1) + "…"
    assert sysinfo._truncate("short") == "short"


# --- unit_status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    ["", "nginx service", "a;reboot", "$(id)", "../../etc/passwd", "*.service", "x" * 257, "é.service"],
)
def test_unit_status_refuses_bad_names(unit: str) -> None:
    with pytest.raises(mcphost.ToolError, match="invalid unit name"):
        sysinfo.unit_status(ctx(), unit)


@pytest.mark.parametrize("unit", ["sshd", "sshd.service", "nginx.socket"])
def test_unit_status_refuses_units_outside_the_allow_list(unit: str) -> None:
    with pytest.raises(mcphost.ToolError, match=r"not allowed; allowed units: nginx\.service, \*\.timer"):
        sysinfo.unit_status(ctx(units=["nginx.service", "*.timer"]), unit)


@pytest.fixture
def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a ``systemctl`` first on PATH that records its argv and prints canned properties."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "systemctl"
    script.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            printf '%s\\n' "$@" > {tmp_path}/argv
            cat <<'EOF'
            Id=nginx.service
            Description=A high performance web server
            LoadState=loaded
            ActiveState=active
            SubState=running
            UnitFileState=enabled
            MainPID=4242
            ActiveEnterTimestamp=Mon 2024-01-01 10:00:00 UTC
            EOF
            """)
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_unit_status_runs_systemctl_show_safely(fake_systemctl: Path) -> None:
    result = sysinfo.unit_status(ctx(units=["nginx.service"]), "nginx")
    argv = (fake_systemctl.parent.parent / "argv").read_text().splitlines()
    # The unit comes last, after "--", so even "-H host" could not be read as an option.
    assert argv[0] == "show"
    assert argv[-2:] == ["--", "nginx.service"]
    assert "--no-pager" in argv
    assert any(a.startswith("--property=") and "ActiveState" in a for a in argv)
    assert result == sysinfo.models.UnitStatus(
        unit="nginx.service",
        description="A high performance web server",
        load_state="loaded",
        active_state="active",
        sub_state="running",
        unit_file_state="enabled",
        main_pid=4242,
        active_enter_timestamp="Mon 2024-01-01 10:00:00 UTC",
    )


def test_unit_status_passes_leading_dash_units_after_separator(fake_systemctl: Path) -> None:
    sysinfo.unit_status(ctx(), "-.mount")
    argv = (fake_systemctl.parent.parent / "argv").read_text().splitlines()
    assert argv[-2:] == ["--", "-.mount"]


def test_unit_status_reports_systemctl_failure(fake_systemctl: Path) -> None:
    fake_systemctl.write_text("#!/bin/sh\necho 'Failed to connect to bus: Host is down' >&2\nexit 1\n")
    with pytest.raises(mcphost.ToolError, match="failed: Failed to connect to bus"):
        sysinfo.unit_status(ctx(), "cron.service")


def test_unit_status_times_out(fake_systemctl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_systemctl.write_text("#!/bin/sh\nexec sleep 10\n")
    monkeypatch.setattr(sysinfo, "SYSTEMCTL_TIMEOUT", 0.3)
    started = time.monotonic()
    with pytest.raises(mcphost.ToolError, match=r"did not answer within 0\.3s"):
        sysinfo.unit_status(ctx(), "cron.service")
    assert time.monotonic() - started < 3


# On a real systemd, through the installed service and under its sandbox:
# tests/test_systemd_acceptance.py::test_sysinfo_unit_status_reports_real_units.


# --- through the daemon --------------------------------------------------------------------------


def error_text(result: mcp.types.CallToolResult) -> str:
    """The text a failed tool call shows the client."""
    return " ".join(block.text for block in result.content if isinstance(block, mcp.types.TextContent))


@pytest.mark.trio
@pytest.mark.parametrize("mode", MODES)
async def test_daemon_lists_tools_with_schemas(mcphost_daemon: Any, mode: str) -> None:
    daemon = mcphost_daemon({"plugins": {"enable": ["sysinfo"]}})
    async with mcp.Client(daemon.url, mode=mode) as client:
        listing = await client.list_tools()
    tools = {tool.name: tool for tool in listing.tools}
    expected = {
        "sysinfo_load",
        "sysinfo_memory",
        "sysinfo_disk_usage",
        "sysinfo_uptime",
        "sysinfo_top_processes",
    }
    if HAS_SYSTEMCTL:
        expected.add("sysinfo_unit_status")
    assert expected <= tools.keys()
    assert not {name for name in tools if name.startswith("sysinfo_")} - expected

    top = tools["sysinfo_top_processes"]
    assert top.description == "List the processes using the most CPU or memory, sampled over a quarter second."
    limit = top.input_schema["properties"]["limit"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 100, 10)
    assert top.input_schema["properties"]["sort_by"]["enum"] == ["cpu", "memory"]
    # The ToolContext parameter is the host's business, never the client's.
    assert "ctx" not in tools["sysinfo_disk_usage"].input_schema.get("properties", {})
    assert tools["sysinfo_memory"].output_schema is not None
    assert {"ram", "swap"} <= tools["sysinfo_memory"].output_schema["properties"].keys()
    assert all(tools[name].annotations and tools[name].annotations.read_only_hint for name in expected)


@pytest.mark.trio
@pytest.mark.parametrize("mode", MODES)
async def test_daemon_calls_tools(mcphost_daemon: Any, mode: str) -> None:
    daemon = mcphost_daemon({"plugins": {"enable": ["sysinfo"]}})
    async with mcp.Client(daemon.url, mode=mode) as client:
        memory = await client.call_tool("sysinfo_memory", {})
        load = await client.call_tool("sysinfo_load", {})
        uptime = await client.call_tool("sysinfo_uptime", {})
        top = await client.call_tool("sysinfo_top_processes", {"limit": 3, "sort_by": "memory"})
    for result in (memory, load, uptime, top):
        assert not result.is_error, error_text(result)
    ram = memory.structured_content["ram"]
    assert ram["total"] >= ram["used"] >= 0
    assert all(isinstance(load.structured_content[k], float) for k in ("load_1m", "load_5m", "load_15m"))
    boot = datetime.fromisoformat(uptime.structured_content["boot_time"])
    assert boot.utcoffset() is not None and boot.utcoffset().total_seconds() == 0
    assert boot < datetime.now(UTC)
    assert 1 <= len(top.structured_content["processes"]) <= 3


@pytest.mark.trio
@pytest.mark.parametrize("mode", MODES)
async def test_daemon_applies_settings_and_refuses(mcphost_daemon: Any, mode: str, tmp_path: Path) -> None:
    config = {"plugins": {"enable": ["sysinfo"], "sysinfo": {"settings": {"mounts": ["/", str(tmp_path)]}}}}
    daemon = mcphost_daemon(config)
    async with mcp.Client(daemon.url, mode=mode) as client:
        default = await client.call_tool("sysinfo_disk_usage", {})
        configured = await client.call_tool("sysinfo_disk_usage", {"mount": str(tmp_path)})
        refused = await client.call_tool("sysinfo_disk_usage", {"mount": "/etc"})
        try:
            out_of_bounds = await client.call_tool("sysinfo_top_processes", {"limit": 0})
            assert out_of_bounds.is_error
            assert "limit" in error_text(out_of_bounds)
        except mcp.MCPError as error:  # input validation may be a protocol error instead
            assert "limit" in error.error.message or error.code == -32602
        if HAS_SYSTEMCTL:
            bad_unit = await client.call_tool("sysinfo_unit_status", {"unit": "a;reboot"})
            assert bad_unit.is_error
            assert "invalid unit name" in error_text(bad_unit)
    assert not default.is_error, error_text(default)
    assert default.structured_content["mount"] == "/"
    assert not configured.is_error, error_text(configured)
    assert configured.structured_content["mount"] == str(tmp_path)
    assert refused.is_error
    assert f"allowed mounts: /, {tmp_path}" in error_text(refused)


SECRETS_IN_ARGV = ("hunter2", "abc123", "t0ken")


@pytest.fixture
def holder() -> Iterator[int]:
    """A process with secrets on its command line, holding 400 MB so it is among the top 100
    by memory on a busy machine too; its pid."""
    code = "import sys, time; data = b'x' * 400_000_000; print('ready', flush=True); time.sleep(60)"
    argv = [sys.executable, "-c", code, "--db-password=hunter2", "API_TOKEN=abc123", "--token", "t0ken"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process.pid
    finally:
        process.kill()
        process.wait()


@pytest.mark.trio
@pytest.mark.parametrize("full", [False, True])
async def test_daemon_masks_other_processes_secrets_unless_told_not_to(
    mcphost_daemon: Any, holder: int, full: bool
) -> None:
    settings = {"full_command_lines": True} if full else {}
    daemon = mcphost_daemon({"plugins": {"enable": ["sysinfo"], "sysinfo": {"settings": settings}}})
    async with mcp.Client(daemon.url, mode="2026-07-28") as client:
        result = await client.call_tool("sysinfo_top_processes", {"limit": 100, "sort_by": "memory"})
    cmdline = {p["pid"]: p["cmdline"] for p in result.structured_content["processes"]}[holder]
    if full:
        assert all(secret in cmdline for secret in SECRETS_IN_ARGV)
    else:
        assert cmdline.endswith("--db-password=[redacted] API_TOKEN=[redacted] --token [redacted]")
        assert not any(secret in result.model_dump_json() for secret in SECRETS_IN_ARGV)
