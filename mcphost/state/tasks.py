"""Task records between processes: a long tool call that outlives its request, the interface
of the stores that keep them, and the local SQLite store.

A record is small JSON, changed only by compare-and-set on its version (:func:`change`), so a
terminal status never changes once written and a late write from the process running the
task loses to a cancellation made elsewhere. Each process running tasks also renews an owner
lease; a task whose owner's lease has lapsed was left behind by a process that died. The
SQLite store serves the worker processes of one machine (or, in memory, one process); replicas
use the Redis store (:mod:`mcphost.state.redis_tasks`). This module knows nothing of MCP.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import trio

from mcphost.state.sessions import StoreUnavailable, private_directory
from mcphost.state.sqlite_files import open_shared

Status = Literal["working", "input_required", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
"""Statuses a task never leaves."""

MAX_CHANGE_ATTEMPTS = 64
"""Compare-and-set attempts :func:`change` makes before it gives up on a record that other
writers keep changing under it."""


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as every process sees it. Times are Unix seconds."""

    id: str
    identity: str | None
    """The key of the caller that created it (``None`` without authentication): only it may see the task."""
    tool: str
    owner: str
    """The process running it (see :meth:`TaskStore.heartbeat`)."""
    created: float
    updated: float
    expires: float
    """When the record is forgotten; moved to ``retention`` after the end once the task ends."""
    poll_ms: int
    status: Status = "working"
    status_message: str | None = None
    input_requests: dict[str, Any] = field(default_factory=dict)
    """Questions the task waits on, by key (each a request the client should answer)."""
    answers: dict[str, Any] = field(default_factory=dict)
    """Answers received for those questions, not yet taken by the task."""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    version: int = 0

    @property
    def terminal(self) -> bool:
        """Whether the task has ended (its status never changes again)."""
        return self.status in TERMINAL

    def dumps(self) -> str:
        """The record as JSON."""
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str | bytes) -> TaskRecord:
        """A record from :meth:`dumps`."""
        return cls(**json.loads(text))


class TaskStore(Protocol):
    """Where task records and owner leases live (a local file, or Redis for replicas).

    Every method may raise :class:`~mcphost.state.sessions.StoreUnavailable`.
    """

    async def create(self, record: TaskRecord) -> None:
        """Write a new record; once this returns, :meth:`get` finds it from every process."""

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record of ``task_id``, or ``None`` (never created, or expired)."""

    async def swap(self, record: TaskRecord, version: int) -> bool:
        """Replace the record of ``record.id`` if its stored version is still ``version``."""

    async def heartbeat(self, owner: str, until: float) -> None:
        """Note that process ``owner`` is alive until ``until`` (it renews this well before)."""

    async def alive(self, owner: str) -> bool:
        """Whether process ``owner``'s lease has not lapsed."""

    async def release(self, owner: str) -> None:
        """End ``owner``'s lease now (the process is stopping)."""

    async def expire(self, now: float) -> int:
        """Forget records past their expiry; returns how many (0 where the store expires them itself)."""


async def change(store: TaskStore, task_id: str, edit: Callable[[TaskRecord], TaskRecord | None]) -> TaskRecord | None:
    """Apply ``edit`` to the current record by compare-and-set, again on each conflict.

    ``edit`` returns the changed record, or ``None`` to leave it as it is. Returns the record
    as stored afterwards, or ``None`` when there is none."""
    for _ in range(MAX_CHANGE_ATTEMPTS):
        record = await store.get(task_id)
        if record is None:
            return None
        edited = edit(record)
        if edited is None:
            return record
        edited = replace(edited, version=record.version + 1, updated=max(time.time(), record.updated))
        if await store.swap(edited, record.version):
            return edited
    raise StoreUnavailable(f"task {task_id} kept changing under {MAX_CHANGE_ATTEMPTS} attempts to change it")


class SqliteTaskStore:
    """Task records in a local SQLite file (``path``), shared by the worker processes of one
    machine, or in this process's memory (``path`` ``None``).

    As :class:`~mcphost.state.sessions.SqliteSessionStore`, calls run in a worker thread one at a time.
    """

    def __init__(self, path: Path | None):
        if path is None:
            self._db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            private_directory(path.parent)
            self._db = open_shared(path)
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS tasks"
                " (id TEXT PRIMARY KEY, record TEXT NOT NULL, version INTEGER NOT NULL, expires REAL NOT NULL)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS owners (owner TEXT PRIMARY KEY, until REAL NOT NULL)")

    async def _run(self, sql: str, *args: Any) -> tuple[list[tuple[Any, ...]], int]:
        def run() -> tuple[list[tuple[Any, ...]], int]:
            with self._lock:
                cursor = self._db.execute(sql, args)
                return cursor.fetchall(), cursor.rowcount

        try:
            return await trio.to_thread.run_sync(run, limiter=self._limiter)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"the task store failed: {error}") from None

    async def create(self, record: TaskRecord) -> None:
        """Write a new record."""
        await self._run(
            "INSERT INTO tasks VALUES (?, ?, ?, ?)", record.id, record.dumps(), record.version, record.expires
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record, or ``None`` (also once past its expiry, even if not forgotten yet)."""
        rows, _ = await self._run("SELECT record FROM tasks WHERE id = ? AND expires >= ?", task_id, time.time())
        return TaskRecord.loads(rows[0][0]) if rows else None

    async def swap(self, record: TaskRecord, version: int) -> bool:
        """Replace the record if its version is still ``version``."""
        _, count = await self._run(
            "UPDATE tasks SET record = ?, version = ?, expires = ? WHERE id = ? AND version = ?",
            record.dumps(),
            record.version,
            record.expires,
            record.id,
            version,
        )
        return count == 1

    async def heartbeat(self, owner: str, until: float) -> None:
        """Renew ``owner``'s lease."""
        await self._run("INSERT OR REPLACE INTO owners VALUES (?, ?)", owner, until)

    async def alive(self, owner: str) -> bool:
        """Whether ``owner``'s lease runs."""
        rows, _ = await self._run("SELECT 1 FROM owners WHERE owner = ? AND until >= ?", owner, time.time())
        return bool(rows)

    async def release(self, owner: str) -> None:
        """End ``owner``'s lease."""
        await self._run("DELETE FROM owners WHERE owner = ?", owner)

    async def expire(self, now: float) -> int:
        """Forget expired records, and leases that lapsed (their tasks are failed by then)."""
        await self._run("DELETE FROM owners WHERE until < ?", now - 86_400)
        _, count = await self._run("DELETE FROM tasks WHERE expires < ?", now)
        return max(count, 0)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
