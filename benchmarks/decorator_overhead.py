"""Per-call overhead of ``@audio_stage``, next to a bare OpenTelemetry span, in one run.

Every variant calls the same trivial stage (it returns its 20 ms input array untouched) and
records into the same SDK pipeline, so the differences are telemetry cost only:

- ``baseline``: the plain function, no telemetry; subtracted from every other variant;
- ``bare_span``: ``with tracer.start_as_current_span("x"): fn(...)``;
- ``span_plus_metrics``: the bare span plus, by hand, the three records the decorator makes
  (stage duration histogram, processed-seconds counter, real-time-factor histogram), made
  outside the span's context as the decorator makes them, so neither pays for exemplars;
- ``decorator``: the ``@audio_stage`` function.

Each telemetry variant runs sampled (``ALWAYS_ON``) and unsampled (``ALWAYS_OFF``). Spans go
through a ``BatchSpanProcessor`` into an exporter that drops them, so the processor's cost is
measured but export is not; metrics go to an ``InMemoryMetricReader`` with the otel-audio
views and are never collected while timing. Variants are interleaved within every repeat, so
load from other processes falls on all of them alike; the figure per variant is the median
over repeats of the mean call time. The garbage collector stays on: the garbage a span
leaves behind is part of what it costs.

Usage::

    python benchmarks/decorator_overhead.py [--iterations 20000] [--repeats 7]
    python benchmarks/decorator_overhead.py --profile   # cProfile of the sampled decorator

Prints one JSON line (microseconds per call, overheads above the baseline).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import numpy as np
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

import otel_audio
from otel_audio import audio_stage, semconv
from otel_audio.views import audio_views

SAMPLE_RATE = 16_000
AUDIO = np.zeros(SAMPLE_RATE // 50, dtype=np.float32)  # one 20 ms frame
AUDIO_SECONDS = AUDIO.shape[0] / SAMPLE_RATE
STAGE = "bench_stage"


class DroppingExporter(SpanExporter):
    """Accepts every batch and keeps nothing, so export costs no time."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def stage_fn(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    return audio


decorated_stage = audio_stage(STAGE)(stage_fn)


class Pipeline:
    """One SDK setup (tracer and meter provider) with the decorators bound to it."""

    def __init__(self, sampler: Sampler) -> None:
        self.tracer_provider = TracerProvider(sampler=sampler)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()], views=audio_views())
        self.instruments = otel_audio.bind(self.tracer_provider, self.meter_provider)

    def activate(self) -> None:
        """Point the decorators at this setup; the SDK hands back the instruments it already has."""
        self.instruments = otel_audio.bind(self.tracer_provider, self.meter_provider)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _loop_baseline(pipeline: Pipeline, n: int) -> None:
    fn, audio = stage_fn, AUDIO
    for _ in range(n):
        fn(audio, sample_rate=SAMPLE_RATE)


def _loop_bare_span(pipeline: Pipeline, n: int) -> None:
    fn, audio, tracer = stage_fn, AUDIO, pipeline.instruments.tracer
    for _ in range(n):
        with tracer.start_as_current_span("x"):
            fn(audio, sample_rate=SAMPLE_RATE)


def _loop_span_plus_metrics(pipeline: Pipeline, n: int) -> None:
    fn, audio, inst = stage_fn, AUDIO, pipeline.instruments
    tracer, duration, processed, rtf = (
        inst.tracer,
        inst.stage_duration,
        inst.processed_duration,
        inst.realtime_factor,
    )
    attrs = {semconv.AUDIO_STAGE: STAGE}
    perf_counter = time.perf_counter
    for _ in range(n):
        with tracer.start_as_current_span("x"):
            start = perf_counter()
            fn(audio, sample_rate=SAMPLE_RATE)
            elapsed = perf_counter() - start
        duration.record(elapsed, attrs)
        processed.add(AUDIO_SECONDS, attrs)
        rtf.record(elapsed / AUDIO_SECONDS, attrs)


