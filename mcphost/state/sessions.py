"""Session records between processes: what a 2025-11-25 session needs to be rebuilt
elsewhere, the interface of the stores that keep them, and the local SQLite store.

The SQLite store is shared safely by the worker processes of one machine; replicas use the
Redis store (:mod:`mcphost.state.redis_stores`), which implements the same interface. Only
the store ends a session for every process and expires idle ones. This module knows nothing
of HTTP or of the SDK's session manager, which reads and writes these records
(:mod:`mcphost.transport.sessions`).
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import structlog
import trio
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext

from mcphost.state.sqlite_files import open_shared

log = structlog.get_logger("mcphost.sessions")


def private_directory(path: Path) -> None:
    """Make the state directory, readable by this user only (0700), if it does not exist yet
    (systemd's ``StateDirectory=`` makes its own)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a session needs to be rebuilt in another process."""

    id: str
    protocol_version: str
    client_params: dict[str, Any]
    owner: AuthorizationContext | None
    seen: float
    subscriptions: list[str] = field(default_factory=list)
    """The resource URIs the session is subscribed to (``resources/subscribe``), wherever it
    subscribed: a process that rebuilds the session sends it their updates too."""

    def to_json(self) -> str:
        """The record as the stores keep it; without subscriptions when it has none, as an
        earlier version, still serving during a rolling upgrade, reads it."""
        values = asdict(self)
        if not self.subscriptions:
            del values["subscriptions"]
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str | bytes, **changes: Any) -> SessionRecord:
        """A record as the stores keep it (with ``changes``). What this version does not
        know, a later version wrote (one serving beside it during a rolling upgrade): it is
        left out, so the session goes on here with what this version can do."""
        values = {**json.loads(text), **changes}
        return cls(**{name: values[name] for name in _RECORD_FIELDS if name in values})


_RECORD_FIELDS = tuple(f.name for f in fields(SessionRecord))


def record_lifetime(idle_timeout: float) -> float:
    """Seconds a session record outlives the last touch of it: a busy session is touched every
    quarter of the idle timeout, so a record must outlive the gap between two touches to expire
    no sooner than ``idle_timeout`` after the session's last request, wherever it landed."""
    return idle_timeout * 1.25


class StoreUnavailable(Exception):
    """A :class:`SessionStore` cannot answer right now (its server is unreachable)."""


class Feed(Protocol):
    """Messages to every process sharing a store, the sender included, each heard by all in
    one order (resource updates and subscriptions, :mod:`mcphost.protocol.subscriptions`)."""

    async def send(self, message: str) -> bool:
        """Send ``message`` to every process; ``False`` when the store cannot take it now."""

    async def receive(self, heard: Callable[[str], Awaitable[None]]) -> None:
        """Until cancelled, await ``heard`` with each message sent, in the feed's order."""


