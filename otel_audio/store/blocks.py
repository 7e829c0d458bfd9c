"""Metric blocks: immutable, compressed Parquet directories that hold a time range of metric points.

A block is one directory, written atomically (into ``<name>.tmp``, every file and the directory
fsynced, then renamed), holding:

- ``points.parquet``: the points, sorted by ``series_id`` then ``time_unix_nano``, every column of
  ``POINTS_SCHEMA`` except ``value``, which is stored by :mod:`~otel_audio.store.value_codec` as
  ``value_scale``/``value_int``/``value_delta``/``value_float``;
- ``series.parquet``: one ``SERIES_SCHEMA`` row per series the block holds, sorted by ``series_id``;
- ``exemplars.parquet``: ``EXEMPLARS_SCHEMA``, sorted by ``series_id`` then time;
- ``meta.json``: format version, tier, time range, row and series counts, bytes.

The files are plain Parquet (docs/storage-format.md documents every column and gives SQL that
decodes values in DuckDB, Spark and Trino). What makes them small: series and attribute sets live
once in ``series.parquet``; times are delta-encoded (``DELTA_BINARY_PACKED``); values are integers,
split into byte planes (``BYTE_STREAM_SPLIT``) and compressed with zstd, one page per series (or run
of small series), so each page's entropy coder sees one distribution.

Row groups hold whole series, about ``ROW_GROUP_ROWS`` rows each (a longer series is split), and
carry min/max statistics of ``series_id`` and ``time_unix_nano``: :func:`read_metric_block` decodes
only the row groups a query needs. Value chains restart at each row group, so each decodes alone.

Usage::

    meta = write_metric_block(Path("data/blocks/01-raw"), points, series, exemplars, tier="raw")
    points, series, exemplars = read_metric_block(meta.path, series_ids=[sid], start_ns=t0, end_ns=t1)
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from otel_audio.processors.base import EXEMPLARS_SCHEMA, POINTS_SCHEMA, SERIES_SCHEMA
from otel_audio.store import value_codec
from otel_audio.store.durable import fsync_path

FORMAT_VERSION = 1
POINTS_FILE = "points.parquet"
SERIES_FILE = "series.parquet"
EXEMPLARS_FILE = "exemplars.parquet"
META_FILE = "meta.json"

ROW_GROUP_ROWS = 1 << 17  # rows per row group, cut at series boundaries
METRIC_GROUP_ROWS = 1 << 15  # a group this long ends where the next metric's series begin
PAGE_MIN_ROWS = 512  # value pages hold whole series, merged until at least this many rows
PAGE_ROWS = 1 << 16  # rows per page of the other columns
ZSTD_LEVEL = 19  # chosen by measurement (docs/storage-format.md): compacted day blocks
FLUSH_ZSTD_LEVEL = 3  # the head's flushes: ~20x faster to write, compaction rewrites them at 19
_VALUE_COLUMNS = ("value_int", "value_float")
_CODEC_COLUMNS = ("value_scale", "value_int", "value_delta", "value_float")

# points.parquet: POINTS_SCHEMA with the value column replaced by the codec's four columns.
_VALUE_AT = POINTS_SCHEMA.get_field_index("value")
POINTS_FILE_SCHEMA = pa.schema(
    [
        *list(POINTS_SCHEMA)[:_VALUE_AT],
        pa.field("value_scale", pa.int8()),
        pa.field("value_int", pa.int64()),
        pa.field("value_delta", pa.bool_()),
        pa.field("value_float", pa.float64()),
        *list(POINTS_SCHEMA)[_VALUE_AT + 1 :],
    ]
)

# Decodes points.parquet files into POINTS_SCHEMA rows in DuckDB (docs/storage-format.md has it too;
# a test runs it against decode_points). ``{points}`` is a path, glob or list literal.
DUCKDB_POINTS_VIEW = """\
CREATE OR REPLACE VIEW points AS
WITH stored AS (
    SELECT
        *,
        CASE WHEN value_delta THEN xor(value_int >> 1, -(value_int & 1)) ELSE value_int END AS step,
        sum(CASE WHEN value_delta = false THEN 1 ELSE 0 END) OVER (
            PARTITION BY filename, series_id ORDER BY time_unix_nano ROWS UNBOUNDED PRECEDING
        ) AS chain
    FROM read_parquet({points}, filename = true)
)
SELECT
    series_id,
    time_unix_nano,
    start_time_unix_nano,
    CASE
        WHEN value_scale IS NULL THEN value_float
        ELSE CAST(sum(step) OVER (
            PARTITION BY filename, series_id, chain ORDER BY time_unix_nano ROWS UNBOUNDED PRECEDING
        ) AS DOUBLE) / 10 ** value_scale
    END AS value,
    count, min, max, bounds, bucket_counts,
    exp_scale, exp_zero_count, exp_zero_threshold,
    exp_positive_offset, exp_positive_counts, exp_negative_offset, exp_negative_counts,
    quantiles, quantile_values, flags
