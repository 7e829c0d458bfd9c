"""Silences: mute the notifications of alerts whose labels match, for a time window.

A :class:`Silence` has label matchers, a start and an end, who made it and why. At a moment it is
``pending`` (before its start), ``active`` (from its start, until before its end) or ``expired``.
An active silence mutes every alert all of whose matchers match; the alert still fires, is still
grouped and still inhibits others (silencing is about notifications only).

:class:`Silences` keeps them in SQLite, so they survive a restart (``":memory:"`` for tests)::

    silences = Silences("/var/lib/otel-audio/silences.db")
    s = silences.add(['service="enhancer"', 'severity=~"warning|info"'], starts_at=now,
                     ends_at=now + 2 * 3600 * 10**9, created_by="ana", comment="deploy",
                     now_ns=now)
    silences.is_silenced({"service": "enhancer", "severity": "warning"}, now)   # [s.id]
    silences.expire(s.id, now_ns=later)

Validation and state changes follow Alertmanager (``silence/silence.go`` and its API v2): at least
one matcher, and not all of them matching the empty string (a silence must not mute everything;
unlike Alertmanager, which only looks at ``=`` and ``=~`` here, ``env!="prod"`` counts as matching
the empty string); the end after the start and not in the past; a start in the past is moved to now;
``created_by`` and ``comment`` are required. Expiring an active silence ends it now; expiring a
pending one moves both its start and end to now. Updating (``add`` with the ``id`` of an existing
silence) changes it in place when Alertmanager would (same matchers, and for an active silence the
same start); otherwise the old one is expired and a new one, with a new id, replaces it.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from otel_audio.processors.alerting.model import LabelMatcher, matches_all, parse_matcher

DEFAULT_RETENTION_NS = 120 * 3600 * 10**9  # Alertmanager's --data.retention

_SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    matchers TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    updated_at INTEGER NOT NULL
)
"""


class SilenceState(enum.Enum):
    """Where a silence stands at a moment."""

    PENDING = "pending"  # its start is still ahead
    ACTIVE = "active"  # it mutes matching alerts
    EXPIRED = "expired"  # its end has passed (or it was expired by hand)


@dataclass(frozen=True)
class Silence:
    """One silence.

    Args:
        id: a UUID given by :meth:`Silences.add`.
        matchers: all must match an alert's labels for the silence to mute it.
        starts_at: nanoseconds since the epoch; active from here...
        ends_at: ...until just before here.
        created_by: who made it.
        comment: why.
        updated_at: when it was last created, changed or expired.
    """

    id: str
    matchers: tuple[LabelMatcher, ...]
    starts_at: int
    ends_at: int
    created_by: str
    comment: str
    updated_at: int = 0

    def state(self, now_ns: int) -> SilenceState:
        if now_ns < self.starts_at:
            return SilenceState.PENDING
        if now_ns < self.ends_at:
            return SilenceState.ACTIVE
        return SilenceState.EXPIRED

    def mutes(self, labels: Mapping[str, str], now_ns: int) -> bool:
        """Active at ``now_ns`` and every matcher matches."""
        return self.state(now_ns) is SilenceState.ACTIVE and matches_all(self.matchers, dict(labels))


