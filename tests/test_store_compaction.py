"""Compaction of a day partition's small blocks into one (otel_audio/store/compaction.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    LOGS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    canonical_json,
    series_id,
)
from otel_audio.store import compaction
from otel_audio.store.blocks import open_block_meta, read_metric_block, write_metric_block
from otel_audio.store.compaction import (
    compact_log_partition,
    compact_metric_partition,
    compact_span_partition,
    metric_blocks,
    partitions_to_compact,
    trace_block_files,
)
from otel_audio.store.tiers import DAY_NS
from otel_audio.store.trace_blocks import read_block_meta, write_log_block, write_span_block

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
T0 = 1_700_006_400 * 10**9  # 2023-11-15T00:00:00Z
STEP = 10 * 10**9
HOUR = 3600 * 10**9


def points_table(columns: dict[str, list | np.ndarray]) -> pa.Table:
    """POINTS_SCHEMA rows from the given columns; the others null."""
    rows = len(columns["series_id"])
    return pa.Table.from_arrays(
        [
            pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(rows, f.type)
            for f in POINTS_SCHEMA
        ],
        schema=POINTS_SCHEMA,
    )


def series_table(ids: list[int]) -> pa.Table:
    rows = [{"series_id": i, "metric": f"m{i}", "type": "gauge", "attributes": f'{{"i":"{i}"}}'} for i in ids]
    return pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)


def exemplars_table(rows: list[tuple[int, int, float]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"series_id": s, "time_unix_nano": t, "value": v, "trace_id": "ab" * 16, "span_id": "cd" * 8}
            for s, t, v in rows
        ],
        schema=EXEMPLARS_SCHEMA,
    )


def mixed_points(rows: int = 600) -> pa.Table:
    """Gauges of every codec kind (NaN, -0.0, floats) and explicit histograms, one point per STEP."""
    rng = np.random.default_rng(0)
    times = T0 + np.arange(rows, dtype=np.int64) * STEP
    gauges = {
        1: np.round(rng.lognormal(5, 0.3, rows), 1),
        2: np.cumsum(rng.poisson(20, rows)).astype(float),
        3: rng.normal(0, 1, rows),
    }
    gauges[2][rows // 2] = np.nan
    gauges[1][7] = -0.0
    table = points_table(
        {
            "series_id": np.repeat(np.array(list(gauges), dtype=np.uint64), rows),
            "time_unix_nano": np.tile(times, len(gauges)),
            "value": np.concatenate(list(gauges.values())),
        }
    )
    counts = np.cumsum(rng.poisson(5, (rows, 3)), axis=0)
    histograms = points_table(
        {
            "series_id": np.full(rows, 4, dtype=np.uint64),
            "time_unix_nano": times,
            "start_time_unix_nano": np.full(rows, T0 - STEP),
            "value": counts.sum(axis=1) * 0.25,
            "count": counts.sum(axis=1),
            "bounds": [[0.1, 1.0]] * rows,
            "bucket_counts": counts.tolist(),
            "flags": np.zeros(rows, dtype=np.uint32),
        }
    )
    return pa.concat_tables([table, histograms])


def write_by_hours(
    partition: Path, points: pa.Table, minutes: int, exemplars: pa.Table | None = None
) -> list[Path]:
    """Cut ``points`` into blocks of ``minutes`` by time, the way the head is flushed."""
    times = points.column("time_unix_nano").to_numpy()
    cut = (times - times.min()) // (minutes * 60 * 10**9)
    series = series_table(sorted(set(points.column("series_id").to_pylist())))
    exemplars = exemplars if exemplars is not None else EXEMPLARS_SCHEMA.empty_table()
    paths = []
    for index in np.unique(cut):
        part = points.filter(pa.array(cut == index))
        block_exemplars = exemplars if index == 0 else EXEMPLARS_SCHEMA.empty_table()
        paths.append(write_metric_block(partition / f"{int(index):04d}", part, series, block_exemplars).path)
    return paths


def sorted_points(table: pa.Table) -> pa.Table:
    return table.sort_by([("series_id", "ascending"), ("time_unix_nano", "ascending")])


def assert_same_points(got: pa.Table, want: pa.Table) -> None:
    """Same rows; values compared bit for bit (NaN, -0.0), every other column equal."""
    got, want = sorted_points(got), sorted_points(want)
    assert got.num_rows == want.num_rows
    got_bits = got.column("value").to_numpy().view(np.int64)
    assert np.array_equal(got_bits, want.column("value").to_numpy().view(np.int64))
    assert got.drop_columns(["value"]).equals(want.drop_columns(["value"]))


def read_partition(partition: Path) -> pa.Table:
    return pa.concat_tables([read_metric_block(block)[0] for block in metric_blocks(partition)])


def test_compacting_blocks_gives_one_block_holding_their_union(tmp_path: Path) -> None:
    points = mixed_points()
    exemplars = exemplars_table([(1, T0, 148.3), (4, T0 + STEP, 2.5)])
    write_by_hours(tmp_path, points, minutes=30, exemplars=exemplars)
    assert len(metric_blocks(tmp_path)) == 4

    meta = compact_metric_partition(tmp_path)

    assert meta is not None and metric_blocks(tmp_path) == [meta.path]
    assert (meta.rows, meta.series, meta.tier) == (points.num_rows, 4, "raw")
    assert (meta.min_time_ns, meta.max_time_ns) == (T0, T0 + 599 * STEP)
    got_points, got_series, got_exemplars = read_metric_block(meta.path)
    assert_same_points(got_points, points)
    assert got_series.equals(series_table([1, 2, 3, 4]))
    assert got_exemplars.equals(exemplars)


def test_a_compacted_day_costs_fewer_bytes_per_sample_than_its_two_hour_blocks(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    import synth_metrics

    ts_ms, synthetic = synth_metrics.series(nser=8, npts=8640, t0_ms=T0 // 10**6)  # one day at 10 s
    resource = canonical_json({"service.name": "enhancer"})
    ids = [series_id(name, resource, "synth", canonical_json({"s": str(i)})) for name, i, _ in synthetic]
    points = points_table(
        {
            "series_id": np.repeat(np.array(ids, dtype=np.uint64), len(ts_ms)),
            "time_unix_nano": np.tile(ts_ms * 10**6, len(ids)),
            "value": np.concatenate([values for _, _, values in synthetic]),
        }
    )
    blocks = write_by_hours(tmp_path, points.replace_schema_metadata(None), minutes=120)
    before = sum(f.stat().st_size for block in blocks for f in block.iterdir()) / points.num_rows

    meta = compact_metric_partition(tmp_path)

    assert len(blocks) == 12 and meta is not None
    after = meta.bytes / points.num_rows
    assert after < 0.9 * before, (before, after)
    assert_same_points(read_metric_block(meta.path)[0], points)


def test_points_equal_in_every_column_are_kept_once(tmp_path: Path) -> None:
    points = mixed_points(rows=40)
    write_metric_block(tmp_path / "a", points, series_table([1, 2, 3, 4]), EXEMPLARS_SCHEMA.empty_table())
    replayed = points.slice(10, 20)  # a WAL replay flushed these again
    write_metric_block(tmp_path / "b", replayed, series_table([1, 2, 3, 4]), EXEMPLARS_SCHEMA.empty_table())

    meta = compact_metric_partition(tmp_path)

    assert meta is not None
    assert_same_points(read_metric_block(meta.path)[0], points)


def test_points_that_differ_in_any_column_are_all_kept(tmp_path: Path) -> None:
    def histogram(value: float, buckets: list[int], flags: int = 0) -> pa.Table:
        """The same point at two times (blocks.py cannot read a one-row block of histograms)."""
        columns = {"series_id": [7], "time_unix_nano": [T0], "start_time_unix_nano": [T0 - STEP]}
        columns |= {"value": [value], "count": [3], "bounds": [[1.0]], "bucket_counts": [buckets]}
        one = points_table({**columns, "flags": [flags]})
        return pa.concat_tables([one, one.set_column(1, "time_unix_nano", pa.array([T0 + STEP]))])

    variants = [
        histogram(1.5, [1, 2]),
        histogram(1.5, [2, 1]),  # buckets differ
        histogram(-0.0, [1, 2]),  # value bits differ
        histogram(0.0, [1, 2]),
        histogram(1.5, [1, 2], flags=1),
    ]
    for index, variant in enumerate([*variants, variants[0], variants[3]]):
        write_metric_block(tmp_path / f"{index}", variant, series_table([7]), EXEMPLARS_SCHEMA.empty_table())

    meta = compact_metric_partition(tmp_path)

    assert meta is not None
    got = read_metric_block(meta.path)[0]

    def rows(table: pa.Table) -> list[tuple]:
        bits = table.column("value").to_numpy().view(np.int64).tolist()
        other = zip(
            *(table[c].to_pylist() for c in ("time_unix_nano", "bucket_counts", "flags")), strict=True
        )
        return sorted((b, *(json.dumps(v) for v in o)) for b, o in zip(bits, other, strict=True))

    assert rows(got) == rows(pa.concat_tables(variants))


def test_series_rows_are_one_per_series_id_the_first_seen(tmp_path: Path) -> None:
    points = points_table({"series_id": [5], "time_unix_nano": [T0], "value": [1.0]})
    renamed = series_table([5]).set_column(1, "metric", pa.array(["renamed"]))
    write_metric_block(tmp_path / "a", points, series_table([5]), EXEMPLARS_SCHEMA.empty_table())
    write_metric_block(tmp_path / "b", points, renamed, EXEMPLARS_SCHEMA.empty_table())

    meta = compact_metric_partition(tmp_path)

    assert meta is not None
    assert read_metric_block(meta.path)[1].equals(series_table([5]))


def test_a_crash_between_write_and_delete_loses_nothing_and_the_next_compaction_removes_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = mixed_points(rows=300)
    sources = write_by_hours(tmp_path, points, minutes=15)

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("power loss")

    with monkeypatch.context() as patch:
        patch.setattr(compaction, "_retire", crash)
        with pytest.raises(KeyboardInterrupt):
            compact_metric_partition(tmp_path)

    left = metric_blocks(tmp_path)
    assert len(left) == len(sources) + 1 and set(sources) < set(left)
    assert_same_points(read_partition(tmp_path), pa.concat_tables([points, points]))

    meta = compact_metric_partition(tmp_path)

    assert meta is not None and metric_blocks(tmp_path) == [meta.path]
    assert_same_points(read_metric_block(meta.path)[0], points)


def test_a_crash_while_deleting_sources_leaves_only_tmp_garbage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = mixed_points(rows=300)
    write_by_hours(tmp_path, points, minutes=15)

    def crash(directory: Path) -> None:  # the sources are renamed, not yet deleted
        raise KeyboardInterrupt("power loss")

    with monkeypatch.context() as patch:
        patch.setattr(compaction, "fsync_path", crash)
        with pytest.raises(KeyboardInterrupt):
            compact_metric_partition(tmp_path)

    [merged] = metric_blocks(tmp_path)
    assert_same_points(read_metric_block(merged)[0], points)
    assert all(p.name.endswith(".tmp") for p in tmp_path.iterdir() if p != merged)
    assert compact_metric_partition(tmp_path) is None
    assert list(tmp_path.iterdir()) == [merged]


def test_leftover_tmp_directories_are_removed_first(tmp_path: Path) -> None:
    write_by_hours(tmp_path, mixed_points(rows=40), minutes=1440)
    (tmp_path / "0007.tmp").mkdir()
    (tmp_path / "0007.tmp" / "points.parquet").write_bytes(b"half a write")

    assert compact_metric_partition(tmp_path) is None  # one block: nothing to merge

    assert [p.name for p in tmp_path.iterdir()] == ["0000"]


def test_blocks_of_another_tier_are_refused(tmp_path: Path) -> None:
    points = points_table({"series_id": [5], "time_unix_nano": [T0], "value": [1.0]})
    write_metric_block(tmp_path / "a", points, series_table([5]), EXEMPLARS_SCHEMA.empty_table(), tier="1m")
    write_metric_block(tmp_path / "b", points, series_table([5]), EXEMPLARS_SCHEMA.empty_table(), tier="1m")

    with pytest.raises(ValueError, match=r"tier '1m'.*as tier 'raw'"):
        compact_metric_partition(tmp_path)

    assert compact_metric_partition(tmp_path, tier="1m") is not None


def test_partitions_are_due_once_their_day_ended_min_age_ago_and_hold_several_blocks(tmp_path: Path) -> None:
    day = tmp_path / "blocks" / "raw" / "2023-11-15"  # T0's day; it ends at T0 + DAY_NS
    one_block = tmp_path / "blocks" / "1m" / "2023-11-15"
    points = points_table({"series_id": [5], "time_unix_nano": [T0], "value": [1.0]})
    for partition, names in ((day, "ab"), (one_block, "a")):
        partition.mkdir(parents=True)
        for name in names:
            write_metric_block(partition / name, points, series_table([5]), EXEMPLARS_SCHEMA.empty_table())
    (tmp_path / "blocks" / "raw" / "not-a-day").mkdir()
    min_age = 25 * HOUR

    assert partitions_to_compact(tmp_path, T0 + DAY_NS + min_age - 1, min_age_ns=min_age) == []
    assert partitions_to_compact(tmp_path, T0 + DAY_NS + min_age, min_age_ns=min_age) == [day]
    assert partitions_to_compact(tmp_path, T0 + DAY_NS + min_age) == [day]  # the default is 25 h
    assert partitions_to_compact(tmp_path / "empty", T0 + 10 * DAY_NS) == []


def test_a_partition_of_one_span_block_and_one_log_block_is_not_due(tmp_path: Path) -> None:
    partition = tmp_path / "blocks" / "traces" / "2023-11-15"
    partition.mkdir(parents=True)
    write_span_block(partition / "a.parquet", span_rows([("1" * 32, "a" * 16, "x")]))
    write_log_block(partition / "b.parquet", log_rows(["x"]))
    now = T0 + 3 * DAY_NS

    assert partitions_to_compact(tmp_path, now) == []

    write_span_block(partition / "c.parquet", span_rows([("2" * 32, "a" * 16, "x")]))
    assert partitions_to_compact(tmp_path, now) == [partition]


def span_rows(spans: list[tuple[str, str, str]]) -> pa.Table:
    """Spans from (trace_id, span_id, name); the other columns fixed."""
    rows = [
        {
            "trace_id": trace_id,
            "span_id": span_id,
            "name": name,
            "start_time_unix_nano": T0 + i,
            "end_time_unix_nano": T0 + i + 500,
            "duration_ns": 500,
            "service": "enhancer",
        }
        for i, (trace_id, span_id, name) in enumerate(spans)
    ]
    return pa.Table.from_pylist(rows, schema=SPANS_SCHEMA)


def log_rows(bodies: list[str]) -> pa.Table:
    rows = [
        {"time_unix_nano": T0 + i, "body": body, "trace_id": "1" * 32, "service": "enhancer"}
        for i, body in enumerate(bodies)
    ]
    return pa.Table.from_pylist(rows, schema=LOGS_SCHEMA)


def test_span_blocks_merge_into_one_with_one_span_per_trace_and_span_id(tmp_path: Path) -> None:
    write_span_block(
        tmp_path / "a.parquet", span_rows([("1" * 32, "a" * 16, "decode"), ("2" * 32, "b" * 16, "x")])
    )
    write_span_block(
        tmp_path / "b.parquet", span_rows([("1" * 32, "a" * 16, "again"), ("3" * 32, "c" * 16, "y")])
    )
    write_log_block(tmp_path / "logs.parquet", log_rows(["untouched"]))
    (tmp_path / ".a.parquet.0123.tmp").write_bytes(b"half a write")

    meta = compact_span_partition(tmp_path)

    assert meta is not None and trace_block_files(tmp_path, "spans") == [meta.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([meta.path.name, "logs.parquet"])
    spans = pa.parquet.read_table(meta.path)
    assert sorted(zip(spans["span_id"].to_pylist(), spans["name"].to_pylist(), strict=True)) == [
        ("a" * 16, "decode"),  # the first seen, in name order
        ("b" * 16, "x"),
        ("c" * 16, "y"),
    ]
    assert read_block_meta(meta.path).rows == 3


def test_log_blocks_merge_into_one_without_records_equal_in_every_column(tmp_path: Path) -> None:
    write_log_block(tmp_path / "a.parquet", log_rows(["start", "chunk"]))
    write_log_block(tmp_path / "b.parquet", log_rows(["start", "chunk 2"]))  # record 0 replayed
    write_span_block(tmp_path / "spans.parquet", span_rows([("1" * 32, "a" * 16, "x")]))

    meta = compact_log_partition(tmp_path)

    assert meta is not None and trace_block_files(tmp_path, "logs") == [meta.path]
    assert (tmp_path / "spans.parquet").exists()
    logs = pa.parquet.read_table(meta.path)
    assert sorted(logs["body"].to_pylist()) == ["chunk", "chunk 2", "start"]


def test_a_single_span_block_is_left_alone(tmp_path: Path) -> None:
    write_span_block(tmp_path / "a.parquet", span_rows([("1" * 32, "a" * 16, "x")]))

    assert compact_span_partition(tmp_path) is None
    assert compact_log_partition(tmp_path) is None
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]


def test_merges_are_bounded_by_max_rows_and_lose_nothing(tmp_path: Path) -> None:
    points = mixed_points()
    write_by_hours(tmp_path, points, minutes=30)
    sizes = [open_block_meta(b).rows for b in metric_blocks(tmp_path)]
    assert len(sizes) == 4
    limit = sizes[0] + sizes[1]  # room for two blocks per merge, not three

    compact_metric_partition(tmp_path, max_rows=limit)

    merged = [open_block_meta(b) for b in metric_blocks(tmp_path)]
    assert len(merged) == 2 and all(m.rows <= limit for m in merged)
    assert_same_points(pa.concat_tables([read_metric_block(m.path)[0] for m in merged]), points)
    assert compact_metric_partition(tmp_path, max_rows=limit) is None  # nothing left that fits
