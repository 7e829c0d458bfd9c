"""Every limit of the receiver, enforced with a clear error, through a real receiver on loopback.

Request size, attribute count and value length, series per metric, spans per trace read, and
the query API's bounds on ranges and result sizes.
"""

from __future__ import annotations

import gzip
import time

import grpc
import pytest
import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2 as lpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as tpb

from otel_audio.store import query as store_query
from tests.receiver_helpers import SECOND, api, gauge, grpc_export_metrics, kv, metrics_request

PROTOBUF = {"Content-Type": "application/x-protobuf"}
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


def post(receiver, path: str, message, response_type, **headers):
    """POST one OTLP/HTTP protobuf request; the HTTP response and, on 200, the parsed reply."""
    reply = requests.post(
        f"http://127.0.0.1:{receiver.http_port}{path}",
        data=message if isinstance(message, bytes) else message.SerializeToString(),
        headers={**PROTOBUF, **headers},
        timeout=30,
    )
    return reply, response_type.FromString(reply.content) if reply.status_code == 200 else None


def span(index: int, attributes: list[KeyValue] = ()) -> tpb.Span:
    now = time.time_ns()
    return tpb.Span(
        trace_id=TRACE,
        span_id=(index + 1).to_bytes(8, "big"),
        name=f"stage-{index}",
        start_time_unix_nano=now + index,
        end_time_unix_nano=now + index + 1000,
        attributes=list(attributes),
    )


def traces_request(*spans: tpb.Span) -> ExportTraceServiceRequest:
    resource = Resource(attributes=[kv("service.name", "enhancer")])
    return ExportTraceServiceRequest(
        resource_spans=[tpb.ResourceSpans(resource=resource, scope_spans=[tpb.ScopeSpans(spans=list(spans))])]
    )


# -- request size ------------------------------------------------------------------------------


def test_a_request_over_max_request_bytes_is_413_over_http_and_resource_exhausted_over_grpc(start_receiver):
    receiver = start_receiver(limits__max_request_bytes=4096)
    big = traces_request(*[span(i, [kv("pad", "x" * 200)]) for i in range(40)])
    reply, _ = post(receiver, "/v1/traces", big, ExportTraceServiceResponse)
    assert reply.status_code == 413
    assert "exceeds the limit of 4096" in reply.content.decode(errors="replace")
    # gzip that inflates beyond the limit is refused while inflating
    reply, _ = post(
        receiver,
        "/v1/traces",
        gzip.compress(big.SerializeToString()),
        ExportTraceServiceResponse,
        **{"Content-Encoding": "gzip"},
    )
    assert reply.status_code == 413
    points = [(time.time_ns(), 1.0, {"pad": "y" * 300 + str(i)}) for i in range(30)]
    with pytest.raises(grpc.RpcError) as refused:
        grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", [gauge("m", points)]))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


# -- attributes ----------------------------------------------------------------------------------


def test_span_attributes_beyond_the_limits_are_cut_and_the_reply_says_how_many(start_receiver):
    receiver = start_receiver(limits__max_attributes=3, limits__max_attribute_value_bytes=16)
    attributes = [kv(f"k{i}", i) for i in range(5)] + [
        kv("a.long", "é" * 20),  # 40 bytes: cut to 16 (8 characters)
        KeyValue(
            key="a.list", value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="z" * 30)]))
        ),
    ]
    reply, parsed = post(
        receiver, "/v1/traces", traces_request(span(0, attributes)), ExportTraceServiceResponse
    )
    assert reply.status_code == 200
    assert parsed.partial_success.rejected_spans == 0
    message = parsed.partial_success.error_message
    assert "4 attributes dropped beyond limits.max_attributes (3)" in message
    assert "2 values cut to limits.max_attribute_value_bytes (16)" in message
    stored = api(receiver, f"/api/v1/traces/{TRACE.hex()}").json()["spans"][0]["attributes"]
    assert stored == {"a.list": ["z" * 16], "a.long": "é" * 8, "k0": 0}  # first three in key order


def test_log_attributes_beyond_the_limits_are_cut(start_receiver):
    receiver = start_receiver(limits__max_attributes=128, limits__max_attribute_value_bytes=32)
    record = lpb.LogRecord(
        time_unix_nano=time.time_ns(),
        body=AnyValue(string_value="done"),
        attributes=[kv("path", "/data/" + "p" * 100)],
    )
    request = ExportLogsServiceRequest(
        resource_logs=[lpb.ResourceLogs(scope_logs=[lpb.ScopeLogs(log_records=[record])])]
    )
    reply, parsed = post(receiver, "/v1/logs", request, ExportLogsServiceResponse)
    assert reply.status_code == 200
    assert "1 values cut to limits.max_attribute_value_bytes (32)" in parsed.partial_success.error_message
    (log,) = api(receiver, "/api/v1/logs").json()["logs"]
    assert log["attributes"]["path"] == ("/data/" + "p" * 100)[:32]


