"""Overload: offer several times the receiver's measured capacity, then less, and check what it answers.

``otel-audio serve`` runs as a subprocess (fresh data directory, free ports, ``fsync: always``).
Sender processes, half over OTLP/gRPC and half over OTLP/HTTP (protobuf), send metrics requests
of ``--points-per-request`` gauge points (the ingest benchmark's request) to which each send
appends one point of ``overload.request`` carrying a unique ``id`` (serialised protobuf messages
concatenate, so the bulk is serialised once). The run has three phases:

1. capacity: every sender sends back to back for ``--capacity-seconds``; the acknowledged
   requests per second are the capacity (the ingest benchmark's method, with these senders);
2. overload: ``--factor`` times that rate, open loop (sends follow a schedule whatever the
   replies), for ``--overload-seconds``;
3. recovery: ``--drop-factor`` times the capacity for ``--recovery-seconds``.

Refused requests are not retried (so the offered rate stays what the schedule says); each
refusal is checked for retry information (gRPC ``google.rpc.RetryInfo``, HTTP ``Retry-After``).
An HTTP send that finds its kept-alive connection closed by the server (idle for uvicorn's 5 s)
is sent once more on a new connection, as exporters do; ``http_reconnects`` counts those.
Throughout, the receiver's RSS is read from ``/proc`` every 100 ms, and every
``--probe-interval`` seconds the health endpoints (API ``/healthz`` and ``/readyz``, OTLP/HTTP
``/healthz``, gRPC ``grpc.health.v1``), the dashboard page ``/`` and the API's
``/api/v1/metrics`` are fetched and timed; one live stream (``/api/v1/stream``) stays open.
Afterwards the store is asked, by ``id``, which requests it holds: ``lost_acked`` counts
acknowledged ids it lacks (must be 0) and ``duplicated`` ids held more than once.

``recovery_s`` is the time from the drop to the send after which every request was
acknowledged (0 when the first was; null when the phase ended with refusals).

Usage::

    python benchmarks/overload.py [--factor 5] [--overload-seconds 45] [--recovery-seconds 20]
                                  [--capacity-seconds 10] [--senders 4] [--points-per-request 8192]
                                  [--max-memory-mb 2048] [--max-inflight-mb 64]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import SECOND, _kv, _Receiver, metrics_request  # the ingest benchmark's parts

TAG_METRIC = "overload.request"
OUTSTANDING_PER_SENDER = 256  # the most unanswered requests one sender keeps (a client's own bound)
TIMEOUT_S = 30.0
# Each record of a send: (phase, sent at, answered at, outcome, retry information present, id,
# why it was refused: the receiver's message with its numbers left out).
Record = tuple[int, float, float, str, bool, str, str]


# -- requests ------------------------------------------------------------------------------------


def tag_bytes(request_id: str, now_ns: int) -> bytes:
    """One resource with one point of ``overload.request{id=...}``, serialised."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    point = metrics_pb2.NumberDataPoint(
        time_unix_nano=now_ns, as_double=1.0, attributes=[_kv("id", request_id)]
    )
    metric = metrics_pb2.Metric(name=TAG_METRIC, gauge=metrics_pb2.Gauge(data_points=[point]))
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=[_kv("service.name", "overload")]),
                scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])],
            )
        ]
    ).SerializeToString()


def _reason(message: str) -> str:
    """A refusal's message with its numbers left out, so equal reasons count together."""
    return re.sub(r"\d+", "N", message)[:100]


def _http_message(body: bytes) -> str:
    from google.protobuf.message import DecodeError
    from google.rpc import status_pb2

    try:
        return status_pb2.Status.FromString(body).message
    except DecodeError:
        return "undecodable reply"


def _grpc_retry_info(error: Any) -> bool:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return False
    return any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in (status.details if status else ()))


# -- senders (separate processes) ----------------------------------------------------------------


