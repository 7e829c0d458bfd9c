"""``otel-audio forecast``: forecast a CSV series and say when it crosses a limit.

Input: a CSV with a ``timestamp,value`` header; timestamps are ISO-8601 (``2026-01-05T10:00:00Z``;
no zone means UTC) or Unix seconds. Output: a CSV ``timestamp,forecast,lower,upper`` (ISO-8601
UTC) over the horizon. With ``--limit`` it prints when the mean and the interval bound cross it.
The fit is :func:`otel_audio.processors.forecast_model.forecast`, inline: the function the receiver's
forecast workers run, so a series exported from the receiver forecasts the same here.

Example::

    otel-audio forecast --input disk.csv --horizon 24h --season 1d --limit 5e11 --output fc.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from otel_audio.processors.forecast_model import forecast, parse_duration_ns, time_to_limit
from otel_audio.processors.units import timestamp_ns


class InputError(ValueError):
    """The input CSV could not be read; the message names the line and what is accepted."""


def forecast_main(argv: list[str]) -> int:
    """Run the command; 0 on success, 2 on bad arguments or input."""
    parser = argparse.ArgumentParser(prog="otel-audio forecast", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="CSV with a timestamp,value header")
    parser.add_argument("--horizon", required=True, help="how far ahead: 30m, 24h, 7d, ...")
    parser.add_argument("--output", required=True, help="CSV to write: timestamp,forecast,lower,upper")
    parser.add_argument("--season", help="season length (1d, 1w); default: detected; 0: none")
    parser.add_argument("--step", help="grid step; default: the median spacing of the input")
    parser.add_argument("--level", type=float, default=0.95, help="prediction interval coverage (0.95)")
    parser.add_argument("--limit", type=float, help="capacity limit to report the crossing time of")
    parser.add_argument("--direction", choices=("above", "below"), default="above")
    parser.add_argument("--method", choices=("auto", "ets", "arima"), default="auto")
    args = parser.parse_args(argv)
    try:
        horizon = parse_duration_ns(args.horizon, "--horizon")
        step = parse_duration_ns(args.step, "--step") if args.step else None
        season = None
        if args.season is not None:
            season = 0 if args.season.strip() in ("0", "none") else parse_duration_ns(args.season, "--season")
        if not 0 < args.level < 1:
            raise ValueError(f"--level: expected a coverage in (0, 1) such as 0.95, got {args.level}")
        times, values = read_series(Path(args.input))
        fc = forecast(
            times, values, horizon, step_ns=step, season_ns=season, level=args.level, method=args.method
        )
    except (OSError, ValueError) as exc:
        print(f"otel-audio forecast: {exc}", file=sys.stderr)
        return 2
    with open(args.output, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["timestamp", "forecast", "lower", "upper"])
        for t, m, lo, hi in zip(fc.timestamps_ns, fc.mean, fc.lower, fc.upper, strict=True):
            writer.writerow([_iso(int(t)), f"{m:.6g}", f"{lo:.6g}", f"{hi:.6g}"])
    print(f"method: {fc.method}; {len(fc.mean)} steps written to {args.output}")
    if args.limit is not None:
        t_mean, t_earliest = time_to_limit(fc, args.limit, args.direction)
        verb = "rises above" if args.direction == "above" else "falls below"
        if t_mean is None and t_earliest is None:
            print(f"limit {args.limit:g}: not crossed within {args.horizon}")
        else:
            when = _iso(t_mean) if t_mean is not None else f"not within {args.horizon}"
            earliest = _iso(t_earliest) if t_earliest is not None else "-"
            print(
                f"limit {args.limit:g}: the forecast {verb} it at {when} "
                f"(earliest {earliest}, {fc.level:.0%} interval)"
            )
    return 0


def read_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp,value`` rows as (Unix nanoseconds, float64) arrays."""
    times: list[int] = []
    values: list[float] = []
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["timestamp", "value"]:
            raise InputError(f"{path}:1: expected the header 'timestamp,value', got {header!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2:
                raise InputError(f"{path}:{line}: expected 'timestamp,value', got {','.join(row)!r}")
            times.append(_parse_time(row[0].strip(), f"{path}:{line}"))
            try:
                value = float(row[1])
            except ValueError:
                raise InputError(f"{path}:{line}: value {row[1]!r} is not a number") from None
            if not math.isfinite(value):
                raise InputError(f"{path}:{line}: value {row[1]!r} is not finite")
            values.append(value)
    if not times:
        raise InputError(f"{path}: no data rows after the header")
    return np.array(times, np.int64), np.array(values, np.float64)


def _parse_time(text: str, where: str) -> int:
    try:
        return timestamp_ns(text)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")
