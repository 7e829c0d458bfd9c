"""Escalation: page level after level until someone acknowledges the incident.

An :class:`EscalationPolicy` is an ordered list of levels, each with targets (channel names) and
a timeout. When an incident opens for an alert group the policy matches, level 1's targets are
paged; if nobody acknowledges within level 1's timeout, level 2's are, and so on. After the last
level the whole policy runs again ``repeat`` more times (the last level's timeout is the wait
before the next pass). Acknowledging the incident stops escalation. When the incident resolves,
every target paged so far is told once, with a resolved notification. As YAML::

    escalation_policies:
      oncall:
        match: ['severity="critical"']      # all must match; none = every incident
        levels:
          - {targets: [slack], timeout: 5m}
          - {targets: [pagerduty, email], timeout: 15m}
        repeat: 1

Policies are tried in order; the first whose matchers match the incident's labels (the group's
labels, common labels, and ``severity`` = the incident's highest) applies.

:class:`Escalator` drives policies with an injected time: :meth:`Escalator.observe` takes the
dispatcher's notifications (and passes them on to :class:`Incidents`), :meth:`Escalator.tick`
pages the levels that came due. Each page is a copy of the group's latest notification with
``receiver`` set to the target and ``extra`` holding ``incident_id``, ``escalation_policy``,
``escalation_level``, ``escalation_cycle`` and an ``idempotency_key`` unique to that page, which
the outbox takes as the page's key (so ``send=outbox.put`` fits); the notification's own key
would be the same for every pass over an unchanged group.

State lives beside the incidents in SQLite. A step is sent first and committed after, with its
timeline events, in one transaction: a crash between the two resends that step with the same
idempotency keys on the next tick, which a keyed outbox ignores; nothing is paged twice
otherwise, and a restart continues at the level it stopped at. Due times follow the schedule
(each level's timeout counts from when the previous level was due), so a late tick pages every
level that came due, in order, each target once per tick.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from otel_audio.processors.alerting.incidents import (
    ACKNOWLEDGED,
    MAX_LIST_LIMIT,
    OPEN,
    RESOLVED,
    Incident,
    Incidents,
    rfc3339,
)
from otel_audio.processors.alerting.model import LabelMatcher, Notification, matches_all
from otel_audio.processors.alerting.routing import matchers_from_config
from otel_audio.processors.units import duration_ns

ESCALATING = "escalating"  # a next level is due at next_at
STOPPED_ACKNOWLEDGED = "acknowledged"  # someone took the incident; no further levels
EXHAUSTED = "exhausted"  # every level of every pass was paged (or the policy left the config)
DONE = "resolved"  # the incident resolved and every paged target was told

MAX_REPEAT = 100
_POLICY_KEYS = ("levels", "match", "repeat")
_LEVEL_KEYS = ("targets", "timeout")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS escalations (incident_id INTEGER PRIMARY KEY, policy TEXT NOT NULL,"
    " step INTEGER NOT NULL, due_at INTEGER NOT NULL, next_at INTEGER, paged TEXT NOT NULL,"
    " state TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS escalations_state ON escalations (state, next_at)",
)


@dataclass(frozen=True)
class Level:
    """One level of a policy.

    Args:
        targets: channel names paged at this level.
        timeout_ns: how long the level waits for an acknowledgement before the next is paged.
    """

    targets: tuple[str, ...]
    timeout_ns: int

    def __post_init__(self) -> None:
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"level targets {self.targets!r}: expected one or more channel names")
        if self.timeout_ns <= 0:
            raise ValueError(f"level timeout {self.timeout_ns} ns: expected a positive duration")


@dataclass(frozen=True)
class EscalationPolicy:
    """Ordered levels, run ``1 + repeat`` times, for incidents whose labels match ``matchers``.

    Args:
        name: the policy's name, as in the config and in timeline events.
        levels: paged in order, each after the previous one's timeout.
        repeat: how many more passes over all levels follow the first; 0 = one pass.
        matchers: all must match the incident's labels; none = every incident.
    """

    name: str
    levels: tuple[Level, ...]
    repeat: int = 0
    matchers: tuple[LabelMatcher, ...] = ()

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError(f"escalation policy {self.name!r}: expected at least one level")
        if not 0 <= self.repeat <= MAX_REPEAT:
            raise ValueError(f"escalation policy {self.name!r}: repeat must be 0..{MAX_REPEAT}")

    @property
    def steps(self) -> int:
        """How many levels get paged, over all passes, if nobody acknowledges."""
        return len(self.levels) * (1 + self.repeat)

    def step(self, index: int) -> tuple[int, int, Level]:
        """Step ``index`` (0-based) as (pass, level) numbered from 1, and its level."""
        cycle, level = divmod(index, len(self.levels))
        return cycle + 1, level + 1, self.levels[level]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, dict(labels))


@dataclass(frozen=True)
class Escalation:
    """Where an incident's escalation stands (for the API)."""

    incident_id: int
    policy: str
    level: int
    cycle: int
    state: str
    next_at: int  # 0 when no further level is due
    paged: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "policy": self.policy,
            "level": self.level,
            "cycle": self.cycle,
            "state": self.state,
            "next_at": rfc3339(self.next_at) if self.next_at else None,
            "next_at_ns": self.next_at or None,
            "paged": list(self.paged),
        }