class _Transport:
    """Sends one payload and reports (outcome, retry information present), blocking or not."""

    def __init__(self, kind: str, grpc_port: int, http_port: int) -> None:
        self.kind = kind
        self.reconnects = 0  # HTTP sends repeated on a new connection (see ``send``)
        if kind == "grpc":
            import grpc

            self._grpc = grpc
            self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
            service = "opentelemetry.proto.collector.metrics.v1.MetricsService"
            self.call = self.channel.unary_unary(f"/{service}/Export")
        else:
            import requests

            self._requests = requests
            self.url = f"http://127.0.0.1:{http_port}/v1/metrics"
            self.local = threading.local()

    def send(self, payload: bytes) -> tuple[str, bool, str]:
        if self.kind == "grpc":
            try:
                self.call(payload, timeout=TIMEOUT_S)
            except self._grpc.RpcError as exc:
                return self._grpc_outcome(exc)
            return "ok", False, ""
        headers = {"Content-Type": "application/x-protobuf"}
        for attempt in (1, 2):
            session = getattr(self.local, "session", None)
            if session is None:
                session = self.local.session = self._requests.Session()
            try:
                reply = session.post(self.url, data=payload, headers=headers, timeout=TIMEOUT_S)
                break
            except self._requests.ConnectionError as exc:
                # A kept-alive connection the server closed as idle (uvicorn: after 5 s) fails
                # the next send; exporters then reconnect and send again, and so does this one.
                self.local.session = None
                if attempt == 2:
                    return "http_ConnectionError", False, _reason(str(exc))
                self.reconnects += 1
            except self._requests.RequestException as exc:
                return f"http_{type(exc).__name__}", False, _reason(str(exc))
        if reply.status_code == 200:
            return "ok", False, ""
        retry = reply.headers.get("Retry-After", "").isdigit()
        return f"http_{reply.status_code}", retry, _reason(_http_message(reply.content))

    def send_async(self, payload: bytes, done: Any) -> None:
        """gRPC only: ``done(outcome, retry_info)`` is called from gRPC's thread when answered."""
        future = self.call.future(payload, timeout=TIMEOUT_S)

        def finished(f: Any) -> None:
            exc = f.exception()
            done(*(("ok", False, "") if exc is None else self._grpc_outcome(exc)))

        future.add_done_callback(finished)

    def _grpc_outcome(self, exc: Any) -> tuple[str, bool, str]:
        return f"grpc_{exc.code().name}", _grpc_retry_info(exc), _reason(exc.details() or "")


def _sender(
    index: int, kind: str, ports: tuple[int, int], sizes: dict[str, int], commands: Any, out: Any
) -> None:
    """Runs each command it is given, replying with one list of records per command."""
    now = time.time_ns() // SECOND * SECOND
    bulk = metrics_request(sizes["points"], sizes["series"], now).SerializeToString()
    transport = _Transport(kind, *ports)
    counter = iter(range(1, 1 << 62))
    lock = threading.Lock()

    def payload() -> tuple[str, bytes]:
        with lock:
            request_id = f"{kind}{index}-{next(counter)}"
        return request_id, bulk + tag_bytes(request_id, time.time_ns())

    transport.send(bulk)  # connects, and admits the bulk's series before anything is timed
    out.put(("ready", index, [], 0))
    while (command := commands.get()) is not None:
        name, start_at, plan = command
        records: list[Record] = []
        time.sleep(max(start_at - time.monotonic(), 0.0))
        if name == "closed":
            _closed_loop(transport, plan, start_at, payload, records)
        else:
            _open_loop(transport, plan, start_at, payload, records)
        out.put(("records", index, records, transport.reconnects))


def _closed_loop(
    transport: _Transport, plan: tuple[float, int], start_at: float, payload: Any, records: list[Record]
) -> None:
    """``concurrency`` threads each send back to back until ``duration`` is over."""
    duration, concurrency = plan
    end = start_at + duration

    def loop() -> None:
        while time.monotonic() < end:
            request_id, body = payload()
            sent = time.monotonic()
            outcome, retry, reason = transport.send(body)
            records.append((0, sent, time.monotonic(), outcome, retry, request_id, reason))

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _open_loop(
    transport: _Transport,
    plan: list[tuple[float, float]],
    start_at: float,
    payload: Any,
    records: list[Record],
) -> None:
    """Sends on a fixed schedule, phase by phase (duration, requests/s); waits for every answer."""
    outstanding = threading.BoundedSemaphore(OUTSTANDING_PER_SENDER)
    idle = threading.Condition()
    pending = 0
    pool = ThreadPoolExecutor(max_workers=64) if transport.kind == "http" else None

    def finish(phase: int, sent: float, request_id: str, outcome: str, retry: bool, reason: str) -> None:
        nonlocal pending
        records.append((phase, sent, time.monotonic(), outcome, retry, request_id, reason))
        outstanding.release()
        with idle:
            pending -= 1
            idle.notify_all()

    phase_start = start_at
    for phase, (duration, rate) in enumerate(plan, start=1):
        interval = 1.0 / rate
        due = phase_start
        while due < phase_start + duration:
            time.sleep(max(due - time.monotonic(), 0.0))
            due += interval
            if not outstanding.acquire(blocking=False):
                records.append((phase, time.monotonic(), time.monotonic(), "client_saturated", False, "", ""))
                continue
            request_id, body = payload()
            sent = time.monotonic()
            with idle:
                pending += 1
            if pool is None:
                transport.send_async(
                    body, lambda o, r, w, p=phase, s=sent, i=request_id: finish(p, s, i, o, r, w)
                )
            else:
                pool.submit(lambda b=body, p=phase, s=sent, i=request_id: finish(p, s, i, *transport.send(b)))
        phase_start += duration
    with idle:
        idle.wait_for(lambda: pending == 0, TIMEOUT_S * 2)
    if pool is not None:
        pool.shutdown(wait=True)


