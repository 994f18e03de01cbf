"""``mcphost check-config PATH`` on broken configs: exit status 2, and every problem on stderr as
``PATH:LINE: key.path: message`` so a sysadmin can go straight to the offending line. What is
amiss with the plugins rather than the config (one fails to load, a table or pattern names
none) is a warning, ``PATH:LINE: warning: key.path: message``, and the check passes unless
``--strict``: the systemd unit runs it before every reload. ``serve`` refuses an invalid
config the same way, and says what else stops it from starting (a taken port, a state
directory or secret it cannot use) in two lines with what to do, never a traceback.

Each command is the real CLI in its own process (``python -m mcphost``). A process costs about
two seconds of imports, so the module runs them all at once, in a pool, before the first test,
and each test then checks the outcome of its own run.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mcphost.testing import free_port, start_daemon

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "etc" / "mcphost.toml"
RUN_TIMEOUT = 120.0
"""Seconds before a command that should have exited counts as hung (a guard, not an assertion)."""

MINIMAL = '[plugins]\nenable = ["echo"]\n'
SYNTAX_ERROR = '[server]\nport = 8080\nhost = \n\n[plugins]\nenable = ["echo"]\n'
SERVE = ("serve", "--config", "{path}", "--port", "{port}")
IMPORT_FAILS = '[plugins]\nenable = ["echo", "broken_import"]\n\n[plugins.broken_import]\ntimeout = 5\n'


@dataclass(frozen=True)
class Command:
    """A CLI run: its arguments, config text and environment. In the arguments and the
    environment, ``{path}`` is the config file, ``{port}`` a free port and ``{busy}`` a port
    something else listens on; ``{dir}`` in all three is the run's directory, which holds a
    regular file ``a-file`` and a session secret too short, ``short-secret``."""

    text: str | None
    args: tuple[str, ...] = ("check-config", "{path}")
    env: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    """A config file to use as it is (it need not exist) instead of writing ``text``."""


COMMANDS: dict[str, Command] = {
    "syntax-error": Command(SYNTAX_ERROR),
    # Problems pydantic finds in the host's own tables, all in one file (it reports them together).
    "host-problems": Command(
        '[server]\nport = "eighty"\nbogus = true\n\n[srever]\nport = 8080\n\n'
        '[plugins]\nenable = ["echo"]\n\n[plugins.echo]\nprefix = "bad prefix!"\n'
    ),
    "port-out-of-range": Command("[server]\nport = 70000\n\n" + MINIMAL),
    # Problems found while loading the enabled plugins, all in one file.
    "plugin-problems": Command(
        MINIMAL + '\n[plugins.echo.settings]\ngreeting = 5\ngreting = "hi"\n\n[plugins.nosuch]\nprefix = "x"\n'
    ),
    "tools-table-naming-no-tool": Command(MINIMAL + "\n[plugins.echo.tools.nosuch]\ntimeout = 5\n"),
    "plugin-import-fails": Command(IMPORT_FAILS),
    "plugin-import-fails-strict": Command(IMPORT_FAILS, args=("check-config", "--strict", "{path}")),
    "unmatched-patterns": Command('[plugins]\nenable = ["echo", "ehco*"]\ndisable = ["sysinfoo"]\n'),
    "unknown-environment-variable": Command(MINIMAL, env={"MCPHOST_LOG_FORMAT": "json"}),
    "host-and-plugin-problems": Command(
        '[server]\nport = "eighty"\n\n' + MINIMAL + '\n[plugins.echo.settings]\ngreting = "hi"\n\n'
        '[plugins.nosuch]\nprefix = "x"\n'
    ),
    "minimal-valid": Command(MINIMAL),
    "missing-file": Command(None, path=Path("no-such-config.toml")),
    "env-port-not-a-number": Command("[server]\nport = 8080\n\n" + MINIMAL, env={"MCPHOST_SERVER__PORT": "notanumber"}),
    "serve-syntax-error": Command(SYNTAX_ERROR, args=SERVE),
    "serve-port-taken": Command(MINIMAL, args=("serve", "--config", "{path}", "--port", "{busy}")),
    "serve-admin-port-taken": Command(MINIMAL, args=SERVE, env={"MCPHOST_ADMIN__PORT": "{busy}"}),
    "serve-workers-port-taken": Command(
        "[server]\nworkers = 2\n\n" + MINIMAL, args=("serve", "--config", "{path}", "--port", "{busy}")
    ),
    "serve-address-not-here": Command(
        "[auth]\nallow_unauthenticated = true\n\n" + MINIMAL, args=(*SERVE, "--host", "192.0.2.1")
    ),
    "serve-state-dir-unusable": Command('[sessions]\nstate_dir = "{dir}/a-file/state"\n\n' + MINIMAL, args=SERVE),
    "serve-secret-unusable": Command('[sessions]\nsecret_file = "{dir}/a-file/secret"\n\n' + MINIMAL, args=SERVE),
    "serve-workers-secret-unusable": Command(
        '[server]\nworkers = 2\n\n[sessions]\nsecret_file = "{dir}/a-file/secret"\n\n' + MINIMAL, args=SERVE
    ),
    "serve-secret-too-short": Command('[sessions]\nsecret_file = "{dir}/short-secret"\n\n' + MINIMAL, args=SERVE),
    "serve-tracing-path-unusable": Command(
        '[tracing]\nexporter = "file"\npath = "{dir}/a-file/spans"\n\n' + MINIMAL, args=SERVE
    ),
    "serve-credential-missing": Command(
        '[auth]\ncredential = "keys.toml"\n\n' + MINIMAL, args=SERVE, env={"CREDENTIALS_DIRECTORY": "{dir}/none"}
    ),
    "serve-config-unreadable": Command(None, args=SERVE, path=Path(".")),
}
if SHIPPED_CONFIG.exists():
    # As deployed: only the bundled plugins are installed there, while this environment also
    # has the (partly broken) test plugins, so the check enables just the bundled ones.
    COMMANDS["shipped-config"] = Command(
        None, path=SHIPPED_CONFIG, env={"MCPHOST_PLUGINS__ENABLE": '["files", "sysinfo"]'}
    )


@dataclass(frozen=True)
class Run:
    """A finished command: its config file and text, exit status and output."""

    path: str
    text: str
    returncode: int
    stdout: str
    stderr: str

    def stderr_lines(self) -> list[str]:
        """Stderr lines that are not JSON log records."""
        return [line for line in self.stderr.splitlines() if line and not line.startswith("{")]


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``MCPHOST_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPHOST_")}
    return {**env, **extra}


def run_command(workdir: Path, name: str, command: Command, busy: int) -> Run:
    """Write the config of ``command`` and run the CLI on it."""
    if command.path is not None:
        path, text = command.path, command.path.read_text() if (workdir / command.path).is_file() else ""
    else:
        assert command.text is not None
        path, text = workdir / f"{name}.toml", command.text.replace("{dir}", str(workdir))
        path.write_text(text)
    values = {"path": path, "port": free_port(), "busy": busy, "dir": workdir}
    args = [arg.format(**values) for arg in command.args]
    done = subprocess.run(
        [sys.executable, "-m", "mcphost", *args],
        capture_output=True,
        text=True,
        env=clean_env({k: v.format(**values) for k, v in command.env.items()}),
        stdin=subprocess.DEVNULL,
        cwd=workdir,
        timeout=RUN_TIMEOUT,
    )
    return Run(str(path), text, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every command of the module, run concurrently: ``name -> Run``."""
    workdir = tmp_path_factory.mktemp("check-config")
    (workdir / "a-file").write_text("a file where a directory should be")
    (workdir / "short-secret").write_text("too short")
    with socket.socket() as taken, ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) + 1) as pool:
        # Held with SO_REUSEPORT, as a server sharing its port between processes holds it:
        # taken all the same for a daemon, whose own workers' sockets must not join it.
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        busy = taken.getsockname()[1]
        futures = {name: pool.submit(run_command, workdir, name, c, busy) for name, c in COMMANDS.items()}
        return {name: future.result() for name, future in futures.items()}


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the first line of ``text`` containing ``needle``."""
    return next(number for number, line in enumerate(text.splitlines(), start=1) if needle in line)


def problem_line(run: Run, key: str, line: int | None, *, warning: bool = False) -> str:
    """The stderr line reporting ``key`` at ``line`` (``None``: any line or none), as a problem
    or a ``warning``; fails if absent."""
    where = re.escape(run.path) + (f":{line}" if line is not None else r"(?::\d+)?")
    pattern = re.compile(f"^{where}: {'warning: ' if warning else ''}{re.escape(key)}: ")
    found = [text for text in run.stderr_lines() if pattern.match(text)]
    assert found, f"no problem {key!r} at line {line} in stderr:\n{run.stderr}"
    return found[0]


def assert_invalid(run: Run) -> None:
    """Exit status 2, the verdict on stderr, and no claim of validity on stdout."""
    assert run.returncode == 2, run.stderr
    assert f"mcphost: {run.path}: configuration is invalid" in run.stderr_lines()
    assert "configuration is valid" not in run.stdout


def test_toml_syntax_error_reports_the_line_tomllib_gives(runs: dict[str, Run]) -> None:
    """A TOML syntax error is reported at the line tomllib names."""
    run = runs["syntax-error"]
    with pytest.raises(tomllib.TOMLDecodeError) as error:
        tomllib.loads(run.text)
    match = re.search(r"at line (\d+)", str(error.value))
    assert match is not None
    assert_invalid(run)
    assert any(line.startswith(f"{run.path}:{match[1]}: TOML syntax error: ") for line in run.stderr_lines()), (
        run.stderr
    )


def test_unknown_top_level_key_is_named_at_its_line(runs: dict[str, Run]) -> None:
    """A misspelt top-level table (``[srever]``) is an unknown key at its header's line."""
    run = runs["host-problems"]
    assert_invalid(run)
    assert "unknown key" in problem_line(run, "srever", line_of(run.text, "[srever]"))


