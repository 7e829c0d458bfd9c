"""Range-query latency over a day of data: grouped gauge averages, counter rates, histogram p95.

An in-process :class:`~otel_audio.store.memory.MemoryStore` gets ``--hours`` (24) of points at
``--interval`` (15 s) resolution for ``--series`` (100) series of each of three metrics: a gauge,
a cumulative monotonic counter and a cumulative explicit-bucket histogram (ten bounds). The
series carry ``stage`` (5 values) and ``device`` attributes. Points arrive the way ingest appends
them: one batch per metric and ``--batch-minutes`` of time, so the store holds many parts as it
would after ingest. The store is built directly rather than through OTLP: what is measured is
the :class:`~otel_audio.store.query.QueryEngine`, not ingest.

Each query spans the whole day at a 60 s step, grouped by ``stage`` (1,440 buckets x 5 groups):

- ``gauge_avg``: ``avg`` of the gauge;
- ``counter_rate``: ``rate`` of the counter (per-series increases, reset-aware);
- ``histogram_p95``: ``p95`` of the histogram (bucket increases merged per group);
- ``gauge_avg_matcher``: the gauge average restricted by a regex matcher on ``device``.

The queries are interleaved over ``--repeats`` rounds after one warm-up round; ``*_p50_ms`` and
``*_p95_ms`` are over the rounds.

Usage::

    python benchmarks/query.py [--hours 24] [--interval 15] [--series 100] [--repeats 15]
                               [--batch-minutes 60]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    canonical_json,
    series_id,
)
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import Matcher, QueryEngine, RangeQuery

SECOND = 10**9
BOUNDS = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]
BUCKET_RATES = [1.0, 2.0, 4.0, 6.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1]  # new samples per bucket per point
METRICS = {  # name -> (type, temporality, monotonic)
    "bench.level": ("gauge", "unspecified", False),
    "bench.frames": ("sum", "cumulative", True),
    "bench.duration": ("histogram", "cumulative", False),
}


def series_table(metric: str, count: int) -> pa.Table:
    """SERIES_SCHEMA rows of ``count`` series of ``metric`` with stage and device attributes."""
    kind, temporality, monotonic = METRICS[metric]
    resource = canonical_json({"service.name": "enhancer"})
    scope = canonical_json({"attributes": {}, "name": "bench", "version": ""})
    attrs = [canonical_json({"stage": f"stage-{i % 5}", "device": f"mic-{i:03d}"}) for i in range(count)]
    rows = {
        "series_id": [series_id(metric, resource, scope, a) for a in attrs],
        "metric": [metric] * count,
        "type": [kind] * count,
        "unit": ["ms"] * count,
        "description": [""] * count,
        "temporality": [temporality] * count,
        "monotonic": [monotonic] * count,
        "service": ["enhancer"] * count,
        "resource": [resource] * count,
        "scope": [scope] * count,
        "scope_version": [""] * count,
        "attributes": attrs,
    }
    return pa.Table.from_pydict(rows, schema=SERIES_SCHEMA)


def day_columns(metric: str, n_series: int, n_times: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-series values over the whole range, shaped (series, time[, bucket])."""
    kind = METRICS[metric][0]
    if kind == "gauge":
        return {"value": rng.normal(50.0, 10.0, (n_series, n_times))}
    if kind == "sum":  # cumulative since the start of the range
        return {"value": np.cumsum(rng.poisson(30.0, (n_series, n_times)), axis=1).astype(float)}
    buckets = np.cumsum(rng.poisson(BUCKET_RATES, (n_series, n_times, len(BOUNDS) + 1)), axis=1).astype(
        np.uint64
    )
    counts = buckets.sum(axis=2)
    return {"bucket_counts": buckets, "count": counts, "value": counts.astype(float) * 120.0}


def points_table(
    metric: str, sids: np.ndarray, times: np.ndarray, day: dict[str, np.ndarray], span: slice, start_ns: int
) -> pa.Table:
    """POINTS_SCHEMA rows of every series at ``times[span]`` (series-major)."""
    n_times = len(range(*span.indices(times.size)))
    rows = sids.size * n_times
    columns: dict[str, Any] = {
        "series_id": np.repeat(sids, n_times),
        "time_unix_nano": np.tile(times[span], sids.size),
        "value": day["value"][:, span].ravel(),
        "flags": np.zeros(rows, dtype=np.uint32),
    }
    if METRICS[metric][0] != "gauge":
        columns["start_time_unix_nano"] = np.full(rows, start_ns, dtype=np.int64)
    if "count" in day:
        width = len(BOUNDS) + 1
        columns["count"] = day["count"][:, span].ravel()
        columns["bounds"] = pa.ListArray.from_arrays(
            pa.array(np.arange(0, rows * len(BOUNDS) + 1, len(BOUNDS), dtype=np.int32)),
            pa.array(np.tile(BOUNDS, rows), type=pa.float64()),
        )
        columns["bucket_counts"] = pa.ListArray.from_arrays(
            pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32)),
            pa.array(day["bucket_counts"][:, span, :].ravel(), type=pa.uint64()),
        )
    arrays = [
        pa.array(columns[f.name], type=f.type) if f.name in columns else pa.nulls(rows, type=f.type)
        for f in POINTS_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=POINTS_SCHEMA)


