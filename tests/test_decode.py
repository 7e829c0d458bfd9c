"""decode: OTLP export requests become the columnar batches of processors.base, with partial success."""

from __future__ import annotations

import base64
import json
import math
import threading

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    LOGS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    canonical_json,
    series_id,
)
from otel_audio.receiver import decode, decoded, otlp_values
from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode import (
    MAX_ERRORS,
    Decoded,
    any_value,
    decode_logs,
    decode_metrics,
    decode_traces,
    scope_identity,
)

T0 = 1_700_000_000_000_000_000
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


RESOURCE = Resource(attributes=[kv("service.name", "enhancer"), kv("host.name", "h1")])
SCOPE = InstrumentationScope(name="otel_audio", version="0.1.0")


def metrics_request(*metrics: mpb.Metric, resource: Resource = RESOURCE) -> ExportMetricsServiceRequest:
    scope_metrics = mpb.ScopeMetrics(scope=SCOPE, metrics=list(metrics))
    return ExportMetricsServiceRequest(
        resource_metrics=[mpb.ResourceMetrics(resource=resource, scope_metrics=[scope_metrics])]
    )


def gauge(name: str, *points: mpb.NumberDataPoint) -> mpb.Metric:
    return mpb.Metric(name=name, unit="ms", gauge=mpb.Gauge(data_points=list(points)))


def point(value: float = 1.0, **attrs: object) -> mpb.NumberDataPoint:
    return mpb.NumberDataPoint(
        attributes=[kv(k, v) for k, v in attrs.items()],
        time_unix_nano=T0,
        start_time_unix_nano=T0 - 10**9,
        as_double=value,
    )


def decoded_metrics(*metrics: mpb.Metric, budget: int = 1000) -> Decoded:
    return decode_metrics(metrics_request(*metrics), CardinalityLimiter(budget))


def only(table) -> dict:
    rows = table.to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


# ---------------------------------------------------------------- attribute values


def test_any_value_scalars_become_json_scalars() -> None:
    assert any_value(AnyValue(string_value="a")) == "a"
    assert any_value(AnyValue(bool_value=False)) is False
    assert any_value(AnyValue(int_value=-(2**63))) == -(2**63)
    assert any_value(AnyValue(double_value=0.5)) == 0.5


def test_any_value_nonfinite_doubles_become_proto3_json_strings() -> None:
    assert [any_value(AnyValue(double_value=v)) for v in (math.nan, math.inf, -math.inf)] == [
        "NaN",
        "Infinity",
        "-Infinity",
    ]


def test_any_value_arrays_and_kvlists_nest() -> None:
    value = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                kv("n", 1),
                KeyValue(key="xs", value=AnyValue(array_value=ArrayValue(values=[AnyValue()]))),
            ]
        )
    )
    assert any_value(value) == {"n": 1, "xs": [None]}


def test_any_value_bytes_become_base64() -> None:
    assert any_value(AnyValue(bytes_value=b"\x00\xff")) == base64.b64encode(b"\x00\xff").decode()


@given(
    st.dictionaries(
        st.text(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
            max_leaves=10,
        ),
    )
)
def test_the_module_encoder_is_processors_canonical_json(attributes: dict) -> None:
    assert otlp_values.canonical(attributes) == canonical_json(attributes)


# ---------------------------------------------------------------- metric types


def test_gauge_double_point_is_decoded() -> None:
    d = decoded_metrics(gauge("g", point(2.5, stage="denoise")))
    row = only(d.batch.points)
    assert (row["value"], row["time_unix_nano"], row["start_time_unix_nano"]) == (2.5, T0, T0 - 10**9)
    assert row["count"] is None and row["bounds"] is None
    assert d.batch.points.schema == POINTS_SCHEMA


def test_int_values_become_float64() -> None:
    p = mpb.NumberDataPoint(time_unix_nano=T0, as_int=2**53 + 2)
    assert only(decoded_metrics(gauge("g", p)).batch.points)["value"] == float(2**53 + 2)


def test_gauge_series_has_unspecified_temporality() -> None:
    row = only(decoded_metrics(gauge("g", point())).batch.series)
    assert (row["type"], row["temporality"], row["monotonic"], row["unit"]) == (
        "gauge",
        "unspecified",
        False,
        "ms",
    )


