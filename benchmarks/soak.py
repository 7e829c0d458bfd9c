"""Soak: a steady ingest rate for a long time, with the receiver's memory, descriptors and latency recorded.

``otel-audio serve`` runs as a subprocess (fresh data directory, free ports, the default
``fsync: always``, blocks flushed every ``--flush-interval`` seconds so the head, the block files
and the WAL go through many whole cycles). One sender thread exports one metrics request every
``1/--rate`` seconds over OTLP/gRPC, paced to a fixed schedule (a slow reply does not lower the
offered rate afterwards); the points carry the current time, so the store sees data moving
forward as in production. Every ``--sample-interval`` seconds the receiver's resident memory
(``VmRSS``), open file descriptors (``/proc/<pid>/fd``) and threads are read from ``/proc``;
every ``--query-interval`` seconds one range query over the last five minutes is timed.

After ``--warmup`` seconds (caches, series dictionary, the first flushes), a least-squares line
is fitted to RSS and to descriptors over time: ``rss_slope_mb_per_h`` and
``fd_slope_per_h``. The verdict is ``stable`` when neither line would grow by more than the
tolerance over the measured span (RSS: 5% of its mean or 16 MB, whichever is larger;
descriptors: 2), ``growing`` otherwise, and ``too_short`` when less than five minutes follow
the warm-up (a short run proves the script, not the receiver). ``windows`` has one entry per
``--window`` seconds: ingest ack p50/p99, query p50/p99, mean RSS, descriptors, threads and
failed requests.

Usage::

    python benchmarks/soak.py [--minutes 30] [--rate 5] [--points-per-request 1000]
                              [--series 200] [--warmup 300] [--window 60]

``make soak`` runs it with ``SOAK_MINUTES`` (default 30). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _export_call, _kv, _Receiver, _resource  # the ingest benchmark's parts

MIN_JUDGED_S = 300.0  # a slope over less than this says little about a leak
RSS_TOLERANCE = 0.05  # of the mean RSS after warm-up
RSS_TOLERANCE_MB = 16.0
FD_TOLERANCE = 2.0


def soak_request(points: int, series: int, now_ns: int) -> bytes:
    """``points`` gauge points over ``series`` series, the newest at ``now_ns``, serialised."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    per_series = max(points // series, 1)
    data_points = [
        metrics_pb2.NumberDataPoint(
            time_unix_nano=now_ns - (per_series - 1 - i // series) * 10**6,
            as_double=float(i % 97),
            attributes=[_kv("audio.stage", f"stage-{i % series % 5}"), _kv("shard", i % series)],
        )
        for i in range(per_series * series)
    ]
    metric = metrics_pb2.Metric(
        name="soak.gauge", unit="ms", gauge=metrics_pb2.Gauge(data_points=data_points)
    )
    scope = common_pb2.InstrumentationScope(name="otel_audio.soak", version="1")
    request = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=_resource("soak"),
                scope_metrics=[metrics_pb2.ScopeMetrics(scope=scope, metrics=[metric])],
            )
        ]
    )
    return request.SerializeToString()