class Senders:
    """The sender processes, driven by commands; even ones gRPC, odd ones HTTP."""

    def __init__(self, receiver: _Receiver, count: int, sizes: dict[str, int]) -> None:
        context = multiprocessing.get_context("spawn")  # gRPC does not survive fork
        self.out = context.Queue()
        self.commands = [context.Queue() for _ in range(count)]
        self.reconnects = 0
        ports = (receiver.grpc_port, receiver.http_port)
        self.procs = [
            context.Process(
                target=_sender,
                args=(i, "grpc" if i % 2 == 0 else "http", ports, sizes, self.commands[i], self.out),
                daemon=True,
            )
            for i in range(count)
        ]
        for proc in self.procs:
            proc.start()
        for _ in self.procs:
            self.out.get(timeout=120)

    def run(self, name: str, start_at: float, plan: Any, timeout: float) -> list[Record]:
        """Every sender runs ``plan`` from ``start_at`` (a ``time.monotonic()``, shared by processes)."""
        for queue in self.commands:
            queue.put((name, start_at, plan))
        records: list[Record] = []
        for _ in self.procs:
            _tag, _index, rows, reconnects = self.out.get(timeout=timeout)
            records += rows
            self.reconnects += reconnects
        return records

    def close(self) -> None:
        for queue in self.commands:
            queue.put(None)
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