@pytest.mark.parametrize(
    ("temporality", "monotonic", "expected"),
    [
        (mpb.AGGREGATION_TEMPORALITY_CUMULATIVE, True, "cumulative"),
        (mpb.AGGREGATION_TEMPORALITY_DELTA, False, "delta"),
    ],
)
def test_sum_temporality_and_monotonicity_are_recorded(
    temporality: int, monotonic: bool, expected: str
) -> None:
    metric = mpb.Metric(
        name="s",
        sum=mpb.Sum(aggregation_temporality=temporality, is_monotonic=monotonic, data_points=[point(3.0)]),
    )
    d = decoded_metrics(metric)
    row = only(d.batch.series)
    assert (row["type"], row["temporality"], row["monotonic"]) == ("sum", expected, monotonic)
    assert only(d.batch.points)["value"] == 3.0


def histogram_point(**fields: object) -> mpb.HistogramDataPoint:
    base: dict = {
        "time_unix_nano": T0,
        "start_time_unix_nano": T0 - 10**9,
        "count": 4,
        "sum": 31.0,
        "min": 0.5,
        "max": 20.0,
        "explicit_bounds": [1.0, 10.0],
        "bucket_counts": [1, 2, 1],
    }
    base.update(fields)
    return mpb.HistogramDataPoint(**base)


def histogram(*points: mpb.HistogramDataPoint) -> mpb.Metric:
    data = mpb.Histogram(aggregation_temporality=mpb.AGGREGATION_TEMPORALITY_DELTA, data_points=list(points))
    return mpb.Metric(name="h", unit="ms", histogram=data)


def test_histogram_point_keeps_bounds_counts_and_extremes() -> None:
    row = only(decoded_metrics(histogram(histogram_point())).batch.points)
    assert row["bounds"] == [1.0, 10.0] and row["bucket_counts"] == [1, 2, 1]
    assert (row["value"], row["count"], row["min"], row["max"]) == (31.0, 4, 0.5, 20.0)


def test_histogram_without_optional_sum_min_max_has_nulls() -> None:
    p = mpb.HistogramDataPoint(time_unix_nano=T0, count=1, explicit_bounds=[1.0], bucket_counts=[0, 1])
    row = only(decoded_metrics(histogram(p)).batch.points)
    assert (row["value"], row["min"], row["max"], row["count"]) == (None, None, None, 1)


def test_histogram_with_zero_min_keeps_zero() -> None:
    row = only(decoded_metrics(histogram(histogram_point(min=0.0))).batch.points)
    assert row["min"] == 0.0


def test_exponential_histogram_point_is_decoded() -> None:
    p = mpb.ExponentialHistogramDataPoint(
        time_unix_nano=T0,
        count=7,
        sum=12.5,
        scale=3,
        zero_count=1,
        zero_threshold=1e-9,
        positive=mpb.ExponentialHistogramDataPoint.Buckets(offset=-2, bucket_counts=[1, 2, 1]),
        negative=mpb.ExponentialHistogramDataPoint.Buckets(offset=5, bucket_counts=[2]),
        min=-40.0,
        max=3.0,
    )
    data = mpb.ExponentialHistogram(
        aggregation_temporality=mpb.AGGREGATION_TEMPORALITY_CUMULATIVE, data_points=[p]
    )
    d = decoded_metrics(mpb.Metric(name="e", exponential_histogram=data))
    row = only(d.batch.points)
    assert (row["exp_scale"], row["exp_zero_count"], row["exp_zero_threshold"]) == (3, 1, 1e-9)
    assert (row["exp_positive_offset"], row["exp_positive_counts"]) == (-2, [1, 2, 1])
    assert (row["exp_negative_offset"], row["exp_negative_counts"]) == (5, [2])
    assert (row["value"], row["count"], row["min"], row["max"]) == (12.5, 7, -40.0, 3.0)
    assert only(d.batch.series)["type"] == "exponential_histogram"


