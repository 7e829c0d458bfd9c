"""Crash reliability: SIGKILL the receiver again and again under load, then count what survived.

``otel-audio serve`` runs as a subprocess on free loopback ports with a temporary data dir, a
1-second flush interval and 4 KiB WAL segments (so flushes, checkpoints and WAL truncations
happen between kills), and an ``alerting`` processor whose rule (``crash.flip > 0.5``) follows a
gauge this script flips every ``--flip`` seconds for two services, so alerts fire and resolve all
the time. Its webhook channel points at an HTTP server run here, which records every request
with its ``Idempotency-Key``.

Each round starts the receiver, runs the load generators (metrics over OTLP/gRPC and OTLP/HTTP,
spans and logs over OTLP/gRPC, every item with a unique id) and kills the receiver with SIGKILL
at a random moment (seeded), then starts it again. A request counts as acknowledged only when
the receiver answered it with success. After the last kill the receiver starts once more and the
script checks, through the HTTP API:

- every acknowledged data point, span and log record is there exactly once (counted by id);
  items of requests that died with the receiver may be there (at-least-once from the sender's
  view) but never twice, and never in part;
- the store opens cleanly: the receiver gets ready, and its log has no corruption report;
- every alert transition in the alert history (firing, resolved) reached the webhook, under
  exactly one idempotency key. Re-deliveries of the same key (the outbox is at-least-once: a
  kill between the webhook's answer and the outbox's record of it sends again on restart) are
  reported as ``notification_redeliveries``; a receiver drops them by key.

Usage::

    python benchmarks/crash.py [--kills 20] [--seed 1] [--min-up 0.3] [--max-up 3.0]

Prints one JSON line. ``run(...)`` is the same as a function (``tests/test_crash.py``).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ROOT = Path(__file__).resolve().parents[1]
MS = 10**6
ITEMS = 4  # data points, spans or log records per request
SLICE_MS = 9_000  # API searches return at most 10,000 rows: read spans and logs in time slices
EXPORT = {
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "spans": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
SERVICE = "crash-load"
RULE = "CrashFlip"
FLIP_SERVICES = ("flip-a", "flip-b")
REPLAYED = re.compile(r"replayed (\d+) WAL records")
CORRUPTION = re.compile(r"corrupt|Traceback|unreadable checkpoint", re.IGNORECASE)


# -- the webhook the alerts go to -----------------------------------------------------------------


class Webhook:
    """A loopback HTTP server keeping each request's ``Idempotency-Key`` and JSON body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                except ValueError:  # cut off by a kill: never answered, so never delivered
                    return
                with hook._lock:
                    hook.requests.append((self.headers.get("Idempotency-Key", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def received(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the receiver subprocess ----------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """``otel-audio serve`` in a subprocess with the crash test's config; its output is kept."""

    def __init__(self, workdir: Path, webhook_url: str, flip_s: float, flush_interval_s: int = 1) -> None:
        self.data = workdir / "data"
        self.grpc_port, self.http_port, self.api_port = free_port(), free_port(), free_port()
        self.config = workdir / "serve.yaml"
        # group_interval shorter than a flip: each transition is a notification of its own
        # (a longer one would fold a quick resolve-and-fire into one, as Alertmanager does)
        interval = max(0.05, flip_s / 10)
        self.config.write_text(
            f"""server:
  {{grpc_port: {self.grpc_port}, http_port: {self.http_port}, api_port: {self.api_port}}}
storage:
  data_dir: {self.data}
  wal: {{segment_bytes: 4096}}
  blocks: {{flush_interval_s: {flush_interval_s}, maintenance_interval_s: 1}}
limits: {{max_series_per_metric: 1000000}}
tick_interval_s: 0.05
processors:
  - alerting:
      channels:
        hook: {{type: webhook, url: "{webhook_url}", timeout: 5s}}
      route: {{receiver: hook, group_by: [alertname, service], group_wait: 0s,
               group_interval: {int(interval * 1000)}ms, repeat_interval: 4h}}
      damping: {{flap_starts: 0}}
      rules:
        - {{name: {RULE}, condition: "crash.flip > 0.5", severity: warning}}
  - store
"""
        )
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.start_seconds: list[float] = []
        self.orphans = 0
        self.kills_with_flush_process = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until ``/readyz`` answers ready; the time it took is kept."""
        began = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_audio.cli", "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the receiver exited while starting:\n" + "".join(self.output[-40:]))
            try:
                if requests.get(self.api("/readyz"), timeout=1).status_code == 200:
                    self.start_seconds.append(time.perf_counter() - began)
                    return
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"the receiver was not ready within {timeout} s")

    def _read(self, process: subprocess.Popen[str]) -> None:
        with open(self.data.parent / "serve.log", "a") as log:
            for line in process.stdout:
                self.output.append(line)
                log.write(line)

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def kill(self) -> None:
        """SIGKILL; its flush process must end by itself (counted in ``orphans`` if it does not,
        then ended here so that it cannot touch the next run's data)."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.kills_with_flush_process += bool(children)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        _, alive = psutil.wait_procs(children, timeout=10)
        self.orphans += len(alive)
        for child in alive:
            child.kill()

    def stop(self) -> int:
        """SIGTERM, wait for the drain; the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(30)


# -- load -----------------------------------------------------------------------------------------


def _resource(service: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
    )


def _kv(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def metrics_request(rid: int, base_ns: int) -> bytes:
    """Request ``rid``: one series (``req=rid``) of ITEMS points at distinct times."""
    points = [
        metrics_pb2.NumberDataPoint(
            time_unix_nano=base_ns + (rid * ITEMS + j) * MS,
            as_double=float(j),
            attributes=[_kv("req", str(rid))],
        )
        for j in range(ITEMS)
    ]
    metric = metrics_pb2.Metric(name="crash.load", gauge=metrics_pb2.Gauge(data_points=points))
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=_resource(SERVICE), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])]
            )
        ]
    ).SerializeToString()


def spans_request(rid: int, base_ns: int) -> bytes:
    """Request ``rid``: one trace of ITEMS spans, span ids ``rid * ITEMS + j + 1``."""
    spans = []
    for j in range(ITEMS):
        start = base_ns + (rid * ITEMS + j) * MS
        spans.append(
            trace_pb2.Span(
                trace_id=(rid + 1).to_bytes(16, "big"),
                span_id=(rid * ITEMS + j + 1).to_bytes(8, "big"),
                name="crash-op",
                start_time_unix_nano=start,
                end_time_unix_nano=start + MS // 2,
            )
        )
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=_resource(SERVICE), scope_spans=[trace_pb2.ScopeSpans(spans=spans)]
            )
        ]
    ).SerializeToString()


def logs_request(rid: int, base_ns: int) -> bytes:
    """Request ``rid``: ITEMS log records with bodies ``item <rid * ITEMS + j>``."""
    records = [
        logs_pb2.LogRecord(
            time_unix_nano=base_ns + (rid * ITEMS + j) * MS,
            severity_number=9,
            body=common_pb2.AnyValue(string_value=f"item {rid * ITEMS + j}"),
        )
        for j in range(ITEMS)
    ]
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=_resource(SERVICE), scope_logs=[logs_pb2.ScopeLogs(log_records=records)]
            )
        ]
    ).SerializeToString()


def flip_request(values: dict[str, float]) -> bytes:
    now = time.time_ns()
    resource_metrics = [
        metrics_pb2.ResourceMetrics(
            resource=_resource(service),
            scope_metrics=[
                metrics_pb2.ScopeMetrics(
                    metrics=[
                        metrics_pb2.Metric(
                            name="crash.flip",
                            gauge=metrics_pb2.Gauge(
                                data_points=[metrics_pb2.NumberDataPoint(time_unix_nano=now, as_double=value)]
                            ),
                        )
                    ]
                )
            ],
        )
        for service, value in values.items()
    ]
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=resource_metrics
    ).SerializeToString()


@dataclass
class Ledger:
    """Per signal: the request ids sent and those acknowledged; ids are never reused."""

    next_id: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    acked: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    sent: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, signal_name: str) -> int:
        with self.lock:
            rid = self.next_id[signal_name]
            self.next_id[signal_name] += 1
            self.sent[signal_name].add(rid)
            return rid

    def ack(self, signal_name: str, rid: int) -> None:
        with self.lock:
            self.acked[signal_name].add(rid)


def _grpc_sender(serve: Serve, kind: str, ledger: Ledger, base_ns: int, stop: threading.Event) -> None:
    build = {"metrics": metrics_request, "spans": spans_request, "logs": logs_request}[kind]
    with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
        call = channel.unary_unary(EXPORT[kind])
        while not stop.is_set():
            rid = ledger.take(kind)
            try:
                call(build(rid, base_ns), timeout=10)
            except grpc.RpcError:
                return  # the receiver died mid-request: not acknowledged
            ledger.ack(kind, rid)


def _http_sender(serve: Serve, ledger: Ledger, base_ns: int, stop: threading.Event) -> None:
    """Metrics over OTLP/HTTP (protobuf), from the same id space as the gRPC metrics."""
    url = f"http://127.0.0.1:{serve.http_port}/v1/metrics"
    with requests.Session() as session:
        while not stop.is_set():
            rid = ledger.take("metrics")
            try:
                reply = session.post(
                    url,
                    data=metrics_request(rid, base_ns),
                    headers={"Content-Type": "application/x-protobuf"},
                    timeout=10,
                )
            except requests.RequestException:
                return
            if reply.status_code == 200:
                ledger.ack("metrics", rid)


def _flipper(serve: Serve, flip_s: float, stop: threading.Event) -> None:
    """``crash.flip`` of each flip service: 1 and 0 in turn, each for ``flip_s`` (out of phase)."""
    with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
        call = channel.unary_unary(EXPORT["metrics"])
        while not stop.is_set():
            t = time.time() / flip_s
            values = {s: float(int(t + i * 0.5) % 2) for i, s in enumerate(FLIP_SERVICES)}
            try:
                call(flip_request(values), timeout=10)
            except grpc.RpcError:
                return
            stop.wait(0.05)


def _load(
    serve: Serve, ledger: Ledger, base_ns: int, flip_s: float, stop: threading.Event
) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_grpc_sender, args=(serve, kind, ledger, base_ns, stop), daemon=True)
        for kind in ("metrics", "spans", "logs")
    ]
    threads.append(threading.Thread(target=_http_sender, args=(serve, ledger, base_ns, stop), daemon=True))
    threads.append(threading.Thread(target=_flipper, args=(serve, flip_s, stop), daemon=True))
    for thread in threads:
        thread.start()
    return threads


# -- checks ---------------------------------------------------------------------------------------


def stored_metrics(serve: Serve, base_ns: int, count: int) -> dict[int, list[int]]:
    """Per request id (the ``req`` series): how often each of its points is stored (from the count)."""
    end = base_ns + (count * ITEMS + 1) * MS
    reply = requests.get(
        serve.api("/api/v1/query_range"),
        params={
            "metric": "crash.load",
            "agg": "count",
            "group_by": "req",
            "step": "1d",
            "start": str((base_ns - 1000 * MS) / 1e9),
            "end": str(end / 1e9),
        },
        timeout=120,
    )
    reply.raise_for_status()
    totals: Counter[int] = Counter()
    for series in reply.json()["series"]:
        totals[int(series["labels"]["req"])] += int(sum(n for _, n in series["points"]))
    # the count is per request: n points are taken as its first n, extra ones as repeats of the first
    out = {}
    for rid, n in totals.items():
        counts = [1] * min(n, ITEMS) + [0] * (ITEMS - min(n, ITEMS))
        counts[0] += max(0, n - ITEMS)
        out[rid] = counts
    return out


def _sliced(serve: Serve, path: str, key: str, base_ns: int, count: int) -> list[dict[str, Any]]:
    rows = []
    last = base_ns + (count * ITEMS + 1) * MS
    for lo in range(base_ns, last, SLICE_MS * MS):
        reply = requests.get(
            serve.api(path),
            params={
                "service": SERVICE,
                "start": str(lo / 1e9),
                "end": str((lo + SLICE_MS * MS) / 1e9),
                "limit": 10_000,
            },
            timeout=120,
        )
        reply.raise_for_status()
        found = reply.json()[key]
        if len(found) >= 10_000:
            raise RuntimeError(f"{path}: a slice hit the 10,000-row limit; make SLICE_MS smaller")
        rows += found
    return rows


def stored_spans(serve: Serve, base_ns: int, count: int) -> Counter[int]:
    """Spans stored per item id (span id - 1)."""
    spans = _sliced(serve, "/api/v1/spans", "spans", base_ns, count)
    return Counter(int(s["span_id"], 16) - 1 for s in spans)


def stored_logs(serve: Serve, base_ns: int, count: int) -> Counter[int]:
    """Log records stored per item id (from the body)."""
    logs = _sliced(serve, "/api/v1/logs", "logs", base_ns, count)
    return Counter(int(str(r["body"]).split()[1]) for r in logs)


def _items_by_request(per_item: Counter[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(lambda: [0] * ITEMS)
    for item, n in per_item.items():
        out[item // ITEMS][item % ITEMS] = n
    return out


def check_data(kind: str, ledger: Ledger, stored: dict[int, list[int]]) -> dict[str, int]:
    """Acknowledged items missing, items stored twice, requests stored in part, unacked stored."""
    acked = ledger.acked[kind]
    lost = sum(ITEMS - sum(1 for n in stored.get(rid, [0] * ITEMS) if n >= 1) for rid in acked)
    duplicated = sum(max(0, n - 1) for counts in stored.values() for n in counts)
    partial = sum(1 for counts in stored.values() if 0 < sum(1 for n in counts if n) < ITEMS)
    unknown = sum(1 for rid in stored if rid not in ledger.sent[kind])
    return {
        f"{kind}_acked": len(acked) * ITEMS,
        f"{kind}_lost": lost,
        f"{kind}_duplicated": duplicated,
        f"{kind}_partial_requests": partial + unknown,
        f"{kind}_unacked_stored": sum(
            ITEMS for rid in stored if rid not in acked and rid in ledger.sent[kind]
        ),
    }


def _transition_id(alert: dict[str, Any]) -> tuple[str, str, str, str]:
    return (alert["fingerprint"], alert["status"], alert["startsAt"], alert["endsAt"])


def check_notifications(serve: Serve, webhook: Webhook, timeout: float) -> dict[str, int]:
    """Every firing/resolved transition of the history under exactly one idempotency key."""
    from otel_audio.notify.channels.base import ZERO_TIME, rfc3339

    reply = requests.get(
        serve.api("/api/v1/alerts/history"), params={"rule": RULE, "limit": 10_000}, timeout=60
    )
    reply.raise_for_status()
    expected = set()
    for t in reply.json()["transitions"]:
        if t["state"] in ("firing", "resolved"):
            ends = rfc3339(t["ends_at"]) if t["ends_at"] else ZERO_TIME
            expected.add((t["fingerprint"], t["state"], rfc3339(t["starts_at"]), ends))
    deadline = time.monotonic() + timeout
    while True:
        keys: dict[tuple[str, str, str, str], set[str]] = defaultdict(set)
        received = webhook.received()
        for key, body in received:
            for alert in body.get("alerts", []):
                keys[_transition_id(alert)].add(key)
        missing = [t for t in expected if not keys.get(t)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    distinct = {key for key, _ in received}
    return {
        "transitions": len(expected),
        "notifications_expected": len(expected),
        "notifications_delivered": sum(1 for t in expected if keys.get(t)),
        "notifications_duplicated": sum(len(keys[t]) - 1 for t in expected if len(keys.get(t, ())) > 1),
        "notifications_unexpected": sum(1 for t in keys if t not in expected),
        "notification_requests": len(received),
        "notification_redeliveries": len(received) - len(distinct),
        "requests_without_key": sum(1 for key, _ in received if not key),
        "missing_transitions": sorted(missing)[:5],
    }


def unfinished_flush(data: Path) -> bool:
    """Whether a flush has begun writing blocks that the checkpoint does not name yet."""
    from otel_audio.store.catalog import _FLUSH_NAME

    committed = _checkpoint_seq(data)
    for path in (data / "blocks" / "raw").glob("*/f*"):
        match = _FLUSH_NAME.fullmatch(path.name)
        if match and int(match[1]) > committed:
            return True
    return False


def _checkpoint_seq(data: Path) -> int:
    try:
        return int(json.loads((data / "index" / "checkpoint.json").read_text())["seq"])
    except FileNotFoundError:
        return 0


# -- the run --------------------------------------------------------------------------------------


def run(kills: int = 20, seed: int = 1, min_up: float = 0.3, max_up: float = 3.0, flip_s: float = 0.6,
        workdir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Kill the receiver ``kills`` times under load and check what survived (module docstring)."""
    rng = random.Random(seed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="otel-audio-crash-") as tmp:
        root = Path(workdir or tmp)
        webhook = Webhook()
        serve = Serve(root, webhook.url(), flip_s)
        ledger = Ledger()
        base_ns = (time.time_ns() // 10**9 - 3600) * 10**9  # items an hour back, 1 ms apart
        try:
            for _ in range(kills):
                serve.start()
                stop = threading.Event()
                threads = _load(serve, ledger, base_ns, flip_s, stop)
                time.sleep(rng.uniform(min_up, max_up))
                serve.kill()
                stop.set()
                for thread in threads:
                    thread.join(30)
            flushes = _checkpoint_seq(serve.data)  # before the last start, whose stop flushes again
            serve.start()
            figures: dict[str, Any] = {"benchmark": "crash", "kills": kills, "seed": seed}
            figures["flushes_committed"] = flushes
            counts = {kind: ledger.next_id[kind] for kind in ("metrics", "spans", "logs")}
            figures.update(check_data("metrics", ledger, stored_metrics(serve, base_ns, counts["metrics"])))
            figures.update(
                check_data("spans", ledger, _items_by_request(stored_spans(serve, base_ns, counts["spans"])))
            )
            figures.update(
                check_data("logs", ledger, _items_by_request(stored_logs(serve, base_ns, counts["logs"])))
            )
            figures.update(check_notifications(serve, webhook, timeout=20))
            figures["exit_code"] = serve.stop()
        finally:
            serve.stop()
            webhook.stop()
        corrupt = [line.rstrip() for line in serve.output if CORRUPTION.search(line)]
        starts = np.array(serve.start_seconds)
        figures.update(
            {
                "opened_cleanly": not corrupt,
                "corruption_lines": corrupt[:5],
                "torn_tails_cut": sum("torn tail" in line for line in serve.output),
                "starts_after_unfinished_flush": sum("interrupted flush" in line for line in serve.output),
                "wal_records_replayed": sum(int(m[1]) for m in map(REPLAYED.search, serve.output) if m),
                "kills_with_a_flush_process": serve.kills_with_flush_process,
                "orphaned_flush_processes": serve.orphans,
                "restart_p50_s": round(float(np.percentile(starts[1:], 50)), 3),
                "restart_max_s": round(float(starts[1:].max()), 3),
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
        figures["points_lost"] = figures["metrics_lost"]
        return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-up", type=float, default=0.3, help="least seconds of load before a kill")
    parser.add_argument("--max-up", type=float, default=3.0, help="most seconds of load before a kill")
    parser.add_argument("--flip", type=float, default=0.6, help="seconds between alert condition flips")
    parser.add_argument(
        "--workdir", type=Path, help="keep the data dir and config here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    print(json.dumps(run(args.kills, args.seed, args.min_up, args.max_up, args.flip, args.workdir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
