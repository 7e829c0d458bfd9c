"""Incidents: a firing alert group, followed from its first page to its resolution.

An incident is what a person works on. It opens with the first *firing* notification of an
alert group (the dispatcher's ``group_key``), takes the highest severity of the group's alerts,
and keeps a timeline of what happened to it, each event with its time and details:

- ``opened``: the group fired (``group_key``, ``alerts``: how many were firing);
- ``notified``: a notification went out (``channel``, ``level``: the escalation level, ``None``
  for the dispatcher's own notification, ``status``: firing or resolved);
- ``escalated``: an escalation policy paged a level (``policy``, ``level``, ``cycle``, ``targets``);
- ``acknowledged``: someone took it (``by``); escalation stops;
- ``note``: free text from someone (``by``, ``text``);
- ``resolved``: the group's notification said resolved.

Status goes ``open`` -> ``acknowledged`` -> ``resolved`` (or straight from open to resolved). A
group that fires again after its incident resolved opens a new incident::

    incidents = Incidents("state.sqlite")           # ":memory:" in tests
    incident = incidents.observe(notification, now)  # opens, records, or resolves
    incidents.acknowledge(incident.id, "ana", now)
    incidents.add_note(incident.id, "ana", "rolled back enhancement v2", now)
    [e.kind for e in incidents.timeline(incident.id)]  # ["opened", "notified", "acknowledged", "note"]

State lives in SQLite, so incidents survive a restart. Nothing here reads a clock: every method
that changes state takes ``now`` (nanoseconds since the epoch). Values come back as frozen
dataclasses whose ``to_dict()`` is ready for JSON, with each time as RFC 3339 and as ``*_ns``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from otel_audio.processors.alerting.model import ALERTNAME, SEVERITY, Alert, AlertState, Notification
from otel_audio.processors.alerting.rules import SEVERITIES

OPEN = "open"  # firing, nobody has taken it yet
ACKNOWLEDGED = "acknowledged"  # someone took it; escalation stops
RESOLVED = "resolved"  # the group stopped firing
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)

EVENT_KINDS = ("opened", "notified", "escalated", "acknowledged", "note", "resolved")
MAX_NOTE_CHARS = 10_000
MAX_LIST_LIMIT = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, group_key TEXT NOT NULL, title TEXT NOT NULL,
    severity TEXT NOT NULL, labels TEXT NOT NULL, status TEXT NOT NULL, opened_at INTEGER NOT NULL,
    acknowledged_at INTEGER, acknowledged_by TEXT, resolved_at INTEGER, notification TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_group ON incidents (group_key, status);
CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at);
CREATE TABLE IF NOT EXISTS incident_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, incident_id INTEGER NOT NULL, kind TEXT NOT NULL,
    at INTEGER NOT NULL, details TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incident_events_incident ON incident_events (incident_id, seq);
"""
_COLUMNS = (
    "id, group_key, title, severity, labels, status, opened_at, acknowledged_at, acknowledged_by, resolved_at"
)


@dataclass(frozen=True)
class Incident:
    """One incident as it stands; times are nanoseconds since the epoch, 0 when not (yet) set."""

    id: int
    group_key: str
    title: str
    severity: str
    labels: dict[str, str]
    status: str
    opened_at: int
    acknowledged_at: int = 0
    acknowledged_by: str = ""
    resolved_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "group_key": self.group_key,
            "title": self.title,
            "severity": self.severity,
            "labels": dict(self.labels),
            "status": self.status,
            "acknowledged_by": self.acknowledged_by or None,
        }
        for name in ("opened_at", "acknowledged_at", "resolved_at"):
            ns = getattr(self, name)
            out[name] = rfc3339(ns) if ns else None
            out[f"{name}_ns"] = ns or None
        return out


@dataclass(frozen=True)
class Event:
    """One entry of an incident's timeline; ``seq`` orders events (also those at the same time)."""

    incident_id: int
    seq: int
    kind: str
    at: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "seq": self.seq,
            "kind": self.kind,
            "at": rfc3339(self.at),
            "at_ns": self.at,
            "details": dict(self.details),
        }


