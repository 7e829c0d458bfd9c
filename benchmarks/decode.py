"""Decode cost of metrics and traces: the native scans against protobuf parsing and the Python decoders.

Requests are gauges of 100 series with 3 point attributes each (one resource, one scope), with
1,000 and 10,000 points (10 and 100 points per series), serialized once. Variants, each timed on
the same bytes:

- ``parse``: ``ExportMetricsServiceRequest.FromString`` alone (upb, C);
- ``decode``: ``otel_audio.receiver.decode.decode_metrics`` on the parsed request, caches warm;
- ``parse_decode``: both, what the receiver does per request today;
- ``scan``: ``otel_audio.receiver.fastscan.scan_numbers`` on the bytes (C, to numpy columns);
- ``scan_columns``: the scan plus what a decoder built on it still does per request in Python, as a
  sketch: series ids of the distinct series keys from a dict (warm), per-point ids by ``take``,
  and the Arrow columns of POINTS_SCHEMA that a gauge fills. An estimate of the fast path, not its code.

Trace requests are those of ``benchmarks/ingest.py``: spans in traces of ten (a root and its
children), five attributes and one event each, one resource and one scope, with 500 and 5,000
spans (``--span-sizes``). Variants, in spans/s:

- ``parse``: ``ExportTraceServiceRequest.FromString`` alone;
- ``parse_decode``: that and ``otel_audio.receiver.decode_spans.decode_traces``, the reference;
- ``fast``: ``otel_audio.receiver.decode_spans_fast.decode_traces_bytes`` on the bytes (the same
  SpanBatch, from the native scan), with ``fast_speedup_vs_parse_decode``.

Each variant runs in a loop for at least ``--min-seconds``; the figure is the median over
``--repeats`` of points (spans) per second of CPU on one thread.

Usage::

    python benchmarks/decode.py [--repeats 5] [--min-seconds 0.2] [--sizes 1000,10000] [--span-sizes 500,5000]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as tpb

from otel_audio.receiver import decode_spans_fast, fastscan
from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode import decode_metrics
from otel_audio.receiver.decode_spans import decode_traces

SERIES = 100
T0 = 1_700_000_000_000_000_000


def gauge_request(points: int) -> bytes:
    """``points`` gauge points over SERIES series of 3 string attributes, serialized."""

    def kv(key: str, value: str) -> KeyValue:
        return KeyValue(key=key, value=AnyValue(string_value=value))

    per_series = points // SERIES
    data_points = [
        mpb.NumberDataPoint(
            attributes=[kv("stage", f"stage-{s % 10}"), kv("model", f"model-{s // 10}"), kv("host", "h1")],
            start_time_unix_nano=T0,
            time_unix_nano=T0 + (i + 1) * 10**9,
            as_double=0.25 + s + i / 1000,
        )
        for i in range(per_series)
        for s in range(SERIES)
    ]
    metric = mpb.Metric(name="audio.rtf", unit="1", gauge=mpb.Gauge(data_points=data_points))
    resource = Resource(attributes=[kv("service.name", "enhancer"), kv("host.name", "h1")])
    scope = mpb.ScopeMetrics(scope=InstrumentationScope(name="otel_audio", version="0.1.0"), metrics=[metric])
    request = ExportMetricsServiceRequest(
        resource_metrics=[mpb.ResourceMetrics(resource=resource, scope_metrics=[scope])]
    )
    return request.SerializeToString()


def traces_request(spans: int) -> bytes:
    """``spans`` spans as benchmarks/ingest.py sends them (see the module docstring), serialized."""

    def kv(key: str, value: object) -> KeyValue:
        if isinstance(value, str):
            return KeyValue(key=key, value=AnyValue(string_value=value))
        if isinstance(value, float):
            return KeyValue(key=key, value=AnyValue(double_value=value))
        return KeyValue(key=key, value=AnyValue(int_value=value))

    rng = random.Random(spans)
    out, trace_id, root = [], b"", b""
    for i in range(spans):
        if i % 10 == 0:
            trace_id, root = rng.randbytes(16), rng.randbytes(8)
        start = T0 - rng.randrange(1, 60) * 10**9
        attributes = {
            "audio.stage": f"stage-{i % 5}",
            "audio.sample_rate": 16000,
            "audio.channels": 1,
            "audio.duration_s": 2.5,
            "file": f"/data/utt-{i:05d}.wav",
        }
        out.append(
            tpb.Span(
                trace_id=trace_id,
                span_id=root if i % 10 == 0 else rng.randbytes(8),
                parent_span_id=b"" if i % 10 == 0 else root,
                name=f"stage-{i % 5}",
                kind=tpb.Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(1, 500) * 10**6,
                attributes=[kv(k, v) for k, v in attributes.items()],
                events=[tpb.Span.Event(time_unix_nano=start + 1000, name="chunk", attributes=[kv("n", i)])],
                status=tpb.Status(code=tpb.Status.STATUS_CODE_OK),
            )
        )
    resource = Resource(attributes=[kv("service.name", "bench-traces"), kv("host.name", "h1")])
    scope = InstrumentationScope(name="otel_audio.bench", version="1")
    request = ExportTraceServiceRequest(
        resource_spans=[
            tpb.ResourceSpans(resource=resource, scope_spans=[tpb.ScopeSpans(scope=scope, spans=out)])
        ]
    )
    return request.SerializeToString()


def points_per_second(work: Callable[[], Any], points: int, repeats: int, min_seconds: float) -> float:
    """Median over ``repeats`` of points/s of CPU time, each repeat looping for ``min_seconds``."""
    work()  # warm caches
    rates = []
    for _ in range(repeats):
        calls, began = 0, time.thread_time()
        while True:
            work()
            calls += 1
            if (spent := time.thread_time() - began) >= min_seconds and spent > 0:
                break
        rates.append(points * calls / spent)
    return statistics.median(rates)


def scan_columns_sketch(buf: bytes, sid_of: dict[int, int]) -> pa.Table:
    """Scan, then series ids and the Arrow columns a gauge fills (see the module docstring)."""
    scan = fastscan.scan_numbers(buf)
    keys, inverse = np.unique(scan.series_key, return_inverse=True)
    # A miss would parse the point's attributes and compute the id; the benchmark's series are all known.
    sids = np.fromiter((sid_of[key] for key in keys.tolist()), dtype=np.uint64, count=keys.size)
    return pa.table(
        {
            "series_id": pa.array(sids[inverse]),
            "time_unix_nano": pa.array(scan.time_unix_nano.view(np.int64)),
            "start_time_unix_nano": pa.array(scan.start_time_unix_nano.view(np.int64)),
            "value": pa.array(scan.value),
            "flags": pa.array(scan.flags),
        }
    )


def measure(points: int, repeats: int, min_seconds: float) -> dict[str, float]:
    buf = gauge_request(points)
    parsed = ExportMetricsServiceRequest.FromString(buf)
    limiter = CardinalityLimiter(10 * SERIES)
    variants: dict[str, Callable[[], Any]] = {
        "parse": lambda: ExportMetricsServiceRequest.FromString(buf),
        "decode": lambda: decode_metrics(parsed, limiter),
        "parse_decode": lambda: decode_metrics(ExportMetricsServiceRequest.FromString(buf), limiter),
    }
    if fastscan.available():
        scan = fastscan.scan_numbers(buf)
        sid_of = {key: key ^ 0x5555 for key in np.unique(scan.series_key).tolist()}
        variants["scan"] = lambda: fastscan.scan_numbers(buf)
        variants["scan_columns"] = lambda: scan_columns_sketch(buf, sid_of)
    figures: dict[str, float] = {"request_bytes": len(buf)}
    for name, work in variants.items():
        figures[f"{name}_points_per_s"] = round(points_per_second(work, points, repeats, min_seconds))
    for name in ("scan", "scan_columns"):
        if name in variants:
            speedup = figures[f"{name}_points_per_s"] / figures["parse_decode_points_per_s"]
            figures[f"{name}_speedup_vs_parse_decode"] = round(speedup, 1)
    return figures


def measure_traces(spans: int, repeats: int, min_seconds: float) -> dict[str, float]:
    buf = traces_request(spans)
    variants: dict[str, Callable[[], Any]] = {
        "parse": lambda: ExportTraceServiceRequest.FromString(buf),
        "parse_decode": lambda: decode_traces(ExportTraceServiceRequest.FromString(buf)),
    }
    if decode_spans_fast.available():
        fast = decode_spans_fast.decode_traces_bytes(buf)
        assert fast.batch.spans.equals(variants["parse_decode"]().batch.spans), "the fast path must agree"
        variants["fast"] = lambda: decode_spans_fast.decode_traces_bytes(buf)
    figures: dict[str, float] = {"request_bytes": len(buf)}
    for name, work in variants.items():
        figures[f"{name}_spans_per_s"] = round(points_per_second(work, spans, repeats, min_seconds))
    if "fast" in variants:
        speedup = figures["fast_spans_per_s"] / figures["parse_decode_spans_per_s"]
        figures["fast_speedup_vs_parse_decode"] = round(speedup, 1)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.2)
    parser.add_argument("--sizes", default="1000,10000", help="points per request, comma-separated")
    parser.add_argument("--span-sizes", default="500,5000", help="spans per request, comma-separated")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size]
    span_sizes = [int(size) for size in args.span_sizes.split(",") if size]
    result = {
        "benchmark": "decode",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "native_scan": fastscan.available(),
        "series": SERIES,
        "attributes_per_point": 3,
        "points_per_request": {str(size): measure(size, args.repeats, args.min_seconds) for size in sizes},
        "attributes_per_span": 5,
        "events_per_span": 1,
        "spans_per_request": {
            str(size): measure_traces(size, args.repeats, args.min_seconds) for size in span_sizes
        },
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
