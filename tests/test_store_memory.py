"""MemoryStore: appends, snapshots, the series dictionary, stats, retention.

The small builders at the top make batches straight from the Arrow schemas; the query tests
import them too.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    LOGS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    LogBatch,
    MetricBatch,
    Processor,
    SpanBatch,
    canonical_json,
    series_id,
)
from otel_audio.store.memory import MemoryStore

S = 10**9  # one second in nanoseconds


def series(
    metric: str,
    type: str = "gauge",
    attributes: dict[str, Any] | None = None,
    service: str = "enhancer",
    resource: dict[str, Any] | None = None,
    temporality: str = "unspecified",
    monotonic: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A SERIES_SCHEMA row; the resource gets service.name = service."""
    res = canonical_json({"service.name": service, **(resource or {})})
    attrs = canonical_json(attributes or {})
    return {
        "series_id": series_id(metric, res, "test", attrs),
        "metric": metric,
        "type": type,
        "unit": extra.pop("unit", "ms"),
        "description": extra.pop("description", ""),
        "temporality": temporality,
        "monotonic": monotonic,
        "service": service,
        "resource": res,
        "scope": "test",
        "scope_version": "",
        "attributes": attrs,
        **extra,
    }


def metric_batch(
    series_rows: list[dict], point_rows: list[dict], exemplar_rows: list[dict] = ()
) -> MetricBatch:
    """A MetricBatch; point rows name their series by the series row (key ``s``)."""
    points = [
        {**{k: v for k, v in p.items() if k != "s"}, "series_id": p["s"]["series_id"]} for p in point_rows
    ]
    exemplars = [
        {**{k: v for k, v in e.items() if k != "s"}, "series_id": e["s"]["series_id"]} for e in exemplar_rows
    ]
    return MetricBatch(
        points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
        series=pa.Table.from_pylist(series_rows, schema=SERIES_SCHEMA),
        exemplars=pa.Table.from_pylist(exemplars, schema=EXEMPLARS_SCHEMA),
    )


def span(
    trace: int, span_no: int, name: str = "denoise", start_s: float = 0, duration_s: float = 1, **kw: Any
) -> dict:
    """A SPANS_SCHEMA row; ids are derived from small integers; attributes/resource may be dicts."""
    start = int(start_s * S)
    row = {
        "trace_id": f"{trace:032x}",
        "span_id": f"{span_no:016x}",
        "parent_span_id": "",
        "name": name,
        "kind": 1,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + int(duration_s * S),
        "duration_ns": int(duration_s * S),
        "status_code": 0,
        "service": "enhancer",
        "resource": {"service.name": kw.get("service", "enhancer")},
        "attributes": {},
        **kw,
    }
    for key in ("resource", "attributes"):
        if isinstance(row[key], dict):
            row[key] = canonical_json(row[key])
    return row


def span_batch(rows: list[dict]) -> SpanBatch:
    return SpanBatch(spans=pa.Table.from_pylist(rows, schema=SPANS_SCHEMA))


def log(time_s: float, body: str, severity: int = 9, **kw: Any) -> dict:
    """A LOGS_SCHEMA row; attributes/resource may be dicts."""
    row = {
        "time_unix_nano": int(time_s * S),
        "observed_time_unix_nano": int(time_s * S),
        "severity_number": severity,
        "body": body,
        "service": "enhancer",
        "resource": {"service.name": kw.get("service", "enhancer")},
        "attributes": {},
        "trace_id": "",
        "span_id": "",
        **kw,
    }
    for key in ("resource", "attributes"):
        if isinstance(row[key], dict):
            row[key] = canonical_json(row[key])
    return row


def log_batch(rows: list[dict]) -> LogBatch:
    return LogBatch(logs=pa.Table.from_pylist(rows, schema=LOGS_SCHEMA))


def gauge_batch(metric: str, values: list[tuple[float, float]], **series_kw: Any) -> MetricBatch:
    s = series(metric, **series_kw)
    return metric_batch([s], [{"s": s, "time_unix_nano": int(t * S), "value": v} for t, v in values])


# -- tests -------------------------------------------------------------------------------------------


def test_store_is_a_processor_named_store():
    store = MemoryStore()
    assert isinstance(store, Processor)
    assert store.name == "store"