def policies_from_config(
    config: Mapping[str, Any], receivers: Iterable[str] | None = None
) -> list[EscalationPolicy]:
    """The ``escalation_policies`` section of a config (absent: none), in the order written.

    ``receivers``, when given, are the configured channel names every target must be one of.

    Raises:
        ValueError: naming the path (``escalation_policies.oncall.levels[1].timeout: ...``).
    """
    section = config.get("escalation_policies")
    if section is None:
        return []
    where = "escalation_policies"
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: expected a mapping of policy name to {{levels, repeat, match}}")
    known = None if receivers is None else sorted(set(receivers))
    policies = []
    for name, body in section.items():
        path = f"{where}.{name}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: policy names must be non-empty strings, got {name!r}")
        if not isinstance(body, Mapping):
            raise ValueError(f"{path}: expected a mapping with levels, repeat and match, got {body!r}")
        _no_unknown_keys(body, path, _POLICY_KEYS)
        levels = body.get("levels")
        if not isinstance(levels, list) or not levels:
            raise ValueError(
                f"{path}.levels: expected a non-empty list of {{targets, timeout}}, got {levels!r}"
            )
        repeat = body.get("repeat", 0)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 0 <= repeat <= MAX_REPEAT:
            raise ValueError(f"{path}.repeat: expected an integer from 0 to {MAX_REPEAT}, got {repeat!r}")
        policies.append(
            EscalationPolicy(
                name,
                tuple(_level(item, f"{path}.levels[{i}]", known) for i, item in enumerate(levels)),
                repeat,
                matchers_from_config(body.get("match"), f"{path}.match"),
            )
        )
    return policies


@dataclass
class _Row:
    """An incident's escalation as stored: the last step paged and when it was due."""

    policy: str
    step: int  # 0-based over every level of every pass; -1 before level 1 is paged
    due_at: int
    next_at: int | None
    paged: list[list[Any]]  # [target, level first paged at], in paging order
    state: str