def test_unknown_server_key_is_named_at_its_line(runs: dict[str, Run]) -> None:
    """An unknown key in ``[server]`` is reported as ``server.<key>`` at its line."""
    run = runs["host-problems"]
    assert_invalid(run)
    assert "unknown key" in problem_line(run, "server.bogus", line_of(run.text, "bogus"))


def test_wrong_type_is_named_with_the_value_given(runs: dict[str, Run]) -> None:
    """``port = "eighty"`` is reported at its line, naming the type wanted and the value given."""
    run = runs["host-problems"]
    assert_invalid(run)
    message = problem_line(run, "server.port", line_of(run.text, "port = "))
    assert "integer" in message
    assert "'eighty'" in message


def test_out_of_range_value_is_named_with_the_bound(runs: dict[str, Run]) -> None:
    """``port = 70000`` is reported at its line with the upper bound."""
    run = runs["port-out-of-range"]
    assert_invalid(run)
    message = problem_line(run, "server.port", line_of(run.text, "port = "))
    assert "65535" in message
    assert "70000" in message


def test_unknown_plugin_setting_is_named_with_its_full_key(runs: dict[str, Run]) -> None:
    """A misspelt plugin setting is ``plugins.echo.settings.greting`` at its line."""
    run = runs["plugin-problems"]
    assert_invalid(run)
    assert "unknown key" in problem_line(run, "plugins.echo.settings.greting", line_of(run.text, "greting"))