class SessionStore(Feed, Protocol):
    """Where session records live between processes (a local file, or Redis for replicas),
    and the :class:`Feed` between those processes."""

    async def save(self, record: SessionRecord) -> None:
        """Create or replace a record."""

    async def load(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id``, or ``None``; raises :class:`StoreUnavailable` when
        the store cannot tell (the request then gets 503, not a misleading 404)."""

    async def touch(self, session_id: str, seen: float) -> None:
        """Note that the session was active at ``seen`` (a Unix time)."""

    async def update(self, record: SessionRecord) -> None:
        """Replace a record that is still there (a deleted or expired session stays gone), not
        extending its life; while the store is unavailable, the change is not written."""

    async def delete(self, session_id: str) -> None:
        """Forget a session and tell every process (:meth:`ended`); its id answers 404 from now on.
        Only the deletion that finds the record tells: several processes may end the same
        session (each revoking a removed key's sessions on its own reload)."""

    async def expire(self, before: float) -> int:
        """Forget sessions not seen since ``before``; returns how many."""

    def ended_unseen(self) -> bool:
        """Whether sessions were deleted that this process has not taken from :meth:`ended` yet.
        Asked on every request for a session held in memory, so it must cost next to nothing."""

    async def ended(self) -> set[str] | None:
        """The sessions deleted since the last call, by any process; ``None`` when some may
        have been missed (each session held in memory must then be looked up again)."""

    async def watch(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Until cancelled, await ``changed`` soon after :meth:`ended_unseen` turns true, so a
        session deleted elsewhere ends here (its event stream closed) without a request."""


WATCH_INTERVAL = 0.1
"""Seconds between two looks at the deletion counter of a :class:`SqliteSessionStore`: how
soon a session deleted by another worker has its event stream closed here."""
FEED_KEPT = 60.0
"""Seconds a message stays in the feed of a :class:`SqliteSessionStore`: far longer than any
process takes to read it."""
_COUNTER = struct.Struct("<q")


class SqliteSessionStore:
    """Session records in a local SQLite file, shared safely by worker processes on one machine.

    SQLite calls block, so they run in a worker thread, one at a time. Deletions are also
    written to a table of their own, and the number of the last one to a small file mapped into
    every process's memory (``<file>.ended``): a process compares it with the last one it took
    on each request, which costs a memory read, and reads the table only when it moved. It is
    also the :class:`Feed` between the worker processes: a table and a counter (``<file>.feed``)
    alike, read every :data:`WATCH_INTERVAL`.
    """

    def __init__(self, path: Path, idle_timeout: float):
        private_directory(path.parent)
        self.path = path
        self.lifetime = record_lifetime(idle_timeout)
        self._db = open_shared(path)
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, record TEXT NOT NULL, seen REAL NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS ended"
                " (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, at REAL NOT NULL)"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS feed"
                " (seq INTEGER PRIMARY KEY AUTOINCREMENT, message TEXT NOT NULL, at REAL NOT NULL)"
            )
            # Each send drops the messages older than FEED_KEPT: without an index that scanned
            # the whole feed, a minute of messages, on every send.
            self._db.execute("CREATE INDEX IF NOT EXISTS feed_at ON feed (at)")
            self._taken = self._db.execute("SELECT coalesce(max(seq), 0) FROM ended").fetchone()[0]
            self._heard = self._db.execute("SELECT coalesce(max(seq), 0) FROM feed").fetchone()[0]
        self._ended = _Counter(path.with_name(path.name + ".ended"))
        self._fed = _Counter(path.with_name(path.name + ".feed"))

    async def _run(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            with self._lock:
                cursor = self._db.execute(sql, args)
                rows = cursor.fetchall()
                return rows if rows else [(cursor.rowcount,)]

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    async def save(self, record: SessionRecord) -> None:
        """Create or replace a record."""
        await self._run("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?)", record.id, record.to_json(), record.seen)

    async def load(self, session_id: str) -> SessionRecord | None:
        """The record of ``session_id``, or ``None`` (also once it is past its lifetime, even
        if no process has expired it yet)."""
        rows = await self._run(
            "SELECT record, seen FROM sessions WHERE id = ? AND seen >= ?", session_id, time.time() - self.lifetime
        )
        if not rows or not isinstance(rows[0][0], str):
            return None
        return SessionRecord.from_json(rows[0][0], seen=rows[0][1])

    async def touch(self, session_id: str, seen: float) -> None:
        """Note that the session was active at ``seen``."""
        await self._run("UPDATE sessions SET seen = max(seen, ?) WHERE id = ?", seen, session_id)

    async def delete(self, session_id: str) -> None:
        """Forget a session, and move the deletion counter every process watches (if the
        record was there)."""

        def delete() -> None:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = None
                    if self._db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount:
                        insert = "INSERT INTO ended (id, at) VALUES (?, ?)"
                        seq = self._db.execute(insert, (session_id, time.time())).lastrowid
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            if seq is not None:
                self._ended.advance(seq)

        await trio.to_thread.run_sync(delete, limiter=self._limiter)

    async def expire(self, before: float) -> int:
        """Forget sessions not seen since ``before``, and deletions older than that (every
        process took them long ago)."""
        await self._run("DELETE FROM ended WHERE at < ?", before)
        return int((await self._run("DELETE FROM sessions WHERE seen < ?", before))[0][0])

    def ended_unseen(self) -> bool:
        """Whether the deletion counter moved past the last deletion this process took."""
        return self._ended.value > self._taken

    async def ended(self) -> set[str] | None:
        """The sessions deleted since the last call."""
        rows = await self._run("SELECT seq, id FROM ended WHERE seq > ?", self._taken)
        found = [row for row in rows if len(row) == 2]
        self._taken = max([self._taken, *(seq for seq, _ in found)])
        return {session_id for _, session_id in found}

    async def watch(self, changed: Callable[[], Awaitable[None]]) -> None:
        """Look at the deletion counter every :data:`WATCH_INTERVAL` seconds."""

        async def look() -> None:
            if self.ended_unseen():
                await changed()

        await _polled("deletions", look)

    async def update(self, record: SessionRecord) -> None:
        """Replace a record that is still there."""
        await self._run("UPDATE sessions SET record = ? WHERE id = ?", record.to_json(), record.id)

    async def send(self, message: str) -> bool:
        """Add ``message`` to the feed (dropping messages every process took long ago), and
        move the feed's counter."""

        def send() -> None:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    now = time.time()
                    self._db.execute("DELETE FROM feed WHERE at < ?", (now - FEED_KEPT,))
                    insert = "INSERT INTO feed (message, at) VALUES (?, ?)"
                    seq = self._db.execute(insert, (message, now)).lastrowid
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            assert seq is not None
            self._fed.advance(seq)

        try:
            await trio.to_thread.run_sync(send, limiter=self._limiter)
        except sqlite3.Error as error:
            log.warning("session store failed: a message reaches this process only", error=str(error))
            return False
        return True

    async def receive(self, heard: Callable[[str], Awaitable[None]]) -> None:
        """Look at the feed's counter every :data:`WATCH_INTERVAL` seconds, and read the
        messages sent since the last look when it moved."""

        async def look() -> None:
            if self._fed.value <= self._heard:
                return
            rows = await self._run("SELECT seq, message FROM feed WHERE seq > ? ORDER BY seq", self._heard)
            for seq, message in (row for row in rows if len(row) == 2):
                self._heard = max(self._heard, seq)
                await heard(message)

        await _polled("messages from the other workers", look)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
        self._ended.close()
        self._fed.close()


async def _polled(what: str, look: Callable[[], Awaitable[None]]) -> None:
    """Await ``look`` every :data:`WATCH_INTERVAL` seconds until cancelled. An SQLite error
    (a full disk, a damaged file) is logged when it begins and when it ends, and the look
    tried again: it ends neither the daemon nor its hearing of what the others write."""
    failing = False
    while True:
        await trio.sleep(WATCH_INTERVAL)
        try:
            await look()
        except sqlite3.Error as error:
            if not failing:
                log.warning("session store unreadable", reading=what, error=str(error))
            failing = True
        else:
            if failing:
                log.info("session store readable again", reading=what)
            failing = False


class _Counter:
    """The number of the last row of a table, in a small file mapped into the memory of every
    process sharing the database: a process compares it with the last row it took, which
    costs a memory read, and reads the table only when it moved."""

    def __init__(self, path: Path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _COUNTER.size:
                os.ftruncate(fd, _COUNTER.size)
            self._fd = fd
            self._map = mmap.mmap(fd, _COUNTER.size)
        except BaseException:
            os.close(fd)
            raise

    @property
    def value(self) -> int:
        """The number of the last row written, by any process."""
        return int(_COUNTER.unpack_from(self._map)[0])

    def advance(self, seq: int) -> None:
        """Move on to row ``seq``: after its commit, so a process that sees the counter move
        finds the row; under a lock, so two processes writing at once never move it backwards."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if seq > self.value:
                _COUNTER.pack_into(self._map, 0, seq)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Unmap and close the file."""
        self._map.close()
        os.close(self._fd)