def test_summary_point_keeps_quantiles() -> None:
    p = mpb.SummaryDataPoint(
        time_unix_nano=T0,
        count=10,
        sum=55.0,
        quantile_values=[
            mpb.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=5.0),
            mpb.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=9.9),
        ],
    )
    d = decoded_metrics(mpb.Metric(name="q", summary=mpb.Summary(data_points=[p])))
    row = only(d.batch.points)
    assert (row["quantiles"], row["quantile_values"], row["value"], row["count"]) == (
        [0.5, 0.99],
        [5.0, 9.9],
        55.0,
        10,
    )
    assert only(d.batch.series)["temporality"] == "unspecified"


def test_no_recorded_value_point_keeps_flags_and_a_null_value() -> None:
    p = mpb.NumberDataPoint(time_unix_nano=T0, flags=mpb.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK)
    d = decoded_metrics(gauge("g", p))
    row = only(d.batch.points)
    assert (row["value"], row["flags"], d.rejected) == (None, 1, 0)


def test_no_recorded_value_histogram_has_null_buckets() -> None:
    p = mpb.HistogramDataPoint(time_unix_nano=T0, flags=1, count=99, bucket_counts=[1])
    row = only(decoded_metrics(histogram(p)).batch.points)
    assert (row["count"], row["bucket_counts"], row["flags"]) == (None, None, 1)


def test_exemplars_carry_value_hex_ids_and_filtered_attributes() -> None:
    p = point(9.0, stage="denoise")
    p.exemplars.add(
        time_unix_nano=T0 - 5, as_int=42, trace_id=TRACE, span_id=SPAN, filtered_attributes=[kv("a", 1)]
    )
    p.exemplars.add(time_unix_nano=T0 - 4, as_double=0.25)
    d = decoded_metrics(gauge("g", p))
    rows = d.batch.exemplars.to_pylist()
    sid = only(d.batch.points)["series_id"]
    assert rows == [
        {
            "series_id": sid,
            "time_unix_nano": T0 - 5,
            "value": 42.0,
            "trace_id": TRACE.hex(),
            "span_id": SPAN.hex(),
            "attributes": '{"a":1}',
        },
        {
            "series_id": sid,
            "time_unix_nano": T0 - 4,
            "value": 0.25,
            "trace_id": "",
            "span_id": "",
            "attributes": "{}",
        },
    ]
    assert d.batch.exemplars.schema == EXEMPLARS_SCHEMA


def test_histogram_exemplars_are_decoded() -> None:
    p = histogram_point()
    p.exemplars.add(time_unix_nano=T0, as_double=7.0, trace_id=TRACE, span_id=SPAN)
    assert only(decoded_metrics(histogram(p)).batch.exemplars)["trace_id"] == TRACE.hex()


def test_points_of_every_kind_share_one_table() -> None:
    summary = mpb.Metric(name="q", summary=mpb.Summary(data_points=[mpb.SummaryDataPoint(time_unix_nano=T0)]))
    d = decoded_metrics(gauge("g", point()), histogram(histogram_point()), summary)
    assert len(d.batch) == 3 and d.batch.series.num_rows == 3
    assert set(d.batch.points.column("series_id").to_pylist()) == set(
        d.batch.series.column("series_id").to_pylist()
    )


# ---------------------------------------------------------------- series


def test_series_row_describes_metric_resource_scope_and_attributes() -> None:
    metric = gauge("audio.rtf", point(stage="denoise", sr=16000))
    metric.description = "real-time factor"
    row = only(decoded_metrics(metric).batch.series)
    assert row["metric"] == "audio.rtf" and row["description"] == "real-time factor"
    assert row["service"] == "enhancer"
    assert row["resource"] == '{"host.name":"h1","service.name":"enhancer"}'
    assert (row["scope"], row["scope_version"]) == ("otel_audio", "0.1.0")
    assert row["attributes"] == '{"sr":16000,"stage":"denoise"}'


def test_series_table_has_the_series_schema() -> None:
    assert decoded_metrics(gauge("g", point())).batch.series.schema == SERIES_SCHEMA


def test_service_is_unknown_without_service_name() -> None:
    d = decode_metrics(metrics_request(gauge("g", point()), resource=Resource()), CardinalityLimiter(10))
    assert only(d.batch.series)["service"] == "unknown_service"


