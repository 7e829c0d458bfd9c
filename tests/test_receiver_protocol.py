"""OTLP protocol behaviour of the receiver: JSON, gzip, partial success, limits, auth, overload, health."""

from __future__ import annotations

import gzip
import json
import threading
import time

import grpc
import pytest
import requests
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

from otel_audio.receiver.chain import REGISTRY, register
from tests.receiver_helpers import (
    SECOND,
    api,
    cumulative_counter,
    gauge,
    grpc_export_metrics,
    metrics_request,
)

NOW = time.time_ns() // SECOND * SECOND  # whole seconds: exact as float seconds in query strings


def post(receiver, path: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str):
    return requests.post(
        f"http://127.0.0.1:{receiver.http_port}{path}",
        data=body,
        headers={"Content-Type": content_type, **headers},
        timeout=30,
    )


def query(receiver, metric: str, agg: str, **extra):
    params = {
        "metric": metric,
        "agg": agg,
        "start": str((NOW - 3600 * SECOND) / 1e9),
        "end": str((NOW + 60 * SECOND) / 1e9),
    }
    params.update(extra)
    return api(receiver, "/api/v1/query_range", **params).json()


OTLP_JSON_TRACE = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "manual"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "",
                            "name": "enhance",
                            "kind": 2,
                            "startTimeUnixNano": str(NOW - 5 * 10**8),
                            "endTimeUnixNano": str(NOW),
                            "attributes": [{"key": "audio.sample_rate", "value": {"intValue": "16000"}}],
                            "status": {"code": 1},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_otlp_json_over_http_uses_hex_ids_and_replies_in_json(start_receiver):
    receiver = start_receiver()
    reply = post(receiver, "/v1/traces", json.dumps(OTLP_JSON_TRACE).encode(), "application/json")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {}
    spans = api(receiver, "/api/v1/traces/5b8efff798038103d269b633813fc60c").json()["spans"]
    assert spans[0]["span_id"] == "eee19b7ec3c1b174"
    assert spans[0]["attributes"] == {"audio.sample_rate": 16000}
    assert spans[0]["duration_ns"] == 5 * 10**8


def test_gzip_protobuf_is_accepted(start_receiver):
    receiver = start_receiver()
    request = metrics_request("gz", [gauge("queue", [(NOW, 7.0, {})])])
    reply = post(
        receiver, "/v1/metrics", gzip.compress(request.SerializeToString()), **{"Content-Encoding": "gzip"}
    )
    assert reply.status_code == 200
    assert query(receiver, "queue", "last", step="1h")["series"][0]["points"][-1][1] == 7.0


def test_malformed_protobuf_gets_invalid_argument_and_the_server_keeps_serving(start_receiver):
    receiver = start_receiver()
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            request_serializer=lambda b: b,
            response_deserializer=metrics_service_pb2.ExportMetricsServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as caught:
            export(b"\x0a\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportMetricsServiceRequest" in caught.value.details()

    http = post(receiver, "/v1/metrics", b"\x0a\xff\xff garbage")
    assert http.status_code == 400
    status = status_pb2.Status.FromString(http.content)
    assert "ExportMetricsServiceRequest" in status.message

    ok = grpc_export_metrics(receiver.grpc_port, metrics_request("s", [gauge("g", [(NOW, 1.0, {})])]))
    assert not ok.HasField("partial_success")


def test_bad_json_gets_400_naming_the_problem(start_receiver):
    receiver = start_receiver()
    bad = json.loads(json.dumps(OTLP_JSON_TRACE))
    bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not-hex"
    reply = post(receiver, "/v1/traces", json.dumps(bad).encode(), "application/json")
    assert reply.status_code == 400
    assert "traceId" in reply.json()["message"]


def test_oversized_request_gets_413_and_a_gzip_bomb_is_not_inflated(start_receiver):
    receiver = start_receiver(limits__max_request_bytes=4096)
    big = metrics_request(
        "s", [gauge("g", [(NOW, float(i), {"i": i}) for i in range(500)])]
    ).SerializeToString()
    assert post(receiver, "/v1/metrics", big).status_code == 413
    bomb = gzip.compress(b"\x00" * 10_000_000)
    assert post(receiver, "/v1/metrics", bomb, **{"Content-Encoding": "gzip"}).status_code == 413
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export_metrics(
            receiver.grpc_port, metrics_service_pb2.ExportMetricsServiceRequest.FromString(big)
        )
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unsupported_content_type_gets_415(start_receiver):
    receiver = start_receiver()
    assert post(receiver, "/v1/traces", b"{}", "text/plain").status_code == 415


def test_cardinality_limit_rejects_new_series_through_partial_success(start_receiver):
    receiver = start_receiver(limits__max_series_per_metric=3)
    points = [(NOW, float(i), {"file": f"f{i}"}) for i in range(5)]
    reply = grpc_export_metrics(receiver.grpc_port, metrics_request("s", [gauge("per_file", points)]))
    assert reply.partial_success.rejected_data_points == 2
    assert "per_file" in reply.partial_success.error_message
    assert len(api(receiver, "/api/v1/series", metric="per_file").json()["series"]) == 3
    # Known series keep being accepted.
    again = grpc_export_metrics(receiver.grpc_port, metrics_request("s", [gauge("per_file", points[:3])]))
    assert again.partial_success.rejected_data_points == 0
    exposition = api(receiver, "/metrics").text
    assert 'otel_audio_receiver_rejected_items_total{reason="cardinality",signal="metrics"} 2.0' in exposition


def test_cumulative_counter_rate_survives_a_sender_restart(start_receiver):
    receiver = start_receiver()
    first, restart = NOW - 600 * SECOND, NOW - 290 * SECOND
    points = [
        (first, NOW - 590 * SECOND, 10.0),
        (first, NOW - 480 * SECOND, 40.0),
        (first, NOW - 360 * SECOND, 100.0),
        (restart, NOW - 280 * SECOND, 5.0),  # the sender restarted: new start time, value from 0
        (restart, NOW - 160 * SECOND, 65.0),
    ]
    grpc_export_metrics(receiver.grpc_port, metrics_request("s", [cumulative_counter("files_total", points)]))
    start, end = (NOW - 600 * SECOND) / 1e9, NOW / 1e9
    result = api(
        receiver,
        "/api/v1/query_range",
        metric="files_total",
        agg="increase",
        step="600s",
        start=str(start),
        end=str(end),
    ).json()
    # 10 (counter began inside the range) + 30 + 60, then 5 + 60 after the restart: never negative.
    assert result["series"][0]["points"][0][1] == pytest.approx(165.0)
    rate = api(
        receiver,
        "/api/v1/query_range",
        metric="files_total",
        agg="rate",
        step="600s",
        start=str(start),
        end=str(end),
    ).json()
    assert rate["series"][0]["points"][0][1] == pytest.approx(165.0 / 600)


TOKEN = "test-token-123"


def test_every_port_refuses_requests_without_the_token(start_receiver):
    receiver = start_receiver(server__auth__tokens=[TOKEN])
    request = metrics_request("s", [gauge("g", [(NOW, 1.0, {})])])
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export_metrics(receiver.grpc_port, request)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError):
        grpc_export_metrics(receiver.grpc_port, request, token="wrong")
    assert post(receiver, "/v1/metrics", request.SerializeToString()).status_code == 401
    assert api(receiver, "/api/v1/metrics").status_code == 401
    assert api(receiver, "/metrics").status_code == 401
    assert api(receiver, "/openapi.json").status_code == 401

    grpc_export_metrics(receiver.grpc_port, request, token=TOKEN)
    assert (
        post(
            receiver, "/v1/metrics", request.SerializeToString(), Authorization=f"Bearer {TOKEN}"
        ).status_code
        == 200
    )
    assert api(receiver, "/api/v1/metrics", token=TOKEN).status_code == 200
    assert api(receiver, "/healthz").status_code == 200  # probes stay public


