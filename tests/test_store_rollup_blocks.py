"""Rollup files: one Parquet file of ROLLUP_SCHEMA rows per flush, merged per partition
(otel_audio/store/rollup_blocks.py)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store import rollup_blocks
from otel_audio.store.compaction import compact_span_partition, partitions_to_compact, trace_block_files
from otel_audio.store.rollup import HOUR_NS, MINUTE_NS, ROLLUP_SCHEMA, merge_rollups, rollup
from otel_audio.store.rollup_blocks import (
    ROLLUP_FILE_SCHEMA,
    RollupBlockMeta,
    compact_rollup_partition,
    decode_rollups,
    read_rollup_meta,
    read_rollups,
    rollup_block_files,
    write_rollup_block,
)
from otel_audio.store.tiers import DAY_NS, TIERS
from otel_audio.store.trace_blocks import ReadStats, read_block_meta, write_span_block
from tests.test_store_compaction import span_rows
from tests.test_store_memory import S, metric_batch
from tests.test_store_rollup import KINDS, _series_row, make_points

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
T0 = 1_700_006_400 * 10**9  # 2023-11-15T00:00:00Z
HIGH_ID = 2**63 + 5  # series ids are 64-bit hashes: half of them do not fit an int64


def mixed_points(seed: int = 0, points_per_series: int = 30):
    """(points, series) of one series of every kind, points over three hours at random seconds."""
    rng = np.random.default_rng(seed)
    series, points = [], []
    for i, kind in enumerate(KINDS):
        s = _series_row(kind, i)
        series.append(s)
        seconds = np.sort(rng.choice(3 * 3600, points_per_series, replace=False))
        points += make_points(kind, s, (T0 + seconds * S + i).tolist(), rng)
    batch = metric_batch(series, points)
    return batch.points, batch.series


def mixed_rows() -> pa.Table:
    """1-minute rollup rows of every metric kind: histogram lists, exponential buckets, nulls."""
    points, series = mixed_points()
    rows, _ = rollup(points, series, MINUTE_NS)
    return rows


def gauge_rows(series_ids: list[int], windows: int, window_ns: int = MINUTE_NS) -> pa.Table:
    """Rows of ``windows`` consecutive windows from T0 for each series; histogram columns null."""
    sid = np.repeat(np.array(series_ids, dtype=np.uint64), windows)
    start = np.tile(T0 + np.arange(windows, dtype=np.int64) * window_ns, len(series_ids))
    value = np.arange(sid.size, dtype=np.float64)
    columns = {
        "series_id": sid,
        "window_start_ns": start,
        "window_ns": np.full(sid.size, window_ns),
        "count": np.full(sid.size, 6),
        "sum": value * 6,
        "min": value,
        "max": value,
        "last": value,
        "first_time_ns": start,
        "last_time_ns": start + window_ns - 1,
        "last_start_time_ns": np.zeros(sid.size, np.int64),
    }
    return pa.Table.from_arrays(
        [
            pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(sid.size, f.type)
            for f in ROLLUP_SCHEMA
        ],
        schema=ROLLUP_SCHEMA,
    )


def by_key(table: pa.Table) -> pa.Table:
    return table.sort_by([("series_id", "ascending"), ("window_start_ns", "ascending")])


def shuffled(table: pa.Table, seed: int = 1) -> pa.Table:
    return table.take(np.random.default_rng(seed).permutation(table.num_rows))


# -- writing and reading ---------------------------------------------------------------------------


def test_the_fixture_has_histograms_exponential_buckets_and_nulls() -> None:
    rows = mixed_rows()
    assert rows.column("bounds").null_count < rows.num_rows
    assert rows.column("exp_positive_counts").null_count < rows.num_rows
    assert 0 < rows.column("increase").null_count < rows.num_rows


def test_rows_read_back_equal_to_the_rows_written(tmp_path: Path) -> None:
    rows = mixed_rows()

    meta = write_rollup_block(tmp_path / "a.parquet", shuffled(rows), tier="1m")

    got = read_rollups([meta.path])
    assert got.schema == ROLLUP_SCHEMA
    assert got.to_pylist() == by_key(rows).to_pylist()


def test_a_plain_parquet_read_gives_the_stored_columns_sorted_by_series_then_window(tmp_path: Path) -> None:
    rows = mixed_rows()
    write_rollup_block(tmp_path / "a.parquet", shuffled(rows), tier="1m")

    plain = pq.read_table(tmp_path / "a.parquet")

    assert plain.schema == ROLLUP_FILE_SCHEMA
    assert (
        plain.select(["series_id", "window_start_ns", "count", "bounds"]).to_pylist()
        == by_key(rows).select(["series_id", "window_start_ns", "count", "bounds"]).to_pylist()
    )
    assert decode_rollups(plain).to_pylist() == by_key(rows).to_pylist()


def test_float_columns_are_stored_as_decimal_integers_relative_to_last(tmp_path: Path) -> None:
    rows = gauge_rows([1], windows=3)
    rows = rows.set_column(4, "sum", pa.array([0.1 + 0.2, 1.5, 3.0]))  # 0.30000000000000004: 1 ulp off 0.3
    rows = rows.set_column(6, "max", pa.array([2.5, 1.5, 4.0]))
    rows = rows.set_column(7, "last", pa.array([0.5, 1.0, 2.0]))
    write_rollup_block(tmp_path / "a.parquet", rows, tier="1m")

    stored = pq.read_table(tmp_path / "a.parquet")

    assert stored["last_scale"].to_pylist() == [1, 1, 1]
    assert stored["last_int"].to_pylist() == [5, 10, 20]  # 5, then zigzag steps of +5 and +10
    assert stored["last_delta"].to_pylist() == [False, True, True]
    assert stored["max_scale"].to_pylist() == [1, 1, 1]
    assert stored["max_int"].to_pylist() == [40, 10, 40]  # zigzag of max - last: 20, 5, 20
    assert stored["max_delta"].to_pylist() == [False, False, False]
    assert stored["max_float"].null_count == 3
    assert stored["sum_scale"].to_pylist() == [1, 1, 1]
    assert stored["sum_residual"].to_pylist() == [(0.1 + 0.2) - 0.3, None, None]
    assert read_rollups([tmp_path / "a.parquet"]).to_pylist() == rows.to_pylist()


def test_the_file_carries_its_meta(tmp_path: Path) -> None:
    rows = gauge_rows([3, HIGH_ID], windows=10, window_ns=HOUR_NS)

    meta = write_rollup_block(tmp_path / "a.parquet", rows, tier="1h")

    assert meta == RollupBlockMeta(
        path=tmp_path / "a.parquet",
        tier="1h",
        window_ns=HOUR_NS,
        min_window_start_ns=T0,
        max_window_start_ns=T0 + 9 * HOUR_NS,
        rows=20,
        bytes=(tmp_path / "a.parquet").stat().st_size,
    )
    assert read_rollup_meta(tmp_path / "a.parquet") == meta
    stored = json.loads(pq.read_metadata(tmp_path / "a.parquet").metadata[b"otel_audio.rollups"])
    assert stored["kind"] == "rollups"
    assert stored["format"] == "otel-audio/rollups/2"


def test_row_groups_are_bounded_and_have_statistics_on_series_and_window_start(tmp_path: Path) -> None:
    write_rollup_block(tmp_path / "a.parquet", gauge_rows([1, 2, 3], windows=10), tier="1m", row_group_rows=8)

    md = pq.read_metadata(tmp_path / "a.parquet")

    assert md.num_row_groups == 4
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        assert group.num_rows <= 8
        assert group.column(0).statistics.has_min_max
        assert group.column(1).statistics.has_min_max


def test_reading_some_series_reads_only_the_row_groups_that_may_hold_them(tmp_path: Path) -> None:
    ids = [7, 8, 9, HIGH_ID, HIGH_ID + 1]
    rows = gauge_rows(ids, windows=10)
    write_rollup_block(tmp_path / "a.parquet", rows, tier="1m", row_group_rows=10)
    stats = ReadStats()

    got = read_rollups([tmp_path / "a.parquet"], series_ids=[8, HIGH_ID + 1], stats=stats)

    assert got.column("series_id").unique().to_pylist() == [8, HIGH_ID + 1]
    assert got.to_pylist() == rows.slice(10, 10).to_pylist() + rows.slice(40, 10).to_pylist()
    assert (stats.row_groups, stats.row_groups_read, stats.pruned_by_stats) == (5, 2, 3)
    assert stats.rows_read == 20


def test_reading_a_time_range_keeps_window_starts_in_start_inclusive_end_exclusive(tmp_path: Path) -> None:
    rows = gauge_rows([HIGH_ID], windows=40)
    write_rollup_block(tmp_path / "a.parquet", rows, tier="1m", row_group_rows=10)
    stats = ReadStats()

    got = read_rollups(
        [tmp_path / "a.parquet"], start_ns=T0 + 12 * MINUTE_NS, end_ns=T0 + 20 * MINUTE_NS, stats=stats
    )

    assert got.column("window_start_ns").to_pylist() == [T0 + k * MINUTE_NS for k in range(12, 20)]
    assert (stats.row_groups_read, stats.pruned_by_stats) == (1, 3)


def test_a_query_outside_every_file_reads_no_row_group(tmp_path: Path) -> None:
    write_rollup_block(tmp_path / "a.parquet", gauge_rows([1, 2], windows=10), tier="1m")
    stats = ReadStats()

    got = read_rollups([tmp_path / "a.parquet"], series_ids=[3], start_ns=T0, stats=stats)

    assert got.num_rows == 0 and got.schema == ROLLUP_SCHEMA
    assert stats.row_groups_read == 0


def test_rows_of_several_files_come_back_together_sorted(tmp_path: Path) -> None:
    write_rollup_block(tmp_path / "b.parquet", gauge_rows([2], windows=3), tier="1m")
    write_rollup_block(tmp_path / "a.parquet", gauge_rows([1, 3], windows=3), tier="1m")

    got = read_rollups([tmp_path / "b.parquet", tmp_path / "a.parquet"])

    assert got.column("series_id").to_pylist() == [1, 1, 1, 2, 2, 2, 3, 3, 3]


# -- refusals --------------------------------------------------------------------------------------


def test_the_rollup_tiers_are_those_of_the_tiers_module() -> None:
    assert rollup_blocks.TIER_WINDOWS == {t.name: t.window_ns for t in TIERS if t.window_ns}


def test_an_empty_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one row"):
        write_rollup_block(tmp_path / "a.parquet", ROLLUP_SCHEMA.empty_table(), tier="1m")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_path_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    meta = write_rollup_block(tmp_path / "a.parquet", gauge_rows([1], windows=2), tier="1m")
    before = (tmp_path / "a.parquet").read_bytes()

    with pytest.raises(FileExistsError, match=r"a\.parquet exists"):
        write_rollup_block(meta.path, gauge_rows([2], windows=2), tier="1m")
    assert (tmp_path / "a.parquet").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_a_table_missing_columns_is_refused_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"lacks column.*last_time_ns"):
        write_rollup_block(
            tmp_path / "a.parquet", gauge_rows([1], 2).drop_columns(["last_time_ns"]), tier="1m"
        )


def test_rows_of_another_window_or_an_unknown_tier_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"window_ns={MINUTE_NS} cannot go into a '1h'"):
        write_rollup_block(tmp_path / "a.parquet", gauge_rows([1], 2), tier="1h")
    with pytest.raises(ValueError, match=r"one of \['1m', '1h'\]; got tier 'raw'"):
        write_rollup_block(tmp_path / "a.parquet", gauge_rows([1], 2), tier="raw")


def test_a_name_not_ending_in_parquet_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.parquet"):
        write_rollup_block(tmp_path / "a.rollups", gauge_rows([1], 2), tier="1m")


def test_a_file_that_is_no_rollup_file_is_refused_by_readers(tmp_path: Path) -> None:
    write_span_block(tmp_path / "spans.parquet", span_rows([("1" * 32, "a" * 16, "x")]))

    with pytest.raises(ValueError, match=r"spans\.parquet is not an otel-audio rollup file"):
        read_rollup_meta(tmp_path / "spans.parquet")
    with pytest.raises(ValueError, match="not an otel-audio rollup file"):
        read_rollups([tmp_path / "spans.parquet"])


# -- partitions and compaction ---------------------------------------------------------------------


def two_flushes(partition: Path) -> tuple[pa.Table, pa.Table]:
    """Two rollup files of one partition, the runs cut inside a window holding points of one series
    on both sides (so both files have a row of it); and the rows of one run over all points."""
    points, series = mixed_points()
    sid, times = points.column("series_id").to_numpy(), points.column("time_unix_nano").to_numpy()
    valued = (points.column("flags").fill_null(0).to_numpy() & 1) == 0  # rollup skips the others
    order = np.flatnonzero(valued)[np.lexsort((times[valued], sid[valued]))]
    same_window = (sid[order][1:] == sid[order][:-1]) & (
        times[order][1:] // MINUTE_NS == times[order][:-1] // MINUTE_NS
    )
    cut = int(times[order][np.flatnonzero(same_window)[0]]) + 1
    first, carry = rollup(points.filter(pa.array(times < cut)), series, MINUTE_NS)
    second, _ = rollup(points.filter(pa.array(times >= cut)), series, MINUTE_NS, carry)
    write_rollup_block(partition / "000001.parquet", first, tier="1m")
    write_rollup_block(partition / "000002.parquet", second, tier="1m")
    whole, _ = rollup(points, series, MINUTE_NS)
    return pa.concat_tables([first, second]), whole


def test_partition_listing_names_rollup_files_only(tmp_path: Path) -> None:
    write_rollup_block(tmp_path / "b.parquet", gauge_rows([1], 2), tier="1m")
    write_rollup_block(tmp_path / "a.parquet", gauge_rows([2], 2), tier="1m")
    write_span_block(tmp_path / "spans.parquet", span_rows([("1" * 32, "a" * 16, "x")]))
    (tmp_path / ".c.parquet.0123.tmp").write_bytes((tmp_path / "a.parquet").read_bytes())

    assert rollup_block_files(tmp_path) == [tmp_path / "a.parquet", tmp_path / "b.parquet"]


def test_compaction_gives_one_file_equal_to_merge_rollups_of_the_sources(tmp_path: Path) -> None:
    sources, whole = two_flushes(tmp_path)
    assert sources.num_rows > whole.num_rows  # some window is in both files

    meta = compact_rollup_partition(tmp_path)

    assert meta is not None and meta.tier == "1m" and meta.window_ns == MINUTE_NS
    assert [p.name for p in tmp_path.iterdir()] == [meta.path.name]
    assert meta.path.name.startswith("compacted-")
    assert read_rollups([meta.path]).to_pylist() == merge_rollups(sources, MINUTE_NS).to_pylist()
    assert read_rollups([meta.path]).to_pylist() == by_key(whole).to_pylist()


def test_a_partition_of_one_rollup_file_is_left_alone(tmp_path: Path) -> None:
    write_rollup_block(tmp_path / "a.parquet", gauge_rows([1], 2), tier="1m")

    assert compact_rollup_partition(tmp_path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_tmp_leftovers_are_ignored_by_readers_and_removed_by_compaction(tmp_path: Path) -> None:
    sources, _ = two_flushes(tmp_path)
    leftover = tmp_path / ".000003.parquet.0123abcd.tmp"
    leftover.write_bytes((tmp_path / "000001.parquet").read_bytes())

    assert leftover not in rollup_block_files(tmp_path)
    meta = compact_rollup_partition(tmp_path)

    assert not leftover.exists()
    assert meta is not None
    assert read_rollups([meta.path]).to_pylist() == merge_rollups(sources, MINUTE_NS).to_pylist()


def test_a_crash_before_the_sources_are_retired_counts_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources, _ = two_flushes(tmp_path)
    want = merge_rollups(sources, MINUTE_NS).to_pylist()

    def crash(paths: list[Path]) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(rollup_blocks, "_retire", crash)
        with pytest.raises(OSError, match="power cut"):
            compact_rollup_partition(tmp_path)
    assert len(list(tmp_path.glob("*.parquet"))) == 3  # merged file next to both sources

    listed = rollup_block_files(tmp_path)
    assert [p.name[:10] for p in listed] == ["compacted-"]
    assert read_rollups(listed).to_pylist() == want

    assert compact_rollup_partition(tmp_path) is None  # one file left to read: nothing to merge
    assert [p.name for p in tmp_path.iterdir()] == [listed[0].name]
    assert read_rollups(rollup_block_files(tmp_path)).to_pylist() == want


def test_files_of_two_tiers_in_one_partition_are_refused(tmp_path: Path) -> None:
    write_rollup_block(tmp_path / "a.parquet", gauge_rows([1], 2), tier="1m")
    write_rollup_block(tmp_path / "b.parquet", gauge_rows([1], 2, window_ns=HOUR_NS), tier="1h")

    with pytest.raises(ValueError, match=r"tiers \['1h', '1m'\] in one partition"):
        compact_rollup_partition(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet"]


def test_span_and_log_compaction_live_alongside_rollup_files(tmp_path: Path) -> None:
    partition = tmp_path / "blocks" / "1m" / "2023-11-15"
    partition.mkdir(parents=True)
    write_rollup_block(partition / "a.parquet", gauge_rows([1], 2), tier="1m")
    write_span_block(partition / "s.parquet", span_rows([("1" * 32, "a" * 16, "x")]))
    now = T0 + 3 * DAY_NS

    with pytest.raises(ValueError, match="not an otel-audio span or log block"):
        read_block_meta(partition / "a.parquet")
    assert trace_block_files(partition, "spans") == [partition / "s.parquet"]
    assert compact_span_partition(partition) is None
    assert partitions_to_compact(tmp_path, now) == []

    write_rollup_block(partition / "b.parquet", gauge_rows([2], 2), tier="1m")
    assert partitions_to_compact(tmp_path, now) == [partition]
    assert compact_rollup_partition(partition) is not None
    assert partitions_to_compact(tmp_path, now) == []


# -- size ------------------------------------------------------------------------------------------


def test_a_day_of_minute_rollups_of_the_synthetic_set_costs_under_4_2_bytes_per_row(tmp_path: Path) -> None:
    """The encodings of the module docstring (decimal integers relative to last, residuals of sums,
    zstd 19) hold: 3.94 bytes per row when measured."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from storage import build_tables, load_synth
    finally:
        sys.path.remove(str(BENCHMARKS))
    ts_ms, out, _ = load_synth(100, 8640)
    points, series = build_tables(ts_ms, out)
    rows, _ = rollup(points, series, MINUTE_NS)

    meta = write_rollup_block(tmp_path / "day.parquet", rows, tier="1m")

    assert meta.rows == rows.num_rows > 100 * 1439
    assert meta.bytes / meta.rows < 4.2


