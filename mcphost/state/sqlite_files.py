"""A SQLite file that several processes open: the session and task stores' state files.

Every process of ``[server] workers = N`` opens the same files as it starts, so two of them
often open a new file at the same moment. Switching a file to WAL takes a lock that SQLite
does not wait for (its busy timeout does not cover the switch): the process that lost the
race got "database is locked" and exited at start, and its master started another. The
switch is retried here for as long as a statement waits for a lock.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another process's lock, and the switch to WAL is retried."""
_RETRY_PAUSE = 0.01


def open_shared(path: Path) -> sqlite3.Connection:
    """``path`` (whose directory exists) in WAL mode, for autocommit statements from any
    thread; created readable by this user only if it is new."""
    # Created 0600 before SQLite opens it (SQLite would use the umask, 0644 mostly); its
    # -wal and -shm files take the same mode from it.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT)
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return db
        except sqlite3.OperationalError as error:
            # SQLITE_BUSY and its extended codes (another process is switching or recovering).
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                db.close()
                raise
        time.sleep(_RETRY_PAUSE)
