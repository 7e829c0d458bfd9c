"""``otel-audio detect``: score a CSV series offline with the same detectors the service runs.

Reads ``timestamp,value`` rows (a header line with those names is optional; the timestamp is
ISO-8601 or unix seconds), writes ``timestamp,value,anomaly_score``, one row per input row, score
0 while the detector warms up. ``--param k=v`` values are read as JSON when they parse
(``period=288``, ``robust=true``, ``members=["robust_z","cusum"]``) and as strings otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from typing import Any

from otel_audio.processors.anomaly.registry import DETECTORS, make_detector
from otel_audio.processors.units import timestamp_ns


class CsvError(ValueError):
    """A bad input line; the message names the line."""


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` -> (k, v), v decoded as JSON when it parses."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--param {text!r}: expected NAME=VALUE, e.g. window=120")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def read_series(lines: Any) -> list[tuple[str, int, float]]:
    """(timestamp text, t_ns, value) per row; CsvError naming the line on anything malformed."""
    rows = []
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if number == 1 and [c.strip().lower() for c in row] == ["timestamp", "value"]:
            continue
        if len(row) != 2:
            raise CsvError(f"line {number}: expected 2 columns (timestamp,value), got {len(row)}: {row!r}")
        try:
            t_ns = timestamp_ns(row[0])
        except ValueError as exc:
            raise CsvError(f"line {number}: {exc}") from None
        try:
            value = float(row[1])
        except ValueError:
            raise CsvError(f"line {number}: value {row[1]!r} is not a number") from None
        if not math.isfinite(value):
            raise CsvError(f"line {number}: value {row[1]!r} is not finite")
        rows.append((row[0].strip(), t_ns, value))
    return rows


def detect_main(argv: list[str]) -> int:
    """Run ``otel-audio detect``; returns the exit status (0 ok, 2 bad usage or input)."""
    parser = argparse.ArgumentParser(
        prog="otel-audio detect", description="Score a timestamp,value CSV with an anomaly detector."
    )
    parser.add_argument("--detector", required=True, help=f"one of: {', '.join(DETECTORS)}")
    parser.add_argument("--input", required=True, help="CSV of timestamp,value")
    parser.add_argument("--output", required=True, help="CSV written: timestamp,value,anomaly_score")
    parser.add_argument("--param", action="append", default=[], metavar="K=V", help="detector parameter")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        kwargs = dict(parse_param(p) for p in args.param)
        detector = make_detector(args.detector, **kwargs)
    except ValueError as exc:
        print(f"otel-audio detect: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.input, newline="") as source:
            rows = read_series(source)
    except OSError as exc:
        print(f"otel-audio detect: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 2
    except CsvError as exc:
        print(f"otel-audio detect: {args.input}: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.output, "w", newline="") as sink:
            writer = csv.writer(sink)
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for text, t_ns, value in rows:
                score = detector.update(t_ns, value)
                writer.writerow([text, repr(value), f"{score.score:.6f}" if score is not None else "0"])
    except OSError as exc:
        print(f"otel-audio detect: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
