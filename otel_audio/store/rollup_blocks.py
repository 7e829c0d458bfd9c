"""Rollup files: the on-disk form of the 1-minute and 1-hour tiers' rollup rows.

A rollup file is one plain Parquet file of ``ROLLUP_SCHEMA`` rows (:mod:`~otel_audio.store.rollup`)
of one tier, in the tier's day partition ``<root>/blocks/<tier>/<YYYY-MM-DD>/``
(:func:`~otel_audio.store.retention.partition_dir`), stored as :data:`ROLLUP_FILE_SCHEMA`. Layout:

- rows sorted by ``series_id`` then ``window_start_ns`` (recorded as the file's
  ``sorting_columns``): a series' windows are adjacent and each row group covers a narrow range of
  series, so min/max statistics on those two columns let :func:`read_rollups` skip the row groups
  that cannot hold the asked series or times;
- row groups of :data:`ROLLUP_ROW_GROUP_ROWS` rows, zstd level :data:`ZSTD_LEVEL`;
- the file's :class:`RollupBlockMeta` as JSON under the key-value metadata key
  ``otel_audio.rollups`` (kind ``"rollups"``, format, tier, window, window-start range, rows), so
  a file is self-describing and is told apart from span and log blocks (``otel_audio.block``).

**Float columns as decimal integers** (format 2). The float columns (``sum``, ``min``, ``max``,
``last``, ``increase``, ``sum_increase``, ``hist_min``, ``hist_max``) are most of a row and are
mostly decimals in disguise, as raw values are. Each is stored as the columns of
:mod:`~otel_audio.store.value_codec` (``<name>_scale``, ``_int``, ``_delta``, ``_float``), chains
restarting at each series and row group, with two additions of that module:

- *residuals* for ``sum``, ``increase`` and ``sum_increase``: a sum of decimals is often a few
  ulps off a decimal (``0.1 + 0.2``); it is stored as the decimal's integer plus
  ``<name>_residual``, the exact difference, instead of as a float exception (23 % of the sums);
- *bases*: ``max`` and ``min`` store their integer minus that of ``last`` (a counter's max is its
  last: 0), ``sum`` minus that of ``min + max + last`` (``last`` for one point, ``min + max`` for
  two), ``sum_increase`` and a sum's ``increase`` minus the step of ``last`` (a counter's
  increase is that step: 0). ``min`` and ``max`` are always raw differences, never deltas.

:func:`decode_rollups` turns the stored columns back into ``ROLLUP_SCHEMA`` rows bit for bit
(NaN, infinities, -0.0 and nulls included); ``docs/storage-format.md`` ("Rollup files") has the
layout and a DuckDB view that decodes it. Format 1 files (the ``ROLLUP_SCHEMA`` columns as they
are) are still read, and compaction rewrites them in format 2.

**By measurement.** One day and a half of the synthetic set (100 series x 20,000 points at 10 s,
``benchmarks/synth_metrics.py``; the counter series as a monotonic cumulative sum) rolled up into
333,400 one-minute rows (one file), bytes per row:

=================================================================  ======  =====
layout                                                              1m      1h
=================================================================  ======  =====
format 1: float columns PLAIN, zstd 15                              7.89    11.30
value_codec columns, ints and floats BYTE_STREAM_SPLIT, zstd 15     5.48    8.84
  the same with PLAIN / DELTA_BINARY_PACKED ints                    6.81 / 5.72
+ residuals of sums                                                 4.80    7.97
+ bases of min, max, sum (differences zigzag-encoded)               4.33    7.82
+ bases of increase, sum_increase                                   4.15    7.53
+ min, max always raw, residuals BYTE_STREAM_SPLIT, zstd 19          4.06    7.38
  the same with row groups of 131,072 rows                          4.01
=================================================================  ======  =====

``benchmarks/storage.py``, which writes one file per tier and UTC day, gives 3.94 bytes per
1-minute row (format 1: 8.24) and 12.2 per 1-hour row (14.9; a day of 1-hour rows is small and
pays the footer of 47 columns). The remaining bytes are near the entropy of the data: per row,
a 1-decimal lognormal latency costs 6.2 bytes, a counter 2.8, a random walk 2.7. Kept: 65,536
rows per row group (a one-series read decodes one group). Level 19 writes 333,400 rows in
0.7 s on a 2-core machine, half the time format 1 took at level 15 (fewer bytes to compress).
Reading costs the decoding: all 333,400 rows 48 -> 110 ms, one series of them 6.4 -> 9.5 ms
(:func:`read_rollups` decodes only the asked series of a row group; a series keeps its chains).

Other choices: ``DELTA_BINARY_PACKED`` for the four time columns (regular windows and scrapes
give near-constant deltas; as offsets from the window start they would save under 0.02 bytes);
dictionary encoding for ``series_id`` (long runs after sorting), ``window_ns``, ``count``,
``mixed_bounds``, ``exp_scale`` and the scales; columns that are all null stay PLAIN. List
columns stay PLAIN (pyarrow 26 loses rows of DELTA_BINARY_PACKED list columns in tiny row
groups, see :mod:`~otel_audio.store.blocks`). Statistics are written only for ``series_id`` and
``window_start_ns``, the columns readers prune by.

**Writes** are atomic and durable as for span blocks: ``.<name>.<uuid>.tmp`` in the same
directory, fsync, rename, fsync of the directory. A crash leaves the whole file or none (and at
most a ``.*.tmp`` file, which :func:`compact_rollup_partition` deletes and readers never list).

**Compaction.** Every flush of the head writes a rollup file into its partition; once the day is
over (:func:`~otel_audio.store.compaction.partitions_to_compact` names it), :func:`compact_rollup_partition`
merges them into one, rows of one ``(series_id, window_start_ns)`` joined by
:func:`~otel_audio.store.rollup.merge_rollups` (two flushes can each hold part of a window). It is
crash-safe as :mod:`~otel_audio.store.compaction`: the merged file is written durably under a new
name first, then the sources are renamed to ``.<name>.tmp`` and deleted.

Merging is **not** idempotent: a row merged with itself doubles its count, sums and increases.
So no file may be handed in twice, and the crash that leaves the merged file next to its sources
must not make them count twice. The merged file therefore names its sources (metadata key
``replaces``): :func:`rollup_block_files` leaves out every file that another complete file of the
partition replaces, and the next :func:`compact_rollup_partition` deletes them. File names of a
partition must never be reused (flushes name files uniquely; merged files are
``compacted-<uuid>.parquet``).

Example::

    partition = partition_dir(root, "1m", t0)
    meta = write_rollup_block(partition / "000123.parquet", minute_rows, tier="1m")
    rows = read_rollups(rollup_block_files(partition), series_ids=[sid], start_ns=t0, end_ns=t1)
    merged = compact_rollup_partition(partition)   # once the day is over
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from otel_audio.store import value_codec
from otel_audio.store.durable import fsync_path
from otel_audio.store.rollup import HOUR_NS, MINUTE_NS, ROLLUP_SCHEMA, merge_rollups
from otel_audio.store.runs import bounded_runs
from otel_audio.store.trace_blocks import ReadStats

META_KEY = b"otel_audio.rollups"
KIND = "rollups"
FORMAT = "otel-audio/rollups/2"
FORMAT_V1 = "otel-audio/rollups/1"  # ROLLUP_SCHEMA columns as they are; still read
METRIC_GROUP_ROWS = 8192  # a row group this long ends where the next metric's series begin
ROLLUP_ROW_GROUP_ROWS = 65_536  # measured: 4.06 B/row, 4.01 at 131,072 (coarser pruning)
ZSTD_LEVEL = 19
COMPACTED_PREFIX = "compacted-"  # merged files: compacted-<uuid hex>.parquet, as compaction.py names them

# The rollup tiers of otel_audio.store.tiers (not imported: it imports the query engine, which reads
# these files); tests/test_store_rollup_blocks.py keeps the two equal.
TIER_WINDOWS = {"1m": MINUTE_NS, "1h": HOUR_NS}
_KEY = ("series_id", "window_start_ns")
_TIMES = ("window_start_ns", "first_time_ns", "last_time_ns", "last_start_time_ns")
_DICTIONARY = ("series_id", "window_ns", "count", "mixed_bounds", "exp_scale")
# The float columns, each stored as value_codec columns <name>_scale, _int, _delta, _float (and
# _residual): name -> (residuals, the columns whose integers are its base).
_FLOATS = {
    "last": (False, ()),
    "max": (False, ("last",)),
    "min": (False, ("last",)),
    "sum": (True, ("min", "max", "last")),
    "sum_increase": (True, ("last",)),
    "increase": (True, ("last", "sum_increase")),
    "hist_min": (False, ()),
    "hist_max": (False, ()),
}
_BASES = ("last", "min", "max")  # the columns whose integers are bases of others
# Stored columns only histograms fill (and their min/max fields): left unread for gauges and sums.
_HISTOGRAM_PREFIXES = ("bounds", "bucket_counts", "mixed_bounds", "exp_", "hist_min", "hist_max")
_TMP = ".tmp"
_PARTS = ("scale", "int", "delta", "float")
_PART_TYPES = {
    "scale": pa.int8(),
    "int": pa.int64(),
    "delta": pa.bool_(),
    "float": pa.float64(),
    "residual": pa.float64(),
}


def _stored_parts(name: str) -> tuple[str, ...]:
    return (*_PARTS, "residual") if _FLOATS[name][0] else _PARTS


def _file_fields(field: pa.Field) -> list[pa.Field]:
    if field.name not in _FLOATS:
        return [field]
    return [pa.field(f"{field.name}_{part}", _PART_TYPES[part]) for part in _stored_parts(field.name)]


# The columns of a version-2 file: ROLLUP_SCHEMA with each float column replaced by its codec columns.
ROLLUP_FILE_SCHEMA = pa.schema([f for field in ROLLUP_SCHEMA for f in _file_fields(field)])


@dataclass(frozen=True)
class RollupBlockMeta:
    """What a rollup file holds; all but ``path`` and ``bytes`` are stored in the file's metadata.

    Args:
        path: the file.
        tier: tier name (``1m``, ``1h``).
        window_ns: the window of every row (the tier's).
        min_window_start_ns: first and last window start, inclusive.
        max_window_start_ns:
        rows: rollup rows.
        bytes: size of the file.
        replaces: names of the files of the partition whose rows this (merged) file holds.
    """

    path: Path
    tier: str
    window_ns: int
    min_window_start_ns: int
    max_window_start_ns: int
    rows: int
    bytes: int
    replaces: tuple[str, ...] = ()


# -- writing ---------------------------------------------------------------------------------------


def write_rollup_block(
    path: Path, rows: pa.Table, *, tier: str, row_group_rows: int = ROLLUP_ROW_GROUP_ROWS
) -> RollupBlockMeta:
    """Write ``rows`` (``ROLLUP_SCHEMA`` columns, any order) as one sorted rollup file, atomically.

    Args:
        path: the new file, named ``*.parquet``; it must not exist.
        rows: rollup rows of the tier, at least one; every row's ``window_ns`` is the tier's.
        tier: ``1m`` or ``1h`` (:data:`TIER_WINDOWS`).
        row_group_rows: the most rows in one row group; a group at least
            :data:`METRIC_GROUP_ROWS` long also ends where another metric's series begin (the
            top 16 bits of ``series_id`` name the metric), so one-metric reads skip the rest.

    Raises:
        ValueError: empty table, missing columns, a name not ending in ``.parquet``, an unknown
            tier or rows of another window.
        FileExistsError: ``path`` exists (files are immutable; write under a new name).
    """
    return _write(Path(path), rows, tier, row_group_rows, ())


def _write(
    path: Path, rows: pa.Table, tier: str, row_group_rows: int, replaces: tuple[str, ...]
) -> RollupBlockMeta:
    if not path.name.endswith(".parquet") or path.name.startswith("."):
        raise ValueError(f"rollup file name must end in .parquet and not start with '.': got {path.name!r}")
    window_ns = _tier_window(tier)
    table = _conform(rows)
    widths = pc.unique(table["window_ns"]).to_pylist()
    if widths != [window_ns]:
        other = next(w for w in widths if w != window_ns)
        raise ValueError(
            f"rows with window_ns={other} cannot go into a {tier!r} rollup file: every row's "
            f"window_ns must be {window_ns} (roll them up with rollup_rollups first)"
        )
    if path.exists():
        raise FileExistsError(f"{path} exists: rollup files are immutable, write under a new name")
    table = table.sort_by([(c, "ascending") for c in _KEY])
    starts = pc.min_max(table["window_start_ns"])
    fields: dict[str, Any] = {
        "tier": tier,
        "window_ns": window_ns,
        "min_window_start_ns": starts["min"].as_py(),
        "max_window_start_ns": starts["max"].as_py(),
        "rows": table.num_rows,
    }
    if replaces:
        fields["replaces"] = list(replaces)
    _write_atomic(path, table, fields, row_group_rows)
    return _meta_of(path, fields)


def _meta_of(path: Path, fields: dict[str, Any]) -> RollupBlockMeta:
    replaces = tuple(fields.pop("replaces", ()))
    return RollupBlockMeta(path, bytes=os.stat(path).st_size, replaces=replaces, **fields)


def _tier_window(tier: str) -> int:
    if tier not in TIER_WINDOWS:
        raise ValueError(
            f"rollup files belong to a rollup tier, one of {list(TIER_WINDOWS)}; got tier {tier!r}"
        )
    return TIER_WINDOWS[tier]


def _conform(rows: pa.Table) -> pa.Table:
    missing = [name for name in ROLLUP_SCHEMA.names if name not in rows.column_names]
    if missing:
        raise ValueError(
            f"rollup table lacks column(s) {', '.join(missing)}; expected ROLLUP_SCHEMA {ROLLUP_SCHEMA.names}"
        )
    if rows.num_rows == 0:
        raise ValueError("a rollup file needs at least one row; write no file for an empty flush")
    return rows.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA).combine_chunks()


def _write_atomic(path: Path, rows: pa.Table, fields: dict[str, Any], row_group_rows: int) -> None:
    meta = json.dumps({"kind": KIND, "format": FORMAT, **fields}).encode()
    starts = group_starts(rows.column("series_id").to_numpy(), row_group_rows)
    table = encode_rollups(rows, starts)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}{_TMP}"
    try:
        with pq.ParquetWriter(
            tmp,
            table.schema,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            store_schema=False,  # the Parquet logical types say it all; ~1 KB less per file
            **_encodings(table),
        ) as writer:
            for first, end in zip(starts, [*starts[1:], table.num_rows], strict=True):
                writer.write_table(table.slice(first, end - first), row_group_size=end - first)
            writer.add_key_value_metadata({META_KEY: meta})  # without store_schema, not taken from the schema
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def _encodings(table: pa.Table) -> dict[str, Any]:
    """Writer options by column; all-null columns stay PLAIN (an encoder costs bytes even empty)."""
    empty = {
        c
        for c, column in zip(table.column_names, table.columns, strict=True)
        if column.null_count == len(column)
    }
    dictionary = [*_DICTIONARY, *(f"{name}_scale" for name in _FLOATS)]
    encoding = dict.fromkeys(_TIMES, "DELTA_BINARY_PACKED")
    for name in _FLOATS:
        for part in _stored_parts(name)[1:]:
            if part != "delta":
                encoding[f"{name}_{part}"] = "BYTE_STREAM_SPLIT"
    return {
        "use_dictionary": [c for c in dictionary if c not in empty],
        "column_encoding": {c: e for c, e in encoding.items() if c not in empty},
        "write_statistics": list(_KEY),
        "sorting_columns": [pq.SortingColumn(ROLLUP_FILE_SCHEMA.get_field_index(c)) for c in _KEY],
    }


def group_starts(series_ids: np.ndarray, row_group_rows: int = ROLLUP_ROW_GROUP_ROWS) -> list[int]:
    """Row-group starts of sorted rows: every ``row_group_rows`` rows at most, and where another
    metric begins once the group holds :data:`METRIC_GROUP_ROWS`."""
    metric = series_ids >> np.uint64(48)
    metric_starts = np.flatnonzero(np.r_[False, metric[1:] != metric[:-1]]).tolist()
    starts = [0]
    for cut in [*metric_starts, len(series_ids)]:
        while cut - starts[-1] > row_group_rows:
            starts.append(starts[-1] + row_group_rows)
        if cut < len(series_ids) and cut - starts[-1] >= METRIC_GROUP_ROWS:
            starts.append(cut)
    return starts


def encode_rollups(rows: pa.Table, starts: Sequence[int] | None = None) -> pa.Table:
    """``ROLLUP_FILE_SCHEMA`` columns of ``ROLLUP_SCHEMA`` rows sorted by series and window start,
    chains restarting at each row group of the file (``starts``; default :func:`group_starts`)."""
    sid = rows.column("series_id").to_numpy()
    series_starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    times = rows.column("window_start_ns").to_numpy()
    restarts = np.asarray(group_starts(sid) if starts is None else starts, dtype=np.int64)
    stored: dict[str, pa.Array] = {"count": rows.column("count").combine_chunks()}
    integers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (residuals, _) in _FLOATS.items():
        base = _base(name, stored, integers)
        coded = value_codec.encode(
            rows.column(name).combine_chunks(),
            series_starts,
            times,
            restarts,
            residuals=residuals,
            base=base,
            deltas=name not in ("min", "max"),  # measured: raw differences from last are smaller
        )
        for part in _stored_parts(name):
            stored[f"{name}_{part}"] = coded[f"value_{part}"]
        if name in _BASES:
            integers[name] = value_codec.decode_integers(
                coded["value_scale"], coded["value_int"], coded["value_delta"], base
            )
    arrays = [stored[f.name] if f.name in stored else rows.column(f.name) for f in ROLLUP_FILE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=ROLLUP_FILE_SCHEMA)


def decode_rollups(stored: pa.Table) -> pa.Table:
    """``ROLLUP_SCHEMA`` rows from the rows of a version-2 file (whole row groups, in file order)."""
    columns = {name: stored.column(name).combine_chunks() for name in stored.column_names}
    integers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    values: dict[str, pa.Array] = {}
    for name in _FLOATS:
        if f"{name}_scale" not in columns:  # not read (histogram columns of a gauge query)
            values[name] = pa.nulls(len(stored), pa.float64())
            continue
        parts = [columns[f"{name}_{part}"] for part in _stored_parts(name)]
        base = _base(name, columns, integers)
        if name in _BASES:
            integers[name] = value_codec.decode_integers(*parts[:3], base)
        values[name] = value_codec.decode(*parts, base=base, integers=integers.get(name))
    arrays = [
        values[f.name] if f.name in values else columns.get(f.name, pa.nulls(len(stored), f.type))
        for f in ROLLUP_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=ROLLUP_SCHEMA)


def _base(
    name: str, stored: dict[str, pa.Array], integers: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The base (value_codec) of float column ``name``, from the columns stored before it.

    ``min``, ``max``: the integer of ``last``. ``sum``: that of ``last`` (one point), ``min + max``
    (two points: the sum itself) or ``min + max + last``, where the three share a scale.
    ``sum_increase``, and ``increase`` where ``sum_increase`` is null (sums, not histograms): the
    step of ``last`` from the row before, where ``last`` is stored as a delta. Scale -1: no base.
    """
    if name in ("min", "max"):
        return integers["last"]
    if name == "sum":
        count = stored["count"].fill_null(0).to_numpy(zero_copy_only=False)
        (min_scale, n_min), (max_scale, n_max), (last_scale, n_last) = (
            integers["min"],
            integers["max"],
            integers["last"],
        )
        same = (min_scale == max_scale) & (max_scale == last_scale)
        n = np.where(count == 1, n_last, np.where(count == 2, n_min + n_max, n_min + n_max + n_last))
        return np.where(same, last_scale, -1).astype(np.int8), n
    if name in ("sum_increase", "increase"):
        scale, _ = integers["last"]
        z = stored["last_int"].fill_null(0).to_numpy(zero_copy_only=False)
        step = (z >> 1) ^ -(z & 1)
        has = stored["last_delta"].fill_null(False).to_numpy(zero_copy_only=False)
        if name == "increase":  # histograms and summaries: increase counts, last is their sum
            has = has & ~stored["sum_increase_scale"].is_valid().to_numpy(zero_copy_only=False)
            has &= ~stored["sum_increase_float"].is_valid().to_numpy(zero_copy_only=False)
        return np.where(has, scale, -1).astype(np.int8), step
    return None


