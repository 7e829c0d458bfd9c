"""Seed inputs of the fuzz harnesses: small valid requests of every signal and metric kind.

libFuzzer mutates from these, so the runs start inside the formats instead of spending their
first minutes discovering the protobuf wire format.
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2 as lpb
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as tpb

T0 = 1_700_000_000_000_000_000
RULES = [
    "processing_time > 500",
    'p95(audio.stage.duration{audio.stage="denoise"}, 5m) > 0.5 and rate(errors, 5m) > 0.1',
    'avg(x{a="1", b=~"de.*", c!="x", d!~"y|z",}, 300000ms) >= 1.5e3',
    "not (absent(queue.size, 10m) or increase(errors, 1h) >= -2)",
    'anomaly(audio.stage.duration{service="enhancer"})',
]


def _kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


ATTRS = [
    _kv("audio.stage", string_value="denoise"),
    _kv("channels", int_value=2),
    _kv("ratio", double_value=0.5),
    _kv("stereo", bool_value=True),
    _kv("stages", array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=1)])),
]
RESOURCE = Resource(attributes=[_kv("service.name", string_value="enhancer")])
SCOPE = InstrumentationScope(name="otel_audio", version="0.1.0")


def metrics_request() -> ExportMetricsServiceRequest:
    number = mpb.NumberDataPoint(
        attributes=ATTRS, time_unix_nano=T0, start_time_unix_nano=T0 - 1, as_double=1.5
    )
    integer = mpb.NumberDataPoint(attributes=ATTRS[:1], time_unix_nano=T0, as_int=7)
    histogram = mpb.HistogramDataPoint(
        attributes=ATTRS[:2], time_unix_nano=T0, count=3, sum=1.0, bucket_counts=[1, 2], explicit_bounds=[0.5]
    )
    exponential = mpb.ExponentialHistogramDataPoint(
        time_unix_nano=T0,
        count=2,
        scale=2,
        positive=mpb.ExponentialHistogramDataPoint.Buckets(offset=1, bucket_counts=[2]),
    )
    summary = mpb.SummaryDataPoint(
        time_unix_nano=T0,
        count=1,
        sum=2.0,
        quantile_values=[mpb.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=2)],
    )
    metrics = [
        mpb.Metric(name="audio.stage.duration", unit="s", gauge=mpb.Gauge(data_points=[number, integer])),
        mpb.Metric(
            name="files", sum=mpb.Sum(data_points=[integer], aggregation_temporality=2, is_monotonic=True)
        ),
        mpb.Metric(
            name="latency", histogram=mpb.Histogram(data_points=[histogram], aggregation_temporality=1)
        ),
        mpb.Metric(
            name="exp",
            exponential_histogram=mpb.ExponentialHistogram(
                data_points=[exponential], aggregation_temporality=2
            ),
        ),
        mpb.Metric(name="quantiles", summary=mpb.Summary(data_points=[summary])),
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            mpb.ResourceMetrics(
                resource=RESOURCE, scope_metrics=[mpb.ScopeMetrics(scope=SCOPE, metrics=metrics)]
            )
        ]
    )


def trace_request() -> ExportTraceServiceRequest:
    span = tpb.Span(
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(1, 9)),
        parent_span_id=bytes(range(2, 10)),
        name="enhance",
        kind=2,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5,
        attributes=ATTRS,
        events=[tpb.Span.Event(name="chunk", time_unix_nano=T0 + 1, attributes=ATTRS[:1])],
        links=[tpb.Span.Link(trace_id=bytes(range(3, 19)), span_id=bytes(range(3, 11)))],
        status=tpb.Status(code=2, message="nan in output"),
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            tpb.ResourceSpans(resource=RESOURCE, scope_spans=[tpb.ScopeSpans(scope=SCOPE, spans=[span])])
        ]
    )


def logs_request() -> ExportLogsServiceRequest:
    record = lpb.LogRecord(
        time_unix_nano=T0,
        severity_number=9,
        body=AnyValue(string_value="done"),
        attributes=ATTRS,
        trace_id=bytes(range(1, 17)),
        span_id=bytes(range(1, 9)),
    )
    return ExportLogsServiceRequest(
        resource_logs=[
            lpb.ResourceLogs(resource=RESOURCE, scope_logs=[lpb.ScopeLogs(scope=SCOPE, log_records=[record])])
        ]
    )


def requests() -> list:
    return [metrics_request(), trace_request(), logs_request()]