def test_series_id_is_processors_series_id_of_the_documented_parts() -> None:
    row = only(decoded_metrics(gauge("g", point(stage="x"))).batch.series)
    scope = '{"attributes":{},"name":"otel_audio","version":"0.1.0"}'
    assert scope_identity(SCOPE) == scope
    assert row["series_id"] == series_id("g", row["resource"], scope, '{"stage":"x"}')


def test_series_id_is_stable_across_decodes_and_cleared_caches() -> None:
    first = only(decoded_metrics(gauge("g", point(stage="x"))).batch.points)["series_id"]
    decode._series_cache.clear()
    otlp_values._attr_json_cache.clear()
    assert only(decoded_metrics(gauge("g", point(stage="x"))).batch.points)["series_id"] == first


def test_series_id_does_not_depend_on_attribute_order() -> None:
    a = mpb.NumberDataPoint(time_unix_nano=T0, as_double=1, attributes=[kv("a", 1), kv("b", 2)])
    b = mpb.NumberDataPoint(time_unix_nano=T0, as_double=1, attributes=[kv("b", 2), kv("a", 1)])
    sids = decoded_metrics(gauge("g", a, b)).batch.points.column("series_id").to_pylist()
    assert sids[0] == sids[1]


def test_different_attribute_sets_are_different_series() -> None:
    d = decoded_metrics(gauge("g", point(stage="a"), point(stage="b"), point(stage="a")))
    sids = d.batch.points.column("series_id").to_pylist()
    assert sids[0] != sids[1] and sids[0] == sids[2]
    assert d.batch.series.num_rows == 2


def test_same_attributes_in_another_metric_are_another_series() -> None:
    d = decoded_metrics(gauge("a", point(stage="x")), gauge("b", point(stage="x")))
    assert d.batch.series.num_rows == 2


def test_scope_version_is_part_of_the_series() -> None:
    first = only(decoded_metrics(gauge("g", point())).batch.points)["series_id"]
    request = metrics_request(gauge("g", point()))
    request.resource_metrics[0].scope_metrics[0].scope.version = "0.2.0"
    again = only(decode_metrics(request, CardinalityLimiter(10)).batch.points)["series_id"]
    assert first != again


# ---------------------------------------------------------------- metrics refused


def test_metric_without_name_is_refused_and_the_rest_kept() -> None:
    d = decoded_metrics(gauge("ok", point()), gauge("", point(), point()))
    assert (len(d.batch), d.rejected) == (1, 2)
    assert d.errors == [
        "resource_metrics[0].scope_metrics[0].metrics[1]: metric has no name; 2 data points rejected"
    ]


def test_metric_without_data_is_reported() -> None:
    d = decoded_metrics(mpb.Metric(name="empty"), gauge("ok", point()))
    assert len(d.batch) == 1
    assert d.errors == [
        "resource_metrics[0].scope_metrics[0].metrics[0]: "
        "metric 'empty' has no data (gauge, sum, histogram, ...)"
    ]


def test_sum_with_unspecified_temporality_is_refused() -> None:
    metric = mpb.Metric(name="s", sum=mpb.Sum(data_points=[point()]))
    d = decoded_metrics(metric)
    assert (len(d.batch), d.rejected) == (0, 1)
    assert "aggregation_temporality 0 is not 1 (delta) or 2 (cumulative)" in d.errors[0]


def test_number_point_without_value_is_refused() -> None:
    d = decoded_metrics(gauge("g", mpb.NumberDataPoint(time_unix_nano=T0), point()))
    assert (len(d.batch), d.rejected) == (1, 1)
    assert d.errors[0].startswith("resource_metrics[0].scope_metrics[0].metrics[0].data_points[0]: no value")


def test_histogram_with_wrong_bucket_count_is_refused() -> None:
    d = decoded_metrics(histogram(histogram_point(bucket_counts=[1, 3]), histogram_point()))
    assert (len(d.batch), d.rejected) == (1, 1)
    assert "2 bucket_counts for 2 explicit_bounds, expected 0 or 3" in d.errors[0]


def test_histogram_with_unordered_bounds_is_refused() -> None:
    d = decoded_metrics(histogram(histogram_point(explicit_bounds=[10.0, 1.0])))
    assert d.rejected == 1 and "explicit_bounds must be strictly increasing" in d.errors[0]


