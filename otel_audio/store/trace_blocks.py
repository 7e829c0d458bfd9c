"""Span and log blocks: immutable Parquet files laid out so that one trace is cheap to fetch.

A block holds the spans (``SPANS_SCHEMA``) or the log records (``LOGS_SCHEMA``) that the head
flushed for one stretch of time. Layout of a **span block**:

- rows sorted by ``trace_id``, then ``start_time_unix_nano``, then ``span_id`` (recorded as the
  file's ``sorting_columns``), so a trace's spans are adjacent and each row group covers a narrow,
  disjoint range of hex trace ids: min/max statistics alone leave one row group (two when a trace
  straddles a boundary) that can hold a given id;
- row groups of :data:`SPAN_ROW_GROUP_ROWS` rows, zstd, dictionary encoding only for the
  low-cardinality columns (service, name, scope, resource, kind, status...), statistics only on
  the columns readers filter by (trace id, times, duration, service, name, kind, status);
- a Parquet split-block **bloom filter on trace_id** in every row group, sized for the distinct
  ids it holds at 1% false positives. Min/max cannot tell *which block* holds a trace (ids are
  random, so every block spans nearly the whole id range); the bloom filter can, and it answers
  "not here" for a missing id without reading any data page.

A **log block** is sorted by ``service`` then ``time_unix_nano``: time-range and per-service
searches prune row groups by min/max, records of one service compress together, and a trace's
records (close in time, one run per service) fall in a few row groups. ``trace_id`` has
statistics and the same bloom filter, so "the logs of this trace" skips every other row group.

pyarrow writes the bloom filters (``bloom_filter_options``) but has no Python API to probe them;
:func:`read_trace` and :func:`read_logs` probe them here (XXH64 of the id, the split-block test of
the Parquet spec) and read only the surviving row groups with pyarrow. DuckDB's ``read_parquet``
probes the same filters on its own for ``trace_id = ...`` (see :func:`scan_spans`), and
``parquet_bloom_probe`` agrees with this module's probe (``tests/test_store_trace_blocks.py``).

Each file carries its :class:`SpanBlockMeta` / :class:`LogBlockMeta` as JSON under the Parquet
key-value metadata key ``otel_audio.block`` (read it with :func:`read_block_meta`), so a block is
one self-describing file. Writes are atomic: temp file in the same directory, fsync, rename over
the target, fsync of the directory; a crash leaves either no block or the whole block (and at most
a ``.*.tmp`` file, which the block manager may delete at start).

Measured (``benchmarks/trace_lookup.py``: 1M spans, 100k traces, 10 blocks, 2-core machine under
other load): 34.8 bytes per span on disk (0.25 of them bloom filters; 359 in Arrow memory). A trace
fetch decodes 1 row group instead of 10 (statistics only) or 130 (full scan): p50 2-8 ms against
20-56 ms and 250-530 ms; a missing id decodes none, 0.3 ms. Row-group size trades fetch time for
bytes only slightly: 4096 rows 35.05 B/span and the fastest fetch, 8192 34.80, 16384 34.79 and
about twice 8192's fetch time; 8192 is the default (a constant and a keyword of the writers).

For the block manager: name blocks ``*.parquet`` (temp files are ``.<name>.<uuid>.tmp``: delete
them at start), keep each block's meta (or call :func:`read_block_meta`) to choose the files whose
time range overlaps a query, and pass all span blocks to :func:`read_trace` (a trace id says nothing
about time; the bloom filters make the extra blocks cost one 32-byte read each). Blocks are
immutable: footers are cached per (path, size, mtime, inode), so replacing a file is safe.

Example::

    meta = write_span_block(Path("data/spans/000123.parquet"), spans)
    trace = read_trace([meta.path, ...], "4bf92f3577b34da6a3ce929d0e0e4736")
    errors = scan_spans(paths, start_ns=t0, end_ns=t1, service="enhancer", status_code=2)
    logs = read_logs(paths, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
"""

from __future__ import annotations

import functools
import json
import os
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from otel_audio.processors.base import LOGS_SCHEMA, SPANS_SCHEMA

