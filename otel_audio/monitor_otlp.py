"""OTLP requests a :class:`~otel_audio.monitor.ProductionMonitor` sends: one gauge point per metric.

``opentelemetry-proto`` comes with the OTLP exporters the base install already has, so building
requests here needs nothing of the receiver side.
"""

from __future__ import annotations

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_audio.version import __version__

SCOPE = "otel_audio.monitor"


def gauge_request(service: str, values: dict[str, float], time_ns: int) -> ExportMetricsServiceRequest:
    """An export request with a gauge per ``values`` entry, for resource ``service.name=service``."""
    metrics = [
        Metric(
            name=name, gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=time_ns, as_double=float(v))])
        )
        for name, v in values.items()
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]
                ),
                scope_metrics=[
                    ScopeMetrics(scope=InstrumentationScope(name=SCOPE, version=__version__), metrics=metrics)
                ],
            )
        ]
    )