class Samples:
    """Time-stamped observations, appended from several threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.process: list[tuple[float, float, int, int]] = []  # (t, rss MB, fds, threads)
        self.ingest: list[tuple[float, float]] = []  # (t, ack ms)
        self.query: list[tuple[float, float]] = []  # (t, ms)
        self.failures: list[tuple[float, str]] = []  # (t, what)
        self.first_ack = threading.Event()  # queries start once the metric exists

    def add(self, name: str, row: tuple[Any, ...]) -> None:
        with self.lock:
            getattr(self, name).append(row)


def _process_figures(pid: int) -> tuple[float, int, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    rss_mb = int(fields["VmRSS"].split()[0]) / 1024
    return rss_mb, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])


def _sender(receiver: _Receiver, args: argparse.Namespace, t0: float, end: float, samples: Samples) -> None:
    import grpc

    interval = 1.0 / args.rate
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        call = _export_call(channel, "metrics")
        due = time.monotonic()
        while due < end:
            time.sleep(max(due - time.monotonic(), 0.0))
            payload = soak_request(args.points_per_request, args.series, time.time_ns())
            sent = time.monotonic()
            try:
                call(payload, timeout=30)
                samples.add("ingest", (sent - t0, (time.monotonic() - sent) * 1e3))
                samples.first_ack.set()
            except grpc.RpcError as exc:
                samples.add("failures", (sent - t0, f"ingest {exc.code().name}"))
            due += interval


def _sampler(receiver: _Receiver, args: argparse.Namespace, t0: float, end: float, samples: Samples) -> None:
    import requests

    url = f"http://127.0.0.1:{receiver.api_port}/api/v1/query_range"
    next_query = time.monotonic()
    with requests.Session() as http:
        while time.monotonic() < end:
            now = time.monotonic()
            samples.add("process", (now - t0, *_process_figures(receiver.process.pid)))
            if now >= next_query and samples.first_ack.is_set():
                params = {"metric": "soak.gauge", "agg": "avg", "group_by": "audio.stage", "step": "15s"}
                params["start"] = str(time.time() - 300)
                began = time.monotonic()
                try:
                    reply = http.get(url, params=params, timeout=30)
                    if reply.status_code == 200:
                        samples.add("query", (began - t0, (time.monotonic() - began) * 1e3))
                    else:
                        samples.add("failures", (began - t0, f"query HTTP {reply.status_code}"))
                except requests.RequestException as exc:
                    samples.add("failures", (began - t0, f"query {type(exc).__name__}"))
                next_query += args.query_interval
            time.sleep(args.sample_interval)


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q * 100)), 3) if values else None


def _slope_per_h(rows: list[tuple[float, float]]) -> float:
    """Least-squares slope of value over time, per hour (time in seconds)."""
    if len(rows) < 2:
        return 0.0
    t, v = np.array(rows, dtype=float).T
    if np.ptp(t) == 0:
        return 0.0
    return float(np.polyfit(t, v, 1)[0] * 3600)


def _windows(samples: Samples, span_s: float, window_s: float) -> list[dict[str, Any]]:
    out = []
    start = 0.0
    while start < span_s:
        stop = start + window_s

        def inside(rows: list[tuple[Any, ...]], a: float = start, b: float = stop) -> list[tuple[Any, ...]]:
            return [r for r in rows if a <= r[0] < b]

        acks = [r[1] for r in inside(samples.ingest)]
        queries = [r[1] for r in inside(samples.query)]
        proc = inside(samples.process)
        if not (acks or proc):  # the run ended at this window's start
            break
        out.append(
            {
                "start_s": round(start, 1),
                "requests": len(acks),
                "ack_p50_ms": _percentile(acks, 0.5),
                "ack_p99_ms": _percentile(acks, 0.99),
                "query_p50_ms": _percentile(queries, 0.5),
                "query_p99_ms": _percentile(queries, 0.99),
                "rss_mb": round(float(np.mean([r[1] for r in proc])), 1) if proc else None,
                "fds": max(r[2] for r in proc) if proc else None,
                "threads": max(r[3] for r in proc) if proc else None,
                "failures": len(inside(samples.failures)),
            }
        )
        start = stop
    return out


def summarise(samples: Samples, args: argparse.Namespace, span_s: float) -> dict[str, Any]:
    """The JSON line: slopes after the warm-up, per-window latency, and the verdict."""
    judged = [r for r in samples.process if r[0] >= args.warmup]
    rss = [(r[0], r[1]) for r in judged]
    fds = [(r[0], float(r[2])) for r in judged]
    judged_s = judged[-1][0] - judged[0][0] if len(judged) > 1 else 0.0
    rss_slope, fd_slope = _slope_per_h(rss), _slope_per_h(fds)
    mean_rss = float(np.mean([v for _t, v in rss])) if rss else 0.0
    rss_allowed = max(RSS_TOLERANCE * mean_rss, RSS_TOLERANCE_MB)
    if judged_s < MIN_JUDGED_S:
        verdict = "too_short"
    elif rss_slope * judged_s / 3600 > rss_allowed or fd_slope * judged_s / 3600 > FD_TOLERANCE:
        verdict = "growing"
    else:
        verdict = "stable"
    all_acks = [r[1] for r in samples.ingest]
    all_queries = [r[1] for r in samples.query]
    return {
        "duration_s": round(span_s, 1),
        "warmup_s": args.warmup,
        "judged_s": round(judged_s, 1),
        "rate_requests_per_s": args.rate,
        "points_per_s": args.rate * args.points_per_request,
        "requests": len(samples.ingest),
        "failures": len(samples.failures),
        "failure_kinds": sorted({what for _t, what in samples.failures}),
        "rss_slope_mb_per_h": round(rss_slope, 3),
        "fd_slope_per_h": round(fd_slope, 3),
        "rss_mb_first": round(rss[0][1], 1) if rss else None,
        "rss_mb_last": round(rss[-1][1], 1) if rss else None,
        "rss_mb_max": round(max(r[1] for r in samples.process), 1) if samples.process else None,
        "fds_min": min((r[2] for r in judged), default=None),
        "fds_max": max((r[2] for r in judged), default=None),
        "threads_max": max((r[3] for r in samples.process), default=None),
        "ack_p50_ms": _percentile(all_acks, 0.5),
        "ack_p99_ms": _percentile(all_acks, 0.99),
        "query_p50_ms": _percentile(all_queries, 0.5),
        "query_p99_ms": _percentile(all_queries, 0.99),
        "windows": _windows(samples, span_s, args.window),
        "verdict": verdict,
        "flush_interval_s": args.flush_interval,
        "points_per_request": args.points_per_request,
        "series": args.series,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the steady load runs")
    parser.add_argument("--rate", type=float, default=5.0, help="export requests per second")
    parser.add_argument("--points-per-request", type=int, default=1000)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--warmup", type=float, default=300.0, help="seconds left out of the slopes")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per latency window")
    parser.add_argument("--sample-interval", type=float, default=1.0)
    parser.add_argument("--query-interval", type=float, default=5.0)
    parser.add_argument("--flush-interval", type=int, default=60, help="storage.blocks.flush_interval_s")
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes")
    args = parser.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or min(args.points_per_request, args.series) < 1:
        parser.error("--minutes and --rate must be > 0, --points-per-request and --series >= 1")
    if args.warmup < 0 or args.window <= 0 or args.sample_interval <= 0 or args.query_interval <= 0:
        parser.error("--warmup must be >= 0; --window and the intervals must be > 0")

    extra = f"  blocks:\n    flush_interval_s: {args.flush_interval}\n"
    with tempfile.TemporaryDirectory(prefix="otel-audio-soak-", dir=args.dir) as tmp:
        receiver = _Receiver(Path(tmp), None, extra_yaml=extra)
        samples = Samples()
        try:
            t0 = time.monotonic()
            end = t0 + args.minutes * 60
            threads = [
                threading.Thread(target=fn, args=(receiver, args, t0, end, samples), daemon=True)
                for fn in (_sender, _sampler)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            span_s = time.monotonic() - t0
        finally:
            receiver.stop()
    print(json.dumps(summarise(samples, args, span_s)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