SPAN_ROW_GROUP_ROWS = 8192  # benchmarks/trace_lookup.py: lookup time falls with size, bytes barely rise
LOG_ROW_GROUP_ROWS = 8192
BLOOM_FPP = 0.001
META_KEY = b"otel_audio.block"
FORMAT = {"spans": "otel-audio/spans/1", "logs": "otel-audio/logs/1"}

_SPAN_DICTIONARY = ["trace_state", "name", "kind", "status_code", "status_message", "service", "resource"]
_SPAN_DICTIONARY += ["scope", "scope_version", "flags"]
_SPAN_STATISTICS = ["trace_id", "name", "kind", "start_time_unix_nano", "end_time_unix_nano"]
_SPAN_STATISTICS += ["duration_ns", "status_code", "service"]
_LOG_DICTIONARY = ["severity_number", "severity_text", "flags", "service", "resource", "scope", "event_name"]
_LOG_STATISTICS = ["time_unix_nano", "severity_number", "trace_id", "service"]
# Times are near each other within a row group: delta encoding takes ~8% off a span block.
_SPAN_DELTA = ["start_time_unix_nano", "end_time_unix_nano", "duration_ns"]
_LOG_DELTA = ["time_unix_nano", "observed_time_unix_nano"]


@dataclass(frozen=True)
class SpanBlockMeta:
    """What a span block holds; also stored in the file's key-value metadata."""

    path: Path
    rows: int
    bytes: int  # file size on disk
    row_groups: int
    min_start_ns: int
    max_start_ns: int
    max_end_ns: int  # spans can end after the last start: a time-range overlap check needs it
    min_trace_id: str
    max_trace_id: str
    format: str = FORMAT["spans"]


@dataclass(frozen=True)
class LogBlockMeta:
    """What a log block holds; also stored in the file's key-value metadata."""

    path: Path
    rows: int
    bytes: int
    row_groups: int
    min_time_ns: int
    max_time_ns: int
    min_trace_id: str  # over records with a trace id; "" when none has one
    max_trace_id: str
    format: str = FORMAT["logs"]


@dataclass
class ReadStats:
    """Counters a reader fills in (pass one to see what a lookup touched)."""

    files: int = 0
    row_groups: int = 0  # in all files considered
    pruned_by_stats: int = 0  # ruled out by min/max statistics
    pruned_by_bloom: int = 0  # passed statistics, ruled out by the trace_id bloom filter
    row_groups_read: int = 0
    rows_read: int = 0  # rows decoded before the exact filter


# -- writing ---------------------------------------------------------------------------------------


def write_span_block(
    path: Path, spans: pa.Table, *, row_group_rows: int = SPAN_ROW_GROUP_ROWS
) -> SpanBlockMeta:
    """Write ``spans`` (SPANS_SCHEMA columns, any order) as one sorted block, atomically."""
    table = _conform(spans, SPANS_SCHEMA, "spans")
    table = table.sort_by([(c, "ascending") for c in ("trace_id", "start_time_unix_nano", "span_id")])
    starts = pc.min_max(table["start_time_unix_nano"])
    ids = table["trace_id"]
    fields: dict[str, Any] = {
        "min_start_ns": starts["min"].as_py(),
        "max_start_ns": starts["max"].as_py(),
        "max_end_ns": pc.max(table["end_time_unix_nano"]).as_py(),
        "min_trace_id": ids[0].as_py(),
        "max_trace_id": ids[-1].as_py(),
    }
    sorting = [
        pq.SortingColumn(SPANS_SCHEMA.get_field_index(c)) for c in ("trace_id", "start_time_unix_nano")
    ]
    sorting.append(pq.SortingColumn(SPANS_SCHEMA.get_field_index("span_id")))
    rows, size, groups = _write_atomic(
        Path(path),
        table,
        "spans",
        fields,
        row_group_rows,
        (_SPAN_DICTIONARY, _SPAN_STATISTICS, _SPAN_DELTA),
        sorting,
    )
    return SpanBlockMeta(Path(path), rows, size, groups, **fields)


