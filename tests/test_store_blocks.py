"""Metric blocks: atomic Parquet directories that give back exactly the points written."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otel_audio.processors.base import EXEMPLARS_SCHEMA, POINTS_SCHEMA, SERIES_SCHEMA
from otel_audio.store import blocks
from otel_audio.store.blocks import open_block_meta, read_metric_block, write_metric_block

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "storage-format.md"
T0 = 1_700_000_000 * 10**9
STEP = 10 * 10**9


def series_table(ids: list[int]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"series_id": i, "metric": f"m{i % 3}", "type": "gauge", "attributes": f'{{"i":"{i}"}}'}
            for i in ids
        ],
        schema=SERIES_SCHEMA,
    )


def gauge_points(values_by_series: dict[int, np.ndarray]) -> pa.Table:
    ids = np.concatenate([np.full(len(v), sid, dtype=np.uint64) for sid, v in values_by_series.items()])
    times = np.concatenate([T0 + np.arange(len(v), dtype=np.int64) * STEP for v in values_by_series.values()])
    values = np.concatenate(list(values_by_series.values()))
    columns = {"series_id": pa.array(ids), "time_unix_nano": pa.array(times), "value": pa.array(values)}
    return pa.Table.from_arrays(
        [columns.get(f.name, pa.nulls(len(ids), f.type)) for f in POINTS_SCHEMA], schema=POINTS_SCHEMA
    )


def mixed_values(rows: int, seed: int = 0) -> dict[int, np.ndarray]:
    """Four series of the kinds the codec treats differently, with exceptions sprinkled in."""
    rng = np.random.default_rng(seed)
    out = {
        (1 << 63) + 5: np.round(rng.lognormal(5, 0.3, rows), 1),  # raw, ids beyond int64
        17: np.cumsum(rng.poisson(20, rows)).astype(float),  # counter: deltas
        3: np.round(45 + np.cumsum(rng.normal(0, 0.5, rows)), 1),  # random walk: negative deltas
        99: rng.normal(0, 1, rows),  # no decimal scale: floats
    }
    out[17][rows // 2] = np.nan
    out[3][1] = -0.0
    return out


MIXED_IDS = (3, 17, 99, (1 << 63) + 5)


def sort_points(table: pa.Table) -> pa.Table:
    return table.sort_by([("series_id", "ascending"), ("time_unix_nano", "ascending")])


def same_values(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64)))


def write_mixed(tmp_path: Path, rows: int = 300) -> tuple[Path, pa.Table]:
    points = gauge_points(mixed_values(rows))
    directory = tmp_path / "block"
    write_metric_block(directory, points, series_table(list(MIXED_IDS)), EXEMPLARS_SCHEMA.empty_table())
    return directory, sort_points(points)


def test_every_points_column_round_trips_including_nulls_and_empty_lists(tmp_path: Path) -> None:
    rows = [
        {"series_id": 2, "time_unix_nano": T0, "start_time_unix_nano": T0 - STEP, "value": 12.5, "flags": 0},
        {"series_id": 2, "time_unix_nano": T0 + STEP, "start_time_unix_nano": T0 - STEP, "value": 13.75},
        {
            "series_id": 1,
            "time_unix_nano": T0,
            "value": 3.5,
            "count": 4,
            "min": 0.5,
            "max": 2.0,
            "bounds": [1.0, 5.0],
            "bucket_counts": [3, 1, 0],
            "start_time_unix_nano": T0 - STEP,
        },
        {
            "series_id": 1,
            "time_unix_nano": T0 + STEP,
            "value": None,
            "count": 0,
            "bounds": [],
            "bucket_counts": [0],
            "flags": 1,
        },
        {
            "series_id": 3,
            "time_unix_nano": T0,
            "value": float("nan"),
            "count": 2**64 - 1,
            "exp_scale": -3,
            "exp_zero_count": 1,
            "exp_zero_threshold": 1e-9,
            "exp_positive_offset": -2,
            "exp_positive_counts": [1, 0, 2**63],
            "exp_negative_offset": 0,
            "exp_negative_counts": [],
        },
        {
            "series_id": 4,
            "time_unix_nano": T0,
            "value": 9.0,
            "count": 10,
            "quantiles": [0.5, 0.99],
            "quantile_values": [1.5, float("inf")],
            "flags": 2**32 - 1,
        },
        {"series_id": 4, "time_unix_nano": T0, "value": -0.0, "quantiles": [], "quantile_values": []},
    ]
    points = pa.Table.from_pylist(rows, schema=POINTS_SCHEMA)
    directory = tmp_path / "block"
    write_metric_block(directory, points, series_table([1, 2, 3, 4]), EXEMPLARS_SCHEMA.empty_table())

    back, _, _ = read_metric_block(directory)

    assert back.schema == POINTS_SCHEMA
    want = sort_points(points)
    for name in POINTS_SCHEMA.names:
        if name != "value":
            assert back.column(name).to_pylist() == want.column(name).to_pylist(), name
    got_value, want_value = back.column("value"), want.column("value")
    assert got_value.is_null().to_pylist() == want_value.is_null().to_pylist()
    assert same_values(got_value.fill_null(0.0).to_numpy(), want_value.fill_null(0.0).to_numpy())


def test_values_round_trip_bit_exactly_across_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocks, "ROW_GROUP_ROWS", 64)
    directory, want = write_mixed(tmp_path)
    assert pq.ParquetFile(directory / "points.parquet").metadata.num_row_groups > 4

    back, _, _ = read_metric_block(directory)

    assert same_values(back.column("value").to_numpy(), want.column("value").to_numpy())


def test_plain_pyarrow_with_the_documented_decode_gets_the_values(tmp_path: Path) -> None:
    directory, want = write_mixed(tmp_path)
    code = next(
        block
        for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
        if "def decode_values" in block
    )
    recipe = tmp_path / "recipe.py"
    recipe.write_text(code)

    namespace = runpy.run_path(str(recipe), init_globals={"path": str(directory / "points.parquet")})

    assert same_values(namespace["values"], want.column("value").fill_null(np.nan).to_numpy())
    assert namespace["frame"]["series_id"].tolist() == want.column("series_id").to_pylist()


def test_the_documented_duckdb_view_gives_the_decoded_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert blocks.DUCKDB_POINTS_VIEW in DOC.read_text(), "docs/storage-format.md must carry the view verbatim"
    monkeypatch.setattr(blocks, "ROW_GROUP_ROWS", 100)
    values = mixed_values(400, seed=3)
    for part, (lo, hi) in enumerate(((0, 150), (150, 400))):  # two blocks, so two files in the glob
        points = gauge_points({sid: v[lo:hi] for sid, v in values.items()})
        points = points.set_column(1, "time_unix_nano", pa.array(points.column(1).to_numpy() + lo * STEP))
        write_metric_block(
            tmp_path / f"b{part}", points, series_table(list(values)), EXEMPLARS_SCHEMA.empty_table()
        )
    con = duckdb.connect()

    con.execute(blocks.DUCKDB_POINTS_VIEW.format(points=f"'{tmp_path}/b*/points.parquet'"))
    got = con.sql("SELECT * FROM points ORDER BY series_id, time_unix_nano").to_arrow_table()

    want = sort_points(pa.concat_tables([read_metric_block(tmp_path / f"b{i}")[0] for i in (0, 1)]))
    assert got.num_rows == want.num_rows
    assert got.column("series_id").to_pylist() == want.column("series_id").to_pylist()
    assert same_values(got.column("value").to_numpy(), want.column("value").to_numpy())
    assert same_values(want.column("value").to_numpy(), np.concatenate([values[k] for k in sorted(values)]))


def test_reading_a_series_subset_reads_only_its_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blocks, "ROW_GROUP_ROWS", 300)
    directory, want = write_mixed(tmp_path)  # four series of 300 rows: one row group each
    read: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_groups",
        lambda self, groups, **kw: read.append(list(groups)) or original(self, groups, **kw),
    )

    points, series, _ = read_metric_block(directory, series_ids=[17])

    assert read == [[1]]  # sorted ids 3, 17, 99, 2**63 + 5
    assert set(points.column("series_id").to_pylist()) == {17}
    assert same_values(
        points.column("value").to_numpy(),
        want.filter(pa.compute.equal(want["series_id"], pa.scalar(17, pa.uint64())))["value"].to_numpy(),
    )
    assert series.column("series_id").to_pylist() == [17]


def test_reading_a_time_range_returns_only_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "ROW_GROUP_ROWS", 100)
    directory, want = write_mixed(tmp_path)  # each series split into three row groups
    read: list[list[int]] = []
    original = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_groups",
        lambda self, groups, **kw: read.append(list(groups)) or original(self, groups, **kw),
    )
    start, end = T0 + 120 * STEP, T0 + 180 * STEP

    points, _, _ = read_metric_block(directory, start_ns=start, end_ns=end)

    assert read == [[1, 4, 7, 10]]  # the middle third of each series
    times = points.column("time_unix_nano").to_numpy()
    assert points.num_rows == 4 * 60 and times.min() == start and times.max() == end - STEP
    in_range = pa.compute.and_(
        pa.compute.greater_equal(want["time_unix_nano"], start), pa.compute.less(want["time_unix_nano"], end)
    )
    assert same_values(points.column("value").to_numpy(), want.filter(in_range)["value"].to_numpy())


def test_a_read_that_matches_nothing_is_empty(tmp_path: Path) -> None:
    directory, _ = write_mixed(tmp_path)
    points, series, exemplars = read_metric_block(directory, series_ids=[12345])
    assert points.num_rows == 0 and series.num_rows == 0 and exemplars.num_rows == 0
    assert points.schema == POINTS_SCHEMA


def test_exemplars_are_filtered_like_points(tmp_path: Path) -> None:
    points = gauge_points({1: np.arange(10.0), 2: np.arange(10.0)})
    exemplars = pa.Table.from_pylist(
        [
            {
                "series_id": 2,
                "time_unix_nano": T0 + 5 * STEP,
                "value": 1.0,
                "trace_id": "ab" * 16,
                "span_id": "cd" * 8,
            },
            {"series_id": 1, "time_unix_nano": T0, "value": 2.0, "trace_id": "", "span_id": ""},
        ],
        schema=EXEMPLARS_SCHEMA,
    )
    write_metric_block(tmp_path / "b", points, series_table([1, 2]), exemplars)

    _, _, got = read_metric_block(tmp_path / "b", series_ids=[2], start_ns=T0 + STEP)

    assert got.to_pylist() == exemplars.slice(0, 1).to_pylist()


def test_a_failed_write_leaves_no_block_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(blocks, "_meta_text", fail)  # after points.parquet and series.parquet are written
    directory = tmp_path / "block"
    with pytest.raises(OSError, match="disk full"):
        write_metric_block(
            directory, gauge_points({1: np.arange(5.0)}), series_table([1]), EXEMPLARS_SCHEMA.empty_table()
        )
    assert list(tmp_path.iterdir()) == []


def test_a_leftover_tmp_directory_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "block.tmp").mkdir()
    (tmp_path / "block.tmp" / "points.parquet").write_bytes(b"torn")
    write_metric_block(
        tmp_path / "block",
        gauge_points({1: np.arange(5.0)}),
        series_table([1]),
        EXEMPLARS_SCHEMA.empty_table(),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block"]


def test_an_existing_block_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "block").mkdir()
    with pytest.raises(FileExistsError, match="immutable"):
        write_metric_block(
            tmp_path / "block",
            gauge_points({1: np.arange(5.0)}),
            series_table([1]),
            EXEMPLARS_SCHEMA.empty_table(),
        )


def test_meta_json_describes_the_block(tmp_path: Path) -> None:
    points = gauge_points({1: np.arange(5.0), 2: np.arange(3.0)})
    meta = write_metric_block(
        tmp_path / "b", points, series_table([1, 2, 7]), EXEMPLARS_SCHEMA.empty_table(), tier="5m"
    )

    fields = json.loads((tmp_path / "b" / "meta.json").read_text())

    total = sum(f.stat().st_size for f in (tmp_path / "b").iterdir())
    assert fields == {
        "format_version": 1,
        "tier": "5m",
        "min_time_ns": T0,
        "max_time_ns": T0 + 4 * STEP,
        "rows": 8,
        "series": 2,
        "exemplars": 0,
        "bytes": total,
    }
    assert meta == open_block_meta(tmp_path / "b")
    assert (meta.path, meta.tier, meta.rows, meta.series, meta.bytes) == (tmp_path / "b", "5m", 8, 2, total)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "exemplars.parquet",
        "meta.json",
        "points.parquet",
        "series.parquet",
    ]


def test_series_file_has_one_row_per_series_of_the_block(tmp_path: Path) -> None:
    series = pa.concat_tables(
        [series_table([2, 1, 7]), series_table([1]).set_column(1, "metric", pa.array(["renamed"]))]
    )
    write_metric_block(
        tmp_path / "b",
        gauge_points({1: np.arange(2.0), 2: np.arange(2.0)}),
        series,
        EXEMPLARS_SCHEMA.empty_table(),
    )

    stored = pq.read_table(tmp_path / "b" / "series.parquet")

    assert stored.column("series_id").to_pylist() == [1, 2]
    assert stored.column("metric").to_pylist() == ["renamed", "m2"]  # the last row of a duplicate wins


def test_a_point_without_a_series_row_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks 1 series_id"):
        write_metric_block(
            tmp_path / "b",
            gauge_points({1: np.arange(2.0), 5: np.arange(2.0)}),
            series_table([1]),
            EXEMPLARS_SCHEMA.empty_table(),
        )
    assert not (tmp_path / "b").exists()


def test_a_table_of_the_wrong_shape_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"points table lacks column\(s\) \['flags'\]"):
        write_metric_block(
            tmp_path / "b",
            gauge_points({1: np.arange(2.0)}).drop_columns(["flags"]),
            series_table([1]),
            EXEMPLARS_SCHEMA.empty_table(),
        )


def test_a_block_from_a_newer_format_is_refused(tmp_path: Path) -> None:
    directory, _ = write_mixed(tmp_path)
    meta = json.loads((directory / "meta.json").read_text())
    (directory / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        open_block_meta(directory)


def test_storage_benchmark_prints_one_json_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "storage.py"),
            "--series",
            "8",
            "--points",
            "2000",
            "--block-hours",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["samples"] == 16_000 and result["bit_exact"] is True and result["blocks"] >= 3
    for key in ("bytes_per_sample", "entropy_bound_bytes_per_sample", "block_hours", "write_s", "read_s"):
        assert result[key] > 0, key


@pytest.mark.parametrize("points_in_block", [1, 2, 3])
def test_small_histogram_blocks_keep_every_point(tmp_path: Path, points_in_block: int) -> None:
    # A one-row row group of a list column once read back empty (pyarrow with delta-packed lists).
    rows = [
        {
            "series_id": 7,
            "time_unix_nano": T0 + i * STEP,
            "start_time_unix_nano": T0 - STEP,
            "value": 10.0 + i,
            "count": 3 + i,
            "bounds": [1.0, 5.0],
            "bucket_counts": [1, 1 + i, 1],
            "exp_positive_counts": [i, 2],
            "exp_negative_counts": [4],
        }
        for i in range(points_in_block)
    ]
    points = pa.Table.from_pylist(rows, schema=POINTS_SCHEMA)
    directory = tmp_path / "block"
    write_metric_block(directory, points, series_table([7]), EXEMPLARS_SCHEMA.empty_table())
    got, _series, _exemplars = read_metric_block(directory)
    assert got.num_rows == points_in_block
    assert got.column("bucket_counts").to_pylist() == [r["bucket_counts"] for r in rows]
    assert got.column("exp_positive_counts").to_pylist() == [r["exp_positive_counts"] for r in rows]


def test_reading_only_some_columns_gives_the_same_rows_with_the_rest_null(tmp_path: Path) -> None:
    path, _ = write_mixed(tmp_path)
    full = blocks.read_block_points(path)
    some = blocks.read_block_points(path, columns=["value", "flags"])
    for name in ("series_id", "time_unix_nano", "flags"):
        assert some.column(name).equals(full.column(name)), name
    assert same_values(some.column("value").to_numpy(), full.column("value").to_numpy())  # NaNs too
    assert some.column("start_time_unix_nano").null_count == some.num_rows
    assert some.schema == POINTS_SCHEMA
    only_ids = blocks.read_block_points(path, columns=[])
    assert only_ids.column("value").null_count == only_ids.num_rows
    assert only_ids.column("series_id").equals(full.column("series_id"))