def _loop_decorator(pipeline: Pipeline, n: int) -> None:
    fn, audio = decorated_stage, AUDIO
    for _ in range(n):
        fn(audio, sample_rate=SAMPLE_RATE)


LOOPS: dict[str, Callable[[Pipeline, int], None]] = {
    "baseline": _loop_baseline,
    "bare_span": _loop_bare_span,
    "span_plus_metrics": _loop_span_plus_metrics,
    "decorator": _loop_decorator,
}


def _time_ns(loop: Callable[[Pipeline, int], None], pipeline: Pipeline, n: int) -> float:
    """Mean nanoseconds per call over ``n`` calls."""
    pipeline.activate()
    pipeline.tracer_provider.force_flush()  # every timed block starts from an empty span queue
    gc.collect()
    start = time.perf_counter_ns()
    loop(pipeline, n)
    return (time.perf_counter_ns() - start) / n


def measure(iterations: int, repeats: int) -> dict[str, Any]:
    pipelines = {"sampled": Pipeline(ALWAYS_ON), "unsampled": Pipeline(ALWAYS_OFF)}
    variants = [("baseline", "unsampled")] + [
        (name, sampling) for name in ("bare_span", "span_plus_metrics", "decorator") for sampling in pipelines
    ]
    samples: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    try:
        for name, sampling in variants:  # warm-up: first-call caches, metric streams, imports
            _time_ns(LOOPS[name], pipelines[sampling], min(iterations, 1000))
        for _ in range(repeats):
            for name, sampling in variants:
                samples[(name, sampling)].append(_time_ns(LOOPS[name], pipelines[sampling], iterations))
    finally:
        for pipeline in pipelines.values():
            pipeline.shutdown()
        otel_audio.bind(None, None)

    median_ns = {v: statistics.median(times) for v, times in samples.items()}
    baseline_ns = median_ns[("baseline", "unsampled")]

    overhead_us = {
        f"{name}_{sampling}_us": (median_ns[(name, sampling)] - baseline_ns) / 1000
        for name, sampling in variants[1:]
    }
    out: dict[str, Any] = {"baseline_call_us": round(baseline_ns / 1000, 3)}
    out.update({key: round(us, 3) for key, us in overhead_us.items()})
    for sampling in pipelines:
        decorator = overhead_us[f"decorator_{sampling}_us"]
        for reference in ("bare_span", "span_plus_metrics"):
            ratio = decorator / overhead_us[f"{reference}_{sampling}_us"]
            out[f"ratio_{sampling}_vs_{reference}"] = round(ratio, 2)
    out.update(
        iterations=iterations,
        repeats=repeats,
        python=platform.python_version(),
        opentelemetry_sdk=version("opentelemetry-sdk"),
        numpy=np.__version__,
    )
    return out


def profile(iterations: int, top: int, sort: str) -> str:
    """cProfile of the sampled decorator path: the ``top`` functions by ``sort`` (own time by default)."""
    pipeline = Pipeline(ALWAYS_ON)
    try:
        _time_ns(_loop_decorator, pipeline, min(iterations, 1000))
        profiler = cProfile.Profile()
        profiler.enable()
        _loop_decorator(pipeline, iterations)
        profiler.disable()
    finally:
        pipeline.shutdown()
        otel_audio.bind(None, None)
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats(sort).print_stats(top)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20_000, help="calls per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per variant")
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile table of the sampled decorator instead"
    )
    parser.add_argument("--top", type=int, default=15, help="rows of the --profile table")
    parser.add_argument(
        "--sort", choices=("tottime", "cumulative"), default="tottime", help="order of the --profile table"
    )
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.repeats < 1:
        parser.error("--iterations and --repeats must be at least 1")
    if args.profile:
        sys.stdout.write(profile(args.iterations, args.top, args.sort))
    else:
        print(json.dumps(measure(args.iterations, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