# -- reading ---------------------------------------------------------------------------------------


def read_rollup_meta(path: Path) -> RollupBlockMeta:
    """The metadata a rollup file was written with (``bytes`` from the file).

    Raises:
        ValueError: the file is no rollup file (e.g. a span or log block), or of a newer format.
    """
    return _meta(Path(path), pq.read_metadata(path))


def _meta(path: Path, md: pq.FileMetaData) -> RollupBlockMeta:
    fields = _fields(path, md)
    fields.pop("format")
    return _meta_of(path, fields)


def _fields(path: Path, md: pq.FileMetaData) -> dict[str, Any]:
    raw = (md.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(
            f"{path} is not an otel-audio rollup file (no {META_KEY.decode()} key-value metadata)"
        )
    fields = json.loads(raw)
    if fields.pop("kind", None) != KIND or fields.get("format") not in (FORMAT, FORMAT_V1):
        raise ValueError(
            f"{path} holds rollups of another format than {FORMAT!r} or {FORMAT_V1!r}: {raw.decode()}"
        )
    return fields


def _rows(path: Path, md: pq.FileMetaData, stored: pa.Table) -> pa.Table:
    """``ROLLUP_SCHEMA`` rows of whole row groups read from a file of either format; columns
    that were not read come back null."""
    if _fields(path, md)["format"] == FORMAT_V1:
        stored, names = stored.replace_schema_metadata(None), set(stored.column_names)
        arrays = [
            stored.column(f.name).cast(f.type) if f.name in names else pa.nulls(len(stored), f.type)
            for f in ROLLUP_SCHEMA
        ]
        return pa.Table.from_arrays(arrays, schema=ROLLUP_SCHEMA)
    return decode_rollups(stored)


def _stored_names(schema: pa.Schema, histograms: bool) -> list[str] | None:
    """The columns of a file to read; without histograms, none of their columns (None: all)."""
    if histograms:
        return None
    return [name for name in schema.names if not name.startswith(_HISTOGRAM_PREFIXES)]


def read_rollups(
    paths: Sequence[Path],
    *,
    series_ids: Sequence[int] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    stats: ReadStats | None = None,
    histograms: bool = True,
) -> pa.Table:
    """The ``ROLLUP_SCHEMA`` rows of ``paths`` of the given series with a window start in
    ``[start_ns, end_ns)``, sorted by series and window start; ``None`` places no condition.

    ``histograms=False`` (gauges, sums) leaves the histogram columns unread and null: most of
    a file's bytes when it also holds histogram series.

    Row groups whose ``series_id`` or ``window_start_ns`` statistics exclude the query are not
    read (``stats`` counts them). Rows are returned as stored: files not yet compacted may each
    hold part of one window, which :func:`~otel_audio.store.rollup.merge_rollups` joins.

    Raises:
        ValueError: a path that is no rollup file.
    """
    stats = stats if stats is not None else ReadStats()
    ids = None if series_ids is None else np.unique(np.asarray(series_ids, dtype=np.uint64))
    parts = []
    for path in paths:
        file = pq.ParquetFile(path)
        _meta(Path(path), file.metadata)
        stats.files += 1
        stats.row_groups += file.metadata.num_row_groups
        keep = [
            rg
            for rg in range(file.metadata.num_row_groups)
            if _may_hold(file.metadata, rg, ids, start_ns, end_ns)
        ]
        stats.pruned_by_stats += file.metadata.num_row_groups - len(keep)
        if keep:
            columns = _stored_names(file.schema_arrow, histograms)
            table = file.read_row_groups(keep, columns=columns, use_threads=False)
            stats.row_groups_read += len(keep)
            stats.rows_read += table.num_rows
            if ids is not None:  # whole series keep whole chains: decode only the asked ones
                wanted = np.isin(table["series_id"].to_numpy(), ids)
                table = table if wanted.all() else table.filter(pa.array(wanted))
            parts.append(_rows(Path(path), file.metadata, table))
    if not parts:
        return ROLLUP_SCHEMA.empty_table()
    table = pa.concat_tables(parts)
    mask = np.ones(table.num_rows, dtype=bool)
    starts = table["window_start_ns"].to_numpy()
    if start_ns is not None:
        mask &= starts >= start_ns
    if end_ns is not None:
        mask &= starts < end_ns
    if not mask.all():
        table = table.filter(pa.array(mask))
    return table.sort_by([(c, "ascending") for c in _KEY]).combine_chunks()


def _may_hold(
    md: pq.FileMetaData, rg: int, ids: np.ndarray | None, start_ns: int | None, end_ns: int | None
) -> bool:
    """Whether row group ``rg``'s statistics allow a row of the query (no statistics: they do)."""
    group = md.row_group(rg)
    sid = group.column(ROLLUP_SCHEMA.get_field_index("series_id")).statistics
    start = group.column(ROLLUP_SCHEMA.get_field_index("window_start_ns")).statistics
    if ids is not None and sid is not None and sid.has_min_max:
        first = np.searchsorted(ids, np.uint64(sid.min), side="left")
        if first == np.searchsorted(ids, np.uint64(sid.max), side="right"):
            return False
    if start is not None and start.has_min_max:
        if (start_ns is not None and start.max < start_ns) or (end_ns is not None and start.min >= end_ns):
            return False
    return True


def rollup_block_files(partition: Path) -> list[Path]:
    """The rollup files of a partition to read, by name: ``*.parquet`` files (no dot names, so no
    ``.*.tmp`` leftovers) whose metadata says kind ``rollups``, less those that a merged file of
    the partition replaces. Span and log blocks are left out.

    Raises:
        ValueError: a rollup file of another format.
    """
    metas = _rollup_metas(Path(partition))
    replaced = {name for meta in metas for name in meta.replaces}
    return [meta.path for meta in metas if meta.path.name not in replaced]


def _rollup_metas(partition: Path) -> list[RollupBlockMeta]:
    """The meta of every complete rollup file of the partition, replaced ones included, by name."""
    metas = []
    for path in _parquet_files(partition):
        md = pq.read_metadata(path)
        if META_KEY in (md.metadata or {}):
            metas.append(_meta(path, md))
    return metas


def is_rollup_file(path: Path) -> bool:
    """Whether ``path``'s Parquet key-value metadata marks it as a rollup file (reads the footer)."""
    return META_KEY in (pq.read_metadata(path).metadata or {})


def _parquet_files(partition: Path) -> list[Path]:
    return sorted(
        p
        for p in partition.iterdir()
        if not p.name.startswith(".") and p.name.endswith(".parquet") and p.is_file() and not p.is_symlink()
    )


# -- compaction ------------------------------------------------------------------------------------


def compact_rollup_partition(partition: Path, max_rows: int = 20_000_000) -> RollupBlockMeta | None:
    """Merge the rollup files of ``partition``; rows of one (series, window) are merged.

    Files are merged in runs (name order) of at most ``max_rows`` rows, so a merge's memory is
    bounded however busy the day was; a quiet day becomes one file.

    ``.*.tmp`` leftovers are deleted first, then files that a merged file replaces (left by a
    crash). Span and log blocks in the directory are left alone. Rows are merged, not
    deduplicated: no file may be handed in twice (see the module docstring).

    Returns:
        The merged file's meta, or None (nothing changed but leftovers) with fewer than two files.

    Raises:
        ValueError: the files are of different tiers.
    """
    partition = Path(partition)
    for entry in sorted(partition.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(_TMP) and entry.is_file():
            entry.unlink()
    every = _rollup_metas(partition)
    replaced = {name for meta in every for name in meta.replaces}
    stale = [meta.path for meta in every if meta.path.name in replaced]
    if stale:  # an earlier compaction stopped between writing the merged file and retiring these
        _retire(stale)
    metas = [meta for meta in every if meta.path.name not in replaced]
    if len(metas) < 2:
        return None
    tiers = sorted({meta.tier for meta in metas})
    if len(tiers) > 1:
        raise ValueError(
            f"rollup files of tiers {tiers} in one partition {partition}; each tier has its own "
            "partitions (blocks/<tier>/<day>), so a file is misplaced"
        )
    merged = None
    for run in bounded_runs(metas, max_rows):
        sources = [meta.path for meta in run]
        rows = pa.concat_tables([_rows(p, pq.read_metadata(p), pq.read_table(p)) for p in sources])
        merged = _write(
            partition / f"{COMPACTED_PREFIX}{uuid.uuid4().hex}.parquet",
            merge_rollups(rows, metas[0].window_ns),
            tiers[0],
            ROLLUP_ROW_GROUP_ROWS,
            tuple(path.name for path in sources),
        )
        _retire(sources)
    return merged


def _retire(sources: Sequence[Path]) -> None:
    """Rename each source to ``.<name>.tmp`` (atomic), make the renames durable, then delete them;
    a crash in between leaves only ``.tmp`` garbage (as ``compaction._retire``)."""
    doomed = []
    for source in sources:
        target = source.with_name(f".{source.name}{_TMP}")
        os.rename(source, target)
        doomed.append(target)
    fsync_path(sources[0].parent)
    for path in doomed:
        path.unlink()
