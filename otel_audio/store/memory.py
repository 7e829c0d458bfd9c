"""The in-memory store: recent metrics, spans and logs as Arrow tables, and the series dictionary.

:class:`MemoryStore` is the ``store`` stage of the receiver's processor chain. It keeps every
batch it is given as an immutable Arrow table appended to a list per kind (``points``,
``exemplars``, ``spans``, ``logs``), and the first-seen row of every metric series. Appending is a
list append under a lock; nothing is concatenated per batch. Readers ask for a :class:`Snapshot`:
one Arrow table per kind, concatenated lazily (without copying) and cached until the next append.
Every 256 small appends of a kind are combined into one table, so a snapshot never has more than
a few hundred chunks per few hundred thousand batches.

Threads: one writer calls ``process`` and ``tick``; any number of readers call ``snapshot`` and
``stats`` concurrently. A snapshot is never changed after it is returned.

Example::

    store = MemoryStore(retention_ns=6 * 3600 * 10**9)
    store.process(metric_batch)
    snap = store.snapshot()          # snap.points, snap.series, ... are pyarrow Tables
    QueryEngine(store).query_range(...)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    LOGS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    Batch,
    LogBatch,
    MetricBatch,
    SpanBatch,
)

if TYPE_CHECKING:
    from otel_audio.store.view import StoreView

SCHEMAS: dict[str, pa.Schema] = {
    "series": SERIES_SCHEMA,
    "points": POINTS_SCHEMA,
    "exemplars": EXEMPLARS_SCHEMA,
    "spans": SPANS_SCHEMA,
    "logs": LOGS_SCHEMA,
}

# The column retention looks at; the series dictionary is never expired.
_TIME_COLUMN = {
    "points": "time_unix_nano",
    "exemplars": "time_unix_nano",
    "spans": "start_time_unix_nano",
    "logs": "time_unix_nano",
}

_COMBINE_EVERY = 256  # small appended tables combined into one chunk after this many


@dataclass(frozen=True)
class Snapshot:
    """What the store held at one moment: one Arrow table per kind, never modified afterwards."""

    series: pa.Table  # SERIES_SCHEMA, first-seen row of each series
    points: pa.Table  # POINTS_SCHEMA
    exemplars: pa.Table  # EXEMPLARS_SCHEMA
    spans: pa.Table  # SPANS_SCHEMA
    logs: pa.Table  # LOGS_SCHEMA


@dataclass(frozen=True)
class _Part:
    table: pa.Table
    max_time: int  # newest time in the part, for retention (0 for series)
    size: int = 0  # Arrow buffer bytes (shared buffers once)

    @classmethod
    def of(cls, table: pa.Table, max_time: int) -> _Part:
        return cls(table, max_time, table.get_total_buffer_size())


class MemoryStore:
    """Processor that keeps recent telemetry in memory as Arrow tables.

    Args:
        retention_ns: when set, ``tick(now)`` drops appended tables whose newest row is older than
            ``now - retention_ns`` (whole tables, so rows may outlive the retention by up to one
            table's time span). The series dictionary is kept.
    """

    name = "store"

    def __init__(self, retention_ns: int | None = None) -> None:
        self._retention_ns = retention_ns
        self._lock = threading.Lock()
        self._parts: dict[str, list[_Part]] = {kind: [] for kind in SCHEMAS}
        self._uncombined: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self._cache: dict[str, pa.Table] = {}
        self._generation: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self._sizes: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self._series_ids: set[int] = set()

    # -- writer side ---------------------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        """Append the batch's tables; a metric batch also adds its unseen series."""
        if isinstance(batch, MetricBatch):
            self._add_series(batch.series)
            self._append("points", batch.points)
            self._append("exemplars", batch.exemplars)
        elif isinstance(batch, SpanBatch):
            self._append("spans", batch.spans)
        elif isinstance(batch, LogBatch):
            self._append("logs", batch.logs)
        else:
            raise TypeError(
                f"MemoryStore cannot store {type(batch).__name__}; expected a Metric/Span/LogBatch"
            )

    def tick(self, now_unix_nano: int) -> None:
        """Apply retention (if configured) relative to ``now_unix_nano``."""
        if self._retention_ns is None:
            return
        cutoff = now_unix_nano - self._retention_ns
        for kind in _TIME_COLUMN:
            kept = [p for p in self._parts[kind] if p.max_time >= cutoff]
            if len(kept) != len(self._parts[kind]):
                with self._lock:
                    self._uncombined[kind] = min(self._uncombined[kind], len(kept))
                    self._swap(kind, kept)

    def close(self) -> None:
        """Nothing to flush: the in-memory store is volatile (the WAL makes data durable)."""

    def add_series(self, series: pa.Table) -> None:
        """Add series rows not seen yet (the block store seeds the dictionary from its blocks)."""
        self._add_series(_conform("series", series))

    def detach(self) -> Snapshot:
        """Take everything but the series dictionary out of the store and return it.

        The block store calls this (on the writer thread) to cut the head into blocks; readers
        see the rows either in the store or in what was returned, never in neither.
        """
        snap = self.snapshot()
        with self._lock:
            for kind in _TIME_COLUMN:
                self._uncombined[kind] = 0
                self._swap(kind, [])
        return snap

    def nbytes(self) -> int:
        """Bytes of Arrow memory held, series dictionary included (shared buffers counted once)."""
        with self._lock:
            return sum(self._sizes.values())

    def series_count(self) -> int:
        """Number of distinct series in the dictionary."""
        return len(self._series_ids)

    def _add_series(self, series: pa.Table) -> None:
        if series.num_rows == 0:
            return
        keep = []
        for i, sid in enumerate(series.column("series_id").to_pylist()):
            if sid not in self._series_ids:
                self._series_ids.add(sid)
                keep.append(i)
        if keep:
            self._append("series", series.take(keep) if len(keep) < series.num_rows else series)

    def _append(self, kind: str, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = _conform(kind, table)
        column = _TIME_COLUMN.get(kind)
        max_time = (pc.max(table.column(column)).as_py() or 0) if column else 0
        parts = self._parts[kind]
        with self._lock:
            self._swap(kind, [*parts, _Part.of(table, max_time)])
            self._uncombined[kind] += 1
        if self._uncombined[kind] >= _COMBINE_EVERY:
            self._combine_tail(kind)

    def _combine_tail(self, kind: str) -> None:
        # Only the writer changes the lists, so the tail read here is still the tail below.
        parts = self._parts[kind]
        n = self._uncombined[kind]
        tail = parts[-n:]
        combined = _combined(pa.concat_tables([p.table for p in tail]))
        with self._lock:
            self._parts[kind] = [*parts[:-n], _Part.of(combined, max(p.max_time for p in tail))]
            self._sizes[kind] = sum(p.size for p in self._parts[kind])
            self._uncombined[kind] = 0

    def _swap(self, kind: str, parts: list[_Part]) -> None:
        # Caller holds the lock.
        self._parts[kind] = parts
        self._sizes[kind] = sum(p.size for p in parts)
        self._generation[kind] += 1
        self._cache.pop(kind, None)

    # -- reader side ---------------------------------------------------------------------------

    def view(self) -> StoreView:
        """What queries read: this store's rows and no blocks."""
        from otel_audio.store.view import StoreView

        return StoreView(self.snapshot())

    def snapshot(self) -> Snapshot:
        """The current contents, one table per kind (cheap when nothing was appended since)."""
        return Snapshot(**{kind: self._table(kind) for kind in SCHEMAS})

    def _table(self, kind: str) -> pa.Table:
        with self._lock:
            cached = self._cache.get(kind)
            if cached is not None:
                return cached
            parts = self._parts[kind]
            generation = self._generation[kind]
        if parts:
            table = pa.concat_tables([p.table for p in parts])
        else:
            table = SCHEMAS[kind].empty_table()
        with self._lock:
            if self._generation[kind] == generation:
                self._cache[kind] = table
        return table

    def stats(self) -> dict[str, object]:
        """Rows and bytes held per kind, and the number of series.

        Returns:
            ``{"points": {"rows": int, "bytes": int}, "exemplars": ..., "spans": ..., "logs": ...,
            "series": {"rows": int, "bytes": int}, "series_count": int}``
        """
        with self._lock:
            parts = {kind: self._parts[kind] for kind in SCHEMAS}
        out: dict[str, object] = {
            kind: {"rows": sum(p.table.num_rows for p in ps), "bytes": sum(p.table.nbytes for p in ps)}
            for kind, ps in parts.items()
        }
        out["series_count"] = out["series"]["rows"]  # type: ignore[index]
        return out


def _combined(table: pa.Table) -> pa.Table:
    """One chunk per column; a column that is all null stays a shared all-null array.

    Most point columns are null for most points (histogram fields of gauges, and the reverse);
    ``combine_chunks`` would allocate full buffers for them, about 100 bytes per point.
    """
    columns = [
        pa.nulls(table.num_rows, col.type) if col.null_count == len(col) else col.combine_chunks()
        for col in table.columns
    ]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _conform(kind: str, table: pa.Table) -> pa.Table:
    schema = SCHEMAS[kind]
    if table.schema.equals(schema):
        return table
    try:
        return table.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ValueError(f"{kind} table does not match the store schema: {exc}") from exc