class Silences:
    """The silence store, persisted in SQLite and held in memory for matching.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
    """

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute(_SCHEMA)
        self._by_id: dict[str, Silence] = {}
        self._index: _Index | None = None  # rebuilt after a change
        rows = self._db.execute(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at FROM silences"
            " ORDER BY rowid"
        )
        for sid, matchers, starts, ends, by, comment, updated in rows:
            parsed = tuple(LabelMatcher(*m) for m in json.loads(matchers))
            self._by_id[sid] = Silence(sid, parsed, starts, ends, by, comment, updated)

    def close(self) -> None:
        self._db.close()

    def add(
        self,
        matchers: Sequence[LabelMatcher | str],
        starts_at: int,
        ends_at: int,
        created_by: str,
        comment: str,
        now_ns: int,
        id: str | None = None,
    ) -> Silence:
        """Create a silence, or update the one with ``id``; returns it as stored.

        Matchers are :class:`LabelMatcher` values or strings like ``severity="critical"``.

        Raises:
            ValueError: the silence is invalid (the message says which field and why).
            KeyError: ``id`` names no silence.
        """
        parsed = _parse_matchers(matchers)
        _validate(parsed, starts_at, ends_at, created_by, comment, now_ns)
        with self._lock:
            if id is not None:
                previous = self._by_id.get(id)
                if previous is None:
                    raise KeyError(f"silence {id!r} not found")
                wanted = Silence(id, parsed, starts_at, ends_at, created_by, comment, now_ns)
                if _can_update(previous, wanted, now_ns):
                    self._store(wanted)
                    return wanted
                if previous.state(now_ns) is not SilenceState.EXPIRED:
                    self._store(_expired(previous, now_ns))
            silence = Silence(
                str(uuid.uuid4()), parsed, max(starts_at, now_ns), ends_at, created_by, comment, now_ns
            )
            self._store(silence)
            return silence

    def expire(self, silence_id: str, now_ns: int) -> Silence:
        """End a silence now.

        Raises:
            KeyError: no such silence.
            ValueError: it has already expired.
        """
        with self._lock:
            silence = self._by_id.get(silence_id)
            if silence is None:
                raise KeyError(f"silence {silence_id!r} not found")
            if silence.state(now_ns) is SilenceState.EXPIRED:
                raise ValueError(f"silence {silence_id} already expired")
            expired = _expired(silence, now_ns)
            self._store(expired)
            return expired

    def get(self, silence_id: str) -> Silence:
        """Raises ``KeyError`` when there is no such silence."""
        try:
            return self._by_id[silence_id]
        except KeyError:
            raise KeyError(f"silence {silence_id!r} not found") from None

    def list(self, now_ns: int | None = None, state: SilenceState | None = None) -> list[Silence]:
        """All silences in creation order; only those in ``state`` at ``now_ns`` when both are given."""
        silences = list(self._by_id.values())
        if state is not None:
            if now_ns is None:
                raise ValueError("list(state=...) needs now_ns to tell the state")
            silences = [s for s in silences if s.state(now_ns) is state]
        return silences

    def is_silenced(self, labels: Mapping[str, str], now_ns: int) -> list[str]:
        """Ids of the silences active at ``now_ns`` that mute these labels (empty: not silenced).

        Looks only at the silences that could match: those with an equality matcher on one of the
        labels' values, and those without a usable equality matcher.
        """
        index = self._index
        if index is None:
            with self._lock:
                index = self._index = _Index(self._by_id.values())
        plain = dict(labels)
        found = [s for s in index.unkeyed if s.mutes(plain, now_ns)]
        for pair in plain.items():
            found.extend(s for s in index.keyed.get(pair, ()) if s.mutes(plain, now_ns))
        if len(found) > 1:
            found.sort(key=lambda s: index.order[s.id])
        return [s.id for s in found]

    def gc(self, now_ns: int, retention_ns: int = DEFAULT_RETENTION_NS) -> int:
        """Delete silences that expired more than ``retention_ns`` ago; returns how many."""
        with self._lock:
            old = [s.id for s in self._by_id.values() if s.ends_at + retention_ns <= now_ns]
            for sid in old:
                del self._by_id[sid]
            self._index = None
            self._db.executemany("DELETE FROM silences WHERE id = ?", [(sid,) for sid in old])
            return len(old)

    def _store(self, silence: Silence) -> None:
        matchers = json.dumps([[m.name, m.op, m.value] for m in silence.matchers])
        self._db.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET matchers = excluded.matchers,"
            " starts_at = excluded.starts_at, ends_at = excluded.ends_at, created_by = excluded.created_by,"
            " comment = excluded.comment, updated_at = excluded.updated_at",
            (
                silence.id,
                matchers,
                silence.starts_at,
                silence.ends_at,
                silence.created_by,
                silence.comment,
                silence.updated_at,
            ),
        )
        self._by_id[silence.id] = silence
        self._index = None


class _Index:
    """Silences by one of their ``name="value"`` matchers (a non-empty value: an alert must have
    that label to match), the others in a list to scan."""

    def __init__(self, silences: Iterable[Silence]) -> None:
        self.order: dict[str, int] = {}
        self.keyed: dict[tuple[str, str], list[Silence]] = {}
        self.unkeyed: list[Silence] = []
        for position, silence in enumerate(silences):
            self.order[silence.id] = position
            key = next(((m.name, m.value) for m in silence.matchers if m.op == "=" and m.value), None)
            if key is None:
                self.unkeyed.append(silence)
            else:
                self.keyed.setdefault(key, []).append(silence)


def _parse_matchers(matchers: Iterable[LabelMatcher | str]) -> tuple[LabelMatcher, ...]:
    if isinstance(matchers, str | LabelMatcher):
        raise ValueError("matchers: expected a list of matchers, e.g. ['service=\"enhancer\"']")
    out = []
    for i, m in enumerate(matchers):
        if isinstance(m, LabelMatcher):
            out.append(m)
            continue
        try:
            out.append(parse_matcher(m))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"matchers[{i}]: {exc}") from None
    return tuple(out)


def _validate(
    matchers: tuple[LabelMatcher, ...], starts_at: int, ends_at: int, created_by: str, comment: str, now: int
) -> None:
    if not matchers:
        raise ValueError("matchers: at least one matcher is required")
    if all(m.matches({}) for m in matchers):
        raise ValueError(
            "matchers: at least one matcher must not match the empty string (the silence would mute"
            ' every alert); e.g. service="enhancer" rather than service=~".*"'
        )
    if ends_at <= starts_at:
        raise ValueError(f"ends_at: must be after starts_at ({ends_at} <= {starts_at})")
    if ends_at < now:
        raise ValueError(f"ends_at: must not be in the past ({ends_at} < now {now})")
    if not created_by or not created_by.strip():
        raise ValueError("created_by: required (who is silencing)")
    if not comment or not comment.strip():
        raise ValueError("comment: required (why the alerts are silenced)")


def _can_update(previous: Silence, wanted: Silence, now: int) -> bool:
    """Alertmanager's rule for changing a silence in place rather than replacing it."""
    if previous.matchers != wanted.matchers:
        return False
    state = previous.state(now)
    if state is SilenceState.ACTIVE:
        return wanted.starts_at == previous.starts_at and wanted.ends_at >= now
    if state is SilenceState.PENDING:
        return wanted.starts_at >= now
    return False


def _expired(silence: Silence, now: int) -> Silence:
    if silence.state(now) is SilenceState.PENDING:
        return replace(silence, starts_at=now, ends_at=now, updated_at=now)
    return replace(silence, ends_at=now, updated_at=now)