def test_histogram_whose_count_is_not_the_bucket_total_is_refused() -> None:
    d = decoded_metrics(histogram(histogram_point(count=5)))
    assert d.rejected == 1 and "count 5 is not the sum of bucket_counts (4)" in d.errors[0]


def test_point_time_beyond_int64_is_refused() -> None:
    p = point()
    p.time_unix_nano = 2**64 - 1
    d = decoded_metrics(gauge("g", p, point()))
    assert (len(d.batch), d.rejected) == (1, 1)
    assert "beyond int64" in d.errors[0]


def test_points_over_the_series_budget_are_refused_and_the_rest_kept() -> None:
    d = decoded_metrics(
        gauge("g", point(stage="a"), point(stage="b"), point(stage="c"), point(stage="a")),
        gauge("other", point(stage="z")),
        budget=1,
    )
    assert (d.rejected, d.rejected_over_budget) == (2, 2)
    assert d.errors == [
        "metric 'g': 2 data points of 2 new series rejected, over the limit of 1 series per metric"
    ]
    assert sorted(json.loads(a)["stage"] for a in d.batch.series.column("attributes").to_pylist()) == [
        "a",
        "z",
    ]
    assert len(d.batch) == 3


def test_exemplars_of_refused_series_are_dropped_with_them() -> None:
    refused = point(stage="b")
    refused.exemplars.add(time_unix_nano=T0, as_double=1.0)
    d = decoded_metrics(gauge("g", point(stage="a"), refused), budget=1)
    assert d.batch.exemplars.num_rows == 0


def test_limiter_counts_points_refused_by_decode() -> None:
    limiter = CardinalityLimiter(1)
    decode_metrics(metrics_request(gauge("g", point(stage="a"), point(stage="b"))), limiter)
    assert limiter.rejected_points("g") == 1


def test_series_admitted_earlier_stay_admitted() -> None:
    limiter = CardinalityLimiter(1)
    decode_metrics(metrics_request(gauge("g", point(stage="a"))), limiter)
    d = decode_metrics(metrics_request(gauge("g", point(stage="b"), point(stage="a"))), limiter)
    assert json.loads(only(d.batch.series)["attributes"]) == {"stage": "a"}


def test_error_lines_are_capped_but_every_refusal_counted() -> None:
    bad = [mpb.NumberDataPoint(time_unix_nano=T0) for _ in range(MAX_ERRORS + 5)]
    d = decoded_metrics(gauge("g", *bad))
    assert d.rejected == MAX_ERRORS + 5
    assert len(d.errors) == MAX_ERRORS + 1 and d.errors[-1] == "and 5 more problems"


def test_error_message_is_joined_and_cut() -> None:
    d = Decoded(batch=None, rejected=2, errors=["a", "b" * 5000])
    assert d.error_message.startswith("a; bbb") and len(d.error_message) == decoded.MAX_ERROR_MESSAGE


def test_empty_request_gives_empty_tables() -> None:
    d = decode_metrics(ExportMetricsServiceRequest(), CardinalityLimiter(1))
    assert (len(d.batch), d.rejected, d.errors) == (0, 0, [])
    assert d.batch.series.schema == SERIES_SCHEMA and d.batch.exemplars.schema == EXEMPLARS_SCHEMA


# ---------------------------------------------------------------- metrics from the SDK


def sdk_metrics_request() -> ExportMetricsServiceRequest:
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        resource=SdkResource.create({"service.name": "enhancer"}),
        views=[
            View(instrument_name="audio.latency.exp", aggregation=ExponentialBucketHistogramAggregation())
        ],
    )
    meter = provider.get_meter("otel_audio", "0.1.0")
    meter.create_counter("audio.files").add(3, {"stage": "denoise"})
    meter.create_up_down_counter("audio.queue").add(-2)
    meter.create_gauge("audio.rtf").set(0.25, {"model": "v3"})
    histogram = meter.create_histogram("audio.latency", unit="ms")
    for value in (5.0, 20.0, 700.0):
        histogram.record(value)
    exp = meter.create_histogram("audio.latency.exp", unit="ms")
    for value in (1.0, 2.0, 4.0, 1000.0):
        exp.record(value)
    request = encode_metrics(reader.get_metrics_data())
    provider.shutdown()
    return request