FROM stored"""

_POINTS_WRITER = {
    "compression": "zstd",
    "compression_level": ZSTD_LEVEL,
    "use_dictionary": [
        "series_id",
        "value_scale",
        "exp_scale",
        "flags",
    ],
    "column_encoding": {
        "time_unix_nano": "DELTA_BINARY_PACKED",
        "start_time_unix_nano": "DELTA_BINARY_PACKED",
        "value_int": "BYTE_STREAM_SPLIT",
        "value_float": "BYTE_STREAM_SPLIT",
        # Cumulative counts grow slowly: about 10 % smaller than PLAIN under zstd.
        "count": "DELTA_BINARY_PACKED",
        # List columns stay PLAIN: pyarrow 26 loses rows reading a one-row row group of a
        # DELTA_BINARY_PACKED list column written with data_page_size=1 (a one-point histogram
        # block reads back empty). tests/test_store_blocks.py keeps a one-point block round trip.
    },
    "write_statistics": ["series_id", "time_unix_nano"],
    "store_schema": False,  # the Parquet logical types say it all; saves ~1 KB per file
    # A page ends where a column's array chunk ends: value columns are chunked per series.
    "data_page_size": 1,
    "write_batch_size": 1 << 30,
    "max_rows_per_page": 1 << 30,
    "sorting_columns": [pq.SortingColumn(0), pq.SortingColumn(1)],
}
_TABLE_WRITER = {
    "compression": "zstd",
    "compression_level": ZSTD_LEVEL,
    "store_schema": False,
    "write_statistics": ["series_id", "time_unix_nano"],  # what readers filter on
}


@dataclass(frozen=True)
class BlockMeta:
    """What ``meta.json`` says about a block."""

    path: Path
    tier: str  # the caller's name for the block's resolution ("raw", "5m", ...)
    min_time_ns: int  # first and last point time, inclusive
    max_time_ns: int
    rows: int  # points
    series: int
    bytes: int  # all files of the block, meta.json included


def write_metric_block(
    directory: Path,
    points: pa.Table,
    series: pa.Table,
    exemplars: pa.Table,
    *,
    tier: str = "raw",
    compression_level: int = ZSTD_LEVEL,
) -> BlockMeta:
    """Write one block atomically at ``directory`` (which must not exist) and return its meta.

    Args:
        directory: the block's final path; ``<directory>.tmp`` is used while writing.
        points: ``POINTS_SCHEMA`` rows, any order, at least one.
        series: ``SERIES_SCHEMA`` rows covering every ``series_id`` of points and exemplars (extra
            series are left out of the block; for duplicates the last row wins).
        exemplars: ``EXEMPLARS_SCHEMA`` rows, any order, possibly none.
        tier: recorded in ``meta.json`` for the block manager.
        compression_level: zstd level of every file; the head's flushes use
            :data:`FLUSH_ZSTD_LEVEL` to keep up with ingest, compaction the smaller default.
    """
    directory = Path(directory)
    points = _conform("points", points, POINTS_SCHEMA)
    series = _conform("series", series, SERIES_SCHEMA)
    exemplars = _conform("exemplars", exemplars, EXEMPLARS_SCHEMA)
    if points.num_rows == 0:
        raise ValueError(f"block {directory}: no points; a block holds at least one")
    if directory.exists():
        raise FileExistsError(f"block {directory} already exists; blocks are immutable")
    points = _sorted(points)
    exemplars = _sorted(exemplars)
    series = _block_series(directory, series, points, exemplars)

    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crash; never visible as a block
    tmp.mkdir(parents=True)
    try:
        _write_points(tmp / POINTS_FILE, points, compression_level)
        table_writer = {**_TABLE_WRITER, "compression_level": compression_level}
        pq.write_table(series, tmp / SERIES_FILE, **table_writer)
        pq.write_table(exemplars, tmp / EXEMPLARS_FILE, **table_writer)
        times = points.column("time_unix_nano")
        fields = {
            "format_version": FORMAT_VERSION,
            "tier": tier,
            "min_time_ns": pc.min(times).as_py(),
            "max_time_ns": pc.max(times).as_py(),
            "rows": points.num_rows,
            "series": series.num_rows,
            "exemplars": exemplars.num_rows,
        }
        data_bytes = sum(f.stat().st_size for f in tmp.iterdir())
        (tmp / META_FILE).write_text(_meta_text(fields, data_bytes))
        for name in (POINTS_FILE, SERIES_FILE, EXEMPLARS_FILE, META_FILE):
            fsync_path(tmp / name)
        fsync_path(tmp)
        tmp.rename(directory)
        fsync_path(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_block_meta(directory)


def read_metric_block(
    directory: Path,
    *,
    series_ids: Sequence[int] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Points (``POINTS_SCHEMA``, values decoded), series and exemplars of a block.

    Only rows of ``series_ids`` (all when None) with ``start_ns <= time < end_ns`` (either bound
    None: open) are returned; row groups that statistics rule out are not read.
    """
    directory = Path(directory)
    ids = None if series_ids is None else np.unique(np.asarray(series_ids, dtype=np.uint64))
    points = read_block_points(directory, series_ids=ids, start_ns=start_ns, end_ns=end_ns)
    series = _conform("series", pq.read_table(directory / SERIES_FILE), SERIES_SCHEMA)
    if ids is not None:
        series = series.filter(pc.is_in(series.column("series_id"), pa.array(ids, pa.uint64())))
    exemplars = _conform("exemplars", pq.read_table(directory / EXEMPLARS_FILE), EXEMPLARS_SCHEMA)
    exemplars = _filter_rows(exemplars, ids, start_ns, end_ns)
    return points, series, exemplars