class Incidents:
    """Incidents and their timelines in SQLite (a path, or ``:memory:``); thread-safe.

    Args:
        path: the database file; created with its tables when missing.
    """

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._depth = 0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction over the incidents database, for stages that keep state beside it.

        The escalator keeps its table here so that a step and its timeline events commit
        together. Calls to this object's methods inside the block join the transaction; an
        exception rolls all of it back.
        """
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._db
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    def observe(self, notification: Notification, now: int) -> Incident | None:
        """Follow a group through its notifications; the incident it concerns, if any.

        A firing notification opens an incident for its group unless one is open or acknowledged,
        and is recorded as ``notified``; a resolved one is recorded and resolves the group's
        incident. A resolved notification for a group without a live incident changes nothing
        (``None``). Notifications sent by the escalator (``extra["incident_id"]`` set) are
        already in the timeline and are not recorded twice.
        """
        if "incident_id" in notification.extra:
            return None
        with self.transaction() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM incidents WHERE group_key = ? AND status != ?"
                " ORDER BY id DESC LIMIT 1",
                (notification.group_key, RESOLVED),
            ).fetchone()
            firing = notification.status == "firing"
            if row is None and not firing:
                return None
            stored = _notification_to_json(notification)
            if row is None:
                cursor = db.execute(
                    "INSERT INTO incidents (group_key, title, severity, labels, status, opened_at,"
                    " notification) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (notification.group_key, _title(notification), _severity(notification.alerts, ""),
                     _dumps(_labels(notification)), OPEN, now, stored),
                )  # fmt: skip
                incident_id = int(cursor.lastrowid or 0)
                alerts = sum(1 for a in notification.alerts if a.state is AlertState.FIRING)
                self._event(
                    incident_id, "opened", now, {"group_key": notification.group_key, "alerts": alerts}
                )
            else:
                incident_id = row[0]
                severity = _severity(notification.alerts, row[3]) if firing else row[3]
                db.execute(
                    "UPDATE incidents SET severity = ?, notification = ? WHERE id = ?",
                    (severity, stored, incident_id),
                )
            status = "firing" if firing else "resolved"
            self._event(
                incident_id,
                "notified",
                now,
                {"channel": notification.receiver, "level": None, "status": status},
            )
            if not firing:
                db.execute(
                    "UPDATE incidents SET status = ?, resolved_at = ? WHERE id = ?",
                    (RESOLVED, now, incident_id),
                )
                self._event(incident_id, "resolved", now, {})
            return self.get(incident_id)

    def acknowledge(self, incident_id: int | str, by: str, now: int) -> Incident:
        """``by`` takes the incident; acknowledging an acknowledged incident again changes nothing.

        Raises:
            KeyError: no incident with this id.
            ValueError: ``by`` is empty, or the incident is resolved.
        """
        by = _who(by)
        with self.transaction() as db:
            incident = self.get(incident_id)
            if incident.status == RESOLVED:
                raise ValueError(
                    f"incident {incident.id} was resolved at {rfc3339(incident.resolved_at)}; "
                    "only open incidents can be acknowledged"
                )
            if incident.status == ACKNOWLEDGED:
                return incident
            db.execute(
                "UPDATE incidents SET status = ?, acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
                (ACKNOWLEDGED, now, by, incident.id),
            )
            self._event(incident.id, "acknowledged", now, {"by": by})
            return self.get(incident.id)

    def add_note(self, incident_id: int | str, by: str, text: str, now: int) -> Event:
        """A note on the timeline, on any incident (resolved ones too, for the review).

        Raises:
            KeyError: no incident with this id.
            ValueError: ``by`` or ``text`` is empty, or ``text`` is longer than ``MAX_NOTE_CHARS``.
        """
        by = _who(by)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("note: text is empty; write what happened or what was done")
        if len(text) > MAX_NOTE_CHARS:
            raise ValueError(f"note: text has {len(text)} characters; at most {MAX_NOTE_CHARS} are accepted")
        with self.transaction():
            incident = self.get(incident_id)
            return self._event(incident.id, "note", now, {"by": by, "text": text})

    def add_events(
        self, incident_id: int | str, events: list[tuple[str, dict[str, Any]]], now: int
    ) -> list[Event]:
        """Append ``(kind, details)`` events at ``now``, in order, in one transaction.

        For stages that act on incidents (the escalator records ``escalated`` and ``notified``).

        Raises:
            KeyError: no incident with this id.
            ValueError: a kind not in ``EVENT_KINDS``.
        """
        for kind, _ in events:
            if kind not in EVENT_KINDS:
                raise ValueError(f"event kind {kind!r}: expected one of {', '.join(EVENT_KINDS)}")
        with self.transaction():
            incident = self.get(incident_id)
            return [self._event(incident.id, kind, now, details) for kind, details in events]

    def get(self, incident_id: int | str) -> Incident:
        """Raises ``KeyError`` naming the id when there is no such incident."""
        number = _incident_number(incident_id)
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM incidents WHERE id = ?", (number,)).fetchone()
        if row is None:
            raise KeyError(f"no incident with id {incident_id!r}")
        return _incident(row)

    def list(self, status: str | None = None, since: int | None = None, limit: int = 100) -> list[Incident]:
        """Incidents opened at or after ``since`` (ns), newest first, optionally of one status.

        Raises:
            ValueError: an unknown status, or a limit outside 1..``MAX_LIST_LIMIT``.
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit {limit!r}: expected an integer from 1 to {MAX_LIST_LIMIT}")
        sql = f"SELECT {_COLUMNS} FROM incidents WHERE opened_at >= ?"
        args: list[Any] = [since or 0]
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [_incident(row) for row in rows]

    def timeline(self, incident_id: int | str) -> list[Event]:
        """The incident's events, oldest first. Raises ``KeyError`` for an unknown id."""
        with self._lock:
            incident = self.get(incident_id)
            rows = self._db.execute(
                "SELECT seq, kind, at, details FROM incident_events WHERE incident_id = ? ORDER BY seq",
                (incident.id,),
            ).fetchall()
        return [Event(incident.id, seq, kind, at, json.loads(details)) for seq, kind, at, details in rows]

    def latest_notification(self, incident_id: int | str) -> Notification:
        """The last notification of the incident's group seen by :meth:`observe` (escalation copies it)."""
        incident = self.get(incident_id)
        with self._lock:
            (text,) = self._db.execute(
                "SELECT notification FROM incidents WHERE id = ?", (incident.id,)
            ).fetchone()
        return _notification_from_json(text)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _event(self, incident_id: int, kind: str, now: int, details: dict[str, Any]) -> Event:
        cursor = self._db.execute(
            "INSERT INTO incident_events (incident_id, kind, at, details) VALUES (?, ?, ?, ?)",
            (incident_id, kind, now, _dumps(details)),
        )
        return Event(incident_id, int(cursor.lastrowid or 0), kind, now, dict(details))