def test_metric_points_over_the_attribute_limits_are_rejected_not_merged(start_receiver):
    receiver = start_receiver(limits__max_attributes=2)
    now = time.time_ns()
    fine = gauge("audio.stage.duration", [(now, 1.0, {"stage": "a"})])
    wide = gauge(
        "audio.stage.duration",
        [(now, 2.0, {"a": 1, "b": 2, "c": 3}), (now + 1, 3.0, {"a": 1, "b": 2, "c": 3})],
    )
    reply = grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", [fine, wide]))
    assert reply.partial_success.rejected_data_points == 2
    assert (
        "2 data points of 1 series of 'audio.stage.duration' rejected" in reply.partial_success.error_message
    )
    assert "limits.max_attributes (2)" in reply.partial_success.error_message
    series = api(receiver, "/api/v1/series", metric="audio.stage.duration").json()["series"]
    assert [s["attributes"] for s in series] == [{"stage": "a"}]


def test_requests_within_the_limits_say_nothing(start_receiver):
    receiver = start_receiver()
    reply, parsed = post(
        receiver, "/v1/traces", traces_request(span(0, [kv("k", "v")])), ExportTraceServiceResponse
    )
    assert reply.status_code == 200 and parsed.partial_success.error_message == ""


# -- series per metric ---------------------------------------------------------------------------


def test_series_beyond_max_series_per_metric_are_rejected_by_partial_success(start_receiver):
    receiver = start_receiver(limits__max_series_per_metric=2)
    now = time.time_ns()
    points = [(now, float(i), {"file": str(i)}) for i in range(3)]
    reply = grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", [gauge("files", points)]))
    assert reply.partial_success.rejected_data_points == 1
    assert "files" in reply.partial_success.error_message
    assert len(api(receiver, "/api/v1/series", metric="files").json()["series"]) == 2


# -- spans per trace -----------------------------------------------------------------------------


def test_a_trace_read_holds_at_most_max_spans_per_trace_and_says_it_was_cut(start_receiver):
    receiver = start_receiver(limits__max_spans_per_trace=3)
    reply, _ = post(
        receiver, "/v1/traces", traces_request(*[span(i) for i in range(5)]), ExportTraceServiceResponse
    )
    assert reply.status_code == 200
    body = api(receiver, f"/api/v1/traces/{TRACE.hex()}").json()
    assert [s["name"] for s in body["spans"]] == ["stage-0", "stage-1", "stage-2"]  # first by start time
    assert body["truncated"] == {"total_spans": 5, "limit": 3}
    jaeger = api(receiver, f"/api/traces/{TRACE.hex()}").json()["data"][0]
    assert len(jaeger["spans"]) == 3
    assert jaeger["warnings"] == [
        "trace has 5 spans; the first 3 by start time are shown (limits.max_spans_per_trace)"
    ]


# -- query ranges and result sizes ---------------------------------------------------------------


@pytest.fixture
def with_series(start_receiver):
    receiver = start_receiver()
    now = time.time_ns()
    points = [(now - i * SECOND, float(i), {"stage": f"s{i}"}) for i in range(5)]
    grpc_export_metrics(
        receiver.grpc_port, metrics_request("enhancer", [gauge("audio.stage.duration", points)])
    )
    return receiver


def test_query_range_refuses_more_buckets_than_it_answers_and_says_which_step_works(with_series):
    reply = api(with_series, "/api/v1/query_range", metric="audio.stage.duration", start="now-30d", step="1s")
    assert reply.status_code == 400
    assert "buckets requested; at most 11000: use step_ns >=" in reply.json()["error"]


def test_search_limits_beyond_their_bound_are_400_naming_the_limit(with_series):
    for path, bound in (("/api/v1/spans", 10_000), ("/api/v1/logs", 10_000), ("/api/v1/traces", 1_000)):
        reply = api(with_series, path, limit=bound + 1)
        assert reply.status_code == 400
        assert reply.json()["error"].startswith(f"limit: Input should be less than or equal to {bound}")


def test_series_listings_and_ranges_over_the_result_bound_are_400(with_series, monkeypatch):
    monkeypatch.setattr(store_query, "MAX_SERIES_RESULT", 4)  # five series are stored
    reply = api(with_series, "/api/v1/series", metric="audio.stage.duration")
    assert reply.status_code == 400
    assert reply.json()["error"] == (
        "5 series of 'audio.stage.duration' match; at most 4 are listed: narrow them with match"
    )
    reply = api(with_series, "/api/v1/query_range", metric="audio.stage.duration", group_by="stage")
    assert reply.status_code == 400 and "5 series x" in reply.json()["error"]
    narrowed = api(with_series, "/api/v1/query_range", metric="audio.stage.duration", match='stage=~"s[0-3]"')
    assert narrowed.status_code == 200


def test_query_range_results_over_the_value_bound_are_400(with_series, monkeypatch):
    monkeypatch.setattr(store_query, "MAX_RESULT_POINTS", 100)
    reply = api(with_series, "/api/v1/query_range", metric="audio.stage.duration", start="now-1h", step="15s")
    assert reply.status_code == 400
    assert "1 series x 240 buckets requested" in reply.json()["error"]
