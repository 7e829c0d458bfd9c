"""Receiver ingest: acknowledged points/s and spans/s over OTLP/gRPC, ack latency, ingest-to-queryable.

``otel-audio serve`` runs as a subprocess with a fresh data directory, free ports and the default
durability (``fsync: always``: a request is acknowledged once it is in the fsynced WAL and in the
store). ``--senders`` processes each build one realistic request up front, serialise it once and
then send those bytes over OTLP/gRPC for ``--duration`` seconds, each as fast as the receiver
acknowledges (``--inflight`` requests at a time per sender). Metrics and traces are separate
phases. Per phase: acknowledged items per second of wall time (partially rejected items are not
counted), ack latency p50/p99, and the receiver's CPU use. After the load, ``--probes`` uniquely
tagged points are sent one at a time and the API's series listing is polled until each appears:
``ingest_to_queryable_*`` is send-to-visible (``probe_ack_p50_ms`` is the ack part of it).
``receiver_rss_mb`` is read from /proc at the end.

The metrics request holds ``--points-per-request`` gauge points over ``--series`` series (ten
gauges, three point attributes each, points one second apart); the traces request holds
``--spans-per-request`` spans in traces of ten with five attributes and one event each. The
defaults (8,192 points, the OpenTelemetry Collector's batch size; 30 s per phase) measure what a
Collector in front of the receiver sustains, blocks written as it goes; ``--points-per-request
1000`` is closer to one SDK exporting directly.

``--profile`` runs the receiver with a cProfile per thread (request handling happens on gRPC
worker threads, which ``python -m cProfile`` would miss) measuring per-thread CPU time (so waits
for the GIL, fsync or I/O are not counted as anyone's time), then prints the top 25 entries by
cumulative and by own time to stderr. Profiling slows Python-heavy code more than C code, so read
the shares, not the absolute numbers.

Usage::

    python benchmarks/ingest.py [--duration 30] [--senders 2] [--inflight 1]
                                [--points-per-request 8192] [--spans-per-request 500]
                                [--series 1000] [--probes 20] [--dir PATH] [--profile]
                                [--flush on|off]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

SECOND = 10**9
_SERVICES = {
    "metrics": ("opentelemetry.proto.collector.metrics.v1.MetricsService", "rejected_data_points"),
    "traces": ("opentelemetry.proto.collector.trace.v1.TraceService", "rejected_spans"),
}
_RETRYABLE = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")


def _retry_delay_s(error: Any) -> float:
    """The delay the receiver asked for (google.rpc.RetryInfo), as OTLP exporters honour it."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return 1.0


# -- requests ------------------------------------------------------------------------------------


def _kv(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2

    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    if isinstance(value, float):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(double_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=str(value)))


def _resource(service: str) -> Any:
    from opentelemetry.proto.resource.v1 import resource_pb2

    attributes = {"service.name": service, "host.name": "bench-host", "process.pid": 4242}
    return resource_pb2.Resource(attributes=[_kv(k, v) for k, v in attributes.items()])


