"""Dashboard: ingest-to-push latency of the live stream, and the overview's data load over a day.

**Push latency.** ``otel-audio serve`` runs as a subprocess (the ingest benchmark's ``_Receiver``,
default chain). A client holds ``GET /api/v1/stream?metrics=bench.live`` open, as the page does.
Each probe exports one gauge point over OTLP/gRPC carrying the probe's number as its value, and
waits for the SSE frame that holds it; the time from the export call to the frame read is one
sample. Probes run ``--interval`` apart (default 0.3 s, longer than the stream's 250 ms coalescing
window, so a sample is the push path and not the rate limit); ``--background`` other points per
second of other metrics flow in meanwhile. The path measured: decode, WAL fsync, the chain, the
hub, the client's coalescing, the HTTP stream, the client's read.

**Page load.** An in-process receiver whose store holds ``--hours`` (24) of data for ``--services``
(5) services: the span-metric series the overview reads (``traces.span.metrics.calls``, a
cumulative counter, and ``traces.span.metrics.duration``, a cumulative histogram, per service,
span name and status, every 15 s), the ``audio.derived.*`` gauges (every 60 s), and
``--filler`` (100) other gauge metrics per service (every 60 s), so 100+ metrics in all. The
points are written straight into the store's head (what is measured is the API, not ingest).
A page load issues the overview's queries (``otel_audio/dashboard/static/overview.json``, each
grouped by service, over the whole range at the page's step: range / 120 rounded up to a nice
step, 900 s for 24 h) plus ``/api/v1/alerts`` and ``/api/v1/slos``, six at a time as a browser
does; ``page_load_*`` is the wall time of one load, ``query_p95_ms`` the p95 of the single slowest
query's request time (loopback HTTP, so an upper bound of server time), over ``--repeats`` loads.

Usage::

    python benchmarks/dashboard.py [--probes 300] [--interval 0.3] [--background 0]
                                   [--hours 24] [--services 5] [--filler 100] [--repeats 20]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _Receiver  # the ingest benchmark's receiver subprocess

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    MetricType,
    series_row,
)

EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
OVERVIEW = Path(__file__).resolve().parents[1] / "otel_audio" / "dashboard" / "static" / "overview.json"
SECOND = 10**9
BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
NICE_STEPS = [15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400]
DERIVED = ["realtime_factor", "quality_index", "throughput", "cpu_seconds", "gpu_seconds", "memory_gb_hours"]


def _request(metric: str, service: str, value: float) -> bytes:
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    name = common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))
    point = metrics_pb2.NumberDataPoint(time_unix_nano=time.time_ns(), as_double=value)
    metric_pb = metrics_pb2.Metric(name=metric, gauge=metrics_pb2.Gauge(data_points=[point]))
    request = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=[name]),
                scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric_pb])],
            )
        ]
    )
    return request.SerializeToString()


class _StreamReader:
    """Reads the SSE stream on a thread, noting when each probe value first arrived."""

    def __init__(self, port: int, metric: str) -> None:
        self.arrived: dict[float, float] = {}
        self.changed = threading.Condition()
        self.connected = threading.Event()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/api/v1/stream?" + urlencode({"metrics": metric}))
        self.response = self.conn.getresponse()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.response:
            self.connected.set()
            if not raw.startswith(b"data:"):
                continue
            at = time.perf_counter()
            frame = json.loads(raw[5:])
            with self.changed:
                for point in frame.get("points", []):
                    self.arrived.setdefault(point["value"], at)
                self.changed.notify_all()

    def wait(self, value: float, timeout: float = 10.0) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: value in self.arrived, timeout):
                raise RuntimeError(f"probe {value} was not pushed within {timeout} s")
            return self.arrived[value]


def _background(port: int, rate: float, stop: threading.Event) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(EXPORT)
        k = 0
        while not stop.is_set():
            call(_request("bench.other", f"quiet-{k % 50}", float(k)), timeout=30)
            k += 1
            stop.wait(1.0 / rate)


def push_latency(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    with tempfile.TemporaryDirectory() as tmp:
        receiver = _Receiver(Path(tmp), None)
        stop = threading.Event()
        try:
            if args.background > 0:
                threading.Thread(target=_background, args=(receiver.grpc_port, args.background, stop)).start()
            reader = _StreamReader(receiver.api_port, "bench.live")
            samples = []
            with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
                call = channel.unary_unary(EXPORT)
                for k in range(args.warmup + args.probes):
                    payload = _request("bench.live", "bench", float(k))
                    sent = time.perf_counter()
                    call(payload, timeout=30)
                    arrived = reader.wait(float(k))
                    if k >= args.warmup:
                        samples.append((arrived - sent) * 1000)
                    time.sleep(args.interval)
        finally:
            stop.set()
            receiver.stop()
    values = np.array(samples)
    return {
        "push_p50_ms": round(float(np.percentile(values, 50)), 2),
        "push_p99_ms": round(float(np.percentile(values, 99)), 2),
        "push_max_ms": round(float(values.max()), 2),
        "probes": len(samples),
        "probe_interval_s": args.interval,
        "background_per_s": args.background,
    }


# -- page load ---------------------------------------------------------------------------------------


def _batch(
    rows: list[dict[str, Any]], times: np.ndarray, columns: dict[str, Any], start_ns: int | None
) -> MetricBatch:
    n = len(rows) * times.size
    data: dict[str, Any] = {
        "series_id": np.repeat(np.array([r["series_id"] for r in rows], dtype=np.uint64), times.size),
        "time_unix_nano": np.tile(times, len(rows)),
        "flags": np.zeros(n, dtype=np.uint32),
        **columns,
    }
    if start_ns is not None:
        data["start_time_unix_nano"] = np.full(n, start_ns, dtype=np.int64)
    arrays = [
        pa.array(data[f.name], type=f.type) if f.name in data else pa.nulls(n, f.type) for f in POINTS_SCHEMA
    ]
    return MetricBatch(
        pa.Table.from_arrays(arrays, schema=POINTS_SCHEMA),
        pa.Table.from_pylist(rows, schema=SERIES_SCHEMA),
        EXEMPLARS_SCHEMA.empty_table(),
    )


def _row(metric: str, service: str, attributes: dict[str, str], kind: MetricType = MetricType.GAUGE) -> dict:
    return series_row(metric, scope="bench", service=service, attributes=attributes, kind=kind,
                      monotonic=kind is MetricType.SUM)  # fmt: skip


def _histogram_columns(buckets: np.ndarray) -> dict[str, Any]:
    """Point columns of cumulative explicit-bucket histograms, ``buckets`` shaped (series, time, bucket)."""
    rows, width = buckets.shape[0] * buckets.shape[1], len(BOUNDS) + 1
    counts = buckets.sum(axis=2).ravel()
    return {
        "value": counts.astype(float) * 0.08,
        "count": counts,
        "bounds": pa.ListArray.from_arrays(
            pa.array(np.arange(0, rows * len(BOUNDS) + 1, len(BOUNDS), dtype=np.int32)),
            pa.array(np.tile(BOUNDS, rows), type=pa.float64()),
        ),
        "bucket_counts": pa.ListArray.from_arrays(
            pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32)),
            pa.array(buckets.ravel(), type=pa.uint64()),
        ),
    }


def fill(
    store: Any,
    hours: float,
    services: int,
    filler: int,
    end_ns: int,
    rng: np.random.Generator,
    flush_hours: int,
) -> dict[str, int]:
    """Writes the day into ``store``, an hour at a time; returns metric and point counts."""
    start_ns = end_ns - int(hours * 3600) * SECOND
    fast = np.arange(start_ns, end_ns, 15 * SECOND, dtype=np.int64)
    slow = np.arange(start_ns, end_ns, 60 * SECOND, dtype=np.int64)
    names = [f"svc-{i}" for i in range(services)]
    span_dims = [
        {"span.name": s, "status.code": c}
        for s in ("enhance", "denoise", "encode")
        for c in ("STATUS_CODE_UNSET", "STATUS_CODE_ERROR")
    ]
    calls = [_row("traces.span.metrics.calls", svc, d, MetricType.SUM) for svc in names for d in span_dims]
    durations = [
        _row("traces.span.metrics.duration", svc, d, MetricType.HISTOGRAM) for svc in names for d in span_dims
    ]
    gauges = [_row(f"audio.derived.{m}", svc, {"aggregation.window": "1m"}) for m in DERIVED for svc in names]
    gauges += [_row(f"bench.filler.{i:03d}", svc, {}) for i in range(filler) for svc in names]
    rate = rng.uniform(1, 20, len(calls))[:, None]
    call_values = np.cumsum(rng.poisson(rate * 15, (len(calls), fast.size)), axis=1).astype(float)
    width = len(BOUNDS) + 1
    bucket_rates = np.array([1, 2, 4, 8, 10, 6, 3, 1, 0.5, 0.2, 0.1])
    buckets = np.cumsum(rng.poisson(bucket_rates, (len(durations), fast.size, width)), axis=1).astype(
        np.uint64
    )
    gauge_values = rng.normal(1.0, 0.2, (len(gauges), slow.size))
    points = 0
    for hour in range(int(np.ceil(hours))):
        if flush_hours and hour and hour % flush_hours == 0:
            store.flush()  # as the receiver's flush interval would have, in data time
        lo, hi = start_ns + hour * 3600 * SECOND, start_ns + (hour + 1) * 3600 * SECOND
        f = (fast >= lo) & (fast < hi)
        s = (slow >= lo) & (slow < hi)
        n_f = int(f.sum())
        store.process(_batch(calls, fast[f], {"value": call_values[:, f].ravel()}, start_ns))
        store.process(_batch(durations, fast[f], _histogram_columns(buckets[:, f, :]), start_ns))
        store.process(_batch(gauges, slow[s], {"value": gauge_values[:, s].ravel()}, None))
        points += (len(calls) + len(durations)) * n_f + len(gauges) * int(s.sum())
    return {"metrics": 2 + len(DERIVED) + filler, "series": len(calls) + len(durations) + len(gauges),
            "points": points}  # fmt: skip


def _query_path(column: dict[str, Any], window: dict[str, str]) -> str:
    """The overview's request for one column (as overview.js builds it)."""
    params = {"metric": column["metric"], "agg": column["agg"], "group_by": "service", **window}
    if column.get("match"):
        params["match"] = column["match"][0]
    return "/api/v1/query_range?" + urlencode(params)