def test_plugin_setting_of_wrong_type_is_named_at_its_line(runs: dict[str, Run]) -> None:
    """A plugin setting of the wrong type is reported against the plugin's settings model."""
    run = runs["plugin-problems"]
    assert_invalid(run)
    message = problem_line(run, "plugins.echo.settings.greeting", line_of(run.text, "greeting ="))
    assert "string" in message


def test_table_for_a_plugin_that_is_not_installed_is_reported(runs: dict[str, Run]) -> None:
    """``[plugins.nosuch]`` names no installed plugin: a warning at the table's line, naming
    the plugins there are (it may be a typo, or a plugin uninstalled since)."""
    run = runs["plugin-problems"]
    assert_invalid(run)  # by the settings problems of the same file
    message = problem_line(run, "plugins.nosuch", line_of(run.text, "[plugins.nosuch]"), warning=True)
    assert "no plugin is named 'nosuch'" in message and "echo" in message


def test_tools_table_naming_no_tool_is_reported(runs: dict[str, Run]) -> None:
    """``[plugins.echo.tools.nosuch]`` names no tool of echo: reported at the table's line."""
    run = runs["tools-table-naming-no-tool"]
    assert_invalid(run)
    message = problem_line(run, "plugins.echo.tools.nosuch", line_of(run.text, "[plugins.echo.tools.nosuch]"))
    assert "no such tool" in message