def test_appended_batches_are_all_in_the_snapshot():
    store = MemoryStore()
    store.process(gauge_batch("cpu", [(1, 1.0), (2, 2.0)]))
    store.process(gauge_batch("cpu", [(3, 3.0)]))
    assert store.snapshot().points.column("value").to_pylist() == [1.0, 2.0, 3.0]


def test_series_dictionary_keeps_the_first_seen_row():
    store = MemoryStore()
    store.process(gauge_batch("cpu", [(1, 1.0)], description="first"))
    store.process(gauge_batch("cpu", [(2, 2.0)], description="second"))
    assert store.snapshot().series.column("description").to_pylist() == ["first"]


def test_snapshot_is_cached_until_the_next_append():
    store = MemoryStore()
    store.process(gauge_batch("cpu", [(1, 1.0)]))
    first = store.snapshot()
    assert store.snapshot().points is first.points
    store.process(gauge_batch("cpu", [(2, 2.0)]))
    assert store.snapshot().points is not first.points


def test_snapshot_does_not_change_after_later_appends():
    store = MemoryStore()
    store.process(gauge_batch("cpu", [(1, 1.0)]))
    before = store.snapshot()
    store.process(gauge_batch("cpu", [(2, 2.0)]))
    assert before.points.num_rows == 1


def test_many_small_appends_are_combined_into_few_chunks():
    store = MemoryStore()
    for i in range(600):
        store.process(gauge_batch("cpu", [(i, float(i))]))
    points = store.snapshot().points
    assert points.num_rows == 600
    assert points.column("value").num_chunks < 100
    assert points.column("value").to_pylist() == [float(i) for i in range(600)]


def test_spans_and_logs_are_stored_per_kind():
    store = MemoryStore()
    store.process(span_batch([span(1, 1)]))
    store.process(log_batch([log(1, "hello")]))
    snap = store.snapshot()
    assert (snap.spans.num_rows, snap.logs.num_rows, snap.points.num_rows) == (1, 1, 0)


def test_empty_store_snapshot_has_the_schemas():
    snap = MemoryStore().snapshot()
    assert snap.points.schema == POINTS_SCHEMA
    assert snap.spans.schema == SPANS_SCHEMA


def test_stats_counts_rows_bytes_and_series():
    store = MemoryStore()
    store.process(gauge_batch("cpu", [(1, 1.0), (2, 2.0)], attributes={"core": 0}))
    store.process(gauge_batch("cpu", [(1, 1.0)], attributes={"core": 1}))
    stats = store.stats()
    assert stats["points"]["rows"] == 3
    assert stats["points"]["bytes"] > 0
    assert stats["series_count"] == 2
    assert stats["spans"] == {"rows": 0, "bytes": 0}


def test_retention_drops_tables_older_than_the_window():
    store = MemoryStore(retention_ns=100 * S)
    store.process(gauge_batch("cpu", [(10, 1.0)]))
    store.process(gauge_batch("cpu", [(150, 2.0)]))
    store.tick(200 * S)
    assert store.snapshot().points.column("value").to_pylist() == [2.0]
    assert store.stats()["series_count"] == 1


def test_columns_in_another_order_are_conformed():
    batch = gauge_batch("cpu", [(1, 1.0)])
    reordered = batch.points.select(list(reversed(POINTS_SCHEMA.names)))
    store = MemoryStore()
    store.process(MetricBatch(points=reordered, series=batch.series, exemplars=batch.exemplars))
    assert store.snapshot().points.schema == POINTS_SCHEMA


def test_a_table_missing_columns_is_rejected_with_the_kind():
    batch = log_batch([log(1, "x")])
    with pytest.raises(ValueError, match="logs table does not match"):
        MemoryStore().process(LogBatch(logs=batch.logs.drop_columns(["body"])))


def test_unknown_batch_type_is_rejected():
    with pytest.raises(TypeError, match="cannot store dict"):
        MemoryStore().process({})  # type: ignore[arg-type]


def test_builders_write_canonical_json():
    assert json.loads(span(1, 1, attributes={"b": 1, "a": "x"})["attributes"]) == {"a": "x", "b": 1}