def test_sdk_metrics_decode_with_correct_values() -> None:
    d = decode_metrics(sdk_metrics_request(), CardinalityLimiter(100))
    assert (d.rejected, d.errors) == (0, [])
    series = {row["series_id"]: row for row in d.batch.series.to_pylist()}
    by_metric = {series[row["series_id"]]["metric"]: row for row in d.batch.points.to_pylist()}
    assert by_metric["audio.files"]["value"] == 3.0
    assert by_metric["audio.queue"]["value"] == -2.0
    assert by_metric["audio.rtf"]["value"] == 0.25
    hist = by_metric["audio.latency"]
    assert (hist["count"], hist["value"], hist["min"], hist["max"]) == (3, 725.0, 5.0, 700.0)
    assert sum(hist["bucket_counts"]) == 3 and len(hist["bucket_counts"]) == len(hist["bounds"]) + 1
    exp = by_metric["audio.latency.exp"]
    assert exp["count"] == 4 and exp["value"] == 1007.0 and sum(exp["exp_positive_counts"]) == 4
    kinds = {row["metric"]: (row["type"], row["temporality"], row["monotonic"]) for row in series.values()}
    assert kinds["audio.files"] == ("sum", "cumulative", True)
    assert kinds["audio.queue"] == ("sum", "cumulative", False)
    assert kinds["audio.rtf"] == ("gauge", "unspecified", False)
    assert kinds["audio.latency.exp"] == ("exponential_histogram", "cumulative", False)


# ---------------------------------------------------------------- traces


def traces_request(*spans: trace_pb2.Span, scopes: int = 1) -> ExportTraceServiceRequest:
    scope_spans = [trace_pb2.ScopeSpans(scope=SCOPE) for _ in range(scopes - 1)]
    scope_spans.append(trace_pb2.ScopeSpans(scope=SCOPE, spans=list(spans)))
    return ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(resource=RESOURCE, scope_spans=scope_spans)]
    )


def span(**fields: object) -> trace_pb2.Span:
    base: dict = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "name": "denoise",
        "kind": trace_pb2.Span.SPAN_KIND_INTERNAL,
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 2500,
    }
    base.update(fields)
    return trace_pb2.Span(**base)


def test_span_fields_are_decoded() -> None:
    s = span(
        parent_span_id=PARENT,
        trace_state="ot=th:8",
        attributes=[kv("audio.id", "a1")],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="clipped"),
        flags=0x301,
    )
    s.events.add(time_unix_nano=T0 + 1, name="chunk", attributes=[kv("n", 2)])
    s.links.add(trace_id=TRACE, span_id=PARENT, trace_state="k=v", attributes=[kv("why", "retry")])
    d = decode_traces(traces_request(s))
    assert d.batch.spans.schema == SPANS_SCHEMA
    assert only(d.batch.spans) == {
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "parent_span_id": PARENT.hex(),
        "trace_state": "ot=th:8",
        "name": "denoise",
        "kind": 1,
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 2500,
        "duration_ns": 2500,
        "status_code": 2,
        "status_message": "clipped",
        "service": "enhancer",
        "resource": '{"host.name":"h1","service.name":"enhancer"}',
        "scope": "otel_audio",
        "scope_version": "0.1.0",
        "attributes": '{"audio.id":"a1"}',
        "events": f'[{{"attributes":{{"n":2}},"name":"chunk","time_unix_nano":{T0 + 1}}}]',
        "links": f'[{{"attributes":{{"why":"retry"}},"span_id":"{PARENT.hex()}","trace_id":"{TRACE.hex()}",'
        '"trace_state":"k=v"}]',
        "flags": 0x301,
    }


def test_root_span_has_empty_parent_and_empty_lists() -> None:
    row = only(decode_traces(traces_request(span())).batch.spans)
    assert (row["parent_span_id"], row["events"], row["links"]) == ("", "[]", "[]")


