"""otlp_json: OTLP/JSON bodies become the same messages, and batches, as OTLP/protobuf."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsPartialSuccess,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode import decode_logs, decode_metrics, decode_traces
from otel_audio.receiver.otlp_json import OtlpJsonError, parse_request, request_to_json, response_to_json

TRACE_HEX = "5B8EFFF798038103D269B633813FC60C"
SPAN_HEX = "EEE19B7EC3C1B174"
PARENT_HEX = "EEE19B7EC3C1B173"
TRACE, SPAN, PARENT = bytes.fromhex(TRACE_HEX), bytes.fromhex(SPAN_HEX), bytes.fromhex(PARENT_HEX)


def s(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


RESOURCE = Resource(attributes=[s("service.name", "my.service")])
SCOPE = InstrumentationScope(name="my.library", version="1.0.0", attributes=[s("my.scope.attribute", "x")])
RESOURCE_JSON = {"attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]}
SCOPE_JSON = {
    "name": "my.library",
    "version": "1.0.0",
    "attributes": [{"key": "my.scope.attribute", "value": {"stringValue": "x"}}],
}

# Shaped like opentelemetry-proto's examples/trace.json: hex ids, int64 as strings, enums as ints.
TRACE_JSON = {
    "resourceSpans": [
        {
            "resource": RESOURCE_JSON,
            "scopeSpans": [
                {
                    "scope": SCOPE_JSON,
                    "spans": [
                        {
                            "traceId": TRACE_HEX,
                            "spanId": SPAN_HEX,
                            "parentSpanId": PARENT_HEX,
                            "name": "I'm a server span",
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "kind": 2,
                            "attributes": [{"key": "my.span.attr", "value": {"intValue": "42"}}],
                            "events": [{"timeUnixNano": "1544712660500000000", "name": "chunk"}],
                            "links": [{"traceId": TRACE_HEX, "spanId": PARENT_HEX, "traceState": "k=v"}],
                            "status": {"code": 2, "message": "clipped"},
                        }
                    ],
                }
            ],
        }
    ]
}

TRACE_PROTO = ExportTraceServiceRequest(
    resource_spans=[
        trace_pb2.ResourceSpans(
            resource=RESOURCE,
            scope_spans=[
                trace_pb2.ScopeSpans(
                    scope=SCOPE,
                    spans=[
                        trace_pb2.Span(
                            trace_id=TRACE,
                            span_id=SPAN,
                            parent_span_id=PARENT,
                            name="I'm a server span",
                            start_time_unix_nano=1544712660000000000,
                            end_time_unix_nano=1544712661000000000,
                            kind=trace_pb2.Span.SPAN_KIND_SERVER,
                            attributes=[KeyValue(key="my.span.attr", value=AnyValue(int_value=42))],
                            events=[trace_pb2.Span.Event(time_unix_nano=1544712660500000000, name="chunk")],
                            links=[trace_pb2.Span.Link(trace_id=TRACE, span_id=PARENT, trace_state="k=v")],
                            status=trace_pb2.Status(
                                code=trace_pb2.Status.STATUS_CODE_ERROR, message="clipped"
                            ),
                        )
                    ],
                )
            ],
        )
    ]
)

# Shaped like opentelemetry-proto's examples/metrics.json.
METRICS_JSON = {
    "resourceMetrics": [
        {
            "resource": RESOURCE_JSON,
            "scopeMetrics": [
                {
                    "scope": SCOPE_JSON,
                    "metrics": [
                        {
                            "name": "my.counter",
                            "unit": "1",
                            "description": "I am a Counter",
                            "sum": {
                                "aggregationTemporality": 1,
                                "isMonotonic": True,
                                "dataPoints": [
                                    {
                                        "asDouble": 5,
                                        "startTimeUnixNano": "1544712660300000000",
                                        "timeUnixNano": "1544712660300000000",
                                        "attributes": [
                                            {"key": "my.counter.attr", "value": {"stringValue": "v"}}
                                        ],
                                        "exemplars": [
                                            {
                                                "timeUnixNano": "1544712660200000000",
                                                "asInt": "3",
                                                "traceId": TRACE_HEX,
                                                "spanId": SPAN_HEX,
                                            }
                                        ],
                                    }
                                ],
                            },
                        },
                        {
                            "name": "my.gauge",
                            "unit": "1",
                            "gauge": {"dataPoints": [{"asInt": "10", "timeUnixNano": "1544712660300000000"}]},
                        },
                        {
                            "name": "my.histogram",
                            "unit": "1",
                            "histogram": {
                                "aggregationTemporality": 1,
                                "dataPoints": [
                                    {
                                        "startTimeUnixNano": "1544712660300000000",
                                        "timeUnixNano": "1544712660300000000",
                                        "count": "2",
                                        "sum": 2,
                                        "bucketCounts": ["1", "1"],
                                        "explicitBounds": [1],
                                        "min": 0,
                                        "max": 2,
                                    }
                                ],
                            },
                        },
                        {
                            "name": "my.exponential.histogram",
                            "unit": "1",
                            "exponentialHistogram": {
                                "aggregationTemporality": 1,
                                "dataPoints": [
                                    {
                                        "startTimeUnixNano": "1544712660300000000",
                                        "timeUnixNano": "1544712660300000000",
                                        "count": "3",
                                        "sum": 10,
                                        "scale": 0,
                                        "zeroCount": "1",
                                        "positive": {"offset": 1, "bucketCounts": ["0", "2"]},
                                        "min": 0,
                                        "max": 5,
                                        "zeroThreshold": 0,
                                    }
                                ],
                            },
                        },
                    ],
                }
            ],
        }
    ]
}

T = 1544712660300000000
METRICS_PROTO = ExportMetricsServiceRequest(
    resource_metrics=[
        mpb.ResourceMetrics(
            resource=RESOURCE,
            scope_metrics=[
                mpb.ScopeMetrics(
                    scope=SCOPE,
                    metrics=[
                        mpb.Metric(
                            name="my.counter",
                            unit="1",
                            description="I am a Counter",
                            sum=mpb.Sum(
                                aggregation_temporality=mpb.AGGREGATION_TEMPORALITY_DELTA,
                                is_monotonic=True,
                                data_points=[
                                    mpb.NumberDataPoint(
                                        as_double=5.0,
                                        start_time_unix_nano=T,
                                        time_unix_nano=T,
                                        attributes=[s("my.counter.attr", "v")],
                                        exemplars=[
                                            mpb.Exemplar(
                                                time_unix_nano=1544712660200000000,
                                                as_int=3,
                                                trace_id=TRACE,
                                                span_id=SPAN,
                                            )
                                        ],
                                    )
                                ],
                            ),
                        ),
                        mpb.Metric(
                            name="my.gauge",
                            unit="1",
                            gauge=mpb.Gauge(data_points=[mpb.NumberDataPoint(as_int=10, time_unix_nano=T)]),
                        ),
                        mpb.Metric(
                            name="my.histogram",
                            unit="1",
                            histogram=mpb.Histogram(
                                aggregation_temporality=mpb.AGGREGATION_TEMPORALITY_DELTA,
                                data_points=[
                                    mpb.HistogramDataPoint(
                                        start_time_unix_nano=T,
                                        time_unix_nano=T,
                                        count=2,
                                        sum=2.0,
                                        bucket_counts=[1, 1],
                                        explicit_bounds=[1.0],
                                        min=0.0,
                                        max=2.0,
                                    )
                                ],
                            ),
                        ),
                        mpb.Metric(
                            name="my.exponential.histogram",
                            unit="1",
                            exponential_histogram=mpb.ExponentialHistogram(
                                aggregation_temporality=mpb.AGGREGATION_TEMPORALITY_DELTA,
                                data_points=[
                                    mpb.ExponentialHistogramDataPoint(
                                        start_time_unix_nano=T,
                                        time_unix_nano=T,
                                        count=3,
                                        sum=10.0,
                                        scale=0,
                                        zero_count=1,
                                        positive=mpb.ExponentialHistogramDataPoint.Buckets(
                                            offset=1, bucket_counts=[0, 2]
                                        ),
                                        min=0.0,
                                        max=5.0,
                                        zero_threshold=0.0,
                                    )
                                ],
                            ),
                        ),
                    ],
                )
            ],
        )
    ]
)


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def error_of(raw: bytes, signal: str = "traces") -> str:
    with pytest.raises(OtlpJsonError) as info:
        parse_request(raw, signal)
    return str(info.value)


def test_trace_example_parses_to_the_equivalent_protobuf() -> None:
    assert parse_request(body(TRACE_JSON), "traces") == TRACE_PROTO


def test_trace_example_decodes_to_the_same_batch_as_protobuf() -> None:
    from_json = decode_traces(parse_request(body(TRACE_JSON), "traces"))
    from_proto = decode_traces(ExportTraceServiceRequest.FromString(TRACE_PROTO.SerializeToString()))
    assert from_json.batch.spans.equals(from_proto.batch.spans)
    row = from_json.batch.spans.to_pylist()[0]
    assert (row["trace_id"], row["parent_span_id"]) == (TRACE_HEX.lower(), PARENT_HEX.lower())


def test_metrics_example_parses_to_the_equivalent_protobuf() -> None:
    assert parse_request(body(METRICS_JSON), "metrics") == METRICS_PROTO


def test_metrics_example_decodes_to_the_same_batch_as_protobuf() -> None:
    from_json = decode_metrics(parse_request(body(METRICS_JSON), "metrics"), CardinalityLimiter(10)).batch
    from_proto = decode_metrics(METRICS_PROTO, CardinalityLimiter(10)).batch
    assert from_json.points.equals(from_proto.points)
    assert from_json.series.equals(from_proto.series)
    assert from_json.exemplars.equals(from_proto.exemplars)
    assert from_json.exemplars.column("trace_id").to_pylist() == [TRACE_HEX.lower()]
    assert len(from_json) == 4


def test_log_ids_are_read_as_hex() -> None:
    document = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1544712660300000000",
                                "severityNumber": 10,
                                "body": {"stringValue": "Example log record"},
                                "traceId": TRACE_HEX,
                                "spanId": SPAN_HEX,
                            }
                        ]
                    }
                ]
            }
        ]
    }
    request = parse_request(body(document), "logs")
    assert isinstance(request, ExportLogsServiceRequest)
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    assert (record.trace_id, record.span_id, record.severity_number) == (
        TRACE,
        SPAN,
        logs_pb2.SEVERITY_NUMBER_INFO2,
    )
    assert decode_logs(request).batch.logs.column("span_id").to_pylist() == [SPAN_HEX.lower()]


def test_protobuf_field_names_are_accepted_too() -> None:
    document = {
        "resource_spans": [{"scope_spans": [{"spans": [{"trace_id": TRACE_HEX, "span_id": SPAN_HEX}]}]}]
    }
    span = parse_request(body(document), "traces").resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id) == (TRACE, SPAN)


def test_int64_may_be_numbers_or_strings() -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": 1544712660000000000}]}]}]}
    span = parse_request(body(document), "traces").resource_spans[0].scope_spans[0].spans[0]
    assert span.start_time_unix_nano == 1544712660000000000


def test_unknown_fields_are_ignored() -> None:
    document = {
        "resourceSpans": [{"scopeSpans": [{"spans": [{"name": "a", "futureField": {"x": 1}}]}]}],
        "z": 1,
    }
    assert parse_request(body(document), "traces").resource_spans[0].scope_spans[0].spans[0].name == "a"


def test_empty_ids_are_empty_bytes() -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"parentSpanId": ""}]}]}]}
    assert (
        parse_request(body(document), "traces").resource_spans[0].scope_spans[0].spans[0].parent_span_id
        == b""
    )


def test_malformed_json_names_line_and_column() -> None:
    assert error_of(b'{\n  "resourceSpans": [,]\n}') == "not valid JSON: Expecting value at line 2 column 21"


def test_body_that_is_not_an_object_is_refused() -> None:
    assert error_of(b"[]") == "the body must be a JSON object (ExportTraceServiceRequest), got an array"


def test_body_that_is_not_utf8_is_refused() -> None:
    assert error_of(b'{"a": "\xff"}').startswith("not UTF-8 text: invalid start byte at byte 7")


def test_non_hex_trace_id_names_the_field() -> None:
    document = {"resourceSpans": [{"scopeSpans": [{}, {"spans": [{}, {"traceId": "xyz"}]}]}]}
    assert (
        error_of(body(document)) == "resourceSpans[0].scopeSpans[1].spans[1].traceId: not a hex string: 'xyz'"
    )


def test_numeric_span_id_in_a_link_names_the_field() -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"links": [{"spanId": 7}]}]}]}]}
    assert error_of(body(document)) == (
        "resourceSpans[0].scopeSpans[0].spans[0].links[0].spanId: expected a hex string, got a number"
    )


def test_non_hex_exemplar_trace_id_names_the_field() -> None:
    exemplar = {"traceId": "0g"}
    document = {
        "resourceMetrics": [
            {"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": [{"exemplars": [exemplar]}]}}]}]}
        ]
    }
    assert error_of(body(document), "metrics") == (
        "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].exemplars[0].traceId: "
        "not a hex string: '0g'"
    )


def test_wrong_value_type_names_the_field() -> None:
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}
    message = error_of(body(document))
    assert message.startswith("resourceSpans.scopeSpans.spans.startTimeUnixNano: ")
    assert "'soon'" in message


def test_object_where_a_list_belongs_names_the_field() -> None:
    assert error_of(body({"resourceSpans": {}})).startswith(
        "resourceSpans: repeated field resourceSpans must be in []"
    )


def test_unknown_signal_is_refused() -> None:
    assert (
        error_of(b"{}", "profiles")
        == "unknown signal 'profiles'; expected one of ['logs', 'metrics', 'traces']"
    )


def test_partial_success_response_is_otlp_json() -> None:
    reply = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=2, error_message="trace_id must be 16 bytes")
    )
    assert json.loads(response_to_json(reply)) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "trace_id must be 16 bytes"}
    }


def test_full_success_response_is_an_empty_object() -> None:
    assert response_to_json(ExportMetricsServiceResponse()) == b"{}"


def test_warning_only_response_keeps_the_message() -> None:
    reply = ExportMetricsServiceResponse(
        partial_success=ExportMetricsPartialSuccess(error_message="metric has no data")
    )
    assert json.loads(response_to_json(reply)) == {"partialSuccess": {"errorMessage": "metric has no data"}}


def test_request_to_json_writes_hex_ids_and_parses_back() -> None:
    document = json.loads(request_to_json(TRACE_PROTO))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["traceId"], span["links"][0]["spanId"]) == (TRACE_HEX.lower(), PARENT_HEX.lower())
    assert parse_request(request_to_json(TRACE_PROTO), "traces") == TRACE_PROTO
    assert parse_request(request_to_json(METRICS_PROTO), "metrics") == METRICS_PROTO


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)
otlp_keys = st.sampled_from(
    [
        "resourceSpans",
        "scopeSpans",
        "spans",
        "traceId",
        "spanId",
        "links",
        "name",
        "kind",
        "startTimeUnixNano",
        "attributes",
        "key",
        "value",
        "stringValue",
        "resourceMetrics",
        "scopeMetrics",
        "metrics",
        "gauge",
        "dataPoints",
        "exemplars",
        "asInt",
        "resourceLogs",
        "scopeLogs",
        "logRecords",
        "body",
    ]
)
otlp_like = st.recursive(
    st.none() | st.integers() | st.text(alphabet="0123456789abcdefxyz", max_size=34),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(otlp_keys, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(document=json_values | otlp_like, signal=st.sampled_from(["traces", "metrics", "logs"]))
def test_any_json_parses_or_raises_otlp_json_error(document: object, signal: str) -> None:
    try:
        parse_request(json.dumps(document).encode(), signal)
    except OtlpJsonError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_parse_or_raise_otlp_json_error(raw: bytes) -> None:
    try:
        parse_request(raw, "metrics")
    except OtlpJsonError:
        pass
