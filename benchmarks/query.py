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

``--store`` picks what is queried; one store per run, so the default's keys and numbers stay as
they were:

- ``memory`` (default): the store above, queries at a 60 s step; keys ``<query>_p50_ms`` and
  ``<query>_p95_ms``.
- ``blocks``: a :class:`~otel_audio.store.tiered.TieredStore` in a temporary directory under
  ``--dir``. The same points arrive time-major (every metric's batch of one ``--batch-minutes``
  window, then the next window), as ingest sees them, and the store is flushed whenever
  ``--flush-minutes`` (120, the receiver's default flush interval) of data time have passed since
  the last flush: day-partitioned raw blocks and 1-minute and 1-hour rollup files, as in
  production. The last flush interval stays in the head (no final flush), so queries read head
  and blocks together. The data ends on a whole hour; the engine's clock is that end. Each query
  runs at three steps, which pick three tiers: ``--raw-step`` (15 s, raw blocks and the head),
  60 s (1-minute rollups for the buckets before the head's oldest point, raw points after) and
  1 h (1-hour rollups, likewise). Keys ``<query>_<step>_p50_ms`` / ``_p95_ms`` with step
  ``15s``, ``1m``, ``1h``; ``tiers`` names the tier each step reads, ``groups`` the groups each
  query answered, ``max_p95_ms`` the slowest p95.

Usage::

    python benchmarks/query.py [--hours 24] [--interval 15] [--series 100] [--repeats 15]
                               [--batch-minutes 60] [--store memory|blocks] [--dir PATH]
                               [--flush-minutes 120] [--raw-step 15]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
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
from otel_audio.store.tiered import TieredStore
from otel_audio.store.tiers import TIERS, choose_tier

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 3600 * SECOND
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


def batches(
    hours: float, interval_s: int, n_series: int, batch_minutes: int, end_ns: int, *, by_time: bool = False
) -> Iterator[tuple[int, MetricBatch]]:
    """``(first point's time, batch)`` for ``hours`` of every metric up to ``end_ns``.

    Metric by metric (each over the whole range), or with ``by_time`` window by window (every
    metric's batch of one window, then the next window). The values are the same either way.
    """
    rng = np.random.default_rng(7)
    start = end_ns - int(hours * 3600) * SECOND
    times = np.arange(start, end_ns, interval_s * SECOND, dtype=np.int64)
    per_batch = max(1, batch_minutes * 60 // interval_s)
    windows = range(0, times.size, per_batch)
    # Columns are drawn metric by metric, in this order, in both layouts.
    tables = {metric: series_table(metric, n_series) for metric in METRICS}
    sids = {m: np.asarray(t.column("series_id").to_numpy(), dtype=np.uint64) for m, t in tables.items()}
    days: dict[str, dict[str, np.ndarray]] = {}

    def batch(metric: str, first: int) -> MetricBatch:
        if metric not in days:
            days[metric] = day_columns(metric, n_series, times.size, rng)
        points = points_table(
            metric, sids[metric], times, days[metric], slice(first, first + per_batch), start
        )
        # Each batch names its series, as a decoded request does; the store keeps the first.
        return MetricBatch(points, tables[metric], EXEMPLARS_SCHEMA.empty_table())

    if by_time:
        for metric in METRICS:
            days[metric] = day_columns(metric, n_series, times.size, rng)
        for first in windows:
            for metric in METRICS:
                yield int(times[first]), batch(metric, first)
    else:
        for metric in METRICS:
            for first in windows:
                yield int(times[first]), batch(metric, first)
            del days[metric]


def load(
    store: MemoryStore, hours: float, interval_s: int, n_series: int, batch_minutes: int, end_ns: int
) -> int:
    """Fill ``store`` with ``hours`` of every metric up to ``end_ns``, batch by batch; returns points."""
    total = 0
    for _, b in batches(hours, interval_s, n_series, batch_minutes, end_ns):
        store.process(b)
        total += b.points.num_rows
    return total


def load_blocks(
    store: TieredStore,
    hours: float,
    interval_s: int,
    n_series: int,
    batch_minutes: int,
    end_ns: int,
    flush_ns: int,
) -> tuple[int, int]:
    """Fill ``store`` time-major, flushing when ``flush_ns`` of data time passed; (points, flushes).

    No flush follows the last batch: the head keeps the rows since the last flush.
    """
    total = flushes = 0
    last_flush = end_ns - int(hours * 3600) * SECOND
    for first_ns, b in batches(hours, interval_s, n_series, batch_minutes, end_ns, by_time=True):
        if first_ns - last_flush >= flush_ns:
            store.flush()
            last_flush, flushes = first_ns, flushes + 1
        store.process(b)
        total += b.points.num_rows
    return total, flushes


def queries(end_ns: int, hours: float, step: int = MINUTE) -> dict[str, RangeQuery]:
    start = end_ns - int(hours * 3600) * SECOND
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


def time_queries(engine: QueryEngine, plan: dict[str, RangeQuery], repeats: int) -> dict[str, Any]:
    """One warm-up round (each query must answer some group), then ``repeats`` interleaved rounds.

    Returns ``{"groups": {name: groups answered}, name: [ms per round], ...}``.
    """
    groups = {name: len(engine.query_range(q)) for name, q in plan.items()}
    if not all(groups.values()):
        raise RuntimeError(f"a query returned no groups: {groups}")
    timings: dict[str, Any] = {name: [] for name in plan}
    for _ in range(repeats):
        for name, q in plan.items():
            timings[name].append(_timed(lambda q=q: engine.query_range(q))[0])
    return {"groups": groups, **timings}


def _percentiles(prefix: str, values: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50_ms": round(float(np.percentile(values, 50)), 3),
        f"{prefix}_p95_ms": round(float(np.percentile(values, 95)), 3),
    }


def _step_label(step_ns: int) -> str:
    if step_ns % HOUR == 0:
        return f"{step_ns // HOUR}h"
    if step_ns % MINUTE == 0:
        return f"{step_ns // MINUTE}m"
    return f"{step_ns // SECOND}s"


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    """The in-memory store, queries at a 60 s step."""
    end = time.time_ns() // MINUTE * MINUTE
    store = MemoryStore()
    load_ms, points = _timed(
        lambda: load(store, args.hours, args.interval, args.series, args.batch_minutes, end)
    )
    plan = queries(end, args.hours)
    timed = time_queries(QueryEngine(store), plan, args.repeats)
    result: dict[str, Any] = {}
    for name in plan:
        result.update(_percentiles(name, timed[name]))
    stats = store.stats()
    result.update(
        {
            "groups": timed["groups"],
            "buckets": int(args.hours * 60),
            "points": points,
            "series": args.series * len(METRICS),
            "store_points_mb": round(stats["points"]["bytes"] / 1e6, 1),  # type: ignore[index]
            "load_s": round(load_ms / 1e3, 2),
        }
    )
    return result


def run_blocks(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """A TieredStore under ``root``: head plus blocks, queries at a raw step, 1 m and 1 h."""
    end = time.time_ns() // HOUR * HOUR
    store = TieredStore(root, background=False)
    flush_ns = args.flush_minutes * MINUTE
    load_ms, (points, flushes) = _timed(
        lambda: load_blocks(store, args.hours, args.interval, args.series, args.batch_minutes, end, flush_ns)
    )
    # Maintenance as the receiver's ticker runs it every minute: rollup days with several flush
    # files are merged (the first tick only starts the clocks).
    store.tick(end)
    store.tick(end + MINUTE)
    engine = QueryEngine(store, clock=lambda: end)
    result: dict[str, Any] = {}
    groups: dict[str, dict[str, int]] = {}
    tiers: dict[str, str] = {}
    buckets: dict[str, int] = {}
    for step in (args.raw_step * SECOND, MINUTE, HOUR):
        label = _step_label(step)
        plan = queries(end, args.hours, step)
        tiers[label] = _tier_read(next(iter(plan.values())), end, store)
        buckets[label] = -(-int(args.hours * 3600) * SECOND // step)
        timed = time_queries(engine, plan, args.repeats)
        groups[label] = timed["groups"]
        for name in plan:
            result.update(_percentiles(f"{name}_{label}", timed[name]))
    head = store.snapshot().points
    stats = store.stats()
    result.update(
        {
            "max_p95_ms": max(v for k, v in result.items() if k.endswith("_p95_ms")),
            "tiers": tiers,
            "groups": groups,
            "buckets": buckets,
            "points": points,
            "series": args.series * len(METRICS),
            "flushes": flushes,
            "head_points": head.num_rows,
            "head_hours": round((end - int(np.min(head.column("time_unix_nano")))) / HOUR, 2)
            if head.num_rows
            else 0.0,
            "block_files": stats["blocks"]["files"],  # type: ignore[index]
            "blocks_mb": round(stats["blocks"]["bytes"] / 1e6, 2),  # type: ignore[index]
            "load_s": round(load_ms / 1e3, 2),
            "flush_minutes": args.flush_minutes,
        }
    )
    return result


def _tier_read(q: RangeQuery, now_ns: int, store: TieredStore) -> str:
    """The tier the engine reads for ``q`` (choose_tier, then the finest whose windows tile it)."""
    tier = choose_tier(q.start_ns, q.end_ns, q.step_ns, now_ns, store.retention)
    while tier.window_ns and (q.start_ns % tier.window_ns or q.step_ns % tier.window_ns):
        tier = TIERS[TIERS.index(tier) - 1]
    return tier.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--interval", type=int, default=15, help="seconds between a series' points")
    parser.add_argument("--series", type=int, default=100, help="series per metric")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-minutes", type=int, default=60, help="time covered by one appended batch")
    parser.add_argument("--store", choices=("memory", "blocks"), default="memory")
    parser.add_argument("--dir", type=Path, default=None, help="blocks: where to write (default: a temp dir)")
    parser.add_argument("--flush-minutes", type=int, default=120, help="blocks: data time between flushes")
    parser.add_argument("--raw-step", type=int, default=15, help="blocks: seconds, the step that reads raw")
    args = parser.parse_args()
    sizes = (args.hours, args.interval, args.series, args.repeats, args.batch_minutes)
    if min(*sizes, args.flush_minutes, args.raw_step) <= 0:
        parser.error("every option must be positive")
    if args.raw_step >= 60:
        parser.error(
            f"--raw-step must be under 60 s (a minute step reads 1-minute rollups), got {args.raw_step}"
        )

    if args.store == "memory":
        result = run_memory(args)
    else:
        root = Path(tempfile.mkdtemp(prefix="otel-audio-query-", dir=args.dir))
        try:
            result = run_blocks(args, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    result.update(
        {
            "store": args.store,
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