class Escalator:
    """Runs escalation policies over the incidents in ``incidents``, paging through ``send``.

    Args:
        policies: tried in order; the first matching an incident applies.
        incidents: where incidents live; the escalator keeps its state in the same database.
        send: hands one notification to delivery (the outbox); called before state is committed.
    """

    def __init__(
        self,
        policies: Iterable[EscalationPolicy],
        incidents: Incidents,
        send: Callable[[Notification], None],
    ) -> None:
        self._policies = list(policies)
        self._by_name = {p.name: p for p in self._policies}
        if len(self._by_name) != len(self._policies):
            raise ValueError("escalation policies: names must be unique")
        self._incidents = incidents
        self._send = send
        self._lock = threading.Lock()  # one step at a time, so concurrent ticks never page twice
        with incidents.transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def policy_for(self, labels: Mapping[str, str]) -> EscalationPolicy | None:
        return next((p for p in self._policies if p.matches(labels)), None)

    def observe(self, notification: Notification, now: int) -> Incident | None:
        """Record a dispatcher notification (:meth:`Incidents.observe`) and act on the change.

        An incident it opens is paged at level 1 of its policy; one it resolves has every paged
        target told.
        """
        with self._lock:
            incident = self._incidents.observe(notification, now)
            if incident is not None:
                self._advance(incident, now)
            return incident

    def tick(self, now: int) -> list[Notification]:
        """Page every level that came due by ``now``; what was sent, in order.

        Also catches up on work a crash interrupted: open incidents without an escalation yet,
        and resolved incidents whose paged targets were not yet told.
        """
        with self._lock:
            with self._incidents.transaction() as db:
                live = [
                    r[0] for r in db.execute("SELECT incident_id FROM escalations WHERE state != ?", (DONE,))
                ]
                started = {r[0] for r in db.execute("SELECT incident_id FROM escalations")}
            pending = [self._incidents.get(number) for number in live]
            fresh = self._incidents.list(status=OPEN, limit=MAX_LIST_LIMIT)
            pending += [i for i in reversed(fresh) if i.id not in started]
            sent: list[Notification] = []
            for incident in pending:
                sent += self._advance(incident, now)
            return sent

    def next_at(self) -> int | None:
        """When the next level is due (to schedule the next tick), or ``None``."""
        with self._incidents.transaction() as db:
            (value,) = db.execute(
                "SELECT MIN(next_at) FROM escalations WHERE state = ?", (ESCALATING,)
            ).fetchone()
        return value

    def status(self, incident_id: int) -> Escalation | None:
        """The incident's escalation, or ``None`` when no policy applied to it."""
        row = self._row(incident_id)
        if row is None:
            return None
        policy = self._by_name.get(row.policy)
        cycle, level = divmod(row.step, len(policy.levels)) if policy else (0, row.step)
        targets = tuple(t for t, _ in row.paged)
        return Escalation(incident_id, row.policy, level + 1, cycle + 1, row.state, row.next_at or 0, targets)

    def _row(self, incident_id: int) -> _Row | None:
        with self._incidents.transaction() as db:
            row = db.execute(
                "SELECT policy, step, due_at, next_at, paged, state FROM escalations WHERE incident_id = ?",
                (incident_id,),
            ).fetchone()
        if row is None:
            return None
        policy, step, due_at, next_at, paged, state = row
        return _Row(policy, step, due_at, next_at, json.loads(paged), state)

    def _advance(self, incident: Incident, now: int) -> list[Notification]:
        row = self._row(incident.id)
        if row is None:
            policy = self.policy_for(incident.labels)
            if policy is None or incident.status != OPEN:
                return []
            return self._page(
                incident, policy, _Row(policy.name, -1, now, None, [], ESCALATING), now, new=True
            )
        if row.state == DONE:
            return []
        policy = self._by_name.get(row.policy)
        if incident.status == RESOLVED:
            return self._tell_resolved(incident, policy, row, now)
        if row.state != ESCALATING:
            return []
        if incident.status == ACKNOWLEDGED or policy is None:
            row.state, row.next_at = (STOPPED_ACKNOWLEDGED if policy else EXHAUSTED), None
            self._save(incident.id, row, [], now)
            return []
        return self._page(incident, policy, row, now)

    def _page(
        self, incident: Incident, policy: EscalationPolicy, row: _Row, now: int, new: bool = False
    ) -> list[Notification]:
        """Page the steps after ``row.step`` that are due by ``now``; then commit where it stands."""
        base = self._incidents.latest_notification(incident.id)
        sent: list[Notification] = []
        events: list[tuple[str, dict[str, Any]]] = []
        already = {t for t, _ in row.paged}
        this_tick: set[str] = set()
        while row.step + 1 < policy.steps:
            due = row.due_at if row.step < 0 else row.due_at + policy.step(row.step)[2].timeout_ns
            if due > now:
                break
            row.step, row.due_at = row.step + 1, due
            cycle, level, lvl = policy.step(row.step)
            details = {"policy": policy.name, "level": level, "cycle": cycle, "targets": list(lvl.targets)}
            events.append(("escalated", details))
            for target in lvl.targets:
                if target in this_tick:  # a late tick covering several levels pages a target once
                    continue
                this_tick.add(target)
                if target not in already:
                    already.add(target)
                    row.paged.append([target, level])
                copy = _copy(base, target, incident.id, policy.name, level, cycle, "firing", now)
                self._send(copy)
                sent.append(copy)
                events.append(("notified", {"channel": target, "level": level, "status": "firing"}))
        if row.step + 1 < policy.steps:
            row.next_at = row.due_at + policy.step(row.step)[2].timeout_ns
        else:
            row.state, row.next_at = EXHAUSTED, None
        if events or new or row.state == EXHAUSTED:
            self._save(incident.id, row, events, now, new=new)
        return sent

    def _tell_resolved(
        self, incident: Incident, policy: EscalationPolicy | None, row: _Row, now: int
    ) -> list[Notification]:
        base = self._incidents.latest_notification(incident.id)
        cycle = policy.step(row.step)[0] if policy and 0 <= row.step < policy.steps else 1
        sent: list[Notification] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for target, level in row.paged:
            copy = _copy(base, target, incident.id, row.policy, level, cycle, "resolved", now)
            self._send(copy)
            sent.append(copy)
            events.append(("notified", {"channel": target, "level": level, "status": "resolved"}))
        row.state, row.next_at = DONE, None
        self._save(incident.id, row, events, now)
        return sent

    def _save(
        self,
        incident_id: int,
        row: _Row,
        events: list[tuple[str, dict[str, Any]]],
        now: int,
        new: bool = False,
    ) -> None:
        """The row and its timeline events, in one transaction."""
        values = (row.step, row.due_at, row.next_at, json.dumps(row.paged), row.state)
        with self._incidents.transaction() as db:
            if new:
                db.execute(
                    "INSERT INTO escalations (policy, step, due_at, next_at, paged, state, incident_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row.policy, *values, incident_id),
                )
            else:
                db.execute(
                    "UPDATE escalations SET step = ?, due_at = ?, next_at = ?, paged = ?, state = ?"
                    " WHERE incident_id = ?",
                    (*values, incident_id),
                )
            if events:
                self._incidents.add_events(incident_id, events, now)


