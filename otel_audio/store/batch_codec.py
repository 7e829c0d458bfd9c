"""Batches to bytes and back, for the write-ahead log: Arrow IPC streams, one per table.

A WAL record must hold exactly what was acknowledged, in a form that replays without
re-running decode or the cardinality decision, so the decoded Arrow tables are written as is.
"""

from __future__ import annotations

import struct

import pyarrow as pa

from otel_audio.processors.base import Batch, LogBatch, MetricBatch, SpanBatch

# WAL record kinds; new kinds are appended, never renumbered.
KIND_METRICS = 1
KIND_SPANS = 2
KIND_LOGS = 3

_LENGTH = struct.Struct("<Q")


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _tables(payload: bytes) -> list[pa.Table]:
    tables, offset, view = [], 0, memoryview(payload)
    while offset < len(view):
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        tables.append(pa.ipc.open_stream(pa.py_buffer(view[offset : offset + length])).read_all())
        offset += length
    return tables


def encode_batch(batch: Batch) -> tuple[int, bytes]:
    """(WAL kind, payload) for a batch."""
    if isinstance(batch, MetricBatch):
        kind, tables = KIND_METRICS, (batch.points, batch.series, batch.exemplars)
    elif isinstance(batch, SpanBatch):
        kind, tables = KIND_SPANS, (batch.spans,)
    else:
        kind, tables = KIND_LOGS, (batch.logs,)
    parts = []
    for table in tables:
        data = _table_bytes(table)
        parts += [_LENGTH.pack(len(data)), data]
    return kind, b"".join(parts)


def decode_batch(kind: int, payload: bytes) -> Batch:
    """The batch a WAL record holds; ``ValueError`` for a kind this version does not know."""
    tables = _tables(payload)
    if kind == KIND_METRICS:
        points, series, exemplars = tables
        return MetricBatch(points=points, series=series, exemplars=exemplars)
    if kind == KIND_SPANS:
        return SpanBatch(spans=tables[0])
    if kind == KIND_LOGS:
        return LogBatch(logs=tables[0])
    raise ValueError(f"unknown WAL record kind {kind}")
