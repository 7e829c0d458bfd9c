"""OTLP/gRPC: the TraceService, MetricsService and LogsService of ``opentelemetry-proto``.

Requests are registered with raw-bytes deserialisation and handed to ingest as bytes: an
undecodable payload then gets INVALID_ARGUMENT with a message (grpcio's own deserialiser would
answer INTERNAL), and metrics take the native decode path straight from the wire bytes.
Refusals follow the OTLP specification: RESOURCE_EXHAUSTED and UNAVAILABLE carry a
``google.rpc.RetryInfo`` detail, the signal that lets exporters retry instead of dropping data.

Export calls are admitted when they arrive, on gRPC's polling thread: with ``2 * grpc_workers``
calls already queued or running, a new one is refused at once (RESOURCE_EXHAUSTED with
RetryInfo, answered from a separate small pool) instead of waiting in the worker pool's queue,
which grpcio leaves unbounded: under overload that queue held every request's bytes, answered
nothing for longer than exporters' deadlines and kept health checks waiting behind it.
The standard ``grpc.health.v1`` service reports SERVING while the receiver runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_audio.processors.base import Signal
from otel_audio.receiver.auth import GrpcAuthInterceptor, TokenAuth
from otel_audio.receiver.config import ServerConfig
from otel_audio.receiver.ingest import Ingestor, InvalidRequest, Overloaded, Unavailable

# signal -> (service name, request type, response type, partial success type, rejected field)
SERVICES = {
    Signal.TRACES: (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        trace_service_pb2.ExportTracePartialSuccess,
        "rejected_spans",
    ),
    Signal.METRICS: (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        metrics_service_pb2.ExportMetricsPartialSuccess,
        "rejected_data_points",
    ),
    Signal.LOGS: (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        logs_service_pb2.ExportLogsPartialSuccess,
        "rejected_log_records",
    ),
}
MAX_ERROR_MESSAGE = 2000
BACKLOG_PER_WORKER = 2  # export calls queued or running per worker before new ones are refused


def export_response(signal: Signal, rejected: int, message: str) -> Any:
    """The Export*ServiceResponse for a result; partial_success only when something was rejected."""
    _service, _request, response_type, partial_type, field = SERVICES[signal]
    if not rejected and not message:
        return response_type()
    partial = partial_type(error_message=message[:MAX_ERROR_MESSAGE], **{field: rejected})
    return response_type(partial_success=partial)


def retry_status(code: int, message: str, retry_after_s: int) -> status_pb2.Status:
    """A google.rpc.Status carrying RetryInfo, as the OTLP spec asks for retryable refusals."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_s)))
    return status_pb2.Status(code=code, message=message, details=[detail])


class CountingPool(futures.ThreadPoolExecutor):
    """A thread pool that knows how many of the calls given to it are not finished yet."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self._count_lock = threading.Lock()
        self.backlog = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future:
        with self._count_lock:
            self.backlog += 1

        def counted() -> Any:
            try:
                return fn(*args, **kwargs)
            finally:
                self._done()

        try:
            return super().submit(counted)
        except BaseException:
            self._done()
            raise

    def _done(self) -> None:
        with self._count_lock:
            self.backlog -= 1


class _Admission(grpc.GenericRpcHandler):
    """Routes each Export call, on arrival, to its handler or, past the backlog, to a refusal.

    ``service`` runs on gRPC's polling thread, so it only compares two numbers. Refusals run
    on their own pool (``experimental_thread_pool``), never queued behind the work they shed.
    """

    def __init__(self, ingestor: Ingestor, pool: CountingPool, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._refusals = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="otlp-grpc-refuse")
        self._routes = {}
        for signal, (name, *_rest) in SERVICES.items():
            refuse = _refusal(ingestor, signal, pool, limit)
            refuse.experimental_thread_pool = self._refusals  # type: ignore[attr-defined]
            self._routes[f"/{name}/Export"] = (
                _handler(ingestor, signal),
                grpc.unary_unary_rpc_method_handler(refuse),
            )

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        route = self._routes.get(handler_call_details.method)
        if route is None:
            return None
        return route[1] if self._pool.backlog >= self._limit else route[0]


def _refusal(
    ingestor: Ingestor, signal: Signal, pool: CountingPool, limit: int
) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    def refuse(raw: bytes, context: grpc.ServicerContext) -> bytes:
        ingestor.refuse(signal, "grpc", "overloaded")
        message = f"{pool.backlog} export calls already queued or running (limit {limit})"
        status = retry_status(code_pb2.RESOURCE_EXHAUSTED, message, ingestor.retry_after_s)
        context.abort_with_status(rpc_status.to_status(status))
        return b""  # not reached: abort_with_status raises

    return refuse


class _HealthOnItsOwnThread:
    """The health servicer with ``Check`` and ``List`` answered from a thread of their own.

    In the shared worker pool a health check waited behind the export calls the admission lets
    queue (seconds at five times capacity); a probe must see the process, not that queue.
    ``Watch`` streams hold their thread while open, so they stay in the shared pool.
    """

    def __init__(self, servicer: health.HealthServicer) -> None:
        pool = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="grpc-health")
        self.Check = _on_pool(servicer.Check, pool)
        self.List = _on_pool(servicer.List, pool)
        self.Watch = servicer.Watch


def _on_pool(
    method: Callable[[Any, Any], Any], pool: futures.ThreadPoolExecutor
) -> Callable[[Any, Any], Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        return method(request, context)

    call.experimental_thread_pool = pool  # type: ignore[attr-defined]  # read by grpcio's server
    return call


def _handler(ingestor: Ingestor, signal: Signal) -> grpc.RpcMethodHandler:
    def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            result = ingestor.export(signal, raw, len(raw), "grpc")
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Overloaded as exc:
            status = retry_status(code_pb2.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)
            context.abort_with_status(rpc_status.to_status(status))
        except Unavailable as exc:
            status = retry_status(code_pb2.UNAVAILABLE, str(exc), exc.retry_after_s)
            context.abort_with_status(rpc_status.to_status(status))
        return export_response(signal, result.rejected, result.message).SerializeToString()

    return grpc.unary_unary_rpc_method_handler(export)


def build_grpc_server(
    ingestor: Ingestor, config: ServerConfig, auth: TokenAuth, max_request_bytes: int
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A started-ready (not yet started) gRPC server, its bound port and its health servicer."""
    interceptors = [GrpcAuthInterceptor(auth, config.auth.public_health)] if auth.enabled else []
    pool = CountingPool(max_workers=config.grpc_workers, thread_name_prefix="otlp-grpc")
    server = grpc.server(
        pool,
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ],
    )
    server.add_generic_rpc_handlers([_Admission(ingestor, pool, BACKLOG_PER_WORKER * config.grpc_workers)])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(_HealthOnItsOwnThread(health_servicer), server)
    for name in ["", *(service for service, *_rest in SERVICES.values())]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    address = f"{config.host}:{config.grpc_port}"
    tls = config.tls
    if tls.cert_file:
        pairs = [(Path(tls.key_file or "").read_bytes(), Path(tls.cert_file).read_bytes())]
        ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
        credentials = grpc.ssl_server_credentials(
            pairs, root_certificates=ca, require_client_auth=ca is not None
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    return server, port, health_servicer
