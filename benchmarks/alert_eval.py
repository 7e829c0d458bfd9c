"""Alert condition evaluation cost: 1,000 rules over 100 metrics at ingest-sized batches, one core.

``--metrics`` (100) metrics of ten series each (60 % gauges, 30 % cumulative counters, 10 %
exponential histograms), built with ``benchmarks/derived.py``'s series-row and batch builders:
round-robin over the series at 10 s per round, ``--batch-points`` (8,192) points per batch, so each
batch holds every series about eight times. ``--rules`` (1,000) rules cycle over the metrics with a
mix of functions per type (``avg``, ``max``, ``min`` with a matcher, ``p95``, bare values,
``rate_of_change``, ``count``, ``absent``, ``and`` / ``not`` composites; counters ``rate`` and
``increase``; histograms ``p99``, ``avg``, ``rate``), windows of 1 and 5 minutes and thresholds that
differ per rule.

Per batch: :meth:`Windows.observe`, then :meth:`Evaluator.evaluate` at the batch's newest time
for every rule that reads a touched metric (all of them: every batch touches every metric). The
first ``--warmup`` batches fill the windows and are not timed.

Usage::

    python benchmarks/alert_eval.py [--metrics 100] [--rules 1000] [--batch-points 8192]
                                    [--batches 40] [--warmup 10] [--profile]

Prints one JSON line: ``points_per_s`` (points over the time of observe plus re-evaluation),
``evaluations_per_s`` (evaluations over their own time), ``observe_ms`` and ``evaluate_ms`` per
batch (medians), ``held_points`` at the end.
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

import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from derived import _batches, _row  # the derived-metrics benchmark's builders

from otel_audio.processors.alerting.evaluate import Evaluator, Windows
from otel_audio.processors.alerting.grammar import parse

SERIES_PER_METRIC = 10
TEMPLATES = {
    "gauge": [
        "avg({m}, 5m) > {x}",
        "max({m}, 1m) > {x}",
        'min({m}{{i="{i}"}}, 1m) < {x}',
        "p95({m}, 5m) > {x}",
        "{m} > {x}",
        "rate_of_change({m}, 5m) > {x}",
        "count({m}, 1m) < 3",
        "absent({m}, 1m)",
        "avg({m}, 1m) > {x} and {m} > {x}",
        "not avg({m}, 5m) < {x}",
    ],
    "sum": [
        "rate({m}, 1m) > {x}",
        "increase({m}, 5m) > {x}",
        'rate({m}{{i=~"[0-4]"}}, 5m) > {x}',
        "{m} > {x}",
    ],
    "exponential_histogram": ["p99({m}, 5m) > {x}", "avg({m}, 1m) > {x}", "rate({m}, 1m) > {x}"],
}


def metric_kinds(n: int) -> dict[str, str]:
    kinds = {}
    for k in range(n):
        share = k / n
        kind = "gauge" if share < 0.6 else "sum" if share < 0.9 else "exponential_histogram"
        kinds[f"bench.m{k:03d}"] = kind
    return kinds


def conditions(kinds: dict[str, str], n_rules: int) -> list[str]:
    names = list(kinds)
    out = []
    for r in range(n_rules):
        metric = names[r % len(names)]
        templates = TEMPLATES[kinds[metric]]
        template = templates[(r // len(names)) % len(templates)]
        out.append(template.format(m=metric, x=r % 97 + 0.5, i=r % SERIES_PER_METRIC))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = metric_kinds(args.metrics)
    series = [_row(m, kind, {"i": str(i)}) for m, kind in kinds.items() for i in range(SERIES_PER_METRIC)]
    work = _batches(series, args.batch_points, args.warmup + args.batches)
    windows = Windows()
    rules = [Evaluator(parse(text), windows) for text in conditions(kinds, args.rules)]
    observe_s, evaluate_s, evaluations, points = [], [], 0, 0
    profiler = cProfile.Profile() if args.profile else None
    for number, batch in enumerate(work):
        timed = number >= args.warmup
        if timed and profiler:
            profiler.enable()
        t0 = time.perf_counter()
        touched = windows.observe(batch)
        t1 = time.perf_counter()
        now = pc.max(batch.points.column("time_unix_nano")).as_py()
        done = 0
        for rule in rules:
            if rule.metrics & touched:
                rule.evaluate(now)
                done += 1
        t2 = time.perf_counter()
        if profiler:
            profiler.disable()
        if timed:
            observe_s.append(t1 - t0)
            evaluate_s.append(t2 - t1)
            evaluations += done
            points += len(batch)
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    total = sum(observe_s) + sum(evaluate_s)
    return {
        "benchmark": "alert_eval",
        "metrics": args.metrics,
        "series": len(series),
        "rules": len(rules),
        "batch_points": args.batch_points,
        "batches": args.batches,
        "points_per_s": round(points / total),
        "evaluations_per_s": round(evaluations / sum(evaluate_s)),
        "observe_ms": round(1000 * statistics.median(observe_s), 2),
        "evaluate_ms": round(1000 * statistics.median(evaluate_s), 2),
        "evaluations_per_batch": evaluations // args.batches,
        "held_points": windows.held_points(),
        "python": platform.python_version(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=100)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--batch-points", type=int, default=8192)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile of the timed batches on stderr")
    print(json.dumps(run(parser.parse_args())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
