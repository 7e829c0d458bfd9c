"""Retention: how long each tier keeps its data, and dropping whole day partitions once expired.

Blocks live in one directory per tier and UTC day, ``<root>/blocks/<tier>/<YYYY-MM-DD>/``
(:func:`partition_dir`). A partition holds data from its day's first to its last nanosecond, so
it **expires** once that last nanosecond is older than ``now - retention`` of its tier, i.e.
when ``day_end <= now - retention`` with ``day_end`` the next midnight (UTC). Retention never
removes anything but whole expired partition directories: no files inside a live partition, no
other names, no symbolic links.

Dropping renames the partition to ``.<YYYY-MM-DD>.dropping`` first (one atomic step) and then
deletes it, so a crash halfway never leaves a half-deleted partition that looks like a live one;
leftovers of such a crash are deleted by the next :func:`drop_expired`.

``now`` is always an argument: the store's ``tick(now)`` calls :func:`drop_expired`, tests drive a
fake clock.

Example::

    retention = RetentionConfig.from_mapping({"raw": "14d"})      # 1m and 1h keep their defaults
    dropped = drop_expired(Path(config.storage.data_dir), now_ns, retention)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from otel_audio.store.tiers import DAY_NS, HOUR, MINUTE, RAW, TIER_BY_NAME, TIERS, Tier

_DAY_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")
_DROPPING = re.compile(r"\.(\d{4}-\d{2}-\d{2})\.dropping")
_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": DAY_NS}
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class RetentionConfig(Mapping[str, int]):
    """How long each tier keeps data, in nanoseconds; also a mapping from tier name to that.

    Args:
        raw_ns: raw points (default 7 days).
        minute_ns: 1-minute rollups (default 30 days).
        hour_ns: 1-hour rollups (default 90 days).

    Raises:
        ValueError: naming the tier, when a retention is not a whole number of nanoseconds or is
            shorter than the tier's window (raw: one second).
    """

    raw_ns: int = RAW.default_retention_ns
    minute_ns: int = MINUTE.default_retention_ns
    hour_ns: int = HOUR.default_retention_ns

    def __post_init__(self) -> None:
        for tier in TIERS:
            _check(tier, self[tier.name])

    @classmethod
    def from_mapping(cls, values: Mapping[str, int | str]) -> RetentionConfig:
        """Build from ``{tier: retention}``: nanoseconds, or a duration like ``"7d"``, ``"36h"``.

        Tiers left out keep their defaults. Units: ``s``, ``m`` (minutes), ``h``, ``d``.
        """
        fields = {RAW.name: "raw_ns", MINUTE.name: "minute_ns", HOUR.name: "hour_ns"}
        kwargs = {}
        for name, value in values.items():
            tier = _tier(name)
            kwargs[fields[tier.name]] = parse_retention(tier, value)
        return cls(**kwargs)

    def __getitem__(self, name: str) -> int:
        fields = {RAW.name: self.raw_ns, MINUTE.name: self.minute_ns, HOUR.name: self.hour_ns}
        return fields[name.name if isinstance(name, Tier) else name]

    def __iter__(self) -> Iterator[str]:
        return iter(t.name for t in TIERS)

    def __len__(self) -> int:
        return len(TIERS)


def parse_retention(tier: Tier | str, value: int | str) -> int:
    """A tier's retention in nanoseconds from nanoseconds or a ``"<number><s|m|h|d>"`` string."""
    tier = _tier(tier)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if not m:
            raise ValueError(
                f"retention of tier {tier.name!r}: cannot read {value!r}; "
                "use a whole number with a unit s, m, h or d (e.g. '7d', '36h')"
            )
        value = int(m.group(1)) * _UNIT_NS[m.group(2)]
    _check(tier, value)
    return value


def partition_dir(root: Path, tier: Tier | str, time_ns: int) -> Path:
    """The partition directory holding data of ``tier`` at ``time_ns``: ``root/blocks/<tier>/<day>``."""
    day = _EPOCH + dt.timedelta(days=time_ns // DAY_NS)
    return Path(root) / "blocks" / _tier(tier).name / day.isoformat()


def expired_partitions(root: Path, now_ns: int, retention: Mapping[str, int]) -> list[Path]:
    """The partition directories under ``root/blocks`` whose whole day is older than now - retention.

    Args:
        root: the data directory (partitions are ``root/blocks/<tier>/<YYYY-MM-DD>``).
        now_ns: the current time, nanoseconds since the Unix epoch.
        retention: nanoseconds by tier name (or :class:`Tier`); tiers left out are never expired.

    Returns:
        The expired partitions, finest tier first, oldest day first. Entries that are not real
        directories named as a valid date are never included.
    """
    out = []
    for tier, keep in _validated(retention).items():
        cutoff = now_ns - keep
        for path, day in _partitions(Path(root) / "blocks" / tier.name):
            day_end_ns = ((day - _EPOCH).days + 1) * DAY_NS
            if day_end_ns - 1 < cutoff:  # its last nanosecond is older than the cutoff
                out.append(path)
    return out


def drop_expired(root: Path, now_ns: int, retention: Mapping[str, int]) -> list[Path]:
    """Delete the partitions :func:`expired_partitions` names; return them.

    Each is renamed to ``.<day>.dropping`` and then deleted; such leftovers of an interrupted
    earlier drop are deleted too (they are not in the returned list).
    """
    checked = _validated(retention)
    for tier in checked:
        base = Path(root) / "blocks" / tier.name
        if base.is_dir():
            for entry in sorted(base.iterdir()):
                if _DROPPING.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
    dropped = expired_partitions(root, now_ns, retention)
    for path in dropped:
        doomed = path.with_name(f".{path.name}.dropping")
        os.rename(path, doomed)
        shutil.rmtree(doomed)
    return dropped


def _partitions(base: Path) -> list[tuple[Path, dt.date]]:
    if not base.is_dir():
        return []
    out = []
    for entry in sorted(base.iterdir()):
        if not _DAY_NAME.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            day = dt.date.fromisoformat(entry.name)
        except ValueError:  # 2024-02-30 and the like: not ours
            continue
        out.append((entry, day))
    return out


def _tier(name: Tier | str) -> Tier:
    if isinstance(name, Tier):
        return name
    if name not in TIER_BY_NAME:
        raise ValueError(f"unknown tier {name!r} in retention; tiers: {', '.join(TIER_BY_NAME)}")
    return TIER_BY_NAME[name]


def _check(tier: Tier, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"retention of tier {tier.name!r} must be a whole number of nanoseconds, got {value!r}"
        )
    least = max(tier.window_ns, 10**9)
    if value < least:
        raise ValueError(
            f"retention of tier {tier.name!r} must be at least {least} ns "
            f"({'its window' if tier.window_ns else 'one second'}), got {value}"
        )


def _validated(retention: Mapping[str, int]) -> dict[Tier, int]:
    out = {}
    for name, value in retention.items():
        tier = _tier(name)
        _check(tier, value)
        out[tier] = value
    return dict(sorted(out.items(), key=lambda kv: TIERS.index(kv[0])))