def write_log_block(path: Path, logs: pa.Table, *, row_group_rows: int = LOG_ROW_GROUP_ROWS) -> LogBlockMeta:
    """Write ``logs`` (LOGS_SCHEMA columns, any order) as one block sorted by service and time."""
    table = _conform(logs, LOGS_SCHEMA, "logs")
    table = table.sort_by([("service", "ascending"), ("time_unix_nano", "ascending")])
    times = pc.min_max(table["time_unix_nano"])
    traced = pc.min_max(table["trace_id"].filter(pc.not_equal(table["trace_id"], "")))
    fields: dict[str, Any] = {
        "min_time_ns": times["min"].as_py(),
        "max_time_ns": times["max"].as_py(),
        "min_trace_id": traced["min"].as_py() or "",
        "max_trace_id": traced["max"].as_py() or "",
    }
    sorting = [pq.SortingColumn(LOGS_SCHEMA.get_field_index(c)) for c in ("service", "time_unix_nano")]
    rows, size, groups = _write_atomic(
        Path(path),
        table,
        "logs",
        fields,
        row_group_rows,
        (_LOG_DICTIONARY, _LOG_STATISTICS, _LOG_DELTA),
        sorting,
    )
    return LogBlockMeta(Path(path), rows, size, groups, **fields)


def read_block_meta(path: Path) -> SpanBlockMeta | LogBlockMeta:
    """The metadata a block was written with (rows, times, trace-id range; bytes from the file)."""
    md = pq.read_metadata(path)
    raw = (md.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path} is not an otel-audio span or log block (no {META_KEY.decode()} metadata)")
    fields = json.loads(raw)
    kind = fields.pop("kind")
    cls = SpanBlockMeta if kind == "spans" else LogBlockMeta
    return cls(Path(path), md.num_rows, os.stat(path).st_size, md.num_row_groups, **fields)


