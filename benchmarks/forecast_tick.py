"""How long the forecast processor's ``tick`` holds the receiver's chain, fitting inline or in workers.

Every accepted batch waits for the chain's lock while a processor's ``tick`` runs. This puts
``--series`` seeded hourly series (``--weeks`` weeks: trend, daily sine, noise) into two
processors, one fitting inline (``workers: 0``) and one with a pool of ``--workers`` processes,
makes all of them due at once and times each ``tick``:

- ``inline_tick_seconds``: the one tick that fits every series (statsmodels already imported), and
  ``inline_second_tick_seconds`` at the next refresh;
- per pool round (``cold``: a fresh pool, whose worker first imports statsmodels; ``warm``: the
  next refresh): ``submit_tick_seconds`` (the tick that hands the series over),
  ``idle_tick_max_seconds`` over ``idle_ticks`` ticks made every 10 ms while the workers fit,
  ``collect_tick_max_seconds`` over the ``collect_ticks`` that emitted finished forecasts, and
  ``results_after_seconds`` (from the submit until every forecast was emitted);
- ``pool_max_tick_seconds``: the longest of all those ticks, the most a batch waited for the pool;
- ``identical``: the pool's forecasts equal the inline ones.

Emission goes to a no-op (in the receiver it feeds the later processors, the same either way).
Output: one JSON line.

    python benchmarks/forecast_tick.py [--series 20] [--weeks 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
    canonical_json,
    series_id,
)
from otel_audio.processors.forecast_model import forecast
from otel_audio.processors.forecast_processor import ForecastProcessor, SeriesSpec

H = 3600 * 10**9
T0 = 1_800_000_000 * 10**9
REFRESH = 600 * 10**9


def disk_batch(series: int, hours: int, seed: int) -> MetricBatch:
    """``series`` gauges of ``disk.used`` (one per host), hourly over ``hours``."""
    rng = np.random.default_rng(seed)
    h = np.arange(hours)
    rows, points = [], []
    for i in range(series):
        resource = canonical_json({"host.name": f"db-{i}", "service.name": "storage"})
        sid = series_id("disk.used", resource, "{}", "{}")
        rows.append(
            {
                "series_id": sid,
                "metric": "disk.used",
                "type": "gauge",
                "unit": "By",
                "description": "",
                "temporality": "unspecified",
                "monotonic": False,
                "service": "storage",
                "resource": resource,
                "scope": "",
                "scope_version": "",
                "attributes": "{}",
            }
        )
        values = 100 + (0.02 + 0.01 * i) * h + 10 * np.sin(2 * np.pi * h / 24) + rng.normal(0, 2, hours)
        points.extend(
            {"series_id": sid, "time_unix_nano": T0 + int(k) * H, "value": float(v)}
            for k, v in zip(h, values, strict=True)
        )
    return MetricBatch(
        points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
        series=pa.Table.from_pylist(rows, schema=SERIES_SCHEMA),
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )


def timed_tick(processor: ForecastProcessor, now: int) -> float:
    began = time.perf_counter()
    processor.tick(now)
    return time.perf_counter() - began


def pool_round(processor: ForecastProcessor, emitted: list[Batch], now: int) -> dict:
    """Make every series due at ``now``, then tick every 10 ms until no refit is in flight."""
    began = time.perf_counter()
    submit = timed_tick(processor, now)
    idle: list[float] = []
    collect: list[float] = []
    while processor.in_flight:
        time.sleep(0.01)
        before = len(emitted)
        took = timed_tick(processor, now + 1)
        (collect if len(emitted) > before else idle).append(took)
    return {
        "submit_tick_seconds": submit,
        "idle_ticks": len(idle),
        "idle_tick_max_seconds": max(idle, default=0.0),
        "collect_ticks": len(collect),
        "collect_tick_max_seconds": max(collect, default=0.0),
        "results_after_seconds": time.perf_counter() - began,
    }


def rows(batches: list[Batch]) -> tuple[pa.Table, pa.Table]:
    """The points and series of ``batches``, in one order whatever order the workers finished in."""
    points = pa.concat_tables([b.points for b in batches])
    series = pa.concat_tables([b.series for b in batches])
    return (
        points.sort_by([("series_id", "ascending"), ("time_unix_nano", "ascending")]),
        series.sort_by("series_id"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--weeks", type=int, default=8, help="hourly history per series")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers: at least 1 (the inline fit is always measured)")
    hours = args.weeks * 168
    batch = disk_batch(args.series, hours, args.seed)
    now = T0 + (hours - 1) * H
    spec = SeriesSpec("disk.used", limit=1e4, horizon_ns=24 * H, refresh_ns=REFRESH)

    # statsmodels is imported on the first fit: in a long-running receiver that happened long ago.
    forecast(T0 + np.arange(48) * H, np.sin(np.arange(48)), H, season_ns=0)
    inline_out: list[Batch] = []
    inline = ForecastProcessor([spec], workers=0)
    inline.bind_emit(inline_out.append)
    inline.process(batch)
    inline_tick = timed_tick(inline, now)
    inline_second_tick = timed_tick(inline, now + REFRESH)

    pool_out: list[Batch] = []
    pool = ForecastProcessor([spec], workers=args.workers)
    pool.bind_emit(pool_out.append)
    pool.process(batch)
    try:
        cold = pool_round(pool, pool_out, now)
        warm = pool_round(pool, pool_out, now + REFRESH)
    finally:
        pool.close()
    cold_batches = pool_out[: cold["collect_ticks"]]
    identical = all(a.equals(b) for a, b in zip(rows(inline_out[:1]), rows(cold_batches), strict=True))
    keys = ("submit_tick_seconds", "idle_tick_max_seconds", "collect_tick_max_seconds")
    ticks = [r[k] for r in (cold, warm) for k in keys]
    print(
        json.dumps(
            {
                "series": args.series,
                "points_per_series": hours,
                "workers": args.workers,
                "cpus": os.cpu_count(),
                "inline_tick_seconds": inline_tick,
                "inline_second_tick_seconds": inline_second_tick,
                "pool_max_tick_seconds": max(ticks),
                "cold": cold,
                "warm": warm,
                "identical": identical,
            }
        )
    )


if __name__ == "__main__":
    main()
