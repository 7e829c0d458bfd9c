"""Compaction: merge the small blocks of a finished day partition into one block.

The receiver flushes its head into small blocks (every couple of hours). Each block pays fixed
costs (Parquet footers, the series table, value chains restarted per block), so 2-hour metric
blocks cost about 1.08 bytes per sample where one block per day costs about 0.86. Once a day
partition (``<root>/blocks/<tier>/<YYYY-MM-DD>/``, see :mod:`~otel_audio.store.retention`) can no
longer receive data, its blocks are merged into one:

- :func:`compact_metric_partition`: metric block directories (:mod:`~otel_audio.store.blocks`);
- :func:`compact_span_partition`, :func:`compact_log_partition`: span and log block files
  (:mod:`~otel_audio.store.trace_blocks`), each kind on its own;
- :func:`partitions_to_compact`: which partitions are due, from ``now``.

Rollup files (1-minute and 1-hour rows) are merged by
:func:`~otel_audio.store.rollup_blocks.compact_rollup_partition`; here they only count for
:func:`partitions_to_compact`, and the span and log functions leave them alone.

**Duplicates.** Replaying the write-ahead log after a crash can flush a point twice, and a crash
during compaction leaves the merged block next to its sources (below). Compaction drops them:

- metric points that are equal in *every* column (series, times, value bit for bit, histogram
  buckets, flags...) are one point; two points of a series at the same time that differ in any
  column are both kept, as the block format keeps them (a repeated time is a codec exception);
- exemplars and log records: rows equal in every column;
- series rows: one per ``series_id``, the first seen (sources in name order); spans: one per
  ``(trace_id, span_id)``, the first seen.

**Crash safety.** The merged block is written atomically and durably (fsynced) under a new name
before any source is touched; then every source is renamed to ``<name>.tmp`` (one atomic step
each: a name the block format already reserves for garbage) and only then deleted. So at every
moment each point is readable from the complete blocks of the partition, possibly twice; a crash
between the two steps leaves duplicates that the next compaction of the partition removes.
Leftover ``*.tmp`` directories (metrics) and ``.*.tmp`` files (spans, logs) are deleted first.

The caller must not write into a partition while it is compacted: :func:`partitions_to_compact`
only names days that ended long enough ago that no flush goes there any more.

Example::

    for partition in partitions_to_compact(data_dir, now_ns):
        if partition.parent.name in ("raw", "1m", "1h"):
            compact_metric_partition(partition, tier=partition.parent.name)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import struct
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from otel_audio.processors.base import LOGS_SCHEMA, SPANS_SCHEMA
from otel_audio.store.blocks import (
    META_FILE,
    BlockMeta,
    open_block_meta,
    read_metric_block,
    write_metric_block,
)
from otel_audio.store.durable import fsync_path
from otel_audio.store.rollup_blocks import is_rollup_file
from otel_audio.store.runs import bounded_runs
from otel_audio.store.tiers import DAY_NS
from otel_audio.store.trace_blocks import (
    LogBlockMeta,
    SpanBlockMeta,
    read_block_meta,
    write_log_block,
    write_span_block,
)

# A day has ended and one more hour has passed: the head's last flush of the day is in.
DEFAULT_MIN_AGE_NS = DAY_NS + 3600 * 10**9
COMPACTED_PREFIX = "compacted-"  # names of merged blocks: compacted-<uuid hex>[.parquet]
# Points one metric merge holds in memory (~40-100 bytes each in Arrow): 20M is ~1-2 GB.
MAX_MERGED_ROWS = 20_000_000

_DAY_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = dt.date(1970, 1, 1)
_TMP = ".tmp"


# -- metrics ---------------------------------------------------------------------------------------


def compact_metric_partition(
    partition: Path, *, tier: str = "raw", max_rows: int = MAX_MERGED_ROWS
) -> BlockMeta | None:
    """Merge the metric blocks of ``partition`` into as few blocks as ``max_rows`` allows.

    Blocks are taken in name order (flush order) and merged in runs whose points add up to at
    most ``max_rows``, so the memory a merge needs stays bounded however much a day holds
    (a busy day becomes a few large blocks instead of one). Returns the meta of the last
    merged block, or None (changing nothing but ``*.tmp`` leftovers) when no run holds two
    blocks.

    Args:
        partition: a day partition directory, e.g. ``<root>/blocks/raw/2024-05-01``.
        tier: the tier every block of the partition was written with; the merged block gets it.
        max_rows: the most points one merge reads and writes.

    Raises:
        ValueError: a block of the partition was written with another tier.
    """
    partition = Path(partition)
    _remove_leftovers(partition, lambda p: p.is_dir() and not p.is_symlink() and p.name.endswith(_TMP))
    metas = [open_block_meta(source) for source in metric_blocks(partition)]
    for meta in metas:
        if meta.tier != tier:
            raise ValueError(
                f"block {meta.path} has tier {meta.tier!r} in its {META_FILE}; compacting {partition} "
                f"as tier {tier!r} would mix resolutions (pass the partition's tier)"
            )
    merged = None
    for run in bounded_runs(metas, max_rows):
        merged = _merge_blocks(partition, [meta.path for meta in run], tier)
    return merged


def _merge_blocks(partition: Path, sources: list[Path], tier: str) -> BlockMeta:
    parts = [read_metric_block(source) for source in sources]
    points, series, exemplars = (pa.concat_tables([part[i] for part in parts]) for i in range(3))
    points = points.take(_first_rows(points, points.column_names))
    exemplars = exemplars.take(_first_rows(exemplars, exemplars.column_names))
    series = series.take(_first_rows(series, ["series_id"]))
    merged = write_metric_block(_new_name(partition, ""), points, series, exemplars, tier=tier)
    _retire(sources, shutil.rmtree)
    return merged


def metric_blocks(partition: Path) -> list[Path]:
    """The complete metric block directories of a partition, by name (no ``.tmp``, no dot names)."""
    return [
        entry
        for entry in _entries(partition)
        if entry.is_dir()
        and not entry.is_symlink()
        and not entry.name.endswith(_TMP)
        and (entry / META_FILE).is_file()
    ]


# -- spans and logs --------------------------------------------------------------------------------


def compact_span_partition(partition: Path) -> SpanBlockMeta | None:
    """Merge every span block file of ``partition`` into one; one span per (trace_id, span_id).

    Log block files in the same directory are left alone. Returns None when there are fewer than
    two span blocks.
    """
    return _compact_files(Path(partition), "spans", SpanBlockMeta, SPANS_SCHEMA, ["trace_id", "span_id"])


def compact_log_partition(partition: Path) -> LogBlockMeta | None:
    """Merge every log block file of ``partition`` into one; records equal in every column are one.

    Span block files in the same directory are left alone. Returns None when there are fewer than
    two log blocks.
    """
    return _compact_files(Path(partition), "logs", LogBlockMeta, LOGS_SCHEMA, LOGS_SCHEMA.names)


def trace_block_files(partition: Path, kind: str) -> list[Path]:
    """The span (``kind="spans"``) or log (``"logs"``) block files of a partition, by name."""
    wanted = {"spans": SpanBlockMeta, "logs": LogBlockMeta}[kind]
    return [path for path in _parquet_files(partition) if _file_kind(path) is wanted]


def _compact_files(partition: Path, kind: str, meta_type: type, schema: pa.Schema, key: list[str]):
    _remove_leftovers(partition, lambda p: p.is_file() and p.name.startswith(".") and p.name.endswith(_TMP))
    metas = [read_block_meta(path) for path in trace_block_files(partition, kind)]
    merged = None
    for run in bounded_runs(metas, MAX_MERGED_ROWS):
        sources = [meta.path for meta in run]
        rows = pa.concat_tables(
            [
                pq.read_table(path).replace_schema_metadata(None).select(schema.names).cast(schema)
                for path in sources
            ]
        )
        rows = rows.take(_first_rows(rows, key))
        write = write_span_block if meta_type is SpanBlockMeta else write_log_block
        merged = write(_new_name(partition, ".parquet"), rows)
        _retire(sources, os.unlink)
    return merged


# -- which partitions ------------------------------------------------------------------------------


def partitions_to_compact(root: Path, now_ns: int, *, min_age_ns: int = DEFAULT_MIN_AGE_NS) -> list[Path]:
    """Day partitions under ``root/blocks/<tier>/`` that are due for compaction.

    A partition is due when its day (UTC) ended at least ``min_age_ns`` before ``now_ns``, i.e.
    ``next_midnight + min_age_ns <= now_ns``, and it holds more than one block of one kind
    (metric block directories, span block files, log block files or rollup files). The default, a day and an
    hour, leaves room for points that arrive late and for the head's last flush of the day: the
    block manager must never write into a partition that old, and must not compact a partition
    it is writing into.

    Returns:
        The due partitions, by tier directory name, then oldest day first.
    """
    base = Path(root) / "blocks"
    if not base.is_dir():
        return []
    due = []
    for tier_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
        for partition in sorted(tier_dir.iterdir()):
            day = _day(partition)
            if day is None or ((day - _EPOCH).days + 1) * DAY_NS + min_age_ns > now_ns:
                continue
            if _holds_several_blocks(partition):
                due.append(partition)
    return due


def _holds_several_blocks(partition: Path) -> bool:
    if len(metric_blocks(partition)) > 1:
        return True
    files = _parquet_files(partition)
    if len(files) < 2:  # spare the footer reads of a compacted partition
        return False
    kinds = [_file_kind(path) for path in files]
    return any(kinds.count(kind) > 1 for kind in (SpanBlockMeta, LogBlockMeta, "rollups"))


def _file_kind(path: Path) -> type | str:
    """SpanBlockMeta or LogBlockMeta for a span or log block, ``"rollups"`` for a rollup file."""
    return "rollups" if is_rollup_file(path) else type(read_block_meta(path))


def _day(partition: Path) -> dt.date | None:
    if not _DAY_NAME.fullmatch(partition.name) or partition.is_symlink() or not partition.is_dir():
        return None
    try:
        return dt.date.fromisoformat(partition.name)
    except ValueError:  # 2024-02-30 and the like: not a partition
        return None


# -- shared ----------------------------------------------------------------------------------------


def _entries(partition: Path) -> list[Path]:
    """Entries of a partition that may be blocks: sorted by name, hidden names left out."""
    return sorted(p for p in partition.iterdir() if not p.name.startswith("."))


def _parquet_files(partition: Path) -> list[Path]:
    return [
        p for p in _entries(partition) if p.name.endswith(".parquet") and p.is_file() and not p.is_symlink()
    ]


def _remove_leftovers(partition: Path, is_leftover: Callable[[Path], bool]) -> None:
    for entry in sorted(partition.iterdir()):
        if not is_leftover(entry):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _new_name(partition: Path, suffix: str) -> Path:
    return partition / f"{COMPACTED_PREFIX}{uuid.uuid4().hex}{suffix}"


def _retire(sources: Sequence[Path], delete: Callable[[Path], object]) -> None:
    """Take the sources out of the partition: rename each to ``<name>.tmp`` (atomic), make the
    renames durable, then delete them. A crash in between leaves only ``.tmp`` garbage behind."""
    doomed = []
    for source in sources:
        target = source.with_name(("." if source.is_file() else "") + source.name + _TMP)
        os.rename(source, target)
        doomed.append(target)
    fsync_path(sources[0].parent)
    for path in doomed:
        delete(path)


def _first_rows(table: pa.Table, columns: Sequence[str]) -> pa.Array:
    """Indices (ascending) of the first row of each set of rows equal in ``columns``.

    Floats compare bit for bit (NaN equals the same NaN, -0.0 differs from 0.0); nulls equal nulls.
    List columns are compared only among rows that are already equal in every other column.
    """
    scalar = [c for c in columns if not pa.types.is_list(table.schema.field(c).type)]
    lists = [c for c in columns if c not in scalar]
    group = _group_ids([key for c in scalar for key in _scalar_keys(table.column(c))], table.num_rows)
    if lists:
        shared = np.flatnonzero(np.bincount(group)[group] > 1)
        codes = [_list_codes(table.column(c), shared) for c in lists]
        group = _group_ids([group, *codes], table.num_rows)
    first = np.full(int(group.max(initial=-1)) + 1, table.num_rows)
    np.minimum.at(first, group, np.arange(table.num_rows))
    return pa.array(np.sort(first))


def _group_ids(keys: list[np.ndarray], rows: int) -> np.ndarray:
    """A group number per row, equal for rows equal in every key."""
    if not keys or rows == 0:
        return np.zeros(rows, dtype=np.int64)
    order = np.lexsort(keys)
    differs = np.zeros(rows, dtype=bool)
    for key in keys:
        ordered = key[order]
        differs[1:] |= ordered[1:] != ordered[:-1]
    group = np.empty(rows, dtype=np.int64)
    group[order] = np.cumsum(differs)
    return group


def _scalar_keys(column: pa.ChunkedArray) -> list[np.ndarray]:
    """int64 arrays that are equal where the column's values are (a column of nulls needs none)."""
    array = column.combine_chunks()
    if array.null_count == len(array):
        return []
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return [pc.dictionary_encode(array).indices.fill_null(-1).to_numpy().astype(np.int64)]
    valid = array.is_valid().to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_floating(kind):
        values = array.cast(pa.float64()).fill_null(0.0).to_numpy().view(np.int64)
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        values = array.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        raise TypeError(f"cannot compare column of type {kind} for duplicates")
    return [valid, values] if array.null_count else [values]


def _list_codes(column: pa.ChunkedArray, rows: np.ndarray) -> np.ndarray:
    """A code per row, equal where the lists are equal; computed for ``rows`` only (others 0)."""
    codes = np.zeros(len(column), dtype=np.int64)
    if column.null_count == len(column) or len(rows) == 0:
        return codes
    seen: dict[Any, int] = {}
    for row, value in zip(rows.tolist(), column.take(pa.array(rows)).to_pylist(), strict=True):
        key = None if value is None else tuple(_bits(x) for x in value)
        codes[row] = seen.setdefault(key, len(seen) + 1)
    return codes


def _bits(value: Any) -> Any:
    return struct.pack("<d", value) if isinstance(value, float) else value
