"""Throughput of the derived-metrics stage on ingest-sized batches, one core.

Every batch holds ``--points-per-batch`` points of ``--series`` series at 10 s intervals, like the
requests a Collector sends: most of them unrelated gauges (the stage must pass them by cheaply),
``--source-share`` of them the stage's inputs (cumulative file counters with and without
``error.type``, stage-duration exponential histograms, processed-audio counters, CPU-time
counters, memory levels). Span batches of ``--spans-per-batch`` validation spans carry quality
scores. The clock runs with the data, so windows close as they would in service.

Usage::

    python benchmarks/derived.py [--series 1000] [--points-per-batch 8192] [--batches 200]

Prints one JSON line: points/s and spans/s through ``process`` (window closing included).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    MetricBatch,
    SpanBatch,
    canonical_json,
    series_id,
)
from otel_audio.processors.derived import DerivedMetrics, Prices

S = 10**9
T0 = 1_800_000_000 * S
STAGES = ("load_audio", "enhancement", "validation", "output")


def _series(n: int, share: float) -> list[dict]:
    """``n`` series rows; the first ``share`` of them inputs of the derived stage."""
    inputs = []
    for p in range(8):
        pipeline = {"audio.pipeline": f"p{p}"}
        inputs.append(("audio.pipeline.files", "sum", pipeline))
        inputs.append(("audio.pipeline.files", "sum", {**pipeline, "error.type": "ValueError"}))
        for stage in STAGES:
            inputs.append(
                ("audio.stage.duration", "exponential_histogram", {**pipeline, "audio.stage": stage})
            )
            inputs.append(("audio.processed.duration", "sum", {**pipeline, "audio.stage": stage}))
    for mode in ("user", "system"):
        inputs.append(("process.cpu.time", "sum", {"cpu.mode": mode}))
    inputs.append(("process.memory.usage", "sum", {}))
    wanted = max(1, int(n * share))
    picked = (inputs * (wanted // len(inputs) + 1))[:wanted]
    rows = []
    for i, (metric, kind, attrs) in enumerate(picked):
        rows.append(_row(metric, kind, {**attrs, "replica": str(i // len(inputs))}))
    for i in range(n - len(rows)):
        rows.append(_row("app.gauge", "gauge", {"i": str(i)}))
    return rows


def _row(metric: str, kind: str, attrs: dict) -> dict:
    resource = canonical_json({"service.name": "enhancer"})
    attributes = canonical_json(attrs)
    return {
        "series_id": series_id(metric, resource, "", attributes),
        "metric": metric,
        "type": kind,
        "unit": "",
        "description": "",
        "temporality": "unspecified" if kind == "gauge" else "cumulative",
        "monotonic": kind != "gauge" and metric != "process.memory.usage",
        "service": "enhancer",
        "resource": resource,
        "scope": "",
        "scope_version": "",
        "attributes": attributes,
    }


def _batches(series: list[dict], points_per_batch: int, batches: int) -> list[MetricBatch]:
    """Round-robin over the series at 10 s per round, cumulative values growing."""
    sids = np.array([r["series_id"] for r in series], np.uint64)
    hist = np.array([r["type"] == "exponential_histogram" for r in series])
    series_table = pa.Table.from_pylist(series, schema=SERIES_SCHEMA)
    out = []
    for b in range(batches):
        k = np.arange(b * points_per_batch, (b + 1) * points_per_batch)
        index, rnd = k % len(series), k // len(series)
        t = T0 + rnd * 10 * S + index
        value = (rnd + 1) * 3.0
        counts = (rnd + 1) * 4
        is_hist = hist[index]
        table = pa.table(
            {
                "series_id": pa.array(sids[index], pa.uint64()),
                "time_unix_nano": pa.array(t, pa.int64()),
                "start_time_unix_nano": pa.array(np.full(k.size, T0 - S), pa.int64()),
                "value": pa.array(value, pa.float64()),
                "count": pa.array(np.where(is_hist, counts, 0).astype(np.uint64), mask=~is_hist),
                "exp_scale": pa.array(np.full(k.size, 3, np.int32), mask=~is_hist),
                "exp_zero_count": pa.array(np.zeros(k.size, np.uint64), mask=~is_hist),
                "exp_positive_offset": pa.array(np.full(k.size, -8, np.int32), mask=~is_hist),
                "exp_positive_counts": pa.array(
                    [
                        [int(c) // 2, int(c) - int(c) // 2] if h else None
                        for c, h in zip(counts, is_hist, strict=True)
                    ],
                    pa.list_(pa.uint64()),
                ),
                "flags": pa.array(np.zeros(k.size, np.uint32)),
            }
        )
        out.append(MetricBatch(_conform(table), series_table, EXEMPLARS_SCHEMA.empty_table()))
    return out


def _conform(table: pa.Table) -> pa.Table:
    columns = [
        table.column(f.name) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in POINTS_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=POINTS_SCHEMA)


def _spans(n: int, batch: int, end_ns: int) -> SpanBatch:
    attrs = [
        canonical_json({"audio.pipeline": f"p{i % 8}", "audio.quality.pesq": 3.1, "audio.quality.stoi": 0.86,
                        "audio.quality.snr": 14.0 + i % 7, "sampling.probability": 0.1})
        for i in range(n)
    ]  # fmt: skip
    rows = [
        {
            "trace_id": f"{batch * n + i + 1:032x}",
            "span_id": f"{i + 1:016x}",
            "parent_span_id": "",
            "trace_state": "",
            "name": "validation",
            "kind": 1,
            "start_time_unix_nano": end_ns - S,
            "end_time_unix_nano": end_ns,
            "duration_ns": S,
            "status_code": 0,
            "status_message": "",
            "service": "enhancer",
            "resource": canonical_json({"service.name": "enhancer"}),
            "scope": "",
            "scope_version": "",
            "attributes": attrs[i],
            "events": "[]",
            "links": "[]",
            "flags": 0,
        }
        for i in range(n)
    ]
    return SpanBatch(pa.Table.from_pylist(rows, schema=SPANS_SCHEMA))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--source-share", type=float, default=0.1)
    parser.add_argument("--points-per-batch", type=int, default=8192)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--spans-per-batch", type=int, default=500)
    parser.add_argument("--span-batches", type=int, default=40)
    args = parser.parse_args(argv)

    series = _series(args.series, args.source_share)
    batches = _batches(series, args.points_per_batch, args.batches)
    derived = DerivedMetrics(prices=Prices(cpu_second=1e-5, gb_hour=5e-3))
    emitted: list[int] = []
    derived.bind_emit(lambda b: emitted.append(b.points.num_rows))
    began = time.perf_counter()
    for batch in batches:
        derived.process(batch)
    derived.close()
    metric_s = time.perf_counter() - began
    points = sum(b.points.num_rows for b in batches)
    last = int(batches[-1].points.column("time_unix_nano").to_numpy().max())
    spans = [_spans(args.spans_per_batch, i, last + i * S) for i in range(args.span_batches)]
    span_stage = DerivedMetrics()
    span_stage.bind_emit(lambda b: None)
    began = time.perf_counter()
    for batch in spans:
        span_stage.process(batch)
    span_stage.close()
    span_s = time.perf_counter() - began
    print(
        json.dumps(
            {
                "benchmark": "derived",
                "python": platform.python_version(),
                "series": args.series,
                "input_series": int(args.series * args.source_share),
                "points": points,
                "points_per_s": round(points / metric_s),
                "windows_emitted_points": sum(emitted),
                "spans": args.spans_per_batch * args.span_batches,
                "spans_per_s": round(args.spans_per_batch * args.span_batches / span_s),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
