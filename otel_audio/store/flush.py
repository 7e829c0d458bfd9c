"""One flush: the head's rows of a cut become day-partitioned blocks, rollups and index files.

:func:`write_flush` writes every file of flush ``seq`` (names in :mod:`~otel_audio.store.catalog`)
and returns their catalog entries; the caller commits the flush by writing the checkpoint
afterwards. Rows are split by UTC day of their time (points, exemplars and logs: their time;
spans: their start), so retention can drop whole days; a flush that crosses midnight writes two
blocks of each kind.

Rollups: the cut's points are rolled up into 1-minute rows (with the carry of the previous flush,
so counter increases across the flush boundary are right) and those into 1-hour rows. A window
cut in two by consecutive flushes has a row in each; readers merge them
(:func:`~otel_audio.store.rollup.merge_rollups`).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from otel_audio.processors.base import (
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    LogBatch,
    MetricBatch,
    SpanBatch,
)
from otel_audio.store.batch_codec import decode_batch
from otel_audio.store.blocks import FLUSH_ZSTD_LEVEL, write_metric_block
from otel_audio.store.catalog import Entry, index_dir
from otel_audio.store.durable import fsync_path
from otel_audio.store.memory import SCHEMAS, Snapshot
from otel_audio.store.retention import partition_dir
from otel_audio.store.rollup import HOUR_NS, MINUTE_NS, Carry, rollup, rollup_rollups
from otel_audio.store.rollup_blocks import write_rollup_block
from otel_audio.store.tiers import DAY_NS
from otel_audio.store.trace_blocks import write_log_block, write_span_block
from otel_audio.store.wal_format import read_range


def write_flush(
    root: Path, name: str, cut: Snapshot, new_series: pa.Table, carry_path: Path | None
) -> list[Entry]:
    """Write the blocks of one cut of the head; return their entries.

    Args:
        root: the data directory.
        name: the flush's name prefix (``catalog.flush_name(seq)``).
        cut: what the head held (``cut.series`` is the whole series dictionary).
        new_series: series rows first seen since the previous flush (``index/series``).
        carry_path: the previous flush's rollup carry (``index/carry``), None for the first.
    """
    root = Path(root)
    carry = load_carry(carry_path)
    entries: list[Entry] = []
    points, exemplars = cut.points, cut.exemplars
    by_day = _days(points, "time_unix_nano")
    exemplar_days = _days(exemplars, "time_unix_nano")
    for i, (day, rows) in enumerate(by_day.items()):
        day_exemplars = exemplar_days.pop(day, exemplars.schema.empty_table())
        if i == len(by_day) - 1 and exemplar_days:  # exemplars of days without points: keep them
            day_exemplars = pa.concat_tables([day_exemplars, *exemplar_days.values()])
        path = partition_dir(root, "raw", day) / name
        meta = write_metric_block(
            path, rows, cut.series, day_exemplars, tier="raw", compression_level=FLUSH_ZSTD_LEVEL
        )
        entries.append(Entry("metrics", "raw", path, meta.min_time_ns, meta.max_time_ns))

    for day, rows in _days(cut.spans, "start_time_unix_nano").items():
        span_meta = write_span_block(_file(root, "raw", day, f"{name}-spans.parquet"), rows)
        entries.append(Entry("spans", "raw", span_meta.path, span_meta.min_start_ns, span_meta.max_end_ns))
    for day, rows in _days(cut.logs, "time_unix_nano").items():
        log_meta = write_log_block(_file(root, "raw", day, f"{name}-logs.parquet"), rows)
        entries.append(Entry("logs", "raw", log_meta.path, log_meta.min_time_ns, log_meta.max_time_ns))

    minute, carry = rollup(points, cut.series, MINUTE_NS, carry)
    if minute.num_rows:
        hour = rollup_rollups(minute, HOUR_NS)
        for tier, rows_of_tier, window in (("1m", minute, MINUTE_NS), ("1h", hour, HOUR_NS)):
            for day, rows in _days(rows_of_tier, "window_start_ns").items():
                meta = write_rollup_block(_file(root, tier, day, f"{name}.parquet"), rows, tier=tier)
                end = meta.max_window_start_ns + window - 1
                entries.append(Entry("rollups", tier, meta.path, meta.min_window_start_ns, end))

    if new_series.num_rows:
        write_index_file(root, "series", name, new_series)
    write_index_file(root, "carry", name, carry.points)
    return entries


def flush_wal_range(
    root: Path,
    name: str,
    wal_dir: Path,
    lsns: tuple[int, int],
    extras: list[Batch],
    new_series: pa.Table,
    carry_path: Path | None,
) -> list[Entry]:
    """:func:`write_flush` of a cut rebuilt from the write-ahead log, in the flush process.

    The head holds exactly the log's records ``lsns[0]..lsns[1]`` plus ``extras`` (batches that
    did not come through the log, e.g. self-monitoring), so the flush process reads them from
    the log's files instead of being sent the rows: the receiver's process spends nothing on
    writing blocks, and the second core does it.
    """
    parts: dict[str, list[pa.Table]] = {kind: [] for kind in ("points", "exemplars", "spans", "logs")}
    batches = (decode_batch(kind, payload) for _, kind, payload in read_range(wal_dir, *lsns))
    for batch in itertools.chain(batches, extras):
        if isinstance(batch, MetricBatch):
            parts["points"].append(batch.points)
            parts["exemplars"].append(batch.exemplars)
        elif isinstance(batch, SpanBatch):
            parts["spans"].append(batch.spans)
        elif isinstance(batch, LogBatch):
            parts["logs"].append(batch.logs)
    tables = {
        kind: pa.concat_tables([SCHEMAS[kind].empty_table(), *(t.cast(SCHEMAS[kind]) for t in found)])
        for kind, found in parts.items()
    }
    series = pa.concat_tables([load_series(root), new_series.cast(SERIES_SCHEMA)])
    return write_flush(root, name, Snapshot(series=series, **tables), new_series, carry_path)


def load_series(root: Path) -> pa.Table:
    """The series dictionary of every committed flush (``index/series``)."""
    files = index_files(root, "series")
    if not files:
        return SERIES_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p).select(SERIES_SCHEMA.names).cast(SERIES_SCHEMA) for p in files])


def load_carry(path: Path | None) -> Carry:
    """The rollup carry a flush wrote (``index/carry``); empty for None."""
    if path is None:
        return Carry.empty()
    return Carry(pq.read_table(path).select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA))


def write_index_file(root: Path, kind: str, name: str, table: pa.Table) -> Path:
    """Write ``index/<kind>/<name>.parquet`` atomically and durably."""
    directory = index_dir(root) / kind
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.parquet"
    tmp = directory / f".{name}.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd")
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(directory)
    return path


def index_files(root: Path, kind: str) -> list[Path]:
    """The complete ``index/<kind>`` files, oldest flush first."""
    directory = index_dir(root) / kind
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.endswith(".parquet") and not p.name.startswith(".")
    )


def _file(root: Path, tier: str, day_ns: int, filename: str) -> Path:
    directory = partition_dir(root, tier, day_ns)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / filename


def _days(table: pa.Table, column: str) -> dict[int, pa.Table]:
    """Rows by UTC day (the day's first nanosecond), oldest first."""
    if table.num_rows == 0:
        return {}
    day = table.column(column).to_numpy() // DAY_NS
    first, last = int(day.min()), int(day.max())
    if first == last:
        return {first * DAY_NS: table}
    return {int(d) * DAY_NS: table.filter(pa.array(day == d)) for d in np.unique(day)}