def metrics_request(points: int, series: int, now_ns: int, probe: str | None = None) -> Any:
    """``points`` gauge points over ``series`` series of ten gauges; a probe is one tagged point."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    rng = random.Random(series)
    by_metric: dict[str, list[tuple[int, float, dict[str, Any]]]] = {}
    if probe is not None:
        by_metric["bench.queryable"] = [(now_ns, 1.0, {"probe": probe})]
    else:
        for i in range(points):
            s = i % series
            attributes = {"audio.stage": f"stage-{s % 5}", "audio.device": f"mic-{s // 5 % 4}", "shard": s}
            when = now_ns - (points // series - i // series) * SECOND
            by_metric.setdefault(f"bench.gauge.{s % 10}", []).append((when, rng.random() * 100, attributes))
    metrics = [
        metrics_pb2.Metric(
            name=name,
            unit="ms",
            gauge=metrics_pb2.Gauge(
                data_points=[
                    metrics_pb2.NumberDataPoint(
                        time_unix_nano=t, as_double=v, attributes=[_kv(k, x) for k, x in attrs.items()]
                    )
                    for t, v, attrs in rows
                ]
            ),
        )
        for name, rows in by_metric.items()
    ]
    scope = common_pb2.InstrumentationScope(name="otel_audio.bench", version="1")
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=_resource("bench-metrics"),
                scope_metrics=[metrics_pb2.ScopeMetrics(scope=scope, metrics=metrics)],
            )
        ]
    )


def traces_request(spans: int, now_ns: int) -> Any:
    """``spans`` spans in traces of ten (a root and its children), five attributes and an event each."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    rng = random.Random(spans)
    out, trace_id, root = [], b"", b""
    for i in range(spans):
        if i % 10 == 0:
            trace_id, root = rng.randbytes(16), rng.randbytes(8)
        span_id = root if i % 10 == 0 else rng.randbytes(8)
        start = now_ns - rng.randrange(1, 60) * SECOND
        attributes = {
            "audio.stage": f"stage-{i % 5}",
            "audio.sample_rate": 16000,
            "audio.channels": 1,
            "audio.duration_s": 2.5,
            "file": f"/data/utt-{i:05d}.wav",
        }
        out.append(
            trace_pb2.Span(
                trace_id=trace_id,
                span_id=span_id,
                parent_span_id=b"" if i % 10 == 0 else root,
                name=f"stage-{i % 5}",
                kind=trace_pb2.Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(1, 500) * 10**6,
                attributes=[_kv(k, v) for k, v in attributes.items()],
                events=[
                    trace_pb2.Span.Event(time_unix_nano=start + 1000, name="chunk", attributes=[_kv("n", i)])
                ],
                status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
            )
        )
    scope = common_pb2.InstrumentationScope(name="otel_audio.bench", version="1")
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=_resource("bench-traces"),
                scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=out)],
            )
        ]
    )


def _response_type(kind: str) -> Any:
    if kind == "metrics":
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

        return metrics_service_pb2.ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    return trace_service_pb2.ExportTraceServiceResponse


def _export_call(channel: Any, kind: str) -> Any:
    """A unary call taking the request's serialised bytes, so senders serialise once, not per send."""
    service, _field = _SERVICES[kind]
    return channel.unary_unary(f"/{service}/Export", response_deserializer=_response_type(kind).FromString)


# -- senders (separate processes) ----------------------------------------------------------------