def test_overload_answers_resource_exhausted_with_retry_info(start_receiver):
    entered, release = threading.Event(), threading.Event()

    class Blocker:
        name = "blocker"

        def process(self, batch):
            entered.set()
            release.wait(30)

        def tick(self, now):
            pass

        def close(self):
            release.set()

    register("blocker")(lambda options, context: Blocker())
    try:
        receiver = start_receiver(
            processors=["blocker", "store"], limits__max_inflight_bytes=1024, limits__retry_after_s=3
        )
        request = metrics_request("s", [gauge("g", [(NOW, 1.0, {"i": i}) for i in range(40)])])
        first = threading.Thread(target=grpc_export_metrics, args=(receiver.grpc_port, request))
        first.start()
        assert entered.wait(30)
        with pytest.raises(grpc.RpcError) as caught:
            grpc_export_metrics(receiver.grpc_port, request)
        http = post(receiver, "/v1/metrics", request.SerializeToString())
        release.set()
        first.join(30)
    finally:
        REGISTRY.pop("blocker", None)
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(caught.value)
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 3
    assert http.status_code == 429 and http.headers["Retry-After"] == "3"
    # The first request was not lost: it was admitted, made durable and stored.
    assert len(api(receiver, "/api/v1/series", metric="g").json()["series"]) == 40


def test_grpc_health_service_reports_serving(start_receiver):
    receiver = start_receiver()
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert api(receiver, "/readyz").json() == {"status": "ready"}


def test_self_monitoring_series_reach_the_store_and_metrics_endpoint(start_receiver):
    receiver = start_receiver()
    grpc_export_metrics(receiver.grpc_port, metrics_request("s", [gauge("g", [(NOW, 1.0, {})])]))
    receiver.chain.tick(time.time_ns())
    names = {m["name"] for m in api(receiver, "/api/v1/metrics").json()["metrics"]}
    assert "otel_audio_receiver_accepted_items_total" in names
    series = api(receiver, "/api/v1/series", metric="otel_audio_receiver_accepted_items_total").json()[
        "series"
    ]
    assert {s["attributes"]["signal"] for s in series} >= {"metrics"}
    assert all(s["service"] == "otel-audio-receiver" for s in series)
    text = api(receiver, "/metrics").text
    assert 'otel_audio_receiver_requests_total{outcome="ok",signal="metrics",transport="grpc"} 1.0' in text
    assert "otel_audio_receiver_processor_seconds_bucket" in text


def test_query_errors_are_400_with_a_message(start_receiver):
    receiver = start_receiver()
    reply = api(receiver, "/api/v1/query_range", metric="nope", agg="avg")
    assert reply.status_code == 400
    assert "unknown metric 'nope'" in reply.json()["error"]
    bad_step = api(receiver, "/api/v1/query_range", metric="nope", step="fast")
    assert bad_step.status_code == 400 and "step" in bad_step.json()["error"]


def test_openapi_document_lists_every_route(start_receiver):
    receiver = start_receiver()
    paths = set(api(receiver, "/openapi.json").json()["paths"])
    assert {
        "/api/v1/metrics",
        "/api/v1/series",
        "/api/v1/query_range",
        "/api/v1/spans",
        "/api/v1/traces",
        "/api/v1/traces/{trace_id}",
        "/api/v1/logs",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= paths
