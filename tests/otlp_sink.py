"""A real OTLP endpoint for tests (gRPC and HTTP/protobuf on loopback) that records what arrives.

The SDK plugin is tested against real exporters over real sockets; this sink is the smallest
server that speaks the OTLP services, until a test can use the otel-audio receiver itself.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

_REQUESTS = {
    "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


class OtlpSink:
    """Collects ExportTraceServiceRequest / ExportMetricsServiceRequest / ExportLogsServiceRequest."""

    def __init__(self) -> None:
        self.traces: list[Any] = []
        self.metrics: list[Any] = []
        self.logs: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _keep(self, kind: str, request: Any, headers: dict[str, str]) -> None:
        with self._lock:
            getattr(self, kind).append(request)
            self.headers.append(headers)
            self._arrived.notify_all()

    def start(self) -> None:
        sink = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                sink._keep("traces", request, dict(context.invocation_metadata()))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                sink._keep("metrics", request, dict(context.invocation_metadata()))
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                sink._keep("logs", request, dict(context.invocation_metadata()))
                return logs_service_pb2.ExportLogsServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._grpc)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._grpc)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                kinds = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
                if self.path not in kinds:
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request_type, response_type = _REQUESTS[self.path]
                request = request_type()
                request.ParseFromString(body)
                sink._keep(kinds[self.path], request, {k.lower(): v for k, v in self.headers.items()})
                payload = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def spans(self) -> list[tuple[Any, Any, Any]]:
        """(resource, scope, span) for every span received so far."""
        with self._lock:
            requests = list(self.traces)
        return [
            (rs.resource, ss.scope, span)
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metric_list(self) -> list[tuple[Any, Any]]:
        """(resource, metric) for every metric received so far."""
        with self._lock:
            requests = list(self.metrics)
        return [
            (rm.resource, metric)
            for request in requests
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        ]

    def log_records(self) -> list[Any]:
        with self._lock:
            requests = list(self.logs)
        return [
            lr
            for request in requests
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for lr in sl.log_records
        ]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Wait until ``condition`` holds, re-checked as requests arrive; the timeout bounds failures."""
        with self._arrived:
            return self._arrived.wait_for(condition, timeout)


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP KeyValue list -> plain dict."""
    out: dict[str, Any] = {}
    for kv in kvs:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out
