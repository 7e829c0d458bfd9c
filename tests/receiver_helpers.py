"""Building OTLP requests and talking to a receiver in tests: real gRPC stubs, real HTTP."""

from __future__ import annotations

from typing import Any

import grpc
import requests
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

SECOND = 10**9


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    if isinstance(value, bool):
        any_value = common_pb2.AnyValue(bool_value=value)
    elif isinstance(value, int):
        any_value = common_pb2.AnyValue(int_value=value)
    elif isinstance(value, float):
        any_value = common_pb2.AnyValue(double_value=value)
    else:
        any_value = common_pb2.AnyValue(string_value=str(value))
    return common_pb2.KeyValue(key=key, value=any_value)


def metrics_request(
    service: str, metrics: list[metrics_pb2.Metric]
) -> metrics_service_pb2.ExportMetricsServiceRequest:
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=[kv("service.name", service)]),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(scope=common_pb2.InstrumentationScope(name="t"), metrics=metrics)
                ],
            )
        ]
    )


def gauge(name: str, points: list[tuple[int, float, dict[str, Any]]]) -> metrics_pb2.Metric:
    """A gauge metric from (time_ns, value, attributes) tuples."""
    return metrics_pb2.Metric(
        name=name,
        gauge=metrics_pb2.Gauge(
            data_points=[
                metrics_pb2.NumberDataPoint(
                    time_unix_nano=t, as_double=v, attributes=[kv(k, x) for k, x in attrs.items()]
                )
                for t, v, attrs in points
            ]
        ),
    )


def cumulative_counter(name: str, points: list[tuple[int, int, float]]) -> metrics_pb2.Metric:
    """A monotonic cumulative sum from (start_ns, time_ns, value) tuples."""
    return metrics_pb2.Metric(
        name=name,
        sum=metrics_pb2.Sum(
            aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
            data_points=[
                metrics_pb2.NumberDataPoint(start_time_unix_nano=s, time_unix_nano=t, as_double=v)
                for s, t, v in points
            ],
        ),
    )


def grpc_export_metrics(port: int, request: Any, token: str | None = None, timeout: float = 10) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        metadata = [("authorization", f"Bearer {token}")] if token else None
        return stub.Export(request, metadata=metadata, timeout=timeout)


def api(receiver: Any, path: str, token: str | None = None, **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(
        f"http://127.0.0.1:{receiver.api_port}{path}", params=params, headers=headers, timeout=30
    )
