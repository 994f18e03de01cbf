"""Secrets stay put: no error message shows a secret's value, valid or not (``check-config``,
``serve``, the journal on a refused reload), and every file mcphost writes, and the state
directory it makes, are for its own user only."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from mcphost.testing import start_daemon, to_toml

METRICS_TOKEN = "short-Tok3n"  # under the 16 characters a metrics token needs
REDIS_PASSWORD = "s3cret-redis-pass"
HEADER_VALUE = 4242424242
SIGNATURE = "sig-0f-the-plugin"


def secrets_in(text: str) -> list[str]:
    return [s for s in (METRICS_TOKEN, REDIS_PASSWORD, str(HEADER_VALUE), SIGNATURE) if s in text]


def invalid_config() -> str:
    return to_toml(
        {
            "admin": {"metrics_token": METRICS_TOKEN},
            "state": {"redis_url": f"http://:{REDIS_PASSWORD}@redis.internal:6379/0"},
            "tracing": {"headers": {"x-api-key": HEADER_VALUE}},
            "plugins": {"enable": ["echo"], "echo": {"settings": {"signature": 12345678, "greeting": ["x"]}}},
        }
    )


def mcphost(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPHOST_")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "mcphost", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_check_config_names_each_bad_secret_but_never_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "mcphost.toml"
    path.write_text(invalid_config())
    done = mcphost("check-config", str(path), cwd=tmp_path)
    assert done.returncode == 2
    for key in ("admin.metrics_token", "state.redis_url", "tracing.headers.x-api-key"):
        assert f": {key}: " in done.stderr, done.stderr
    assert secrets_in(done.stdout + done.stderr) == []
    # A value that is no secret is still shown, so the message says what to fix.
    assert "plugins.echo.settings.greeting: Input should be a valid string (got ['x'])" in done.stderr


def test_a_plugins_secret_setting_is_not_shown_either(tmp_path: Path) -> None:
    path = tmp_path / "mcphost.toml"
    path.write_text(to_toml({"plugins": {"enable": ["echo"], "echo": {"settings": {"signature": 12345678}}}}))
    done = mcphost("check-config", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert "plugins.echo.settings.signature" in done.stderr
    assert "12345678" not in done.stdout + done.stderr


# One "_" where "__" belongs: the variable sets nothing, and is named with what it meant.
MISSPELT = {"MCPHOST_ADMIN_METRICS_TOKEN": METRICS_TOKEN, "MCPHOST_STATE_REDIS_URL": f"redis://:{REDIS_PASSWORD}@r/0"}


def test_warnings_and_ignored_variables_name_what_is_wrong_but_never_show_a_value(tmp_path: Path) -> None:
    path = tmp_path / "mcphost.toml"
    # A table naming no plugin is a warning; the secret in it is never read.
    path.write_text(to_toml({"plugins": {"enable": ["echo"], "nosuch": {"settings": {"token": SIGNATURE}}}}))
    done = mcphost("check-config", str(path), cwd=tmp_path, env=MISSPELT)
    assert done.returncode == 2, done.stderr
    assert "warning: plugins.nosuch: no plugin is named 'nosuch'" in done.stderr
    assert "MCPHOST_ADMIN_METRICS_TOKEN: this environment variable sets no setting" in done.stderr
    assert "did you mean MCPHOST_STATE__REDIS_URL?" in done.stderr
    assert secrets_in(done.stdout + done.stderr) == []
    daemon = start_daemon(tmp_path, path.read_text(), env=MISSPELT)
    try:
        daemon.wait_for_log(lambda r: r.get("event") == "[plugins] names plugins that are not there", timeout=20)
        ignored = {r["variable"] for r in daemon.log_records() if r.get("event") == "environment variable ignored"}
        assert ignored == set(MISSPELT)
    finally:
        daemon.stop()
    assert secrets_in(daemon.logs()) == []


def test_a_refused_reload_logs_no_secret(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, {"plugins": {"enable": ["echo"]}})
    try:
        daemon.config_path.write_text(invalid_config())
        daemon.process.send_signal(signal.SIGHUP)
        refused = daemon.wait_for_log(lambda r: str(r.get("event")).startswith("reload refused"), timeout=20)
        assert "admin.metrics_token" in refused["problems"]
    finally:
        daemon.stop()
    assert secrets_in(daemon.logs()) == []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_directory_and_every_file_written_are_private(tmp_path: Path) -> None:
    state = tmp_path / "fresh" / "state"  # neither exists yet: mcphost makes them
    spans = tmp_path / "spans.jsonl"
    config = {"plugins": {"enable": ["echo"]}, "tracing": {"exporter": "file", "path": str(spans)}}
    daemon = start_daemon(tmp_path, config, state_dir=state)
    try:
        assert mode(state) == 0o700
        files = sorted(state.iterdir())
        assert {p.name for p in files} >= {"session-secret", "sessions.sqlite3"}
        deadline = time.monotonic() + 10
        while not spans.exists() and time.monotonic() < deadline:
            daemon.get("/health")
            time.sleep(0.1)
        assert {p.name: oct(mode(p)) for p in [*files, spans]} == {p.name: "0o600" for p in [*files, spans]}
    finally:
        daemon.stop()