# -- watching the receiver -----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """RSS every 100 ms, timed probes of health, dashboard and API, and one open live stream."""

    PROBES = (
        "api /healthz",
        "api /readyz",
        "otlp-http /healthz",
        "grpc health",
        "dashboard /",
        "api /api/v1/metrics",
    )

    def __init__(self, receiver: _Receiver, probe_interval: float) -> None:
        self.receiver = receiver
        self.interval = probe_interval
        self.stop = threading.Event()
        self.rss: list[float] = []
        self.latencies: dict[str, list[float]] = {name: [] for name in self.PROBES}
        self.failures: Counter[str] = Counter()
        self.stream_events: Counter[str] = Counter()
        self.stream_error = ""
        self.threads = [
            threading.Thread(target=fn, daemon=True) for fn in (self._memory, self._probe, self._stream)
        ]

    def start(self) -> Watch:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads[:2]:
            thread.join(30)

    def _memory(self) -> None:
        while not self.stop.wait(0.1):
            self.rss.append(rss_mb(self.receiver.process.pid))

    def _probe(self) -> None:
        import grpc
        import requests
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        api = f"http://127.0.0.1:{self.receiver.api_port}"
        targets = {
            "api /healthz": f"{api}/healthz",
            "api /readyz": f"{api}/readyz",
            "otlp-http /healthz": f"http://127.0.0.1:{self.receiver.http_port}/healthz",
            "dashboard /": f"{api}/",
            "api /api/v1/metrics": f"{api}/api/v1/metrics",
        }
        with requests.Session() as http, grpc.insecure_channel(f"127.0.0.1:{self.receiver.grpc_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            while not self.stop.wait(self.interval):
                for name in self.PROBES:
                    began = time.perf_counter()
                    try:
                        if name == "grpc health":
                            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                            ok = reply.status == health_pb2.HealthCheckResponse.SERVING
                        else:
                            ok = http.get(targets[name], timeout=10).status_code == 200
                    except (requests.RequestException, grpc.RpcError):
                        ok = False
                    if ok:
                        self.latencies[name].append((time.perf_counter() - began) * 1e3)
                    else:
                        self.failures[name] += 1

    def _stream(self) -> None:
        import requests

        url = f"http://127.0.0.1:{self.receiver.api_port}/api/v1/stream"
        try:
            with requests.get(url, params={"metrics": TAG_METRIC}, stream=True, timeout=30) as reply:
                for line in reply.iter_lines():
                    if line.startswith(b"event: "):
                        self.stream_events[line[7:].decode()] += 1
                    if self.stop.is_set():
                        return
        except requests.RequestException as exc:
            self.stream_error = type(exc).__name__

    def summary(self) -> dict[str, Any]:
        every = sorted(x for values in self.latencies.values() for x in values)
        return {
            "probes_answered": len(every),
            "probe_failures": dict(self.failures),
            "probe_p50_ms": _quantile(every, 0.5),
            "probe_p99_ms": _quantile(every, 0.99),
            "probe_max_ms": round(every[-1], 3) if every else None,
            "probe_p99_ms_by_target": {
                name: _quantile(sorted(v), 0.99) for name, v in self.latencies.items()
            },
            "stream_events": dict(self.stream_events),
            "stream_error": self.stream_error,
        }


def _quantile(ordered: list[float], q: float) -> float | None:
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


# -- what the store holds ------------------------------------------------------------------------


def stored_ids(api_port: int, since_s: float) -> Counter[str]:
    """How many points of ``overload.request`` the store holds, by id."""
    import requests

    reply = requests.get(
        f"http://127.0.0.1:{api_port}/api/v1/query_range",
        params={
            "metric": TAG_METRIC,
            "agg": "count",
            "group_by": "id",
            "step": "1d",
            "start": str(since_s - 60),
            "end": str(time.time() + 60),
        },
        timeout=300,
    )
    reply.raise_for_status()
    counts: Counter[str] = Counter()
    for series in reply.json()["series"]:
        counts[series["labels"]["id"]] += int(sum(v for _t, v in series["points"]))
    return counts


# -- the run -------------------------------------------------------------------------------------


def recovery_seconds(records: list[Record], phase: int, phase_start: float) -> float | None:
    """From the drop to the send after which every request of the phase was acknowledged."""
    sends = sorted((r for r in records if r[0] == phase), key=lambda r: r[1])
    if not sends or sends[-1][3] != "ok":
        return None
    first = len(sends) - 1
    while first > 0 and sends[first - 1][3] == "ok":
        first -= 1
    return round(0.0 if first == 0 else sends[first][1] - phase_start, 3)


def limits_yaml(args: argparse.Namespace) -> str:
    """The receiver's configuration beyond ports and data directory (it follows ``storage:``)."""
    memory = f"  max_memory_bytes: {int(args.max_memory_mb * 2**20)}\n" if args.max_memory_mb else ""
    return (
        f"  blocks:\n    head_max_bytes: {int(args.head_max_mb * 2**20)}\n"
        f"limits:\n  max_inflight_bytes: {int(args.max_inflight_mb * 2**20)}\n"
        f"  max_series_per_metric: 10000000\n  retry_after_s: {args.retry_after}\n{memory}"
    )


def _phase(row: Record) -> str:
    return ("capacity", "overload", "recovery")[row[0]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Capacity, overload, recovery against one receiver; the figures of the JSON line."""
    sizes = {"points": args.points_per_request, "series": min(args.series, args.points_per_request)}
    began_wall = time.time()
    with tempfile.TemporaryDirectory(prefix="otel-audio-overload-", dir=args.dir) as tmp:
        receiver = _Receiver(Path(tmp), None, extra_yaml=limits_yaml(args))
        senders = None
        try:
            senders = Senders(receiver, args.senders, sizes)
            baseline_rss = rss_mb(receiver.process.pid)
            start = time.monotonic() + 0.5
            measured = senders.run(
                "closed", start, (args.capacity_seconds, args.concurrency), args.capacity_seconds + 120
            )
            capacity = sum(1 for r in measured if r[3] == "ok") / args.capacity_seconds
            if capacity <= 0:
                raise RuntimeError(f"nothing acknowledged at capacity: {Counter(r[3] for r in measured)}")
            watch = Watch(receiver, args.probe_interval).start()
            per_sender = capacity / args.senders
            plan = [
                (args.overload_seconds, args.factor * per_sender),
                (args.recovery_seconds, args.drop_factor * per_sender),
            ]
            start = time.monotonic() + 0.5
            loaded = senders.run("open", start, plan, args.overload_seconds + args.recovery_seconds + 150)
            watch.finish()
            held = stored_ids(receiver.api_port, began_wall)
            final_rss = rss_mb(receiver.process.pid)
        finally:
            if senders is not None:
                senders.close()
            receiver.stop()

    records = measured + loaded
    acked = {r[5] for r in records if r[3] == "ok"}
    refused = [r for r in records if r[3] not in ("ok", "client_saturated")]
    drop_start = start + args.overload_seconds
    half = args.recovery_seconds / 2
    late_acked = sum(1 for r in loaded if r[0] == 2 and r[1] >= drop_start + half and r[3] == "ok")
    return {
        "capacity_requests_per_s": round(capacity, 2),
        "capacity_points_per_s": round(capacity * args.points_per_request, 1),
        "factor": args.factor,
        "offered_requests_per_s": round(args.factor * capacity, 2),
        "overload_acked_per_s": round(
            sum(1 for r in loaded if r[0] == 1 and r[3] == "ok") / args.overload_seconds, 2
        ),
        "outcomes": dict(sorted(Counter(f"{_phase(r)}:{r[3]}" for r in records).items())),
        "acked": len(acked),
        "refused": len(refused),
        "refused_with_retry_info": sum(1 for r in refused if r[4]),
        "refusal_codes": dict(Counter(r[3] for r in refused)),
        "refusal_reasons": dict(Counter(f"{_phase(r)}: {r[6]}" for r in refused).most_common()),
        "client_saturated": sum(1 for r in records if r[3] == "client_saturated"),
        "http_reconnects": senders.reconnects,
        "lost_acked": len(acked - set(held)),
        "duplicated": sum(1 for n in held.values() if n > 1),
        "stored_not_acked": len(set(held) - acked),
        "recovery_s": recovery_seconds(loaded, 2, drop_start),
        "recovery_offered_per_s": round(args.drop_factor * capacity, 2),
        "recovery_acked_per_s_second_half": round(late_acked / half, 2),
        "peak_rss_mb": round(max(watch.rss, default=0.0), 1),
        "baseline_rss_mb": round(baseline_rss, 1),
        "final_rss_mb": round(final_rss, 1),
        "max_memory_mb": args.max_memory_mb or None,
        "max_inflight_mb": args.max_inflight_mb,
        "head_max_mb": args.head_max_mb,
        **watch.summary(),
        "senders": args.senders,
        "overload_seconds": args.overload_seconds,
        "recovery_seconds": args.recovery_seconds,
        "points_per_request": args.points_per_request,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--factor", type=float, default=5.0, help="offered load as a multiple of capacity")
    parser.add_argument("--drop-factor", type=float, default=0.5, help="load after the overload, ditto")
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument("--overload-seconds", type=float, default=45.0)
    parser.add_argument("--recovery-seconds", type=float, default=20.0)
    parser.add_argument("--senders", type=int, default=4, help="processes; even ones gRPC, odd ones HTTP")
    parser.add_argument("--concurrency", type=int, default=2, help="requests at a time per sender (capacity)")
    parser.add_argument("--points-per-request", type=int, default=8192)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument(
        "--max-memory-mb", type=float, default=2048.0, help="limits.max_memory_bytes; 0: unset"
    )
    parser.add_argument("--max-inflight-mb", type=float, default=64.0, help="limits.max_inflight_bytes")
    parser.add_argument("--head-max-mb", type=float, default=128.0, help="storage.blocks.head_max_bytes")
    parser.add_argument("--retry-after", type=int, default=1, help="limits.retry_after_s")
    parser.add_argument("--probe-interval", type=float, default=0.2)
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes")
    args = parser.parse_args()
    if (
        min(
            args.factor, args.drop_factor, args.capacity_seconds, args.overload_seconds, args.recovery_seconds
        )
        <= 0
    ):
        parser.error("factors and phase durations must be > 0")
    if min(args.senders, args.concurrency, args.points_per_request, args.series) < 1:
        parser.error("--senders, --concurrency, --points-per-request and --series must be >= 1")
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