# -- the stored form of the float columns: bit-exact -----------------------------------------------

FLOATS = ("sum", "min", "max", "last", "increase", "sum_increase", "hist_min", "hist_max")
SPECIAL = [
    float("nan"),
    float("inf"),
    -float("inf"),
    -0.0,
    0.0,
    1e300,
    -1e-300,
    5e-324,
    2.0**53,
    2.0**60,
    0.1 + 0.2,
]


def same_bits(got: pa.Table, want: pa.Table) -> None:
    """Every float column equal as stored: nulls in the same places, other values in the same bits."""
    assert got.schema == want.schema == ROLLUP_SCHEMA
    for name in ROLLUP_SCHEMA.names:
        a, b = got[name].combine_chunks(), want[name].combine_chunks()
        if name in FLOATS:
            assert a.is_null().to_pylist() == b.is_null().to_pylist(), name
            bits = [x.fill_null(0.0).to_numpy(zero_copy_only=False).view(np.int64) for x in (a, b)]
            assert np.array_equal(*bits), name
        else:
            assert a.equals(b), name


@st.composite
def float_column(draw: st.DrawFn, n: int, near: list[float] | None = None) -> list[float | None]:
    """Decimals at a scale (some sums of decimals, off by a few ulps), near ``near`` if given,
    or any floats; with special values and nulls here and there."""
    kind = draw(st.sampled_from(["decimals", "sums", "near", "floats"]))
    scale = draw(st.integers(0, 7))
    if kind == "floats":
        values = draw(st.lists(st.floats(), min_size=n, max_size=n))
    else:
        ints = draw(st.lists(st.integers(-(10**12), 10**12), min_size=n, max_size=n))
        values = [i / 10**scale for i in ints]
        if kind == "sums":
            parts = draw(st.lists(st.integers(-(10**6), 10**6), min_size=n, max_size=n))
            values = [v + p / 10**scale + 0.1 for v, p in zip(values, parts, strict=True)]
        elif kind == "near" and near is not None:
            values = [
                v + i / 10**scale if v is not None and np.isfinite(v) else v
                for v, i in zip(
                    near, draw(st.lists(st.integers(-50, 50), min_size=n, max_size=n)), strict=True
                )
            ]
    for _ in range(draw(st.integers(0, 3))):
        values[draw(st.integers(0, n - 1))] = draw(st.one_of(st.sampled_from(SPECIAL), st.none()))
    return values