def test_prefix_with_bad_characters_is_reported(runs: dict[str, Run]) -> None:
    """A prefix with characters outside ``[A-Za-z0-9_-]`` is reported at its line with the value."""
    run = runs["host-problems"]
    assert_invalid(run)
    assert "'bad prefix!'" in problem_line(run, "plugins.echo.prefix", line_of(run.text, "prefix ="))


def test_plugin_that_fails_to_import_is_a_warning(runs: dict[str, Run]) -> None:
    """An enabled plugin that cannot be imported is a warning naming the plugin and the import
    error; the config is valid (exit 0), so a reload that may fix it goes through."""
    run = runs["plugin-import-fails"]
    assert run.returncode == 0, run.stderr
    message = problem_line(run, "plugins.broken_import", None, warning=True)
    assert "plugin failed to load" in message
    assert "ModuleNotFoundError" in message
    assert "mcphost_testplugins_missing_dependency" in message
    assert f"mcphost: {run.path}: configuration is valid (1 plugins, 6 tools, 1 warning)" in run.stdout


def test_plugin_import_failure_points_at_the_plugins_own_table(runs: dict[str, Run]) -> None:
    """When the failing plugin has a ``[plugins.<name>]`` table, the failure carries that table's line."""
    run = runs["plugin-import-fails"]
    message = problem_line(run, "plugins.broken_import", line_of(run.text, "[plugins.broken_import]"), warning=True)
    assert "ModuleNotFoundError" in message


def test_strict_fails_on_a_plugin_that_fails_to_load(runs: dict[str, Run]) -> None:
    """``--strict`` turns warnings into a failure: exit 1 (not 2: the config itself is valid)."""
    run = runs["plugin-import-fails-strict"]
    assert run.returncode == 1, run.stderr
    assert "ModuleNotFoundError" in problem_line(run, "plugins.broken_import", None, warning=True)
    assert f"mcphost: {run.path}: failing on warnings (--strict)" in run.stderr_lines()


def test_patterns_that_match_no_plugin_are_warnings(runs: dict[str, Run]) -> None:
    """An ``enable`` or ``disable`` pattern that matches no plugin found is a warning at its line."""
    run = runs["unmatched-patterns"]
    assert run.returncode == 0, run.stderr
    enable = problem_line(run, "plugins.enable", line_of(run.text, "enable ="), warning=True)
    assert "'ehco*' matches no plugin; the plugins found are " in enable and "echo" in enable
    assert "'sysinfoo' matches no plugin" in problem_line(
        run, "plugins.disable", line_of(run.text, "disable ="), warning=True
    )
    assert not any("'echo'" in line for line in run.stderr_lines())  # a pattern that matches is fine
    assert "configuration is valid (1 plugins, 6 tools, 2 warnings)" in run.stdout


def test_an_environment_variable_that_sets_nothing_is_a_problem(runs: dict[str, Run]) -> None:
    """``MCPHOST_LOG_FORMAT`` (one ``_`` where ``__`` belongs) sets no setting: the check says
    so and what was meant, and fails."""
    run = runs["unknown-environment-variable"]
    assert_invalid(run)
    assert (
        "environment: MCPHOST_LOG_FORMAT: this environment variable sets no setting "
        "(they are MCPHOST_<TABLE>__<KEY>); did you mean MCPHOST_LOG__FORMAT?"
    ) in run.stderr_lines()


def test_several_host_config_problems_are_all_reported(runs: dict[str, Run]) -> None:
    """Every problem in the host's own tables is reported in one run, each at its line."""
    run = runs["host-problems"]
    assert_invalid(run)
    problem_line(run, "server.port", line_of(run.text, "port = "))
    problem_line(run, "server.bogus", line_of(run.text, "bogus"))
    problem_line(run, "srever", line_of(run.text, "[srever]"))
    problem_line(run, "plugins.echo.prefix", line_of(run.text, "prefix ="))


def test_several_plugin_problems_are_all_reported(runs: dict[str, Run]) -> None:
    """Two bad settings of one plugin and a table for a missing plugin are all reported in one run."""
    run = runs["plugin-problems"]
    assert_invalid(run)
    problem_line(run, "plugins.echo.settings.greeting", line_of(run.text, "greeting ="))
    problem_line(run, "plugins.echo.settings.greting", line_of(run.text, "greting"))
    problem_line(run, "plugins.nosuch", line_of(run.text, "[plugins.nosuch]"), warning=True)