def load(
    store: MemoryStore, hours: float, interval_s: int, n_series: int, batch_minutes: int, end_ns: int
) -> int:
    """Fill ``store`` with ``hours`` of every metric up to ``end_ns``, batch by batch; returns points."""
    rng = np.random.default_rng(7)
    start = end_ns - int(hours * 3600) * SECOND
    times = np.arange(start, end_ns, interval_s * SECOND, dtype=np.int64)
    per_batch = max(1, batch_minutes * 60 // interval_s)
    total = 0
    for metric in METRICS:
        series = series_table(metric, n_series)
        sids = np.asarray(series.column("series_id").to_numpy(), dtype=np.uint64)
        day = day_columns(metric, n_series, times.size, rng)
        for first in range(0, times.size, per_batch):
            points = points_table(metric, sids, times, day, slice(first, first + per_batch), start)
            # Each batch names its series, as a decoded request does; the store keeps the first.
            store.process(MetricBatch(points, series, EXEMPLARS_SCHEMA.empty_table()))
            total += points.num_rows
    return total


def queries(end_ns: int, hours: float) -> dict[str, RangeQuery]:
    start = end_ns - int(hours * 3600) * SECOND
    step = 60 * SECOND
    by_stage: dict[str, Any] = {"start_ns": start, "end_ns": end_ns, "step_ns": step, "group_by": ("stage",)}
    return {
        "gauge_avg": RangeQuery("bench.level", agg="avg", **by_stage),
        "counter_rate": RangeQuery("bench.frames", agg="rate", **by_stage),
        "histogram_p95": RangeQuery("bench.duration", agg="p95", **by_stage),
        "gauge_avg_matcher": RangeQuery(
            "bench.level", agg="avg", matchers=(Matcher("device", "=~", "mic-0[0-4].*"),), **by_stage
        ),
    }


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = run()
    return (time.perf_counter() - began) * 1e3, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=int, default=15, help="seconds between a series' points")
    parser.add_argument("--series", type=int, default=100, help="series per metric")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-minutes", type=int, default=60, help="time covered by one appended batch")
    args = parser.parse_args()
    if min(args.hours, args.interval, args.series, args.repeats, args.batch_minutes) <= 0:
        parser.error("every option must be positive")

    end = time.time_ns() // (60 * SECOND) * (60 * SECOND)
    store = MemoryStore()
    load_ms, points = _timed(
        lambda: load(store, args.hours, args.interval, args.series, args.batch_minutes, end)
    )
    engine = QueryEngine(store)
    plan = queries(end, args.hours)
    groups = {name: len(engine.query_range(q)) for name, q in plan.items()}  # warm-up, and a sanity check
    if not all(groups.values()):
        raise RuntimeError(f"a query returned no groups: {groups}")
    timings: dict[str, list[float]] = {name: [] for name in plan}
    for _ in range(args.repeats):
        for name, q in plan.items():
            timings[name].append(_timed(lambda q=q: engine.query_range(q))[0])

    result: dict[str, Any] = {}
    for name, values in timings.items():
        result[f"{name}_p50_ms"] = round(float(np.percentile(values, 50)), 3)
        result[f"{name}_p95_ms"] = round(float(np.percentile(values, 95)), 3)
    stats = store.stats()
    result.update(
        {
            "groups": groups,
            "buckets": int(args.hours * 60),
            "points": points,
            "series": args.series * len(METRICS),
            "store_points_mb": round(stats["points"]["bytes"] / 1e6, 1),  # type: ignore[index]
            "load_s": round(load_ms / 1e3, 2),
            "hours": args.hours,
            "interval_s": args.interval,
            "repeats": args.repeats,
            "python": platform.python_version(),
            "duckdb": duckdb.__version__,
            "pyarrow": pa.__version__,
        }
    )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