@st.composite
def rollup_tables(draw: st.DrawFn) -> pa.Table:
    lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    n = sum(lengths)
    sid = np.repeat(np.array([2, 5, HIGH_ID][: len(lengths)], dtype=np.uint64), lengths)
    start = np.concatenate([T0 + np.arange(k, dtype=np.int64) * MINUTE_NS for k in lengths])
    last = draw(float_column(n))
    columns = {
        "series_id": sid,
        "window_start_ns": start,
        "window_ns": np.full(n, MINUTE_NS),
        "count": draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)),
        "last": last,
        "first_time_ns": start,
        "last_time_ns": start + 1,
        "last_start_time_ns": np.zeros(n, np.int64),
    }
    for name in ("min", "max", "sum", "increase", "sum_increase", "hist_min", "hist_max"):
        columns[name] = draw(float_column(n, near=last))
    return pa.Table.from_arrays(
        [
            pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
            for f in ROLLUP_SCHEMA
        ],
        schema=ROLLUP_SCHEMA,
    )


@settings(max_examples=150, deadline=None)
@given(rollup_tables(), st.integers(1, 9))
def test_float_columns_read_back_bit_exact(rows: pa.Table, row_group_rows: int) -> None:
    """NaN, infinities, -0.0, nulls, huge and tiny values, sums a few ulps off a decimal, values
    near last, in row groups that cut series (chains restart at each): all come back bit for bit."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.parquet"
        write_rollup_block(path, shuffled(rows), tier="1m", row_group_rows=row_group_rows)

        same_bits(read_rollups([path]), rows)
        same_bits(decode_rollups(pq.read_table(path)), rows)
        one = rows.filter(pa.compute.equal(rows["series_id"], pa.scalar(HIGH_ID, pa.uint64())))
        same_bits(read_rollups([path], series_ids=[HIGH_ID]), one)


def test_a_sum_a_few_ulps_off_its_decimal_is_an_integer_with_a_residual(tmp_path: Path) -> None:
    total = 0.0
    for v in (0.1, 0.2, 0.4):
        total += v  # 0.7000000000000001, as a rollup adds up its points
    rows = gauge_rows([1], windows=1).set_column(4, "sum", pa.array([total]))
    write_rollup_block(tmp_path / "a.parquet", rows, tier="1m")

    stored = pq.read_table(tmp_path / "a.parquet")

    assert (stored["sum_scale"].to_pylist(), stored["sum_float"].to_pylist()) == ([1], [None])
    assert stored["sum_residual"].to_pylist() == [total - 0.7]
    assert read_rollups([tmp_path / "a.parquet"])["sum"].to_pylist() == [total]


# -- format versions -------------------------------------------------------------------------------


def write_v1(path: Path, rows: pa.Table) -> None:
    """A file as format 1 wrote it: ROLLUP_SCHEMA columns as they are."""
    meta = {
        "kind": "rollups",
        "format": "otel-audio/rollups/1",
        "tier": "1m",
        "window_ns": MINUTE_NS,
        "min_window_start_ns": pa.compute.min(rows["window_start_ns"]).as_py(),
        "max_window_start_ns": pa.compute.max(rows["window_start_ns"]).as_py(),
        "rows": rows.num_rows,
    }
    table = by_key(rows).replace_schema_metadata({b"otel_audio.rollups": json.dumps(meta).encode()})
    pq.write_table(table, path, compression="zstd")


def test_version_1_files_are_still_read_and_compacted(tmp_path: Path) -> None:
    old, new = gauge_rows([1, 2], windows=3), gauge_rows([3], windows=3)
    write_v1(tmp_path / "old.parquet", old)
    write_rollup_block(tmp_path / "new.parquet", new, tier="1m")

    assert read_rollup_meta(tmp_path / "old.parquet").rows == 6
    assert (
        read_rollups(rollup_block_files(tmp_path)).to_pylist()
        == by_key(pa.concat_tables([old, new])).to_pylist()
    )
    meta = compact_rollup_partition(tmp_path)
    assert meta is not None
    assert (
        json.loads(pq.read_metadata(meta.path).metadata[b"otel_audio.rollups"])["format"]
        == "otel-audio/rollups/2"
    )
    assert read_rollups([meta.path]).to_pylist() == by_key(pa.concat_tables([old, new])).to_pylist()


def test_a_file_of_an_unknown_format_is_refused_naming_the_formats_read(tmp_path: Path) -> None:
    write_v1(tmp_path / "a.parquet", gauge_rows([1], windows=1))
    md = pq.read_metadata(tmp_path / "a.parquet").metadata[b"otel_audio.rollups"]
    table = pq.read_table(tmp_path / "a.parquet").replace_schema_metadata(
        {b"otel_audio.rollups": md.replace(b"rollups/1", b"rollups/3")}
    )
    pq.write_table(table, tmp_path / "b.parquet")

    with pytest.raises(
        ValueError, match=r"b\.parquet holds rollups of another format than 'otel-audio/rollups/2'"
    ):
        read_rollups([tmp_path / "b.parquet"])


# -- DuckDB ----------------------------------------------------------------------------------------


def duckdb_view() -> str:
    """The view of the "Rollup files" section of docs/storage-format.md."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "storage-format.md").read_text()
    section = doc[doc.index("## Rollup files") :]
    return section[section.index("```sql\nCREATE OR REPLACE MACRO rollup_step") + 7 :].split("```")[0]


