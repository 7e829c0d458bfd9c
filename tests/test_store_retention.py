"""Retention: configuration, and dropping exactly the expired day partitions at a driven ``now``."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store.retention import (
    RetentionConfig,
    drop_expired,
    expired_partitions,
    parse_retention,
    partition_dir,
)
from otel_audio.store.tiers import DAY_NS, HOUR, MINUTE, RAW

EPOCH = dt.date(1970, 1, 1)


def day_start(day: str) -> int:
    return (dt.date.fromisoformat(day) - EPOCH).days * DAY_NS


def day_end(day: str) -> int:
    """The first nanosecond after ``day`` (next midnight, UTC)."""
    return day_start(day) + DAY_NS


def make(root: Path, tier: str, *days: str) -> list[Path]:
    out = []
    for day in days:
        path = root / "blocks" / tier / day
        path.mkdir(parents=True)
        (path / "block-0.parquet").write_bytes(b"x")
        out.append(path)
    return out


# -- configuration ---------------------------------------------------------------------------------


def test_defaults_are_seven_thirty_and_ninety_days():
    config = RetentionConfig()
    assert dict(config) == {"raw": 7 * DAY_NS, "1m": 30 * DAY_NS, "1h": 90 * DAY_NS}
    assert (RAW.default_retention_ns, MINUTE.default_retention_ns, HOUR.default_retention_ns) == (
        7 * DAY_NS,
        30 * DAY_NS,
        90 * DAY_NS,
    )


def test_from_mapping_reads_durations_and_keeps_defaults_for_tiers_left_out():
    config = RetentionConfig.from_mapping({"raw": "14d", "1m": "36h"})
    assert config == RetentionConfig(raw_ns=14 * DAY_NS, minute_ns=36 * 3600 * 10**9)
    assert config["1h"] == 90 * DAY_NS
    assert RetentionConfig.from_mapping({"1h": 5 * DAY_NS}).hour_ns == 5 * DAY_NS
    assert parse_retention("raw", "90 s") == 90 * 10**9


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RetentionConfig(raw_ns=0), "retention of tier 'raw' must be at least 1000000000 ns"),
        (lambda: RetentionConfig(minute_ns=-5), "retention of tier '1m' must be at least 60000000000 ns"),
        (
            lambda: RetentionConfig(hour_ns=1800 * 10**9),
            "retention of tier '1h' must be at least 3600000000000",
        ),
        (
            lambda: RetentionConfig(hour_ns=1.5e15),
            "retention of tier '1h' must be a whole number of nanoseconds",
        ),
        (lambda: RetentionConfig(raw_ns=True), "retention of tier 'raw' must be a whole number"),
        (
            lambda: RetentionConfig.from_mapping({"5m": "1d"}),
            "unknown tier '5m' in retention; tiers: raw, 1m, 1h",
        ),
        (
            lambda: RetentionConfig.from_mapping({"1m": "7 days"}),
            "retention of tier '1m': cannot read '7 days'",
        ),
        (lambda: RetentionConfig.from_mapping({"1h": "30m"}), "retention of tier '1h' must be at least"),
    ],
)
def test_bad_retention_is_refused_naming_the_tier(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()


def test_expiry_validates_a_plain_mapping_too(tmp_path):
    with pytest.raises(ValueError, match="retention of tier 'raw' must be at least"):
        expired_partitions(tmp_path, 0, {"raw": -1})


def test_partition_dir_is_the_utc_day_of_the_time(tmp_path):
    t = day_start("2024-03-05") + DAY_NS - 1
    assert partition_dir(tmp_path, "1m", t) == tmp_path / "blocks" / "1m" / "2024-03-05"
    assert partition_dir(tmp_path, HOUR, t + 1) == tmp_path / "blocks" / "1h" / "2024-03-06"


# -- expiry ----------------------------------------------------------------------------------------


def test_a_day_is_kept_until_its_last_nanosecond_is_older_than_now_minus_retention(tmp_path):
    (day,) = make(tmp_path, "raw", "2024-03-05")
    keep = 7 * DAY_NS
    last_ns = day_end("2024-03-05") - 1
    # at now = last_ns + keep the cutoff is the last nanosecond itself: not older, kept
    assert expired_partitions(tmp_path, last_ns + keep, {"raw": keep}) == []
    assert expired_partitions(tmp_path, last_ns + keep + 1, {"raw": keep}) == [day]


def test_each_tier_uses_its_own_retention(tmp_path):
    raw = make(tmp_path, "raw", "2024-01-01", "2024-01-20")
    minute = make(tmp_path, "1m", "2024-01-01", "2024-01-20")
    hour = make(tmp_path, "1h", "2024-01-01", "2024-01-20")
    now = day_start("2024-02-05")  # 35 days after 2024-01-01 began, 16 after 2024-01-20 began
    assert expired_partitions(tmp_path, now, RetentionConfig()) == [*raw, minute[0]]
    assert hour  # 90 days keep both


def test_drop_expired_deletes_exactly_the_expired_partitions(tmp_path):
    old, young = make(tmp_path, "raw", "2024-01-01", "2024-01-09")
    kept_1m = make(tmp_path, "1m", "2024-01-01")
    now = day_end("2024-01-01") + 7 * DAY_NS  # 2024-01-01 just expired for raw
    assert drop_expired(tmp_path, now, RetentionConfig()) == [old]
    assert not old.exists()
    assert young.exists() and (young / "block-0.parquet").exists()
    assert all(p.exists() for p in kept_1m)
    assert drop_expired(tmp_path, now, RetentionConfig()) == []


def test_nothing_but_real_day_directories_is_ever_touched(tmp_path):
    base = tmp_path / "blocks" / "raw"
    base.mkdir(parents=True)
    (base / "2000-01-01").write_bytes(b"a file named like a day")
    (base / "2000-02-30").mkdir()  # no such date
    (base / "2000-01-01-old").mkdir()
    (base / "notes").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_bytes(b"k")
    os.symlink(elsewhere, base / "2000-01-02")
    (tmp_path / "blocks" / "5m" / "2000-01-01").mkdir(parents=True)  # not a tier
    untouched = make(tmp_path, "1h", "2000-01-01")  # tier left out of the mapping
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert drop_expired(tmp_path, day_start("2030-01-01"), {"raw": DAY_NS}) == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert untouched[0].exists() and (elsewhere / "keep").exists()


def test_a_missing_blocks_directory_expires_nothing(tmp_path):
    assert drop_expired(tmp_path / "nowhere", day_start("2030-01-01"), RetentionConfig()) == []


def test_leftovers_of_an_interrupted_drop_are_deleted(tmp_path):
    leftover = tmp_path / "blocks" / "raw" / ".2024-01-01.dropping"
    leftover.mkdir(parents=True)
    (leftover / "block-0.parquet").write_bytes(b"x")
    (live,) = make(tmp_path, "raw", "2024-01-02")
    assert drop_expired(tmp_path, day_start("2024-01-03"), RetentionConfig()) == []
    assert not leftover.exists() and live.exists()


@settings(max_examples=100, deadline=None)
@given(
    days=st.sets(st.integers(0, 60), min_size=1, max_size=20),
    now_ns=st.integers(0, 80 * DAY_NS),
    keep_ns=st.integers(60 * 10**9, 20 * DAY_NS),
)
def test_dropped_partitions_are_exactly_the_days_wholly_older_than_the_cutoff(
    tmp_path_factory, days, now_ns, keep_ns
):
    root = tmp_path_factory.mktemp("r")
    names = {(EPOCH + dt.timedelta(days=d)).isoformat(): d for d in days}
    make(root, "1m", *names)
    dropped = drop_expired(root, now_ns, {"1m": keep_ns})
    expected = sorted(n for n, d in names.items() if (d + 1) * DAY_NS - 1 < now_ns - keep_ns)
    assert [p.name for p in dropped] == expected
    remaining = sorted(p.name for p in (root / "blocks" / "1m").iterdir())
    assert remaining == sorted(set(names) - set(expected))