def _sender(kind: str, port: int, args: dict[str, int], barrier: Any, results: Any) -> None:
    import grpc

    now = time.time_ns() // SECOND * SECOND
    if kind == "metrics":
        payload = metrics_request(args["points"], args["series"], now).SerializeToString()
        items = args["points"]
    else:
        payload = traces_request(args["spans"], now).SerializeToString()
        items = args["spans"]
    _service, rejected_field = _SERVICES[kind]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = _export_call(channel, kind)
        call(payload, timeout=60)  # connects, and warms the receiver's series dictionary
        barrier.wait()
        began = time.monotonic()
        deadline = began + args["duration"]
        tallies: list[dict[str, Any]] = []

        def loop() -> None:
            tally: dict[str, Any] = {"acked": 0, "requests": 0, "refused": 0, "latencies_ms": []}
            tallies.append(tally)
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                try:
                    reply = call(payload, timeout=60)
                except grpc.RpcError as exc:
                    if exc.code().name not in _RETRYABLE:
                        raise
                    tally["refused"] += 1
                    # Back off as a real exporter does, never past the end of the run.
                    time.sleep(min(_retry_delay_s(exc), max(deadline - time.monotonic(), 0.0)))
                    continue
                tally["latencies_ms"].append((time.perf_counter() - sent) * 1e3)
                tally["requests"] += 1
                tally["acked"] += items - getattr(reply.partial_success, rejected_field)

        threads = [threading.Thread(target=loop) for _ in range(args["inflight"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended = time.monotonic()
    results.put(
        {
            "began": began,
            "ended": ended,
            **{key: sum(t[key] for t in tallies) for key in ("acked", "requests", "refused")},
            "latencies_ms": [x for t in tallies for x in t["latencies_ms"]],
        }
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_phase(kind: str, receiver: _Receiver, senders: int, args: dict[str, int]) -> dict[str, Any]:
    """``senders`` processes send ``kind`` requests for ``args['duration']`` s; the phase's figures."""
    context = multiprocessing.get_context("spawn")  # gRPC does not survive fork
    barrier, results = context.Barrier(senders + 1), context.Queue()
    procs = [
        context.Process(target=_sender, args=(kind, receiver.grpc_port, args, barrier, results))
        for _ in range(senders)
    ]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=180)  # every sender is connected and has built its request
    cpu_before, flush_before = receiver.cpu_s(), receiver.children_cpu_s()
    outcomes = [results.get(timeout=args["duration"] + 180) for _ in procs]
    cpu = receiver.cpu_s() - cpu_before
    flush_cpu = receiver.children_cpu_s() - flush_before
    for proc in procs:
        proc.join(30)
        if proc.exitcode != 0:
            raise RuntimeError(f"a {kind} sender failed with exit code {proc.exitcode}")
    wall = max(o["ended"] for o in outcomes) - min(o["began"] for o in outcomes)
    latencies = [x for o in outcomes for x in o["latencies_ms"]]
    if not latencies:
        raise RuntimeError(f"no {kind} request was acknowledged")
    acked = sum(o["acked"] for o in outcomes)
    return {
        "items_per_s": acked / wall,
        "requests": sum(o["requests"] for o in outcomes),
        "refused": sum(o["refused"] for o in outcomes),
        "ack_p50_ms": _percentile(latencies, 0.50),
        "ack_p99_ms": _percentile(latencies, 0.99),
        "wall_s": wall,
        "receiver_cpu_s": cpu,
        "flush_cpu_s": flush_cpu,
    }


# -- the receiver --------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Receiver:
    """``otel-audio serve`` in a subprocess on free ports; optionally under a per-thread profiler."""

    def __init__(
        self, directory: Path, profile_to: Path | None, flush: bool = True, extra_yaml: str = ""
    ) -> None:
        self.grpc_port, self.http_port, self.api_port = _free_port(), _free_port(), _free_port()
        config = directory / "serve.yaml"
        # --flush off: the head keeps everything (WAL only), to measure ingest without block writing.
        blocks = "" if flush else "  blocks:\n    flush_interval_s: 86400\n    head_max_bytes: 17179869184\n"
        config.write_text(
            f"server:\n  grpc_port: {self.grpc_port}\n  http_port: {self.http_port}\n"
            f"  api_port: {self.api_port}\nstorage:\n  data_dir: {directory / 'data'}\n{blocks}{extra_yaml}"
        )
        if profile_to is None:
            command = [sys.executable, "-m", "otel_audio.cli", "serve", "--config", str(config)]
        else:
            command = [sys.executable, __file__, "--serve-profiled", str(profile_to), str(config)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in self.process.stdout:
            seen.append(line)
            if "otel-audio receiver" in line:
                break
        else:
            raise RuntimeError("the receiver exited before listening:\n" + "".join(seen))
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.process.stdout), daemon=True).start()

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def cpu_s(self) -> float:
        return _cpu_s(self.process.pid)

    def children_cpu_s(self) -> float:
        """CPU of the receiver's live child processes (the store's flush process)."""
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                total += _cpu_s(int(stat.parent.name))
        return total

    def stop(self) -> int:
        """SIGTERM: the receiver drains, closes the WAL and exits (writing the profile, if any)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(120)
        if code != 0:
            raise RuntimeError(f"the receiver exited with {code}:\n" + "".join(self.log[-30:]))
        return code


def ingest_to_queryable(receiver: _Receiver, probes: int) -> tuple[list[float], list[float]]:
    """Milliseconds from sending a uniquely tagged point to its ack, and to seeing its series in the API.

    The API is polled over one keep-alive connection, as a dashboard would.
    """
    import grpc
    import requests

    url = f"http://127.0.0.1:{receiver.api_port}/api/v1/series"
    acks, latencies = [], []
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel, requests.Session() as http:
        call = _export_call(channel, "metrics")
        for _ in range(probes):
            probe = uuid.uuid4().hex
            payload = metrics_request(1, 1, time.time_ns(), probe=probe).SerializeToString()
            params = {"metric": "bench.queryable", "match": f'probe="{probe}"'}
            sent = time.perf_counter()
            call(payload, timeout=60)
            acks.append((time.perf_counter() - sent) * 1e3)
            while True:
                reply = http.get(url, params=params, timeout=60)
                if reply.status_code == 200 and reply.json()["series"]:
                    break
                if time.perf_counter() - sent > 60:
                    raise RuntimeError(f"probe {probe} not queryable after 60 s: {reply.text[:300]}")
            latencies.append((time.perf_counter() - sent) * 1e3)
    return acks, latencies


# -- profiling -----------------------------------------------------------------------------------


def _serve_profiled(out: str, config: str) -> int:
    """Run ``otel-audio serve`` with a CPU-time cProfile in every thread; merge them into ``out``."""
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()
        try:
            original_run(self)
        finally:
            profile.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    from otel_audio.cli import main

    status = main(["serve", "--config", config])
    merged = pstats.Stats(profiles[0])
    for profile in profiles[1:]:
        merged.add(profile)
    merged.dump_stats(out)
    return status


# Stages of one export, as (label, [(file suffix, function name)]) whose cumulative times are summed.
_STAGES = [
    ("gRPC handler, all of it", [("receiver/grpc_server.py", "export")]),
    ("protobuf parse (FromString)", [("~", "<built-in method FromString>")]),
    ("decode to Arrow", [("receiver/decode.py", f"decode_{s}") for s in ("metrics", "traces", "logs")]),
    ("Arrow IPC encode for the WAL", [("store/batch_codec.py", "encode_batch")]),
    ("WAL append (caller side)", [("store/wal.py", "append_durable")]),
    ("WAL writer thread (write, fsync)", [("store/wal.py", "_run")]),
    ("processor chain (selfmon, store)", [("receiver/chain.py", "process")]),
    (
        "admission, Prometheus counters",
        [("receiver/ingest.py", "_admit"), ("prometheus_client/metrics.py", "inc")],
    ),
]


def _stage_table(path: Path) -> str:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    cumulative = {}
    for label, functions in _STAGES:
        cumulative[label] = sum(
            figures[3]
            for (filename, _line, name), figures in stats.items()
            if any(filename.endswith(suffix) and name == fn for suffix, fn in functions)
        )
    total = cumulative[_STAGES[0][0]] or 1.0
    lines = [f"{'stage':36} {'CPU s':>8} {'% of handler':>13}"]
    lines += [
        f"{label:36} {seconds:8.2f} {100 * seconds / total:12.1f}%" for label, seconds in cumulative.items()
    ]
    return "\n".join(lines)


def print_profile(path: Path, top: int = 25) -> None:
    import pstats

    print(
        "\n=== receiver CPU time by ingest stage (profiled, so Python-heavy stages look bigger) ===",
        file=sys.stderr,
    )
    print(_stage_table(path), file=sys.stderr)
    for order in ("cumulative", "tottime"):
        print(f"\n=== receiver profile (per-thread CPU time), top {top} by {order} ===", file=sys.stderr)
        pstats.Stats(str(path), stream=sys.stderr).strip_dirs().sort_stats(order).print_stats(top)


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--senders", type=int, default=2, help="sender processes per phase")
    parser.add_argument("--inflight", type=int, default=1, help="concurrent requests per sender")
    parser.add_argument(
        "--points-per-request", type=int, default=8192, help="8192: the Collector's batch processor default"
    )
    parser.add_argument("--spans-per-request", type=int, default=500)
    parser.add_argument("--series", type=int, default=1000, help="distinct series in the metrics request")
    parser.add_argument("--probes", type=int, default=20, help="ingest-to-queryable measurements")
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes")
    parser.add_argument(
        "--flush",
        choices=("on", "off"),
        default="on",
        help="off: no blocks are written during the run (ingest alone: WAL and head)",
    )
    parser.add_argument("--profile", action="store_true", help="profile the receiver; tables to stderr")
    parser.add_argument("--profile-out", type=Path, default=None, help="with --profile: keep the pstats file")
    parser.add_argument("--serve-profiled", nargs=2, metavar=("OUT", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_profiled:
        return _serve_profiled(*args.serve_profiled)
    if min(args.senders, args.inflight, args.points_per_request, args.spans_per_request, args.series) < 1:
        parser.error("--senders, --inflight, --series and the per-request sizes must be >= 1")

    import grpc

    with tempfile.TemporaryDirectory(prefix="otel-audio-ingest-", dir=args.dir) as tmp:
        directory = Path(tmp)
        profile_path = directory / "receiver.prof" if args.profile else None
        receiver = _Receiver(directory, profile_path, args.flush == "on")
        try:
            sizes = {
                "duration": args.duration,
                "points": args.points_per_request,
                "series": min(args.series, args.points_per_request),
                "spans": args.spans_per_request,
                "inflight": args.inflight,
            }
            metrics = run_phase("metrics", receiver, args.senders, sizes)
            traces = run_phase("traces", receiver, args.senders, sizes)
            probe_acks, queryable = ingest_to_queryable(receiver, args.probes)
            rss_mb = receiver.rss_mb()
        finally:
            receiver.stop()
        if profile_path is not None:
            print_profile(profile_path)
            if args.profile_out is not None:
                shutil.copyfile(profile_path, args.profile_out)

    result = {
        "points_per_s": round(metrics["items_per_s"], 1),
        "spans_per_s": round(traces["items_per_s"], 1),
        "ack_p50_ms": round(metrics["ack_p50_ms"], 3),
        "ack_p99_ms": round(metrics["ack_p99_ms"], 3),
        "spans_ack_p50_ms": round(traces["ack_p50_ms"], 3),
        "spans_ack_p99_ms": round(traces["ack_p99_ms"], 3),
        "ingest_to_queryable_p50_ms": round(_percentile(queryable, 0.50), 3),
        "ingest_to_queryable_p99_ms": round(_percentile(queryable, 0.99), 3),
        "probe_ack_p50_ms": round(_percentile(probe_acks, 0.50), 3),
        "metric_requests": metrics["requests"],
        "span_requests": traces["requests"],
        "refused_requests": metrics["refused"] + traces["refused"],
        "receiver_cpu_per_s_metrics": round(metrics["receiver_cpu_s"] / metrics["wall_s"], 2),
        "receiver_cpu_per_s_traces": round(traces["receiver_cpu_s"] / traces["wall_s"], 2),
        "flush_process_cpu_per_s_metrics": round(metrics["flush_cpu_s"] / metrics["wall_s"], 2),
        "flush_process_cpu_per_s_traces": round(traces["flush_cpu_s"] / traces["wall_s"], 2),
        "flush": args.flush,
        "receiver_rss_mb": round(rss_mb, 1),
        "senders": args.senders,
        "inflight_per_sender": args.inflight,
        "duration_s": args.duration,
        "points_per_request": args.points_per_request,
        "spans_per_request": args.spans_per_request,
        "series": sizes["series"],
        "probes": args.probes,
        "fsync": "always",
        "profiled": args.profile,
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