def test_host_and_plugin_problems_are_reported_together(runs: dict[str, Run]) -> None:
    """A bad host key does not hide the plugin problems of the same file: all are reported in one run."""
    run = runs["host-and-plugin-problems"]
    assert_invalid(run)
    reported = [
        key
        for key, needle in [
            ("server.port", "port ="),
            ("plugins.echo.settings.greting", "greting"),
            ("warning: plugins.nosuch", "[plugins.nosuch]"),
        ]
        if any(line.startswith(f"{run.path}:{line_of(run.text, needle)}: {key}: ") for line in run.stderr_lines())
    ]
    assert reported == ["server.port", "plugins.echo.settings.greting", "warning: plugins.nosuch"], run.stderr


def test_minimal_valid_config_passes(runs: dict[str, Run]) -> None:
    """A config enabling only ``echo`` is valid: exit 0, the verdict on stdout, no problem on stderr."""
    run = runs["minimal-valid"]
    assert run.returncode == 0, run.stderr
    assert f"mcphost: {run.path}: configuration is valid (1 plugins, 6 tools)" in run.stdout
    assert run.stderr_lines() == []


def test_missing_config_file_is_reported(runs: dict[str, Run]) -> None:
    """A config path that does not exist fails the check with a message saying it cannot be read."""
    run = runs["missing-file"]
    assert_invalid(run)
    assert any(line.startswith(f"{run.path}: cannot read: ") for line in run.stderr_lines()), run.stderr


@pytest.mark.skipif(not SHIPPED_CONFIG.exists(), reason="etc/mcphost.toml is not in the repository yet")
def test_shipped_config_passes(runs: dict[str, Run]) -> None:
    """The example config shipped in ``etc/`` is valid."""
    run = runs["shipped-config"]
    assert run.returncode == 0, run.stderr
    assert "configuration is valid" in run.stdout


def test_environment_override_with_bad_value_is_named(runs: dict[str, Run]) -> None:
    """``MCPHOST_SERVER__PORT=notanumber`` fails the check with an error naming ``server.port``."""
    run = runs["env-port-not-a-number"]
    assert_invalid(run)
    assert "'notanumber'" in problem_line(run, "server.port", None)


def test_environment_override_error_names_the_variable_not_a_file_line(runs: dict[str, Run]) -> None:
    """When the bad value comes from the environment, the error says so instead of blaming the file's
    (valid) ``port = 8080`` line."""
    run = runs["env-port-not-a-number"]
    assert_invalid(run)
    message = problem_line(run, "server.port", None)
    assert "MCPHOST_SERVER__PORT" in message
    assert not message.startswith(f"{run.path}:{line_of(run.text, 'port = 8080')}:")


def test_serve_with_invalid_config_exits_without_serving(runs: dict[str, Run]) -> None:
    """``mcphost serve`` on a config with a syntax error exits 2 by itself, never announcing it serves."""
    run = runs["serve-syntax-error"]
    assert run.returncode == 2, run.stderr
    assert "serving" not in run.stderr
    assert f"mcphost: {run.path}: configuration is invalid" in run.stderr_lines()


def test_serve_with_invalid_config_prints_what_check_config_prints(runs: dict[str, Run]) -> None:
    """``serve`` reports the same problem lines as ``check-config`` on the same config."""
    serve, check = runs["serve-syntax-error"], runs["syntax-error"]
    assert serve.text == check.text
    assert [line.replace(serve.path, "PATH") for line in serve.stderr_lines()] == [
        line.replace(check.path, "PATH") for line in check.stderr_lines()
    ]


def test_serve_warns_of_what_would_otherwise_be_silently_ignored(tmp_path: Path) -> None:
    """``serve`` starts with an environment variable that sets nothing, or a pattern that
    matches no plugin, but says so in its log (the variable is named, with what was meant)."""
    config = '[plugins]\nenable = ["echo", "ehco"]\n'
    daemon = start_daemon(tmp_path, config, env={"MCPHOST_LOG_LEVEL": "debug"})
    try:
        ignored = daemon.wait_for_log(lambda r: r.get("event") == "environment variable ignored")
        assert ignored["variable"] == "MCPHOST_LOG_LEVEL" and "MCPHOST_LOG__LEVEL" in ignored["problem"]
        unmatched = daemon.wait_for_log(lambda r: r.get("event") == "[plugins] names plugins that are not there")
        [problem] = unmatched["problems"]
        found = f"{daemon.config_path}:2: warning: plugins.enable: 'ehco' matches no plugin; the plugins found are "
        assert problem.startswith(found) and "echo" in problem.removeprefix(found).split(", ")
    finally:
        daemon.stop()


