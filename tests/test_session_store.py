"""The file session store shared by ``[server] workers``: what its watchers do when the
database fails under them (each worker's daemon runs them for as long as it lives, so an
SQLite error there must be logged and outlived, never end the daemon), and the workers
opening the state files together as they start."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from mcphost.state.sessions import FEED_KEPT, WATCH_INTERVAL, SessionRecord, SqliteSessionStore


def _alter(path: Path, sql: str) -> None:
    """What a damaged file, or an operator's hand, does to the store's tables."""
    with sqlite3.connect(path) as db:
        db.execute(sql)


async def test_the_feed_outlives_a_failing_database_and_hears_again_once_it_is_back(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    hearing, other = SqliteSessionStore(path, 60), SqliteSessionStore(path, 60)
    heard: list[str] = []

    async def hear(message: str) -> None:
        heard.append(message)

    assert await other.send("first")  # another worker's message, before the table breaks
    _alter(path, "ALTER TABLE feed RENAME COLUMN message TO broken")
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hearing.receive, hear)
            await _until(lambda: any(e["event"] == "session store unreadable" for e in logs))
            _alter(path, "ALTER TABLE feed RENAME COLUMN broken TO message")
            await _until(lambda: heard == ["first"])
            nursery.cancel_scope.cancel()
    assert any(e["event"] == "session store readable again" for e in logs)
    _alter(path, "DROP TABLE feed")
    assert not await other.send("lost"), "a message the store cannot take is reported, not raised"
    hearing.close()
    other.close()


async def test_the_deletion_watcher_outlives_a_failing_database(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    watching, other = SqliteSessionStore(path, 60), SqliteSessionStore(path, 60)
    looks = 0

    async def changed() -> None:
        nonlocal looks
        looks += 1
        await watching.ended()

    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watching.watch, changed)
            await other.save(SessionRecord("s", "2025-11-25", {}, None, 0.0))
            await other.delete("s")
            _alter(path, "DROP TABLE ended")
            await _until(lambda: looks >= 3)  # it went on looking after the first failure
            nursery.cancel_scope.cancel()
    assert [e["event"] for e in logs].count("session store unreadable") == 1, "logged once, not at every look"
    watching.close()
    other.close()


async def test_a_record_a_later_version_wrote_is_read_without_what_this_one_does_not_know(tmp_path: Path) -> None:
    """As on Redis (``test_redis_state``): a worker of this version, beside one of a later
    version during an upgrade, reads the records that one writes."""
    path = tmp_path / "sessions.sqlite3"
    store = SqliteSessionStore(path, 60)
    record = SessionRecord("s", "2025-11-25", {}, None, time.time(), ["jobs://queue"])
    written = {**dataclasses.asdict(record), "added_later": {"any": "thing"}}
    _alter(path, f"INSERT INTO sessions VALUES ('s', '{json.dumps(written)}', {record.seen})")
    assert await store.load("s") == record
    store.close()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Until ``condition`` holds, looking as often as the watchers themselves do."""
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 (the store's own state, set by no event)
            await trio.sleep(WATCH_INTERVAL / 5)


async def test_each_send_drops_old_messages_without_reading_the_whole_feed(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    store = SqliteSessionStore(path, 60)
    long_ago = time.time() - FEED_KEPT - 1
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO feed (message, at) VALUES (?, ?)", [("old", long_ago)] * 3)
    assert await store.send("recent")
    assert await store.send("new")
    with sqlite3.connect(path) as db:
        assert [m for (m,) in db.execute("SELECT message FROM feed ORDER BY seq")] == ["recent", "new"]
        # A minute of a busy feed is tens of thousands of rows: a send that scanned them all
        # took milliseconds, and the feed fell behind the updates it carries.
        plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN DELETE FROM feed WHERE at < 0"))
    assert "USING" in plan and "INDEX" in plan, plan
    store.close()


_OPEN_STATE_FILES = """
import sys
from pathlib import Path
from mcphost.state.sessions import SqliteSessionStore
from mcphost.state.tasks import SqliteTaskStore
print("ready", flush=True)
sys.stdin.readline()  # every process is ready: go
SqliteSessionStore(Path(sys.argv[1]) / "sessions.sqlite3", 60.0)
SqliteTaskStore(Path(sys.argv[1]) / "tasks.sqlite3")
"""


def test_worker_processes_that_open_new_state_files_at_once_all_start(tmp_path: Path) -> None:
    # Each worker of [server] workers opens the session and task stores as it starts. On new
    # files, the switch to WAL of the process that came second failed ("database is locked")
    # and that worker exited at start, in about half of such starts.
    for round_ in range(8):
        state = tmp_path / f"state-{round_}"
        starting = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_STATE_FILES, str(state)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for process in starting:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n", process.communicate(timeout=60)[1]
        for process in starting:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        for process in starting:
            _, errors = process.communicate(timeout=60)
            assert process.returncode == 0, errors