def rfc3339(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 in UTC (fraction to the nanosecond, trailing zeros cut)."""
    seconds, rest = divmod(int(ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{rest:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def severity_rank(severity: str) -> int:
    """Higher is more severe: critical > error > warning > info > any other value > none."""
    if severity in SEVERITIES:
        return len(SEVERITIES) - SEVERITIES.index(severity)
    return 0 if severity else -1


def _severity(alerts: tuple[Alert, ...], current: str) -> str:
    """The highest severity of the firing alerts and ``current`` (so an incident never goes down)."""
    found = [a.labels.get(SEVERITY, "") for a in alerts if a.state is AlertState.FIRING]
    return max([current, *found], key=severity_rank) if found or current else ""


def _labels(notification: Notification) -> dict[str, str]:
    labels = {**notification.common_labels, **notification.group_labels}
    severity = _severity(notification.alerts, "")
    if severity:
        labels[SEVERITY] = severity
    return labels


def _title(notification: Notification) -> str:
    """The group's common summary if it has one, else ``alertname (group labels)``."""
    summary = notification.common_annotations.get("summary", "").strip()
    if summary:
        return summary
    name = notification.common_labels.get(ALERTNAME, "")
    rest = ", ".join(f"{k}={v}" for k, v in sorted(notification.group_labels.items()) if k != ALERTNAME)
    if name and rest:
        return f"{name} ({rest})"
    return name or rest or notification.group_key


def _who(by: Any) -> str:
    if not isinstance(by, str) or not by.strip():
        raise ValueError("by: expected the name of the person acting, got an empty value")
    return by.strip()


def _incident_number(incident_id: int | str) -> int:
    if isinstance(incident_id, int) and not isinstance(incident_id, bool):
        return incident_id
    if isinstance(incident_id, str) and incident_id.isdigit():
        return int(incident_id)
    raise KeyError(f"no incident with id {incident_id!r} (ids are positive integers)")


def _incident(row: tuple[Any, ...]) -> Incident:
    number, group_key, title, severity, labels, status, opened, acked, acked_by, resolved = row
    return Incident(
        number,
        group_key,
        title,
        severity,
        json.loads(labels),
        status,
        opened,
        acked or 0,
        acked_by or "",
        resolved or 0,
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _notification_to_json(n: Notification) -> str:
    alerts = [
        {
            "labels": a.labels,
            "annotations": a.annotations,
            "state": a.state.value,
            "starts_at": a.starts_at,
            "ends_at": a.ends_at,
            "value": a.value if a.value == a.value else None,  # NaN is not JSON
            "generator_url": a.generator_url,
        }
        for a in n.alerts
    ]
    return _dumps(
        {
            "receiver": n.receiver,
            "group_key": n.group_key,
            "group_labels": n.group_labels,
            "alerts": alerts,
            "status": n.status,
            "created_at": n.created_at,
            "truncated_alerts": n.truncated_alerts,
            "extra": n.extra,
        }
    )


def _notification_from_json(text: str) -> Notification:
    data = json.loads(text)
    alerts = tuple(
        Alert(
            a["labels"],
            a["annotations"],
            AlertState(a["state"]),
            a["starts_at"],
            a["ends_at"],
            float("nan") if a["value"] is None else a["value"],
            a["generator_url"],
        )
        for a in data["alerts"]
    )
    return Notification(
        data["receiver"],
        data["group_key"],
        data["group_labels"],
        alerts,
        data["status"],
        data["created_at"],
        data["truncated_alerts"],
        data["extra"],
    )
