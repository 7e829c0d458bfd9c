"""The durable outbox: a notification is stored before it is delivered, and delivered until it is.

Alerting hands each :class:`~otel_audio.processors.alerting.model.Notification` to
:meth:`Outbox.put` with the names of the channels it goes to. ``put`` writes one row per channel
to SQLite and commits with ``fsync`` (WAL journal, ``synchronous=FULL``) before it returns; it does
no network I/O. One worker thread per channel then delivers that channel's rows in the order they
were put, so a slow or dead channel delays only itself, and a resolve never overtakes its trigger.

Semantics:

- **Exactly-once enqueue.** A row's idempotency key is ``<notification.key>:<channel>``; putting
  the same notification again (a replay after a crash, a duplicate from upstream) adds nothing.
- **At-least-once delivery, deduplicated downstream.** A crash between a channel accepting a
  request and the row being marked delivered sends it again on restart; channels carry an
  idempotency key where the receiver supports one (PagerDuty ``dedup_key``, the webhook's
  ``Idempotency-Key`` header, the email ``Message-ID``).
- **Retries until delivered.** A retryable failure (network error, timeout, 408, 429, 5xx) waits
  with exponential backoff and equal jitter (``uniform(c/2, c)``, ``c = min(cap, base *
  2**(attempt-1))``; :mod:`otel_audio.notify.backoff`), base 1 s and cap 1 min by default or the
  channel's own ``min_backoff`` / ``max_backoff``, or exactly what ``Retry-After`` asked for.
  Only the channel's oldest row is tried while it fails (it is the probe); the rows behind it
  go, in order, as soon as it gets through. Every send is kept in the attempt log
  (:meth:`Outbox.attempts`). A failure the receiver will
  never accept (other 4xx, a 5xx SMTP reply) marks the row failed, with its error, and the channel
  moves on; failed rows stay in :meth:`Outbox.history` for the API.
- **Restart.** Rows not yet delivered when the process stopped are delivered after
  :meth:`Outbox.start`. Rows for a channel no longer configured wait in :meth:`Outbox.pending`.
- **Re-sending.** A channel with a ``resend_interval_s`` above 0 (Alertmanager's API, whose alerts
  resolve by themselves unless posted again) gets the last delivered firing notification of each
  group re-sent that often until a later notification of the group is delivered. While the
  channel has a row waiting for a retry, nothing is re-sent (the target is down); a failed
  re-send ends the round and the next round backs off like a row does.

Usage::

    outbox = Outbox("data/outbox.sqlite", {c.name: c for c in channels})
    outbox.start()
    outbox.put(notification, ["oncall", "team-slack"])
    ...
    outbox.stop(timeout=5)

``stats()`` gives plain per-channel counters (delivered, failed, retried, resent) for selfmon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from otel_audio.notify.backoff import Backoff
from otel_audio.notify.channels.base import Channel, DeliveryError, idempotency_key
from otel_audio.notify.codec import notification_from_json, notification_to_json
from otel_audio.notify.rows import INSERT, LOG_ATTEMPT, SCHEMA, Attempt, Delivery
from otel_audio.processors.alerting.model import Notification

_log = logging.getLogger(__name__)

RESEND_BATCH = 64  # groups per re-send request, as Prometheus batches alerts to Alertmanager


class Outbox:
    """A SQLite outbox delivering through ``channels`` (name -> :class:`Channel`).

    Args:
        path: the database file (created with its directory).
        channels: the configured channels by name.
        backoff: retry timing for channels without their own (a channel's ``backoff`` attribute,
            set from its config's ``min_backoff`` / ``max_backoff``).
        clock: seconds since the epoch (injectable for tests).
        rng: the jitter's random source.
    """

    def __init__(
        self,
        path: str | Path,
        channels: Mapping[str, Channel],
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.channels = dict(channels)
        self.backoff = backoff or Backoff()
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._backoffs = {
            name: getattr(channel, "backoff", None) or self.backoff for name, channel in self.channels.items()
        }
        self._wake = {name: threading.Event() for name in self.channels}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._stats = {
            name: dict.fromkeys(("delivered", "failed", "retried", "resent"), 0) for name in self.channels
        }

    # -- the caller's side -------------------------------------------------------------------------

    def put(
        self, notification: Notification, channels: Iterable[str] | None = None, *, key: str | None = None
    ) -> int:
        """Store ``notification`` for each channel (fsync'd); returns how many rows were new.

        ``channels`` defaults to ``[notification.receiver]``, so ``send=outbox.put`` fits the
        dispatcher and the escalator. The idempotency key's base is ``key``, else
        ``notification.extra["idempotency_key"]``, else ``notification.key``. The notification's
        own key is, by design, the same for an unchanged group: a deliberate re-send (a
        ``repeat_interval`` repeat, an escalation page) needs a key of its own or it is taken for
        a duplicate and not sent.
        """
        if channels is None:
            channels = [notification.receiver]
        names = list(dict.fromkeys(channels))
        unknown = [n for n in names if n not in self.channels]
        if unknown:
            raise ValueError(
                f"unknown channel(s) {', '.join(unknown)}; configured: {', '.join(self.channels)}"
            )
        base = key or idempotency_key(notification)
        if base != notification.extra.get("idempotency_key", notification.key):
            # stored with the notification, so channels send the same key (Idempotency-Key header)
            notification = dataclasses.replace(
                notification, extra={**notification.extra, "idempotency_key": base}
            )
        payload = notification_to_json(notification)
        now = self._clock()
        added = 0
        with self._write() as db:
            for name in names:
                row = (name, f"{base}:{name}", notification.group_key, notification.status, payload, now, now)
                added += db.execute(INSERT, row).rowcount
        for name in names:
            self._wake[name].set()
        return added

    def wake(self) -> None:
        """Deliver now: every pending row becomes due and every worker looks at once."""
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE delivered_at IS NULL AND failed_at IS NULL",
                (self._clock(),),
            )
        for event in self._wake.values():
            event.set()

    def pending(self) -> list[Delivery]:
        """Rows not delivered and not failed, oldest first."""
        return self._select("WHERE delivered_at IS NULL AND failed_at IS NULL ORDER BY id")

    def history(self, limit: int = 100) -> list[Delivery]:
        """The newest ``limit`` rows, whatever their state, newest first."""
        return self._select("ORDER BY id DESC LIMIT ?", (limit,))

    def attempts(self, delivery_id: int) -> list[Attempt]:
        """Every send of one row, oldest first: what an outage did to it, retry by retry."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at, retry_at, error FROM attempts WHERE delivery_id = ? ORDER BY at, rowid",
                (delivery_id,),
            ).fetchall()
        return [Attempt(*row) for row in rows]

    def prune(self, older_than_s: float = 7 * 86400.0) -> int:
        """Delete delivered and failed rows finished more than ``older_than_s`` ago; returns how many.

        The newest row of each group and channel is kept (re-sending reads it). A pruned row's
        idempotency key is forgotten, so keep rows longer than anything upstream may replay
        (the dispatcher's notification log keeps 120 h).
        """
        cutoff = self._clock() - older_than_s
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM deliveries WHERE COALESCE(delivered_at, failed_at) < ? AND id NOT IN"
                " (SELECT MAX(id) FROM deliveries GROUP BY channel, group_key)",
                (cutoff,),
            )
            db.execute(
                "DELETE FROM attempts WHERE at < ? AND delivery_id NOT IN"
                " (SELECT id FROM deliveries WHERE delivered_at IS NULL AND failed_at IS NULL)",
                (cutoff,),
            )
            return cursor.rowcount

    def stats(self) -> dict[str, dict[str, int]]:
        """Per channel: ``delivered``, ``failed``, ``retried`` and ``resent`` counts since it was opened."""
        with self._lock:
            return {name: dict(counts) for name, counts in self._stats.items()}

    # -- workers -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start one delivery thread per channel; undelivered rows from before are delivered too."""
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads and not self._stopping.is_set():
            return
        if self._threads:
            raise RuntimeError("outbox: workers from before stop() are still in a send; stop again later")
        self._stopping.clear()
        for name, channel in self.channels.items():
            thread = threading.Thread(
                target=self._run, args=(name, channel), name=f"outbox-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the workers, waiting up to ``timeout`` s in all; True when every one has ended.

        A worker stuck in a send ends when that send times out; its row stays undelivered and is
        sent again after the next start.
        """
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = alive
        return not alive

    def close(self, timeout: float = 5.0) -> None:
        """Stop and close the database (left open if a worker is still in a send)."""
        if self.stop(timeout):
            with self._lock:
                self._db.close()

    def _run(self, name: str, channel: Channel) -> None:
        event = self._wake[name]
        resend_s = float(getattr(channel, "resend_interval_s", 0) or 0)
        resend_failures = [0]  # consecutive failed re-send rounds: they back off like rows do
        while not self._stopping.is_set():
            event.clear()
            try:
                wait = self._step(name, channel, resend_s, resend_failures)
            except Exception:
                _log.exception("outbox worker %s", name)
                wait = self._backoffs[name].base_s
            if wait > 0:
                event.wait(wait)

    def _step(self, name: str, channel: Channel, resend_s: float, resend_failures: list[int]) -> float:
        """Deliver what is due on one channel; returns how long to wait before looking again.

        While the oldest row waits for a retry the channel is failing, so nothing else is sent
        (re-sends would hit the same dead target without backing off); its retry is the probe.
        """
        now = self._clock()
        row = self._head(name)
        if row is not None:
            row_id, payload, attempts, next_at = row
            if next_at > now:
                return next_at - now
            self._attempt(name, channel, row_id, notification_from_json(payload), attempts)
            return 0.0
        if not resend_s:
            return 3600.0
        return self._resend(name, channel, resend_s, now, resend_failures)

    def _head(self, name: str) -> tuple[int, str, int, float] | None:
        with self._lock:
            return self._db.execute(
                "SELECT id, payload, attempts, next_attempt_at FROM deliveries"
                " WHERE channel = ? AND delivered_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT 1",
                (name,),
            ).fetchone()

    def _attempt(
        self, name: str, channel: Channel, row_id: int, notification: Notification, attempts: int
    ) -> None:
        try:
            channel.send(notification)
        except DeliveryError as exc:
            self._failed(name, row_id, attempts + 1, str(exc), exc.retryable, exc.retry_after_s)
        except Exception as exc:  # a bug in a channel must not lose the row: retry it like an outage
            _log.exception("channel %s raised", name)
            self._failed(name, row_id, attempts + 1, f"{type(exc).__name__}: {exc}", True, None)
        else:
            now = self._clock()
            with self._write() as db:
                db.execute(
                    "UPDATE deliveries SET delivered_at = ?, attempts = ?, last_error = NULL WHERE id = ?",
                    (now, attempts + 1, row_id),
                )
                db.execute(LOG_ATTEMPT, (row_id, now, None, None))
                self._stats[name]["delivered"] += 1

    def _failed(
        self, name: str, row_id: int, attempts: int, error: str, retryable: bool, retry_after_s: float | None
    ) -> None:
        now = self._clock()
        if retryable:
            retry_at = now + self._delay(name, attempts, retry_after_s)
            with self._write() as db:
                db.execute(
                    "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?",
                    (attempts, retry_at, error, row_id),
                )
                db.execute(LOG_ATTEMPT, (row_id, now, retry_at, error))
                self._stats[name]["retried"] += 1
            return
        with self._write() as db:
            db.execute(
                "UPDATE deliveries SET failed_at = ?, attempts = ?, last_error = ? WHERE id = ?",
                (now, attempts, error, row_id),
            )
            db.execute(LOG_ATTEMPT, (row_id, now, None, error))
            self._stats[name]["failed"] += 1
        _log.warning("outbox %s: row %d failed for good: %s", name, row_id, error)

    def _delay(self, name: str, failures: int, retry_after_s: float | None) -> float:
        """The wait after ``failures`` failures in a row: the receiver's ``Retry-After`` (capped),
        else the channel's backoff."""
        backoff = self._backoffs[name]
        if retry_after_s is not None:
            return min(retry_after_s, backoff.max_retry_after_s)
        return backoff.delay(failures, self._rng)

    def _resend(
        self, name: str, channel: Channel, interval_s: float, now: float, failures: list[int]
    ) -> float:
        """Re-send each group whose latest row is a delivered firing one older than ``interval_s``.

        Due groups go ``RESEND_BATCH`` to a request when the channel has ``send_batch``
        (Alertmanager takes a list of alerts), and a new row waiting goes before the rest of the
        round, so a slow target's re-sends never hold up a new page. A failed re-send ends the
        round: the target is down or slow, and trying the other groups would only wait out their
        timeouts one by one. The next round comes after the channel's backoff for the consecutive
        failed rounds (``failures[0]``), so an outage sees growing gaps here too.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT d.id, d.payload, d.delivered_at FROM deliveries d JOIN ("
                " SELECT group_key, MAX(id) AS id FROM deliveries WHERE channel = ? GROUP BY group_key"
                ") latest ON d.id = latest.id WHERE d.status = 'firing' AND d.delivered_at IS NOT NULL"
                " ORDER BY d.delivered_at",
                (name,),
            ).fetchall()
        due = [(row_id, payload) for row_id, payload, at in rows if at + interval_s <= now]
        later = [at + interval_s - now for _, _, at in rows[len(due) :]]  # ordered: the rest are later
        send_batch = getattr(channel, "send_batch", None)
        size = RESEND_BATCH if send_batch is not None else 1
        for start in range(0, len(due), size):
            if self._stopping.is_set() or (start and self._head(name) is not None):
                return 0.0  # stopping, or a new row came: it goes first, the round goes on after
            chunk = due[start : start + size]
            notifications = [notification_from_json(payload) for _, payload in chunk]
            try:
                if send_batch is not None:
                    send_batch(notifications)
                else:
                    channel.send(notifications[0])
            except Exception as exc:
                failures[0] += 1
                delay = self._delay(name, failures[0], getattr(exc, "retry_after_s", None))
                _log.warning(
                    "outbox %s: re-send of %d group(s) failed (%d in a row, next in %.1f s): %s",
                    name, len(chunk), failures[0], delay, exc,
                )  # fmt: skip
                return delay
            failures[0] = 0
            with self._write() as db:
                db.executemany(
                    "UPDATE deliveries SET delivered_at = ? WHERE id = ?",
                    [(self._clock(), row_id) for row_id, _ in chunk],
                )
                self._stats[name]["resent"] += len(chunk)
        return min([interval_s, *later])

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed (fsync'd) on leaving, rolled back on an error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _select(self, tail: str, args: tuple[Any, ...] = ()) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, channel, idempotency_key, group_key, status, created_at, attempts,"
                f" next_attempt_at, delivered_at, failed_at, last_error FROM deliveries {tail}",
                args,
            ).fetchall()
        return [Delivery(*row) for row in rows]
