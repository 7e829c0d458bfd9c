"""The outbox's tables and the row types it reads them into.

``deliveries`` has one row per notification and channel: the notification as JSON, its
idempotency key (``UNIQUE``: putting a notification twice adds nothing) and how its delivery went.
``attempts`` logs every send of a row: when it ended, its error, when it is tried again; it is what
an outage did, retry by retry. :mod:`otel_audio.notify.outbox` writes both.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,              -- the notification's status: firing or resolved
    payload TEXT NOT NULL,             -- the notification as JSON (notification_to_json)
    created_at REAL NOT NULL,          -- seconds since the epoch, when put
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    delivered_at REAL,                 -- set once delivered (and on each re-send)
    failed_at REAL,                    -- set when the receiver will never accept it
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (channel, delivered_at, failed_at, id);
CREATE INDEX IF NOT EXISTS deliveries_group ON deliveries (channel, group_key, id);
CREATE TABLE IF NOT EXISTS attempts (  -- one row per send of a delivery, for the API and outage review
    delivery_id INTEGER NOT NULL,
    at REAL NOT NULL,                  -- when the send ended
    retry_at REAL,                     -- when it is tried again (NULL: delivered or failed for good)
    error TEXT                         -- NULL: delivered
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id, at);
"""
LOG_ATTEMPT = "INSERT INTO attempts (delivery_id, at, retry_at, error) VALUES (?, ?, ?, ?)"
# OR IGNORE: the idempotency key is UNIQUE, so putting a notification twice adds nothing.
INSERT = (
    "INSERT OR IGNORE INTO deliveries (channel, idempotency_key, group_key, status, payload, created_at,"
    " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Attempt:
    """One send of a delivery: when it ended, its error (None: delivered), when it is tried again."""

    at: float
    retry_at: float | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    """One row of the outbox: a notification for one channel and how its delivery went."""

    id: int
    channel: str
    idempotency_key: str
    group_key: str
    status: str
    created_at: float
    attempts: int
    next_attempt_at: float
    delivered_at: float | None
    failed_at: float | None
    last_error: str | None

    @property
    def state(self) -> str:
        """``pending``, ``delivered`` or ``failed``."""
        if self.delivered_at is not None:
            return "delivered"
        return "failed" if self.failed_at is not None else "pending"