def test_span_with_short_trace_id_is_refused_with_its_location() -> None:
    spans = [span(), span(), span(), span(trace_id=b"abc"), span()]
    d = decode_traces(traces_request(*spans, scopes=2))
    assert (len(d.batch), d.rejected) == (4, 1)
    assert d.errors == ["resource_spans[0].scope_spans[1].spans[3]: trace_id must be 16 bytes, got 3"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trace_id": bytes(16)}, "trace_id must not be all zeros"),
        ({"span_id": bytes(8)}, "span_id must not be all zeros"),
        ({"span_id": b"12345"}, "span_id must be 8 bytes, got 5"),
        ({"parent_span_id": b"123"}, "parent_span_id must be empty or 8 bytes, got 3"),
        ({"kind": 9}, "kind 9 is not an OTLP SpanKind (0-5)"),
        ({"end_time_unix_nano": 2**63}, "end_time_unix_nano beyond int64"),
    ],
)
def test_invalid_spans_are_refused_with_a_reason(fields: dict, message: str) -> None:
    d = decode_traces(traces_request(span(**fields), span()))
    assert (len(d.batch), d.rejected) == (1, 1)
    assert message in d.errors[0]


def test_sdk_spans_decode_with_hex_ids_and_parent() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "enhancer"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otel_audio", "0.1.0")
    with tracer.start_as_current_span("pipeline") as root, tracer.start_as_current_span("stage") as child:
        child.set_attribute("audio.sample_rate", 16000)
        child.add_event("chunk", {"n": 1})
        child.set_status(trace_api.StatusCode.ERROR, "clipped")
    d = decode_traces(encode_spans(exporter.get_finished_spans()))
    rows = {row["name"]: row for row in d.batch.spans.to_pylist()}
    root_ctx, child_ctx = root.get_span_context(), child.get_span_context()
    assert rows["pipeline"]["trace_id"] == format(root_ctx.trace_id, "032x")
    assert rows["pipeline"]["parent_span_id"] == ""
    assert rows["stage"]["span_id"] == format(child_ctx.span_id, "016x")
    assert rows["stage"]["parent_span_id"] == format(root_ctx.span_id, "016x")
    assert (
        rows["stage"]["duration_ns"]
        == rows["stage"]["end_time_unix_nano"] - rows["stage"]["start_time_unix_nano"]
    )
    assert (rows["stage"]["status_code"], rows["stage"]["status_message"]) == (2, "clipped")
    assert json.loads(rows["stage"]["events"])[0]["attributes"] == {"n": 1}
    assert rows["stage"]["service"] == "enhancer" and rows["stage"]["scope_version"] == "0.1.0"


# ---------------------------------------------------------------- logs


def logs_request(*records: logs_pb2.LogRecord) -> ExportLogsServiceRequest:
    scope_logs = logs_pb2.ScopeLogs(scope=SCOPE, log_records=list(records))
    return ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(resource=RESOURCE, scope_logs=[scope_logs])]
    )


def test_log_record_fields_are_decoded() -> None:
    record = logs_pb2.LogRecord(
        time_unix_nano=T0,
        observed_time_unix_nano=T0 + 1,
        severity_number=logs_pb2.SEVERITY_NUMBER_WARN,
        severity_text="WARN",
        body=AnyValue(string_value="clipping at 0 dBFS"),
        attributes=[kv("stage", "denoise")],
        trace_id=TRACE,
        span_id=SPAN,
        flags=1,
        event_name="audio.clip",
    )
    d = decode_logs(logs_request(record))
    assert d.batch.logs.schema == LOGS_SCHEMA
    assert only(d.batch.logs) == {
        "time_unix_nano": T0,
        "observed_time_unix_nano": T0 + 1,
        "severity_number": 13,
        "severity_text": "WARN",
        "body": "clipping at 0 dBFS",
        "attributes": '{"stage":"denoise"}',
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "flags": 1,
        "service": "enhancer",
        "resource": '{"host.name":"h1","service.name":"enhancer"}',
        "scope": "otel_audio",
        "event_name": "audio.clip",
    }


