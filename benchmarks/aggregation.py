"""Streaming aggregation throughput: points/s through :class:`~otel_audio.processors.aggregation.Aggregation`.

Three metrics of ``--series`` (1,000) series each, one point per series every ``--interval`` (1)
second for ``--minutes`` (10) minutes, built with ``benchmarks/query.py``'s column builders
(``stage`` and ``device`` attributes, service ``enhancer``):

- ``bench.level``: a gauge;
- ``bench.frames``: a cumulative monotonic counter;
- ``bench.duration``: a cumulative exponential histogram (scale 0, eleven positive buckets: the
  query benchmark's cumulative bucket counts read as exponential buckets).

The points are sorted by time and cut into batches of ``--batch-points`` (8,192, the OpenTelemetry
Collector's batch size, as ``benchmarks/ingest.py`` sends), the three metrics' batches
interleaved, as a receiver's chain sees them. The rules are typical ones, grouped by ``service``
and ``stage`` (five groups), with ``allowed_lateness`` 10 s:

- ``gauge_1m``: ``avg`` and ``p99`` of the gauge, 1 m tumbling windows;
- ``gauge_5m_sliding``: the same over 5 m windows sliding by 1 m (each point in five windows);
- ``counter_rate_1m``: ``rate`` of the counter, 1 m tumbling;
- ``histogram_p95_1m``: ``p95`` of the exponential histogram, 1 m tumbling;
- ``gauge_1m_by_device``: ``gauge_1m`` grouped by ``device`` instead: one group per series.

Each rule is timed alone on its own metric's batches (``<rule>_points_per_s``: the metric's
points over the wall time of ``process`` for every batch and the final ``close``), then the first
four in one processor on every batch (``chain_points_per_s``: every point, any metric, over the
time). Each figure is the median of ``--repeats`` runs; one core, in process. ``windows`` and
``results`` count what the chain run emitted; ``max_held_points`` is the most raw points the
chain held between batches (what open windows keep, see the processor's docstring).

``--profile`` prints a cProfile table (top 30 by own time) of one chain run to stderr.

Usage::

    python benchmarks/aggregation.py [--series 1000] [--minutes 10] [--interval 1]
                                     [--batch-points 8192] [--repeats 3] [--profile]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from query import day_columns, points_table, series_table  # the query benchmark's builders

from otel_audio.processors.aggregation import Aggregation, from_options
from otel_audio.processors.base import EXEMPLARS_SCHEMA, MetricBatch, MetricType

SECOND = 10**9
GAUGE, COUNTER, HISTOGRAM = "bench.level", "bench.frames", "bench.duration"
BY_STAGE = ["service", "stage"]
RULES = {
    "gauge_1m": {"metric": GAUGE, "window": "1m", "by": BY_STAGE, "aggs": ["avg", "p99"]},
    "gauge_5m_sliding": {
        "metric": GAUGE,
        "window": "5m",
        "slide": "1m",
        "by": BY_STAGE,
        "aggs": ["avg", "p99"],
    },
    "counter_rate_1m": {"metric": COUNTER, "window": "1m", "by": BY_STAGE, "aggs": ["rate"]},
    "histogram_p95_1m": {"metric": HISTOGRAM, "window": "1m", "by": BY_STAGE, "aggs": ["p95"]},
}
CHAIN = tuple(RULES)
# timed alone only: one group per series (every device), as a per-series downsampling rule has
RULES["gauge_1m_by_device"] = {"metric": GAUGE, "window": "1m", "by": ["device"], "aggs": ["avg", "p99"]}
EXP_OFFSET = 2  # the histogram's first bucket is (2^2, 2^3]


def _exponential(series: pa.Table, points: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The explicit histogram tables recast as exponential: same counts, buckets at scale 0."""
    kind = pa.array([MetricType.EXPONENTIAL_HISTOGRAM.value] * series.num_rows, pa.string())
    series = series.set_column(series.schema.get_field_index("type"), "type", kind)
    n = points.num_rows
    columns = {
        "exp_scale": pa.array(np.zeros(n, np.int32)),
        "exp_zero_count": pa.array(np.zeros(n, np.uint64)),
        "exp_positive_offset": pa.array(np.full(n, EXP_OFFSET, np.int32)),
        "exp_positive_counts": points.column("bucket_counts"),
        "bounds": pa.nulls(n, points.schema.field("bounds").type),
        "bucket_counts": pa.nulls(n, points.schema.field("bucket_counts").type),
    }
    for name, column in columns.items():
        points = points.set_column(points.schema.get_field_index(name), name, column)
    return series, points