def read_block_points(
    directory: Path,
    *,
    series_ids: Sequence[int] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The points of a block (``POINTS_SCHEMA``), as :func:`read_metric_block` selects them.

    ``columns`` names the ``POINTS_SCHEMA`` columns a caller needs (``series_id`` and
    ``time_unix_nano`` always come): the others are not read from the file and come back null.
    A gauge query then skips the histogram list columns, most of a mixed block's bytes.
    """
    ids = None if series_ids is None else np.unique(np.asarray(series_ids, dtype=np.uint64))
    points_file = pq.ParquetFile(Path(directory) / POINTS_FILE)
    groups = _row_groups(points_file.metadata, ids, start_ns, end_ns)
    stored_columns = None
    if columns is not None:
        wanted = {*columns, "series_id", "time_unix_nano"}
        if "value" in wanted:
            wanted.update(_CODEC_COLUMNS)
        stored_columns = [name for name in POINTS_FILE_SCHEMA.names if name in wanted]
    if groups:
        stored = points_file.read_row_groups(groups, columns=stored_columns)
    else:
        stored = POINTS_FILE_SCHEMA.empty_table().select(stored_columns or POINTS_FILE_SCHEMA.names)
    return _filter_rows(decode_points(stored), ids, start_ns, end_ns)


def open_block_meta(directory: Path) -> BlockMeta:
    """The :class:`BlockMeta` of an existing block, from its ``meta.json``."""
    directory = Path(directory)
    fields = json.loads((directory / META_FILE).read_text())
    version = fields.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"block {directory}: {META_FILE} has format_version {version!r}; "
            f"this otel-audio reads versions 1..{FORMAT_VERSION}"
        )
    return BlockMeta(
        path=directory,
        tier=fields["tier"],
        min_time_ns=fields["min_time_ns"],
        max_time_ns=fields["max_time_ns"],
        rows=fields["rows"],
        series=fields["series"],
        bytes=fields["bytes"],
    )


def decode_points(stored: pa.Table) -> pa.Table:
    """``POINTS_SCHEMA`` rows from ``points.parquet`` rows (whole row groups, in file order).

    Columns missing from ``stored`` (not read) come back null.
    """
    present = set(stored.column_names)
    rows = stored.num_rows
    columns = []
    for field in POINTS_SCHEMA:
        if field.name == "value" and present.issuperset(_CODEC_COLUMNS):
            columns.append(value_codec.decode(*(stored.column(n).combine_chunks() for n in _CODEC_COLUMNS)))
        elif field.name in present:
            columns.append(stored.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(rows, field.type))
    return pa.Table.from_arrays(columns, schema=POINTS_SCHEMA)


def _write_points(path: Path, points: pa.Table, compression_level: int) -> None:
    series_ids = points.column("series_id").to_numpy()
    series_starts = np.flatnonzero(np.r_[True, series_ids[1:] != series_ids[:-1]])
    metric_bits = series_ids >> np.uint64(48)  # processors.base.series_id: the metric's bits lead
    metric_starts = np.flatnonzero(np.r_[True, metric_bits[1:] != metric_bits[:-1]])
    groups = _row_group_starts(series_starts, points.num_rows, metric_starts)
    codec = value_codec.encode(
        points.column("value").combine_chunks(),
        series_starts,
        times=points.column("time_unix_nano").to_numpy(),
        restarts=groups,
    )
    columns = {
        name: codec[name] if name in codec else _one_chunk(points.column(name))
        for name in POINTS_FILE_SCHEMA.names
    }
    options = {**_writer_options(columns), "compression_level": compression_level}
    with pq.ParquetWriter(path, POINTS_FILE_SCHEMA, **options) as writer:
        for first, end in zip(groups, [*groups[1:], points.num_rows], strict=True):
            local_starts = series_starts[(series_starts > first) & (series_starts < end)] - first
            value_cuts = _page_cuts(local_starts, end - first)
            other_cuts = list(range(PAGE_ROWS, end - first, PAGE_ROWS))
            arrays = [
                _chunked(
                    columns[name].slice(first, end - first),
                    value_cuts if name in _VALUE_COLUMNS else other_cuts,
                )
                for name in POINTS_FILE_SCHEMA.names
            ]
            writer.write_table(
                pa.Table.from_arrays(arrays, schema=POINTS_FILE_SCHEMA), row_group_size=end - first
            )


def _writer_options(columns: dict[str, pa.Array]) -> dict[str, object]:
    """_POINTS_WRITER, with columns that are all null in this block left PLAIN: a dictionary or
    delta encoder costs a few hundred bytes per row group even with no values to encode."""
    empty = {name for name, array in columns.items() if array.null_count == len(array)}
    options = dict(_POINTS_WRITER)
    options["use_dictionary"] = [n for n in _POINTS_WRITER["use_dictionary"] if n.split(".")[0] not in empty]
    options["column_encoding"] = {
        n: e for n, e in _POINTS_WRITER["column_encoding"].items() if n.split(".")[0] not in empty
    }
    return options


def _row_group_starts(
    series_starts: np.ndarray, rows: int, metric_starts: np.ndarray | None = None
) -> list[int]:
    """Row-group starts: at series starts, each group at least ROW_GROUP_ROWS unless it is the last;
    a series longer than that is split into ROW_GROUP_ROWS pieces. Where another metric's series
    begin (``metric_starts``, a subset of the series starts) a group already METRIC_GROUP_ROWS
    long ends, so a one-metric query skips the other metrics' groups by their series_id range."""
    metric_start = set() if metric_starts is None else set(metric_starts.tolist())
    starts = [0]
    for first, end in zip(series_starts, [*series_starts[1:], rows], strict=True):
        length = first - starts[-1]
        if length >= ROW_GROUP_ROWS or (length >= METRIC_GROUP_ROWS and int(first) in metric_start):
            starts.append(int(first))
        starts.extend(range(int(first) + ROW_GROUP_ROWS, int(end), ROW_GROUP_ROWS))
    return sorted(set(starts))


def _page_cuts(series_starts: np.ndarray, rows: int) -> list[int]:
    """Cut points of a row group's value pages: series boundaries, pages of PAGE_MIN_ROWS or more."""
    cuts: list[int] = []
    for start in series_starts.tolist():
        if start - (cuts[-1] if cuts else 0) >= PAGE_MIN_ROWS and rows - start >= PAGE_MIN_ROWS:
            cuts.append(start)
    return cuts


def _chunked(array: pa.Array, cuts: list[int]) -> pa.ChunkedArray:
    edges = [0, *cuts, len(array)]
    return pa.chunked_array([array.slice(a, b - a) for a, b in itertools.pairwise(edges)], array.type)


def _row_groups(metadata: pq.FileMetaData, ids: np.ndarray | None, start_ns: int | None, end_ns: int | None):
    """Row groups whose series_id and time statistics may hold rows of the query."""
    keep = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        sid, time = group.column(0).statistics, group.column(1).statistics
        if ids is not None and sid is not None and sid.has_min_max:
            first = np.searchsorted(ids, np.uint64(sid.min), side="left")
            if first == np.searchsorted(ids, np.uint64(sid.max), side="right"):
                continue
        if time is not None and time.has_min_max:
            if (start_ns is not None and time.max < start_ns) or (end_ns is not None and time.min >= end_ns):
                continue
        keep.append(index)
    return keep


def _filter_rows(
    table: pa.Table, ids: np.ndarray | None, start_ns: int | None, end_ns: int | None
) -> pa.Table:
    """Rows of ``ids`` with ``start_ns <= time < end_ns``; None places no condition."""
    keep = np.ones(table.num_rows, dtype=bool)
    if ids is not None:
        keep &= np.isin(table.column("series_id").to_numpy(), ids)
    times = table.column("time_unix_nano").to_numpy()
    if start_ns is not None:
        keep &= times >= start_ns
    if end_ns is not None:
        keep &= times < end_ns
    return table if keep.all() else table.filter(pa.array(keep))


def _block_series(directory: Path, series: pa.Table, points: pa.Table, exemplars: pa.Table) -> pa.Table:
    """The series rows the block needs, one per id, sorted; an error naming ids that lack one."""
    needed = pc.unique(
        pa.chunked_array([*points.column("series_id").chunks, *exemplars.column("series_id").chunks])
    )
    ids = series.column("series_id").to_numpy()
    last = len(ids) - 1 - np.unique(ids[::-1], return_index=True)[1]  # last row of each id
    series = series.take(pa.array(np.sort(last)))
    series = series.filter(pc.is_in(series.column("series_id"), needed))
    if series.num_rows != len(needed):
        missing = sorted(set(needed.to_pylist()) - set(series.column("series_id").to_pylist()))
        raise ValueError(
            f"block {directory}: series table lacks {len(missing)} series_id(s) that points or "
            f"exemplars use, e.g. {missing[:3]}; pass one SERIES_SCHEMA row per series"
        )
    return series.take(pc.sort_indices(series, [("series_id", "ascending")]))


def _sorted(table: pa.Table) -> pa.Table:
    """Rows by series_id then time, in a stable order; columns that are all null are not copied."""
    order = np.lexsort((table.column("time_unix_nano").to_numpy(), table.column("series_id").to_numpy()))
    indices = None if np.all(order[1:] > order[:-1]) else pa.array(order)
    columns = []
    for col in table.columns:
        if col.null_count == len(col):
            columns.append(pa.nulls(table.num_rows, col.type))
        else:  # one contiguous array first: take over many small chunks is several times slower
            whole = col.combine_chunks()
            columns.append(whole if indices is None else whole.take(indices))
    return pa.Table.from_arrays(columns, schema=table.schema)


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return pa.nulls(len(column), column.type) if column.null_count == len(column) else column.combine_chunks()


def _conform(what: str, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in exactly ``schema`` (column order, types); an error naming what differs."""
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {missing}; expected {schema.names}")
    try:
        return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ValueError(f"{what} table does not cast to its schema: {error}") from error


def _meta_text(fields: dict[str, object], data_bytes: int) -> str:
    """meta.json whose ``bytes`` counts the data files and meta.json itself."""
    total = data_bytes
    while True:
        text = json.dumps({**fields, "bytes": total}, indent=1) + "\n"
        if data_bytes + len(text.encode()) == total:
            return text
        total = data_bytes + len(text.encode())