def duckdb_rollups(paths: list[Path]) -> pa.Table:
    import duckdb  # a receiver dependency: always installed where these tests run

    con = duckdb.connect()
    sql = duckdb_view().replace("{rollups}", "[" + ", ".join(f"'{p}'" for p in paths) + "]")
    for statement in sql.split(";"):
        if statement.strip():
            con.execute(statement)
    got = con.sql("SELECT * FROM rollups ORDER BY series_id, window_start_ns").to_arrow_table()
    return got.cast(ROLLUP_SCHEMA)


def test_the_documented_duckdb_view_decodes_rollup_files_bit_exactly(tmp_path: Path) -> None:
    mixed = mixed_rows()
    special = gauge_rows([HIGH_ID], windows=len(SPECIAL) + 1)
    for column in ("sum", "min", "max", "last"):
        i = special.schema.get_field_index(column)
        special = special.set_column(
            i, column, pa.array([*SPECIAL, None] if column != "min" else [0.1 + 0.2] * 12)
        )
    write_rollup_block(tmp_path / "a.parquet", mixed, tier="1m", row_group_rows=16)
    write_rollup_block(tmp_path / "b.parquet", special, tier="1m", row_group_rows=5)

    got = duckdb_rollups([tmp_path / "a.parquet", tmp_path / "b.parquet"])

    same_bits(got, read_rollups([tmp_path / "a.parquet", tmp_path / "b.parquet"]))


