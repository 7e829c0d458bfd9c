"""Cost of :func:`otel_audio.signal_stats` per second of audio, for common buffer layouts.

Three layouts (16 kHz mono float32, 16 kHz mono int16, 48 kHz stereo float32 as
``(frames, 2)``), each over buffers of 1 s, 10 s and 60 s of noise at speech level (about
-20 dBFS, no clipping, so the clipping scan is skipped as it is for healthy audio). Each
repeat times enough calls to cover at least 10 s of audio; the figure is the median over
repeats of microseconds spent per second of audio, and the real-time fraction is that cost
divided by the audio's duration (0.001 means 1 ms of work per second of audio).

Usage::

    python benchmarks/signal_cost.py [--repeats 15] [--durations 1,10,60]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from otel_audio import signal_stats

LAYOUTS = {
    # name: (sample rate, channels, dtype)
    "mono_16k_float32": (16_000, 1, np.float32),
    "mono_16k_int16": (16_000, 1, np.int16),
    "stereo_48k_float32": (48_000, 2, np.float32),
}
MIN_AUDIO_SECONDS_PER_REPEAT = 10.0
LEVEL = 0.1  # RMS of the test noise, relative to full scale


def make_buffer(seconds: float, sample_rate: int, channels: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(0)
    shape = (round(seconds * sample_rate),) if channels == 1 else (round(seconds * sample_rate), channels)
    noise = np.clip(rng.standard_normal(shape, dtype=np.float32) * LEVEL, -0.99, 0.99)
    if np.issubdtype(dtype, np.integer):
        return (noise * np.iinfo(dtype).max).astype(dtype)
    return noise.astype(dtype)


def us_per_audio_second(audio: np.ndarray, sample_rate: int, seconds: float, repeats: int) -> float:
    """Median over repeats of the microseconds ``signal_stats`` spends per second of audio."""
    calls = max(1, math.ceil(MIN_AUDIO_SECONDS_PER_REPEAT / seconds))
    signal_stats(audio, sample_rate)  # warm-up
    per_repeat = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            signal_stats(audio, sample_rate)
        elapsed_ns = time.perf_counter_ns() - start
        per_repeat.append(elapsed_ns / 1000 / (calls * seconds))
    return statistics.median(per_repeat)


def measure(durations: Sequence[float], repeats: int) -> dict[str, Any]:
    cost: dict[str, dict[str, float]] = {}
    realtime: dict[str, dict[str, float]] = {}
    for layout, (rate, channels, dtype) in LAYOUTS.items():
        cost[layout], realtime[layout] = {}, {}
        for seconds in durations:
            audio = make_buffer(seconds, rate, channels, dtype)
            us = us_per_audio_second(audio, rate, seconds, repeats)
            key = f"{seconds:g}s"
            cost[layout][key] = round(us, 2)
            realtime[layout][key] = float(f"{us / 1e6:.3g}")
    return {
        "us_per_audio_second": cost,
        "realtime_fraction": realtime,
        "repeats": repeats,
        "min_audio_seconds_per_repeat": MIN_AUDIO_SECONDS_PER_REPEAT,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _durations(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated seconds such as 1,10,60, got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"durations must be positive seconds, got {text!r}")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed blocks per buffer")
    parser.add_argument(
        "--durations", type=_durations, default=[1.0, 10.0, 60.0], help="buffer lengths in seconds (1,10,60)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print(json.dumps(measure(args.durations, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
