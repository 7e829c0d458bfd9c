"""Rolling-origin backtest of ``otel_audio.processors.forecast`` on seeded seasonal series.

Series: hourly points over ``--weeks`` weeks: level 100, trend 0.02/h, a daily sine of amplitude
10, 8 lower on weekends, Gaussian noise at each ``--noise`` level. From ``--origins`` origins
spread over the last two weeks, each forecast covers ``--horizon`` hours with season detection on.

Output, one JSON line: ``mase`` (the forecaster's MAE over the seasonal-naive forecast's MAE from
the same origins, season one week; goal under 0.8), ``mase_vs_seasonal_naive`` (the classical
MASE, scaled by the in-sample one-season-ahead naive MAE), ``coverage`` of the ``nominal``
interval, ``fit_seconds_median``, and the same per noise level in ``by_noise``.

    python benchmarks/forecast.py [--weeks 8] [--origins 12] [--horizon 24] [--noise 1,3,6]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from otel_audio.processors.forecast_model import forecast

H = 3600 * 10**9
WEEK = 168


def series(hours: int, noise: float, seed: int) -> np.ndarray:
    h = np.arange(hours)
    weekend = np.where((h // 24) % 7 >= 5, -8.0, 0.0)
    clean = 100 + 0.02 * h + 10 * np.sin(2 * np.pi * h / 24) + weekend
    return clean + np.random.default_rng(seed).normal(0, noise, hours)


def backtest(weeks: int, origins: int, horizon: int, noise: float, level: float, seed: int) -> dict:
    hours = weeks * WEEK
    y = series(hours, noise, seed)
    times = 1_800_000_000 * 10**9 + np.arange(hours) * H
    first = max(hours - 2 * WEEK, 2 * WEEK)
    starts = np.linspace(first, hours - horizon, origins).astype(int)
    err, naive_err, scale, inside, fits, methods = [], [], [], [], [], set()
    for origin in starts:
        began = time.perf_counter()
        fc = forecast(times[:origin], y[:origin], horizon * H, level=level)
        fits.append(time.perf_counter() - began)
        methods.add(fc.method)
        truth = y[origin : origin + horizon]
        err.append(np.abs(fc.mean - truth).mean())
        naive_err.append(np.abs(y[origin - WEEK : origin - WEEK + horizon] - truth).mean())
        scale.append(np.abs(y[WEEK:origin] - y[: origin - WEEK]).mean())
        inside.append(((truth >= fc.lower) & (truth <= fc.upper)).mean())
    return {
        "mase": float(np.mean(err) / np.mean(naive_err)),
        "mase_vs_seasonal_naive": float(np.mean(np.array(err) / np.array(scale))),
        "coverage": float(np.mean(inside)),
        "fit_seconds": fits,
        "methods": sorted(methods),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--origins", type=int, default=12)
    parser.add_argument("--horizon", type=int, default=24, help="hours")
    parser.add_argument("--noise", default="1,3,6", help="noise standard deviations, comma-separated")
    parser.add_argument("--level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.weeks < 3:
        parser.error("--weeks: at least 3 (two for the seasonal-naive reference, one to forecast)")
    by_noise = {}
    for i, noise in enumerate(float(n) for n in args.noise.split(",")):
        by_noise[f"{noise:g}"] = backtest(
            args.weeks, args.origins, args.horizon, noise, args.level, args.seed + i
        )
    fits = [s for r in by_noise.values() for s in r.pop("fit_seconds")]
    print(
        json.dumps(
            {
                "weeks": args.weeks,
                "origins": args.origins,
                "horizon_hours": args.horizon,
                "nominal": args.level,
                "mase": float(np.mean([r["mase"] for r in by_noise.values()])),
                "mase_vs_seasonal_naive": float(
                    np.mean([r["mase_vs_seasonal_naive"] for r in by_noise.values()])
                ),
                "coverage": float(np.mean([r["coverage"] for r in by_noise.values()])),
                "fit_seconds_median": float(np.median(fits)),
                "by_noise": by_noise,
            }
        )
    )


if __name__ == "__main__":
    main()