def metric_tables(n_series: int, minutes: float, interval_s: int, end_ns: int) -> dict[str, tuple]:
    """metric -> (series table, points table sorted by time then series)."""
    rng = np.random.default_rng(7)
    start = end_ns - int(minutes * 60) * SECOND
    times = np.arange(start, end_ns, interval_s * SECOND, dtype=np.int64)
    out = {}
    for metric in (GAUGE, COUNTER, HISTOGRAM):
        series = series_table(metric, n_series)
        sids = np.asarray(series.column("series_id").to_numpy(), dtype=np.uint64)
        day = day_columns(metric, n_series, times.size, rng)
        points = points_table(metric, sids, times, day, slice(None), start)
        if metric == HISTOGRAM:
            series, points = _exponential(series, points)
        sid, t = points.column("series_id").to_numpy(), points.column("time_unix_nano").to_numpy()
        out[metric] = (series, points.take(np.lexsort((sid, t))))
    return out


def batches(tables: dict[str, tuple], batch_points: int, metrics: tuple[str, ...]) -> list[MetricBatch]:
    """The metrics' points in batches of ``batch_points``, metrics interleaved batch by batch."""
    out = []
    longest = max(tables[m][1].num_rows for m in metrics)
    for first in range(0, longest, batch_points):
        for metric in metrics:
            series, points = tables[metric]
            if first < points.num_rows:
                chunk = points.slice(first, batch_points).combine_chunks()
                out.append(MetricBatch(chunk, series, EXEMPLARS_SCHEMA.empty_table()))
    return out


def _processor(names: list[str]) -> Aggregation:
    rules = [{**RULES[n], "allowed_lateness": "10s"} for n in names]
    return from_options({"rules": rules})


def timed_run(names: list[str], work: list[MetricBatch]) -> tuple[float, dict[str, int]]:
    """Seconds to push ``work`` through a fresh processor of rules ``names`` and close it."""
    agg = _processor(names)
    emitted: list[MetricBatch] = []
    agg.bind_emit(emitted.append)
    held = 0
    began = time.perf_counter()
    for batch in work:
        agg.process(batch)
        held = max(held, agg.held_points())
    agg.close()
    elapsed = time.perf_counter() - began
    counts = {
        "windows": len({int(t) for b in emitted for t in b.points.column("time_unix_nano").to_numpy()}),
        "results": sum(b.points.num_rows for b in emitted),
        "max_held_points": held,
        "late_points": agg.late_points,
    }
    return elapsed, counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    end_ns = 1_700_000_000 * SECOND // (3600 * SECOND) * (3600 * SECOND)
    tables = metric_tables(args.series, args.minutes, args.interval, end_ns)
    out: dict[str, Any] = {
        "series_per_metric": args.series,
        "minutes": args.minutes,
        "interval_s": args.interval,
        "batch_points": args.batch_points,
        "repeats": args.repeats,
    }
    for name, rule in RULES.items():
        work = batches(tables, args.batch_points, (rule["metric"],))
        points = sum(b.points.num_rows for b in work)
        seconds = statistics.median(timed_run([name], work)[0] for _ in range(args.repeats))
        out[f"{name}_points_per_s"] = round(points / seconds, 1)
    work = batches(tables, args.batch_points, (GAUGE, COUNTER, HISTOGRAM))
    points = sum(b.points.num_rows for b in work)
    runs = [timed_run(list(CHAIN), work) for _ in range(args.repeats)]
    out["chain_points_per_s"] = round(points / statistics.median(s for s, _ in runs), 1)
    out["points"] = points
    out.update(runs[0][1])
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        timed_run(list(CHAIN), work)
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    out.update({"python": platform.python_version(), "pyarrow": pa.__version__})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--series", type=int, default=1000, help="series per metric")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=int, default=1, help="seconds between a series' points")
    parser.add_argument("--batch-points", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one chain run, to stderr")
    args = parser.parse_args()
    if min(args.series, args.minutes, args.interval, args.batch_points, args.repeats) <= 0:
        parser.error("every option must be positive")
    print(json.dumps(run(args), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
