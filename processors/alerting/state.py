"""Alert states as Prometheus keeps them: inactive -> pending -> firing -> resolved, per label set.

:class:`RuleAlerts` holds the alert instances of one rule. Each evaluation hands it the label
sets for which the condition holds now (:class:`~otel_audio.processors.alerting.model.Sample`),
and it returns the instances whose state changed:

- a label set not yet active becomes **pending** (or **firing** at once when ``for`` is 0);
- a pending instance **fires** at the first evaluation at least ``for`` after it became active;
- a pending instance whose condition stops holding is dropped (inactive; nothing was sent);
- a firing instance whose condition stops holding keeps firing for ``keep_firing_for`` after the
  last evaluation that held, then **resolves** (reported once, with its end time);
- **flapping** is damped: an instance that started firing ``flap_starts`` times within
  ``flap_window`` keeps firing for at least ``flap_hold`` after its condition last held, so a
  metric hovering at its threshold pages once rather than every few seconds. The alert carries
  the label-free annotation ``flapping="true"`` while damped.

:class:`AlertHistory` records every transition, with its value, in SQLite, and keeps the active
instances there too, so a restarted receiver restores pending and firing alerts with their
original start times (as Prometheus restores ``for`` state), and neither re-pages nor forgets.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from otel_audio.processors.alerting.model import Alert, AlertState, Sample, fingerprint
from otel_audio.processors.alerting.rules import AlertRule

MINUTE_NS = 60 * 10**9
_HISTORY_COLUMNS = (
    "rule",
    "fingerprint",
    "labels",
    "annotations",
    "state",
    "value",
    "starts_at",
    "ends_at",
    "at",
)


@dataclass
class _Instance:
    labels: dict[str, str]
    state: AlertState
    active_at: int  # when the condition started holding
    fired_at: int = 0
    last_held_at: int = 0
    value: float = float("nan")


@dataclass(frozen=True)
class Damping:
    """Flap damping settings (see the module docstring)."""

    flap_starts: int = 3
    flap_window_ns: int = 15 * MINUTE_NS
    flap_hold_ns: int = 5 * MINUTE_NS


class RuleAlerts:
    """The alert instances of one rule and their state machine.

    Args:
        rule: the rule.
        damping: flap damping; ``Damping(flap_starts=0)`` turns it off.
        restored: instances saved by :class:`AlertHistory` before a restart.
    """

    def __init__(self, rule: AlertRule, damping: Damping | None = None, restored: list[Alert] = ()) -> None:
        self.rule = rule
        self.damping = damping or Damping()
        self._active: dict[str, _Instance] = {}
        self._starts: dict[str, deque[int]] = {}  # recent firing starts per fingerprint, across instances
        for alert in restored:
            inst = _Instance(alert.labels, alert.state, alert.starts_at, value=alert.value)
            if alert.state is AlertState.FIRING:
                inst.fired_at = alert.starts_at
            self._active[alert.fingerprint] = inst

    def update(self, samples: list[Sample], now: int) -> list[Alert]:
        """Apply one evaluation at ``now``; return the alerts whose state changed."""
        changed: list[Alert] = []
        seen = set()
        for sample in samples:
            labels = self.rule.instance_labels(sample.labels)
            key = fingerprint(labels)
            seen.add(key)
            inst = self._active.get(key)
            if inst is None:
                inst = self._active[key] = _Instance(labels, AlertState.PENDING, now)
                if self.rule.for_ns > 0:
                    changed.append(self._alert(inst, sample.value))
            inst.value, inst.last_held_at = sample.value, now
            if inst.state is AlertState.PENDING and now - inst.active_at >= self.rule.for_ns:
                inst.state, inst.fired_at = AlertState.FIRING, now
                self._starts.setdefault(key, deque(maxlen=16)).append(now)
                changed.append(self._alert(inst, sample.value))
        for key in [k for k in self._active if k not in seen]:
            inst = self._active[key]
            if inst.state is AlertState.PENDING:
                del self._active[key]
                changed.append(self._alert(inst, inst.value, AlertState.INACTIVE, ends_at=now))
            elif now - inst.last_held_at >= self._keep_firing_ns(inst, now):
                del self._active[key]
                changed.append(self._alert(inst, inst.value, AlertState.RESOLVED, ends_at=now))
        if len(self._starts) > len(self._active) + 1000:
            self._starts = {
                k: v
                for k, v in self._starts.items()
                if k in self._active or now - v[-1] <= self.damping.flap_window_ns
            }
        return changed

    def active(self) -> list[Alert]:
        """Pending and firing instances as they stand."""
        return [self._alert(inst, inst.value) for inst in self._active.values()]

    def _keep_firing_ns(self, inst: _Instance, now: int) -> int:
        keep = self.rule.keep_firing_for_ns
        if self._flapping(inst, now):
            keep = max(keep, self.damping.flap_hold_ns)
        return keep

    def _flapping(self, inst: _Instance, now: int) -> bool:
        d = self.damping
        starts = self._starts.get(fingerprint(inst.labels), ())
        return d.flap_starts > 0 and sum(now - t <= d.flap_window_ns for t in starts) >= d.flap_starts

    def _alert(
        self, inst: _Instance, value: float, state: AlertState | None = None, ends_at: int = 0
    ) -> Alert:
        state = state or inst.state
        annotations = self.rule.render(inst.labels, value)
        if self._flapping(inst, inst.last_held_at):
            annotations["flapping"] = "true"
        starts = inst.fired_at if inst.fired_at else inst.active_at
        return Alert(inst.labels, annotations, state, starts, ends_at, value)


class AlertHistory:
    """Transitions and active instances in SQLite (``:memory:`` for tests); thread-safe."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS transitions (
                    id INTEGER PRIMARY KEY, rule TEXT, fingerprint TEXT, labels TEXT, annotations TEXT,
                    state TEXT, value REAL, starts_at INTEGER, ends_at INTEGER, at INTEGER);
                CREATE INDEX IF NOT EXISTS transitions_at ON transitions (at);
                CREATE INDEX IF NOT EXISTS transitions_fingerprint ON transitions (fingerprint, id);
                CREATE TABLE IF NOT EXISTS active (
                    rule TEXT, fingerprint TEXT, labels TEXT, state TEXT, value REAL,
                    starts_at INTEGER, PRIMARY KEY (rule, fingerprint));
                """
            )

    def record(self, rule: str, alerts: list[Alert], now: int) -> None:
        """Append the transitions and keep the active table in step, in one transaction."""
        if not alerts:
            return
        with self._lock:
            self._db.execute("BEGIN")
            for a in alerts:
                self._db.execute(
                    "INSERT INTO transitions (rule, fingerprint, labels, annotations, state, value, "
                    "starts_at, ends_at, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rule, a.fingerprint, json.dumps(a.labels, sort_keys=True),
                     json.dumps(a.annotations, sort_keys=True), a.state.value, _real(a.value),
                     a.starts_at, a.ends_at, now),
                )  # fmt: skip
                if a.state in (AlertState.PENDING, AlertState.FIRING):
                    self._db.execute(
                        "INSERT OR REPLACE INTO active VALUES (?, ?, ?, ?, ?, ?)",
                        (rule, a.fingerprint, json.dumps(a.labels, sort_keys=True), a.state.value,
                         _real(a.value), a.starts_at),
                    )  # fmt: skip
                else:
                    self._db.execute(
                        "DELETE FROM active WHERE rule = ? AND fingerprint = ?", (rule, a.fingerprint)
                    )
            self._db.execute("COMMIT")

    def restore(self, rule: str) -> list[Alert]:
        """The pending and firing instances of ``rule`` saved before a restart."""
        with self._lock:
            rows = self._db.execute(
                "SELECT labels, state, value, starts_at FROM active WHERE rule = ?", (rule,)
            ).fetchall()
        return [
            Alert(json.loads(labels), {}, AlertState(state), starts_at, 0, float("nan") if v is None else v)
            for labels, state, v, starts_at in rows
        ]

    def last_transition(self, fingerprint: str) -> Alert | None:
        """The newest transition of the alert instance ``fingerprint`` as an alert, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT labels, annotations, state, value, starts_at, ends_at FROM transitions"
                " WHERE fingerprint = ? ORDER BY id DESC LIMIT 1",
                (fingerprint,),
            ).fetchone()
        if row is None:
            return None
        labels, annotations, state, value, starts_at, ends_at = row
        value = float("nan") if value is None else value
        return Alert(
            json.loads(labels), json.loads(annotations), AlertState(state), starts_at, ends_at, value
        )

    def forget_rule(self, rule: str) -> None:
        """A deleted rule's instances are no longer active."""
        with self._lock:
            self._db.execute("DELETE FROM active WHERE rule = ?", (rule,))

    def transitions(self, since: int = 0, rule: str | None = None, limit: int = 1000) -> list[dict]:
        """Newest first, as JSON-ready dicts."""
        sql = f"SELECT {', '.join(_HISTORY_COLUMNS)} FROM transitions"
        sql += " WHERE at >= ?" + (" AND rule = ?" if rule else "") + " ORDER BY id DESC LIMIT ?"
        args = (since, rule, limit) if rule else (since, limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        keys = (
            "rule",
            "fingerprint",
            "labels",
            "annotations",
            "state",
            "value",
            "starts_at",
            "ends_at",
            "at",
        )
        out = []
        for row in rows:
            item = dict(zip(keys, row, strict=True))
            item["labels"], item["annotations"] = json.loads(item["labels"]), json.loads(item["annotations"])
            out.append(item)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _real(value: float) -> float | None:
    return None if value != value else float(value)