def test_structured_log_body_becomes_json() -> None:
    body = AnyValue(kvlist_value=KeyValueList(values=[kv("rms", 0.5), kv("file", "a.wav")]))
    row = only(decode_logs(logs_request(logs_pb2.LogRecord(body=body))).batch.logs)
    assert row["body"] == '{"file":"a.wav","rms":0.5}'
    assert (row["trace_id"], row["span_id"]) == ("", "")


def test_log_with_malformed_trace_id_is_refused() -> None:
    d = decode_logs(logs_request(logs_pb2.LogRecord(trace_id=b"\x01" * 4), logs_pb2.LogRecord()))
    assert (len(d.batch), d.rejected) == (1, 1)
    assert d.errors == [
        "resource_logs[0].scope_logs[0].log_records[0]: trace_id must be empty or 16 bytes, got 4"
    ]


def test_log_with_unknown_severity_is_refused() -> None:
    d = decode_logs(logs_request(logs_pb2.LogRecord(severity_number=99)))
    assert d.rejected == 1 and "severity_number 99" in d.errors[0]


def test_sdk_logs_decode() -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=SdkResource.create({"service.name": "enhancer"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("otel_audio", "0.1.0")
    logger.emit(body="started", severity_number=SeverityNumber.INFO, attributes={"k": 1}, timestamp=T0)
    d = decode_logs(encode_logs(exporter.get_finished_logs()))
    row = only(d.batch.logs)
    assert (row["body"], row["severity_number"], row["attributes"], row["service"]) == (
        "started",
        9,
        '{"k":1}',
        "enhancer",
    )
    assert (row["time_unix_nano"], row["trace_id"]) == (T0, "")


# ---------------------------------------------------------------- robustness


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_either_fail_to_parse_or_decode_without_raising(data: bytes) -> None:
    try:
        request = ExportMetricsServiceRequest.FromString(data)
    except DecodeError:
        return
    decoded = decode_metrics(request, CardinalityLimiter(4))
    assert decoded.rejected >= 0 and len(decoded.batch) >= 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_break_span_and_log_decoding(data: bytes) -> None:
    for request_type, decoder in (
        (ExportTraceServiceRequest, decode_traces),
        (ExportLogsServiceRequest, decode_logs),
    ):
        try:
            request = request_type.FromString(data)
        except DecodeError:
            continue
        decoder(request)


u64 = st.integers(0, 2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(u64, min_size=1, max_size=5),
    flags=st.integers(0, 2**32 - 1),
    value=st.floats() | st.integers(-(2**63), 2**63 - 1),
    bounds=st.lists(st.floats(), max_size=4),
    counts=st.lists(u64, max_size=5),
    temporality=st.integers(0, 5),
)
def test_extreme_field_values_are_kept_or_refused_never_raised(
    times, flags, value, bounds, counts, temporality
):
    number = [
        mpb.NumberDataPoint(
            time_unix_nano=t, flags=flags, **{"as_int" if isinstance(value, int) else "as_double": value}
        )
        for t in times
    ]
    hist = mpb.HistogramDataPoint(
        time_unix_nano=times[0],
        count=sum(counts) % 2**64,
        explicit_bounds=bounds,
        bucket_counts=counts,
        flags=flags,
    )
    metrics = [
        gauge("g", *number),
        mpb.Metric(
            name="h", histogram=mpb.Histogram(aggregation_temporality=temporality, data_points=[hist])
        ),
    ]
    request = metrics_request(*metrics)
    total = len(number) + 1
    d = decode_metrics(request, CardinalityLimiter(3))
    assert len(d.batch) + d.rejected == total
    assert np.all(np.asarray(d.batch.points.column("time_unix_nano").to_pylist()) >= 0)


def test_decoding_from_several_threads_with_a_churning_cache_gives_stable_ids(monkeypatch) -> None:
    monkeypatch.setattr(otlp_values, "CACHE_SIZE", 8)
    request = metrics_request(gauge("g", *[point(stage=f"s{i}") for i in range(50)]))
    expected = decode_metrics(request, CardinalityLimiter(100)).batch.points.column("series_id").to_pylist()
    results: list[list[int]] = []

    def work() -> None:
        for _ in range(20):
            got = (
                decode_metrics(request, CardinalityLimiter(100)).batch.points.column("series_id").to_pylist()
            )
            results.append(got)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 80 and all(got == expected for got in results)
