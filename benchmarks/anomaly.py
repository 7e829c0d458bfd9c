"""Anomaly detectors on the project's labelled set: precision, recall, F1, detection delay, points/s.

The set is synthetic and seeded: daily-seasonal series (``--period`` points per day, 96 = one
point per 15 minutes; level 100, seasonal amplitude 10) with Gaussian noise at several levels,
each series carrying ``--events`` injected anomalies of one type, spaced evenly after a warm-up of
``--warmup-days`` days:

- ``spike``: one point 8 noise sigmas up or down;
- ``level_shift``: a permanent step of 5 noise sigmas;
- ``trend_change``: a ramp of 8 noise sigmas over half a day, then the new level stays;
- ``dropout``: 4 points at 0 (a source going silent and reporting zeros).

Scoring is per event: an event is detected when a point in ``[start, start + tolerance]`` is
flagged (tolerance: spike 2, level shift 10, trend change half a day, dropout 6 points); the delay
is the first flagged point's distance from the start. Flagged points are grouped into alarms (runs
with gaps of at most 3 points); an alarm is false when it touches no event's span plus tolerance.
Precision = true alarms / alarms, recall = detected events / events. Throughput is each
detector's ``update`` loop over ``--throughput-points`` points of one seasonal series, one core.

Usage::

    python benchmarks/anomaly.py [--days 14] [--series 2] [--noise 0.5,1,2] [--events 4]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from otel_audio.processors.anomaly import DETECTORS, make_detector

TYPES = ("spike", "level_shift", "trend_change", "dropout")
LEVEL, AMPLITUDE = 100.0, 10.0


def _tolerance(kind: str, period: int) -> int:
    return {"spike": 2, "level_shift": 10, "trend_change": period // 2, "dropout": 6}[kind]


def make_series(kind: str, noise: float, days: int, period: int, events: int, warmup_days: int, seed: int):
    """(values, [(start, end)]) of one labelled series."""
    rng = np.random.default_rng(seed)
    n = days * period
    t = np.arange(n)
    values = LEVEL + AMPLITUDE * np.sin(2 * np.pi * t / period) + rng.normal(0.0, noise, n)
    first = warmup_days * period
    gap = (n - first) // (events + 1)
    spans = []
    for k in range(1, events + 1):
        start = first + k * gap + int(rng.integers(0, max(1, gap // 4)))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if kind == "spike":
            values[start] += sign * 8.0 * noise
            end = start
        elif kind == "level_shift":
            values[start:] += sign * 5.0 * noise
            end = start
        elif kind == "trend_change":
            ramp = period // 2
            length = min(ramp, n - start)
            values[start : start + length] += sign * 8.0 * noise * np.arange(1, length + 1) / ramp
            values[start + ramp :] += sign * 8.0 * noise
            end = start + ramp
        else:
            values[start : start + 4] = 0.0
            end = start + 3
        spans.append((start, end))
    return values, spans


def evaluate(flags: np.ndarray, spans: list[tuple[int, int]], tolerance: int) -> dict[str, Any]:
    """Detected events, their delays, true and false alarms."""
    hits = np.flatnonzero(flags)
    delays = []
    for start, _ in spans:
        inside = hits[(hits >= start) & (hits <= start + tolerance)]
        if inside.size:
            delays.append(int(inside[0] - start))
    alarms = []
    for i in hits.tolist():
        if alarms and i - alarms[-1][1] <= 4:
            alarms[-1][1] = i
        else:
            alarms.append([i, i])
    true_alarms = sum(any(a <= end + tolerance and b >= start for start, end in spans) for a, b in alarms)
    return {"detected": len(delays), "delays": delays, "alarms": len(alarms), "true_alarms": true_alarms}


def run(args: argparse.Namespace) -> dict[str, Any]:
    period = args.period
    out: dict[str, Any] = {
        "period": period,
        "days": args.days,
        "series_per_type_and_noise": args.series,
        "noise_levels": args.noise,
        "events_per_series": args.events,
        "python": platform.python_version(),
        "detectors": {},
    }
    for name in args.detectors:
        params = {} if name == "ewma" else {"period": period}
        per_type = {}
        for type_index, kind in enumerate(TYPES):
            totals = {"events": 0, "detected": 0, "alarms": 0, "true_alarms": 0, "delays": []}
            for noise_index, noise in enumerate(args.noise):
                for s in range(args.series):
                    seed = args.seed + 1000 * type_index + 100 * noise_index + s
                    values, spans = make_series(
                        kind, noise, args.days, period, args.events, args.warmup_days, seed
                    )
                    detector = make_detector(name, **params)
                    flags = np.zeros(values.size, dtype=bool)
                    for i, v in enumerate(values.tolist()):
                        score = detector.update(i, v)
                        flags[i] = score is not None and score.is_anomaly
                    result = evaluate(flags, spans, _tolerance(kind, period))
                    totals["events"] += len(spans)
                    for key in ("detected", "alarms", "true_alarms"):
                        totals[key] += result[key]
                    totals["delays"] += result["delays"]
            precision = totals["true_alarms"] / totals["alarms"] if totals["alarms"] else 0.0
            recall = totals["detected"] / totals["events"] if totals["events"] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            delays = totals["delays"]
            per_type[kind] = {
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "f1": round(f1, 3),
                "mean_delay_points": round(float(np.mean(delays)), 2) if delays else None,
                "false_alarms": totals["alarms"] - totals["true_alarms"],
            }
        out["detectors"][name] = {"points_per_s": _throughput(name, params, args), "types": per_type}
    return out


def _throughput(name: str, params: dict[str, Any], args: argparse.Namespace) -> float:
    values, _ = make_series("spike", 1.0, 1, args.period, 0, 0, args.seed)
    reps = max(1, args.throughput_points // values.size + 1)
    series = np.tile(values, reps)[: args.throughput_points].tolist()
    detector = make_detector(name, **params)
    update = detector.update
    began = time.perf_counter()
    for i, v in enumerate(series):
        update(i, v)
    return round(len(series) / (time.perf_counter() - began), 1)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--period", type=int, default=96, help="points per day")
    parser.add_argument("--warmup-days", type=int, default=4)
    parser.add_argument("--series", type=int, default=2, help="series per anomaly type and noise level")
    parser.add_argument("--events", type=int, default=4, help="anomalies per series")
    parser.add_argument("--noise", type=_floats, default=[0.5, 1.0, 2.0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--throughput-points", type=int, default=50_000)
    parser.add_argument("--detectors", type=lambda s: s.split(","), default=list(DETECTORS))
    args = parser.parse_args(argv)
    if args.days <= args.warmup_days:
        parser.error("--days must exceed --warmup-days")
    print(json.dumps(run(args), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