def page_load(args: argparse.Namespace) -> dict[str, Any]:
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver
    from otel_audio.store.query import QueryEngine
    from otel_audio.store.tiered import TieredStore

    columns = json.loads(OVERVIEW.read_text())["columns"]
    with tempfile.TemporaryDirectory() as tmp:
        ports = {"server__grpc_port": 0, "server__http_port": 0, "server__api_port": 0}
        config = load_config(None, storage__data_dir=f"{tmp}/receiver", **ports)
        receiver = Receiver(config)
        receiver.start()
        try:
            end_ns = time.time_ns()
            if args.store == "blocks":  # the day as the receiver keeps it: blocks, rollups, a head
                store = TieredStore(Path(tmp) / "day", background=False)
                sizes = fill(
                    store, args.hours, args.services, args.filler, end_ns, np.random.default_rng(7), 2
                )
                store.tick(end_ns)
                store.tick(end_ns + 60 * SECOND)  # maintenance merges each day's rollup files
                receiver.query = QueryEngine(store)  # what the API routes read
            else:  # everything in the receiver's head (raw points only)
                sizes = fill(receiver.store, args.hours, args.services, args.filler, end_ns,
                             np.random.default_rng(7), 0)  # fmt: skip
            result = _time_page(receiver.api_port, columns, end_ns, args)
        finally:
            receiver.stop(1)
    return {**result, "store": args.store, **sizes}


