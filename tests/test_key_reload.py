"""API keys reload with ``systemctl reload`` (SIGHUP), from every source they come from:
``[auth.keys]`` in mcphost.toml, the keys file and the systemd credential. A removed key is
refused from the next request on, and what it held open ends: its sessions and its
``subscriptions/listen`` streams. The reload says how many keys came and went, never which."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcphost.testing import RunningDaemon, sse_events, start_daemon, stateless_request, to_toml
from tests import sessionkit
from tests.authkit import ApiKey, api_key, bearer


def write_keys(path: Path, *keys: ApiKey) -> None:
    path.write_text(to_toml({"keys": {k.name: k.entry for k in keys}}))


def config(inline: list[ApiKey], keys_file: Path) -> dict[str, Any]:
    return {
        "auth": {"keys": {k.name: k.entry for k in inline}, "keys_file": str(keys_file), "credential": "keys.toml"},
        "plugins": {"enable": ["echo"]},
    }


def open_session(daemon: RunningDaemon, key: ApiKey) -> dict[str, str]:
    return sessionkit.open_session(daemon.url, bearer(key.token))


def calls(daemon: RunningDaemon, key: ApiKey) -> int:
    """The status of a 2026-07-28 tools/list with ``key``."""
    body, headers = stateless_request("tools/list")
    return httpx.post(daemon.url, json=body, headers={**headers, **bearer(key.token)}).status_code


@pytest.fixture
def keys() -> dict[str, ApiKey]:
    return {name: api_key(name, ["*"]) for name in ("inline", "filed", "credited", "staying", "newcomer")}


@pytest.fixture
def daemon(tmp_path: Path, keys: dict[str, ApiKey]) -> Iterator[RunningDaemon]:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_keys(credentials / "keys.toml", keys["credited"])
    write_keys(tmp_path / "keys.toml", keys["filed"], keys["staying"])
    started = start_daemon(
        tmp_path, config([keys["inline"]], tmp_path / "keys.toml"), env={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    started.extra |= {"credentials": credentials, "keys_file": tmp_path / "keys.toml"}
    yield started
    started.stop()


def test_keys_removed_from_every_source_are_refused_and_what_they_held_ends(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    assert {name: calls(daemon, key) for name, key in keys.items()} == {
        "inline": 200,
        "filed": 200,
        "credited": 200,
        "staying": 200,
        "newcomer": 401,
    }
    leaving = [keys["inline"], keys["filed"], keys["credited"]]
    sessions = {key.name: open_session(daemon, key) for key in [*leaving, keys["staying"]]}
    listen_body, listen_headers = stateless_request(
        "subscriptions/listen", {"notifications": {"toolsListChanged": True}}
    )
    with httpx.Client(timeout=10) as client:
        stream = client.stream("GET", daemon.url, headers={**sessions["filed"], "accept": "text/event-stream"})
        listening = client.stream(
            "POST", daemon.url, json=listen_body, headers={**listen_headers, **bearer(keys["credited"].token)}
        )
        try:
            get_stream = stream.__enter__()
            assert get_stream.status_code == 200
            listen = sse_events(listening.__enter__().iter_lines())
            assert next(listen)[1]["method"] == "notifications/subscriptions/acknowledged"

            daemon.config_path.write_text(to_toml(config([keys["newcomer"]], daemon.extra["keys_file"])))
            write_keys(daemon.extra["keys_file"], keys["staying"])
            write_keys(daemon.extra["credentials"] / "keys.toml")
            reloaded = daemon.reload()

            # The listen stream ends with its result; the GET stream ends.
            rest = [message for _, message in listen]
            assert rest and "result" in rest[-1]
            b"".join(get_stream.iter_bytes())  # read to its end: an open stream would time out here
        finally:
            stream.__exit__(None, None, None)
            listening.__exit__(None, None, None)
    assert reloaded["event"] == "reloaded"
    assert (reloaded["keys_added"], reloaded["keys_removed"]) == (1, 3)
    assert reloaded["sessions_ended"] == 3 and reloaded["listen_streams_ended"] == 1
    assert {name: calls(daemon, key) for name, key in keys.items()} == {
        "inline": 401,
        "filed": 401,
        "credited": 401,
        "staying": 200,
        "newcomer": 200,
    }
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}
    for name in ("inline", "filed", "credited"):
        assert httpx.post(daemon.url, json=call, headers=sessions[name]).status_code == 401
    assert httpx.post(daemon.url, json=call, headers=sessions["staying"]).status_code == 200
    # Had the same key come back, its sessions would not: they ended.
    write_keys(daemon.extra["keys_file"], keys["staying"], keys["filed"])
    assert daemon.reload()["keys_added"] == 1
    assert httpx.post(daemon.url, json=call, headers=sessions["filed"]).status_code == 404
    assert calls(daemon, keys["filed"]) == 200


def test_an_invalid_keys_file_is_refused_and_the_running_keys_stay(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    daemon.extra["keys_file"].write_text("[keys]\nbroken = { hash = 'sha256:nothex' }\n")
    refused = daemon.reload()
    assert refused["event"].startswith("reload refused")
    assert calls(daemon, keys["filed"]) == 200
    assert calls(daemon, keys["staying"]) == 200


def test_a_renamed_key_keeps_working_and_its_old_names_sessions_end(
    daemon: RunningDaemon, keys: dict[str, ApiKey]
) -> None:
    session = open_session(daemon, keys["staying"])
    renamed = ApiKey("renamed", keys["staying"].token, keys["staying"].entry)
    listening = {**session, "accept": "text/event-stream"}
    with httpx.Client(timeout=10) as client, client.stream("GET", daemon.url, headers=listening) as stream:
        assert stream.status_code == 200
        write_keys(daemon.extra["keys_file"], keys["filed"], renamed)
        reloaded = daemon.reload()
        b"".join(stream.iter_bytes())  # read to its end: an open stream would time out here
    assert (reloaded["keys_added"], reloaded["keys_removed"], reloaded["sessions_ended"]) == (0, 0, 1)
    assert calls(daemon, renamed) == 200
    assert (
        httpx.post(daemon.url, json={"jsonrpc": "2.0", "id": 3, "method": "ping"}, headers=session).status_code == 404
    )
