"""Small transactional state in SQLite: alert state, silences, acknowledgements, the notification outbox.

Telemetry goes to Arrow/Parquet; state that is read-modify-written and must survive a crash
exactly goes here. :class:`StateDB` opens ``<directory>/state.sqlite`` in WAL mode with
``synchronous=FULL`` (a committed transaction survives power loss), gives each thread its own
connection, and applies named schema migrations once.

Example::

    db = StateDB("/var/lib/otel-audio")
    db.migrate("0001_silences", "CREATE TABLE silences (id TEXT PRIMARY KEY, until_ns INTEGER)")
    with db.connect() as con:                  # one write transaction: all or nothing
        con.execute("INSERT INTO silences VALUES (?, ?)", ("s1", 123))
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILENAME = "state.sqlite"
BUSY_TIMEOUT_MS = 10_000


class StateDB:
    """A SQLite database of small state, safe to use from many threads.

    Args:
        path: the directory holding ``state.sqlite`` (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILENAME
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self.connect() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            # Autocommit mode: transactions are begun and ended explicitly by connect().
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            self._local.con = con
            with self._lock:
                self._all.append(con)
        return con

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside one write transaction, committed on success and rolled
        back on an exception. Not re-entrant: do not nest ``connect()`` in one thread."""
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def migrate(self, name: str, sql: str) -> bool:
        """Apply the script ``sql`` once under ``name``, atomically; True if it ran now."""
        with self.connect() as con:
            if con.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone():
                return False
            con.execute("INSERT INTO migrations (name, applied_at) VALUES (?, datetime('now'))", (name,))
            for statement in _statements(sql):
                con.execute(statement)
        return True

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._all = self._all, []
        for con in connections:
            con.close()
        self._local = threading.local()


def _statements(sql: str) -> Iterator[str]:
    """Split a script into complete statements (``executescript`` would commit our transaction)."""
    current = ""
    for piece in sql.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                yield current
            current = ""