def _copy(
    base: Notification,
    target: str,
    incident_id: int,
    policy: str,
    level: int,
    cycle: int,
    status: str,
    now: int,
) -> Notification:
    extra = {
        **base.extra,
        "incident_id": incident_id,
        "escalation_policy": policy,
        "escalation_level": level,
        "escalation_cycle": cycle,
        # a target is told of the resolution once, whatever the level and pass it was paged at
        "idempotency_key": f"incident-{incident_id}:{policy}:{target}:resolved"
        if status == "resolved"
        else f"incident-{incident_id}:{policy}:{cycle}:{level}:{target}",
    }
    return replace(base, receiver=target, created_at=now, extra=extra)


def _level(item: Any, path: str, known: list[str] | None) -> Level:
    if not isinstance(item, Mapping):
        raise ValueError(f"{path}: expected a mapping with targets and timeout, got {item!r}")
    _no_unknown_keys(item, path, _LEVEL_KEYS)
    targets = item.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ValueError(f"{path}.targets: expected a non-empty list of channel names, got {targets!r}")
    for i, target in enumerate(targets):
        if not isinstance(target, str) or not target:
            raise ValueError(f"{path}.targets[{i}]: expected a channel name, got {target!r}")
        if known is not None and target not in known:
            raise ValueError(
                f"{path}.targets[{i}]: unknown channel {target!r}; configured: {', '.join(known)}"
            )
    if len(set(targets)) != len(targets):
        raise ValueError(f"{path}.targets: a channel is listed twice in {targets!r}")
    timeout = item.get("timeout")
    if isinstance(timeout, bool) or not isinstance(timeout, str | int | float):
        raise ValueError(f"{path}.timeout: expected a duration like 5m, 15m or 1h, got {timeout!r}")
    timeout_ns = duration_ns(str(timeout), f"{path}.timeout")
    if timeout_ns <= 0:
        raise ValueError(f"{path}.timeout: expected a positive duration, got {timeout!r}")
    return Level(tuple(targets), timeout_ns)


def _no_unknown_keys(body: Mapping[str, Any], path: str, accepted: tuple[str, ...]) -> None:
    for key in body:
        if key not in accepted:
            raise ValueError(f"{path}.{key}: unknown key; accepted: {', '.join(accepted)}")
