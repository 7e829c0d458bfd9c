"""Dispatch: alerts in, notifications out, with Alertmanager's grouping, timing, muting and dedup.

The :class:`Dispatcher` takes every alert change (:meth:`Dispatcher.receive`) and the passing of
time (:meth:`Dispatcher.tick`), and calls ``send`` with a :class:`Notification` whenever a
receiver is due to hear about a group. It follows Alertmanager 0.25 (``dispatch/dispatch.go``,
``notify/notify.go``):

1. **Routing.** The alert goes down the routing tree (:mod:`.routing`) to one or more routes.
2. **Grouping.** On each route, it joins the aggregation group of its ``group_by`` label values
   (created on first use). A new group waits ``group_wait`` before its first flush (less if the
   alert started more than ``group_wait`` ago: then at once). After a flush, the next comes
   ``group_interval`` later, and so on while the group lives.
3. **Muting.** At a flush, alerts silenced (:mod:`.silences`) or inhibited (:mod:`.inhibit`)
   are left out; they stay in the group, so they show up once the silence ends.
4. **Dedup.** Per (group key, receiver), a notification log keeps the firing and resolved
   alerts last sent and when. A flush sends only when: nothing was sent yet and something fires;
   an alert fires that was not firing in the last notification; every alert has resolved and the
   last notification had firing ones; a resolved alert was not in the last notification; or the
   group is unchanged and ``repeat_interval`` has passed since the last notification (strictly:
   re-sends land on the first flush after it, as in Alertmanager). The log lives in memory, or
   in SQLite (``log_path``) so that a restart does not notify again.
5. **Clean-up.** Resolved alerts are dropped from a group once a flush has handled them (sent or
   not); a group left empty is removed.

Nothing here reads a clock: every call takes ``now_ns``. With ``group_wait`` 0, a new group is
flushed inside :meth:`~Dispatcher.receive`, so ``send`` is called before ``receive`` returns.
``send`` is expected to hand the notification to the outbox; if it raises, the flush does not
count as notified (no log entry, resolved alerts kept, the next flush tries again) and the
exception propagates.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from otel_audio.processors.alerting.inhibit import Inhibitor
from otel_audio.processors.alerting.model import Alert, AlertState, Notification, fingerprint
from otel_audio.processors.alerting.routing import Route, quote_label_value
from otel_audio.processors.alerting.silences import Silences

DEFAULT_LOG_RETENTION_NS = 120 * 3600 * 10**9  # Alertmanager's --data.retention


@dataclass(frozen=True)
class GroupView:
    """An aggregation group as the API shows it."""

    group_key: str
    receiver: str
    group_labels: dict[str, str]
    alerts: tuple[Alert, ...]  # sorted as in notifications; resolved ones until the next flush
    next_flush_ns: int
    has_flushed: bool
    route: Route = field(repr=False)


@dataclass(frozen=True)
class AlertView:
    """A firing alert as the API shows it, with what mutes it."""

    alert: Alert
    receivers: tuple[str, ...]
    silenced_by: tuple[str, ...]  # silence ids
    inhibited_by: tuple[str, ...]  # fingerprints of the inhibiting alerts

    @property
    def state(self) -> str:
        """``suppressed`` when silenced or inhibited, else ``active`` (Alertmanager's API v2 words)."""
        return "suppressed" if self.silenced_by or self.inhibited_by else "active"


@dataclass
class _Group:
    route: Route
    labels: dict[str, str]
    key: str
    next_flush: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    has_flushed: bool = False


@dataclass(frozen=True)
class _LogEntry:
    firing: frozenset[str]
    resolved: frozenset[str]
    sent_at: int


class Dispatcher:
    """Routes, groups, mutes and deduplicates alerts into notifications.

    Args:
        route: the root of the routing tree.
        inhibitor: inhibition rules (``None``: nothing is inhibited).
        silences: the silence store (``None``: nothing is silenced).
        send: called with each notification due, synchronously.
        log_retention_ns: how long a notification-log entry is kept after its notification.
        log_path: a SQLite file for the notification log, so that dedup survives a restart
            (``None``: kept in memory only).
    """

    def __init__(
        self,
        route: Route,
        inhibitor: Inhibitor | None,
        silences: Silences | None,
        send: Callable[[Notification], None],
        log_retention_ns: int = DEFAULT_LOG_RETENTION_NS,
        log_path: str | Path | None = None,
    ) -> None:
        self.route = route
        self.inhibitor = inhibitor or Inhibitor()
        self.silences = silences
        self.send = send
        self.log_retention_ns = log_retention_ns
        self._lock = threading.RLock()
        # groups are keyed by their route (its place in the tree, depth-first, so that groups due
        # at the same moment flush in routing order; and its identity) and group labels
        self._route_index = {id(r): i for i, r in enumerate(route.walk())}
        self._groups: dict[tuple[int, int, str], _Group] = {}
        self._firing: dict[str, Alert] = {}
        self._inhibition = self.inhibitor.index()
        self._log = _NotificationLog(log_path)

    def receive(self, alert: Alert, now_ns: int) -> None:
        """Take one alert change: firing or resolved (pending and inactive alerts are ignored).

        Groups that are due (a new group with ``group_wait`` 0, or an alert older than
        ``group_wait`` arriving in a group not yet flushed) are flushed before returning.
        """
        if alert.state not in (AlertState.FIRING, AlertState.RESOLVED):
            return
        with self._lock:
            fp = alert.fingerprint
            if alert.state is AlertState.FIRING:
                self._firing[fp] = alert
            else:
                self._firing.pop(fp, None)
            self._inhibition.update(alert)
            for slot in self._insert(alert, now_ns):
                self._flush(slot, now_ns)

    def set_route(self, route: Route, now_ns: int) -> None:
        """Swap in a new routing tree (a configuration change), the way Alertmanager reloads.

        The groups are dropped and every alert they held is routed again through the new tree,
        into new groups with the new timings; the notification log is kept, so a group that comes
        back with the same key, receiver and alerts is not notified again before its repeat
        interval. Groups due at once (alerts older than ``group_wait``) are flushed before
        returning.
        """
        with self._lock:
            held: dict[str, Alert] = {}
            for group in self._groups.values():
                held.update(group.alerts)
            held.update(self._firing)
            self.route = route
            self._route_index = {id(r): i for i, r in enumerate(route.walk())}
            self._groups = {}
            due: dict[tuple[int, int, str], None] = {}
            for alert in held.values():
                due.update(dict.fromkeys(self._insert(alert, now_ns)))
            for slot in sorted(due):
                if slot in self._groups:
                    self._flush(slot, now_ns)

    def _insert(self, alert: Alert, now_ns: int) -> list[tuple[int, int, str]]:
        """Put the alert in its group on every route it matches; returns the groups now due."""
        due = []
        for route in self.route.match(alert.labels):
            labels = route.group_labels(alert.labels)
            slot = (self._route_index[id(route)], id(route), fingerprint(labels))
            group = self._groups.get(slot)
            if group is None:
                key = f"{route.key}:{_label_set(labels)}"
                group = _Group(route, labels, key, next_flush=now_ns + route.group_wait_ns)
                self._groups[slot] = group
            group.alerts[alert.fingerprint] = alert
            if not group.has_flushed and alert.starts_at + route.group_wait_ns < now_ns:
                group.next_flush = now_ns
            if group.next_flush <= now_ns:
                due.append(slot)
        return due

    def tick(self, now_ns: int) -> None:
        """Flush every group whose time has come, and forget old notification-log entries."""
        with self._lock:
            due = sorted((g.next_flush, slot) for slot, g in self._groups.items() if g.next_flush <= now_ns)
            for _, slot in due:
                self._flush(slot, now_ns)
            self._log.forget_before(now_ns - self.log_retention_ns)

    def close(self) -> None:
        """Close the notification log's database, if it has one."""
        self._log.close()

    def notified_firing(self) -> set[str]:
        """Fingerprints of the alerts the last notification of some group showed firing."""
        with self._lock:
            return {fp for entry in self._log.entries() for fp in entry.firing}

    def next_flush_ns(self) -> int | None:
        """When :meth:`tick` next has work (``None``: no groups)."""
        with self._lock:
            return min((g.next_flush for g in self._groups.values()), default=None)

    def groups(self) -> list[GroupView]:
        """The live aggregation groups, by group key."""
        with self._lock:
            views = [
                GroupView(
                    group_key=g.key,
                    receiver=g.route.receiver or "",
                    group_labels=dict(g.labels),
                    alerts=tuple(_sorted(g.alerts.values())),
                    next_flush_ns=g.next_flush,
                    has_flushed=g.has_flushed,
                    route=g.route,
                )
                for g in self._groups.values()
            ]
        return sorted(views, key=lambda v: (v.group_key, v.receiver))

    def alerts(self, now_ns: int) -> list[AlertView]:
        """The firing alerts, each with its receivers and the silences and alerts muting it."""
        with self._lock:
            firing = list(self._firing.values())
        inhibition = self.inhibitor.index(firing)
        views = []
        for alert in _sorted(firing):
            receivers = tuple(dict.fromkeys(r.receiver or "" for r in self.route.match(alert.labels)))
            views.append(
                AlertView(
                    alert=alert,
                    receivers=receivers,
                    silenced_by=tuple(self._silenced_by(alert, now_ns)),
                    inhibited_by=tuple(inhibition.inhibited_by(alert.labels)),
                )
            )
        return views

    def _silenced_by(self, alert: Alert, now_ns: int) -> list[str]:
        return self.silences.is_silenced(alert.labels, now_ns) if self.silences is not None else []

    def _flush(self, slot: tuple[int, int, str], now_ns: int) -> None:
        group = self._groups[slot]
        route = group.route
        group.next_flush = now_ns + route.group_interval_ns
        group.has_flushed = True

        handled = dict(group.alerts)
        inhibition = self._inhibition
        shown = [
            a
            for a in _sorted(handled.values())
            if not self._silenced_by(a, now_ns) and not inhibition.is_inhibited(a.labels)
        ]
        firing = frozenset(a.fingerprint for a in shown if a.state is AlertState.FIRING)
        resolved = frozenset(a.fingerprint for a in shown if a.state is AlertState.RESOLVED)
        receiver = route.receiver or ""
        log_key = (group.key, receiver)
        # as in Alertmanager, a flush whose alerts are all muted stops before the dedup stage:
        # nothing is sent and the notification log is left as it was
        if shown and _needs_update(
            self._log.get(log_key), firing, resolved, route.repeat_interval_ns, now_ns
        ):
            self.send(
                Notification(
                    receiver=receiver,
                    group_key=group.key,
                    group_labels=dict(group.labels),
                    alerts=tuple(shown),
                    status="firing" if firing else "resolved",
                    created_at=now_ns,
                )
            )
            self._log.put(log_key, _LogEntry(firing, resolved, now_ns))

        for fp, alert in handled.items():
            # only if it was not changed again meanwhile (by a receive from inside send)
            if alert.state is AlertState.RESOLVED and group.alerts.get(fp) is alert:
                del group.alerts[fp]
        if not group.alerts and self._groups.get(slot) is group:
            del self._groups[slot]


class _NotificationLog:
    """What was last sent per (group key, receiver); in memory, and in SQLite when given a path."""

    def __init__(self, path: str | Path | None) -> None:
        self._entries: dict[tuple[str, str], _LogEntry] = {}
        self._db = None
        if path is None:
            return
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS nflog (group_key TEXT NOT NULL, receiver TEXT NOT NULL,"
            " firing TEXT NOT NULL, resolved TEXT NOT NULL, sent_at INTEGER NOT NULL,"
            " PRIMARY KEY (group_key, receiver))"
        )
        for key, receiver, firing, resolved, sent_at in self._db.execute("SELECT * FROM nflog"):
            entry = _LogEntry(frozenset(json.loads(firing)), frozenset(json.loads(resolved)), sent_at)
            self._entries[(key, receiver)] = entry

    def get(self, key: tuple[str, str]) -> _LogEntry | None:
        return self._entries.get(key)

    def entries(self) -> list[_LogEntry]:
        return list(self._entries.values())

    def put(self, key: tuple[str, str], entry: _LogEntry) -> None:
        self._entries[key] = entry
        if self._db is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO nflog VALUES (?, ?, ?, ?, ?)",
                (*key, json.dumps(sorted(entry.firing)), json.dumps(sorted(entry.resolved)), entry.sent_at),
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def forget_before(self, horizon_ns: int) -> None:
        old = [k for k, e in self._entries.items() if e.sent_at <= horizon_ns]
        for key in old:
            del self._entries[key]
        if old and self._db is not None:
            self._db.execute("DELETE FROM nflog WHERE sent_at <= ?", (horizon_ns,))


def _needs_update(
    entry: _LogEntry | None, firing: frozenset[str], resolved: frozenset[str], repeat_ns: int, now_ns: int
) -> bool:
    """Alertmanager's ``DedupStage.needsUpdate`` (with ``send_resolved`` on)."""
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if not resolved <= entry.resolved:
        return True
    return entry.sent_at < now_ns - repeat_ns


def _label_set(labels: Mapping[str, str]) -> str:
    """Prometheus's ``LabelSet.String()``: ``{alertname="X", service="a"}``, names sorted."""
    return "{" + ", ".join(f"{name}={quote_label_value(labels[name])}" for name in sorted(labels)) + "}"


def _compare(a: Alert, b: Alert) -> int:
    """Alertmanager's alert order: by ``job``, then ``instance`` (present first), then label sets."""
    for name in ("job", "instance"):
        has_a, has_b = name in a.labels, name in b.labels
        if not has_a and not has_b:
            continue
        if not has_a:
            return 1
        if not has_b:
            return -1
        if a.labels[name] != b.labels[name]:
            return -1 if a.labels[name] < b.labels[name] else 1
    return _compare_label_sets(a.labels, b.labels)


def _compare_label_sets(a: Mapping[str, str], b: Mapping[str, str]) -> int:
    """Prometheus's ``LabelSet.Before``: fewer labels first, then by sorted names and values."""
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    for name in sorted(set(a) | set(b)):
        if name not in a:
            return -1
        if name not in b:
            return 1
        if a[name] != b[name]:
            return -1 if a[name] < b[name] else 1
    return 0


def _sorted(alerts: Iterable[Alert]) -> list[Alert]:
    return sorted(alerts, key=functools.cmp_to_key(_compare))