def assert_refused_to_start(run: Run, status: int = 1) -> list[str]:
    """``serve`` exited with ``status`` before serving, saying why in two lines (what failed,
    what to do; for an invalid config, the problem and the verdict) and no traceback;
    returns those lines."""
    assert run.returncode == status, run.stderr
    assert "Traceback" not in run.stderr and "ExceptionGroup" not in run.stderr, run.stderr
    assert '"serving"' not in run.stderr
    lines = run.stderr_lines()
    assert len(lines) == 2 and lines[1].startswith("mcphost: "), run.stderr
    return lines


def test_serve_on_a_taken_port_names_the_listener_and_what_to_do(runs: dict[str, Run]) -> None:
    what, fix = assert_refused_to_start(runs["serve-port-taken"])
    assert re.fullmatch(
        r"mcphost: cannot listen on 127\.0\.0\.1:\d+ for MCP \(\[server\] host and port\): .*in use", what
    )
    assert "another process listens there" in fix and "--port" in fix and "[server] port" in fix
    # The master of several workers, whose sockets share their port, says the same.
    assert assert_refused_to_start(runs["serve-workers-port-taken"]) == [what, fix]


def test_serve_with_the_admin_port_taken_says_how_to_move_or_turn_off_the_admin_listener(
    runs: dict[str, Run],
) -> None:
    what, fix = assert_refused_to_start(runs["serve-admin-port-taken"])
    assert re.match(
        r"mcphost: cannot listen on 127\.0\.0\.1:\d+ for the admin listener \(\[admin\] host and port\)", what
    )
    assert "[admin] port" in fix and "[admin] enabled = false" in fix


def test_serve_on_an_address_of_another_machine_says_so(runs: dict[str, Run]) -> None:
    what, fix = assert_refused_to_start(runs["serve-address-not-here"])
    assert what.startswith("mcphost: cannot listen on 192.0.2.1:")
    assert "192.0.2.1 is not an address of this machine" in fix and "--host" in fix


def test_serve_with_a_state_directory_or_secret_it_cannot_use(runs: dict[str, Run]) -> None:
    run = runs["serve-state-dir-unusable"]
    what, fix = assert_refused_to_start(run)
    secret = Path(run.path).parent / "a-file" / "state" / "session-secret"
    assert what == f"mcphost: cannot use the session secret {secret}: Not a directory"
    assert "[sessions] state_dir" in fix
    run = runs["serve-secret-unusable"]
    what, fix = assert_refused_to_start(run)
    assert what == f"mcphost: cannot use the session secret {Path(run.path).parent}/a-file/secret: Not a directory"
    assert "[sessions] secret_file" in fix
    # With several workers, the master finds out before it starts any (they would fail, one
    # after the other, for ever).
    assert assert_refused_to_start(runs["serve-workers-secret-unusable"])[1] == fix
    what, _ = assert_refused_to_start(runs["serve-secret-too-short"])
    assert "shorter than 16 bytes" in what


def test_serve_with_a_span_file_it_cannot_write(runs: dict[str, Run]) -> None:
    what, fix = assert_refused_to_start(runs["serve-tracing-path-unusable"])
    assert what.startswith("mcphost: cannot open the [tracing] path: Not a directory")
    assert "[tracing] path" in fix


def test_serve_with_a_missing_credential_or_an_unreadable_config(runs: dict[str, Run]) -> None:
    run = runs["serve-credential-missing"]
    lines = assert_refused_to_start(run, status=2)
    assert "cannot read keys" in lines[0] and "none/keys.toml" in lines[0]
    assert lines[1].endswith("refusing to start")
    lines = assert_refused_to_start(runs["serve-config-unreadable"], status=2)
    assert "cannot read" in lines[0] and lines[1].endswith("configuration is invalid")