def _conform(table: pa.Table, schema: pa.Schema, kind: str) -> pa.Table:
    missing = [name for name in schema.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{kind} table lacks column(s) {', '.join(missing)}; expected {schema.names}")
    if table.num_rows == 0:
        raise ValueError(f"a {kind} block needs at least one row")
    return table.select(schema.names).cast(schema).combine_chunks()


def _row_group_ndv(ids: pa.ChunkedArray, row_group_rows: int) -> int:
    """The most distinct ids any row group will hold: the bloom filters are sized for it."""
    most = 1
    for start in range(0, len(ids), row_group_rows):
        most = max(most, pc.count_distinct(ids.slice(start, row_group_rows)).as_py())
    return most


def _write_atomic(path, table, kind, fields, rg_rows, columns, sorting) -> tuple[int, int, int]:
    dictionary, statistics, delta = columns
    ndv = _row_group_ndv(table["trace_id"], rg_rows)
    meta = json.dumps({"kind": kind, "format": FORMAT[kind], **fields}).encode()
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with pq.ParquetWriter(
            tmp,
            table.schema.with_metadata({META_KEY: meta}),
            compression="zstd",
            use_dictionary=dictionary,
            write_statistics=statistics,
            column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
            sorting_columns=sorting,
            bloom_filter_options={"trace_id": {"ndv": ndv, "fpp": BLOOM_FPP}},
        ) as writer:
            writer.write_table(table, row_group_size=rg_rows)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return table.num_rows, os.stat(path).st_size, -(-table.num_rows // rg_rows)


# -- reading ---------------------------------------------------------------------------------------


def read_trace(
    paths: Sequence[Path], trace_id: str, *, stats: ReadStats | None = None, use_bloom: bool = True
) -> pa.Table:
    """Every span of ``trace_id`` in the blocks (SPANS_SCHEMA), by start time then span id.

    Row groups whose trace_id min/max excludes the id, or whose bloom filter says it is absent,
    are never read; an unknown id usually reads no data page at all. ``use_bloom=False`` prunes
    by statistics only (for comparison).
    """
    trace_id = _hex(trace_id)
    where = {"trace_id": (trace_id, trace_id)}
    table = _read_pruned(paths, SPANS_SCHEMA, where, trace_id if use_bloom else None, stats)
    table = table.filter(pc.equal(table["trace_id"], trace_id))
    return table.sort_by([("start_time_unix_nano", "ascending"), ("span_id", "ascending")])


def read_logs(
    paths: Sequence[Path],
    *,
    trace_id: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    service: str | None = None,
    stats: ReadStats | None = None,
) -> pa.Table:
    """Log records (LOGS_SCHEMA) matching every given filter, by time; time is ``[start_ns, end_ns)``."""
    where: dict[str, tuple[Any, Any]] = {}
    mask = []
    if trace_id is not None:
        trace_id = _hex(trace_id)
        where["trace_id"] = (trace_id, trace_id)
    if service is not None:
        where["service"] = (service, service)
    if start_ns is not None or end_ns is not None:
        where["time_unix_nano"] = (start_ns, None if end_ns is None else end_ns - 1)
    table = _read_pruned(paths, LOGS_SCHEMA, where, trace_id, stats)
    for column, (low, high) in where.items():
        if low is not None:
            mask.append(pc.greater_equal(table[column], low))
        if high is not None:
            mask.append(pc.less_equal(table[column], high))
    if mask:
        table = table.filter(functools.reduce(pc.and_, mask))
    return table.sort_by([("time_unix_nano", "ascending"), ("service", "ascending")])


def scan_spans(
    paths: Sequence[Path],
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    service: str | None = None,
    name: str | None = None,
    trace_id: str | None = None,
    status_code: int | None = None,
    min_duration_ns: int | None = None,
    limit: int | None = None,
) -> pa.Table:
    """Spans (SPANS_SCHEMA) matching every given filter, newest start first, through DuckDB.

    Start time is in ``[start_ns, end_ns)``, as in the query engine. DuckDB pushes the filters
    into ``read_parquet``: row groups are skipped by min/max statistics, and for ``trace_id`` by
    the bloom filters too.
    """
    if not paths:
        return SPANS_SCHEMA.empty_table()
    clauses = [
        ("start_time_unix_nano >= $start", "start", start_ns),
        ("start_time_unix_nano < $end", "end", end_ns),
        ("service = $service", "service", service),
        ("name = $name", "name", name),
        ("trace_id = $trace_id", "trace_id", None if trace_id is None else _hex(trace_id)),
        ("status_code = $status", "status", status_code),
        ("duration_ns >= $min_duration", "min_duration", min_duration_ns),
    ]
    where = [sql for sql, _, value in clauses if value is not None]
    params: dict[str, Any] = {key: value for _, key, value in clauses if value is not None}
    params["paths"] = [str(p) for p in paths]
    sql = (
        f"SELECT * FROM read_parquet($paths) WHERE {' AND '.join(where) or 'true'} "
        "ORDER BY start_time_unix_nano DESC, span_id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with _duck().cursor() as cur:
        return cur.sql(sql, params=params).to_arrow_table().cast(SPANS_SCHEMA)


@functools.cache
def _duck() -> duckdb.DuckDBPyConnection:
    return duckdb.connect()


def _hex(trace_id: str) -> str:
    value = trace_id.lower()
    if len(value) != 32 or value.strip("0123456789abcdef"):
        raise ValueError(f"trace_id must be 32 hex characters, got {trace_id!r}")
    return value


def _read_pruned(paths, schema, where, bloom_id, stats) -> pa.Table:
    """Read the row groups of ``paths`` that ``where`` ({column: (low, high)}) and the bloom allow."""
    stats = stats if stats is not None else ReadStats()
    parts = []
    for path in paths:
        footer = _footer(Path(path))
        stats.files += 1
        stats.row_groups += footer.metadata.num_row_groups
        keep = []
        for rg in range(footer.metadata.num_row_groups):
            if not footer.may_contain(rg, where):
                stats.pruned_by_stats += 1
            elif bloom_id is not None and not footer.bloom_may_contain(rg, bloom_id):
                stats.pruned_by_bloom += 1
            else:
                keep.append(rg)
        if keep:
            table = pq.ParquetFile(path, metadata=footer.metadata).read_row_groups(keep, use_threads=False)
            stats.row_groups_read += len(keep)
            stats.rows_read += table.num_rows
            parts.append(table.cast(schema))
    return pa.concat_tables(parts) if parts else schema.empty_table()


class _Footer:
    """A block's parsed footer: min/max per row group of the filter columns, bloom locations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata = pq.read_metadata(path)
        names = self.metadata.schema.to_arrow_schema().names
        self.bounds: dict[str, list[tuple[Any, Any] | None]] = {}
        self.blooms: list[tuple[int, int] | None] = []
        self._bitsets: dict[int, tuple[int, int] | None] = {}
        for name in ("trace_id", "service", "start_time_unix_nano", "time_unix_nano"):
            if name in names:
                self.bounds[name] = [None] * self.metadata.num_row_groups
        for rg in range(self.metadata.num_row_groups):
            group = self.metadata.row_group(rg)
            for name, bounds in self.bounds.items():
                column = group.column(names.index(name))
                s = column.statistics
                if s is not None and s.has_min_max:
                    bounds[rg] = (s.min, s.max)
            chunk = group.column(names.index("trace_id"))
            offset, length = chunk.bloom_filter_offset, chunk.bloom_filter_length
            self.blooms.append((offset, length) if offset is not None and length else None)

    def may_contain(self, rg: int, where: dict[str, tuple[Any, Any]]) -> bool:
        for name, (low, high) in where.items():
            bounds = self.bounds[name][rg]
            if bounds is None:
                continue
            if (high is not None and bounds[0] > high) or (low is not None and bounds[1] < low):
                return False
        return True

    def bloom_may_contain(self, rg: int, value: str) -> bool:
        if rg not in self._bitsets:
            self._bitsets[rg] = self._bitset(rg)
        bitset = self._bitsets[rg]
        if bitset is None:  # no filter, or one this reader does not understand: cannot rule out
            return True
        start, size = bitset
        h = xxh64(value.encode())
        block = ((h >> 32) * (size // 32)) >> 32
        with open(self.path, "rb") as f:
            words = struct.unpack("<8I", os.pread(f.fileno(), 32, start + block * 32))
        key = h & 0xFFFFFFFF
        return all(words[i] >> (((key * salt) & 0xFFFFFFFF) >> 27) & 1 for i, salt in enumerate(_SALT))

    def _bitset(self, rg: int) -> tuple[int, int] | None:
        """(file offset, size) of the row group's bitset after checking its Thrift header."""
        where = self.blooms[rg]
        if where is None:
            return None
        offset, length = where
        with open(self.path, "rb") as f:
            head = os.pread(f.fileno(), min(length, 32), offset)
        # BloomFilterHeader, Thrift compact: field 1 i32 numBytes (0x15, zigzag varint), then
        # algorithm BLOCK, hash XXHASH, compression UNCOMPRESSED: each an empty struct in a union.
        if head[:1] != b"\x15":
            return None
        value, shift, i = 0, 0, 1
        while i < len(head) and head[i] & 0x80:
            value |= (head[i] & 0x7F) << shift
            shift, i = shift + 7, i + 1
        value |= head[i] << shift
        size = (value >> 1) ^ -(value & 1)
        if head[i + 1 : i + 14] != b"\x1c\x1c\x00\x00" * 3 + b"\x00" or i + 14 + size != length:
            return None
        return offset + i + 14, size


@functools.lru_cache(maxsize=4096)
def _footer_cached(path: str, _size: int, _mtime_ns: int, _inode: int) -> _Footer:
    return _Footer(Path(path))


def _footer(path: Path) -> _Footer:
    """Blocks are immutable: the footer is parsed once per file (a replaced file is a new key)."""
    st = os.stat(path)
    return _footer_cached(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


_SALT = (0x47B6137B, 0x44974D91, 0x8824AD5B, 0xA2B7289D, 0x705495C7, 0x2DF1424B, 0x9EFC4947, 0x5C6BFB31)


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64, the hash Parquet bloom filters use (of the value's plain bytes, seed 0)."""
    return xxhash.xxh64_intdigest(data, seed)