def _time_page(
    port: int, columns: list[dict[str, Any]], end_ns: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Page loads (the queries six at a time), then each query alone, ``--repeats`` times."""
    span = args.hours * 3600
    step = next((s for s in NICE_STEPS if s >= span / 120), 86400)
    window = {"start": f"{end_ns / 1e9 - span:.3f}", "end": f"{end_ns / 1e9:.3f}", "step": f"{step}s"}
    paths = [_query_path(c, window) for c in columns] + ["/api/v1/alerts", "/api/v1/slos"]
    local = threading.local()

    def timed(path: str) -> float:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        began = time.perf_counter()
        local.conn.request("GET", path)
        response = local.conn.getresponse()
        body = response.read()
        took = (time.perf_counter() - began) * 1000
        if path.startswith("/api/v1/query_range"):
            assert response.status == 200 and json.loads(body)["series"], (path, body[:200])
        return took

    loads = []
    with ThreadPoolExecutor(6) as pool:
        for k in range(args.repeats + 1):
            began = time.perf_counter()
            list(pool.map(timed, paths))
            if k:  # the first is a warm-up
                loads.append((time.perf_counter() - began) * 1000)
    alone = {p: [timed(p) for _ in range(args.repeats)] for p in paths}
    p95 = {p: float(np.percentile(v, 95)) for p, v in alone.items()}
    return {
        "page_load_p50_ms": round(float(np.percentile(loads, 50)), 2),
        "page_load_p95_ms": round(float(np.percentile(loads, 95)), 2),
        "query_p95_ms": round(max(p95.values()), 2),
        "query_p95_ms_by_column": {c["key"]: round(p95[p], 2) for c, p in zip(columns, paths, strict=False)},
        "page_queries": len(paths),
        "hours": args.hours,
        "step_s": step,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between probes")
    parser.add_argument("--background", type=float, default=0.0, help="other requests per second")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--services", type=int, default=5)
    parser.add_argument("--filler", type=int, default=100, help="other gauge metrics")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--store", choices=("blocks", "head"), default="blocks")
    args = parser.parse_args(argv)
    result = {**push_latency(args), **page_load(args)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