def test_two_rows_of_one_window_in_a_file_decode_in_either_order(tmp_path: Path) -> None:
    """A file may hold two rows of one series and window (a flush cut the window); the second is
    stored whole (float exceptions), so readers need no order among them (DuckDB has none)."""
    flushes = tmp_path / "flushes"
    flushes.mkdir()
    sources, _ = two_flushes(flushes)
    write_rollup_block(tmp_path / "both.parquet", sources, tier="1m")

    got = read_rollups([tmp_path / "both.parquet"])

    assert got.to_pylist() == by_key(sources).to_pylist()
    in_duckdb = duckdb_rollups([tmp_path / "both.parquet"])
    assert merge_rollups(in_duckdb, MINUTE_NS).to_pylist() == merge_rollups(sources, MINUTE_NS).to_pylist()


def test_compaction_merges_in_runs_bounded_by_max_rows(tmp_path: Path) -> None:
    for i, sid in enumerate([1, 2, 3, 4]):
        write_rollup_block(tmp_path / f"f{i}.parquet", gauge_rows([sid], 10), tier="1m")
    everything = read_rollups(sorted(tmp_path.iterdir()))

    compact_rollup_partition(tmp_path, max_rows=20)  # two files per merge

    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and all(read_rollup_meta(f).rows == 20 for f in files)
    assert by_key(read_rollups(files)).to_pylist() == by_key(everything).to_pylist()


HISTOGRAM_ONLY = ("bounds", "bucket_counts", "mixed_bounds", "hist_min", "hist_max")


@pytest.mark.parametrize("version", [1, 2])
def test_reading_without_histograms_leaves_only_their_columns_null(tmp_path: Path, version: int) -> None:
    rows = mixed_rows()
    path = tmp_path / "f.parquet"
    if version == 1:
        write_v1(path, rows)
    else:
        write_rollup_block(path, rows, tier="1m")
    full = read_rollups([path])
    light = read_rollups([path], histograms=False)
    assert light.schema == full.schema
    for name in ROLLUP_SCHEMA.names:
        if name in HISTOGRAM_ONLY or name.startswith("exp_"):
            assert light.column(name).null_count == light.num_rows, name
        else:
            assert light.column(name).to_pylist() == full.column(name).to_pylist(), name
