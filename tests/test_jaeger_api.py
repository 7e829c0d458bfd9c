"""The Jaeger query API (``otel_audio.api.jaeger``) over spans a real OpenTelemetry SDK exported over OTLP:
every route checked field by field against Jaeger's JSON model (``model/json/model.go``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.receiver_helpers import api

ROOT = Path(__file__).resolve().parents[1]

MS = 10**6
BIG = 2**60 + 1  # beyond JavaScript's safe integers: must come back as a string
TOKEN = "jaeger-token"

# Go model field names (model/json/model.go): a field outside these is not Jaeger's JSON
TRACE_FIELDS = {"traceID", "spans", "processes", "warnings"}
SPAN_FIELDS = {
    "traceID",
    "spanID",
    "flags",
    "operationName",
    "references",
    "startTime",
    "duration",
    "tags",
    "logs",
    "processID",
    "warnings",
}
REFERENCE_FIELDS = {"refType", "traceID", "spanID"}
PROCESS_FIELDS = {"serviceName", "tags"}
LOG_FIELDS = {"timestamp", "fields"}
KEY_VALUE_FIELDS = {"key", "type", "value"}
VALUE_TYPES = {"string": str, "bool": bool, "int64": (int, str), "float64": float, "binary": str}
RESPONSE_FIELDS = {"data", "total", "limit", "offset", "errors"}


def check_key_value(kv: dict) -> None:
    assert set(kv) == KEY_VALUE_FIELDS, kv
    assert isinstance(kv["key"], str) and kv["type"] in VALUE_TYPES, kv
    assert isinstance(kv["value"], VALUE_TYPES[kv["type"]]), kv
    if kv["type"] == "int64":
        value = int(kv["value"])
        assert isinstance(kv["value"], int) == (abs(value) <= 2**53 - 1), kv
    if kv["type"] != "bool":
        assert not isinstance(kv["value"], bool), kv


def check_trace(t: dict) -> None:
    """``t`` has exactly the Go model's fields with their JSON types, and consistent ids."""
    assert set(t) == TRACE_FIELDS
    assert len(t["traceID"]) == 32 and int(t["traceID"], 16)
    assert t["warnings"] is None or all(isinstance(w, str) for w in t["warnings"])
    for process in t["processes"].values():
        assert set(process) == PROCESS_FIELDS and isinstance(process["serviceName"], str)
        for kv in process["tags"]:
            check_key_value(kv)
    for span in t["spans"]:
        assert set(span) == SPAN_FIELDS, span.keys()
        assert span["traceID"] == t["traceID"] and len(span["spanID"]) == 16
        assert span["processID"] in t["processes"]
        for name in ("flags", "startTime", "duration"):
            assert isinstance(span[name], int) and span[name] >= 0
        for ref in span["references"]:
            assert set(ref) == REFERENCE_FIELDS and ref["refType"] in ("CHILD_OF", "FOLLOWS_FROM")
        for kv in span["tags"]:
            check_key_value(kv)
        for log in span["logs"]:
            assert set(log) == LOG_FIELDS and isinstance(log["timestamp"], int)
            for kv in log["fields"]:
                check_key_value(kv)


def jaeger(receiver, path: str, status: int = 200, token: str | None = None, **params) -> dict:
    response = api(receiver, path, token=token, **params)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == RESPONSE_FIELDS
    if status == 200:
        assert body["errors"] is None
        if path.startswith("/api/traces"):
            for t in body["data"]:
                check_trace(t)
    return body


def tags_of(item: dict) -> dict:
    return {kv["key"]: (kv["type"], kv["value"]) for kv in item["tags"]}


def provider(receiver, service: str, **resource) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True)
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


def export_traces(receiver) -> dict:
    """Trace A across frontend -> enhancer (a link to trace B, an event, an error, every attribute
    type) and trace B (one producer span in enhancer, started last). Returns ids and ns times."""
    base = (time.time_ns() // 10**9 - 600) * 10**9 + 123_456_789  # 10 minutes ago, sub-µs digits
    frontend = provider(receiver, "frontend", **{"deployment.environment": "test", "host.cores": 8})
    enhancer = provider(receiver, "enhancer")
    web = frontend.get_tracer("web", "1.2")
    worker = enhancer.get_tracer("worker")

    batch = worker.start_span("batch", kind=SpanKind.PRODUCER, start_time=base + 900 * MS)
    batch.end(end_time=base + 950 * MS)
    attributes = {
        "http.route": "/enhance",
        "audio.stereo": True,
        "audio.channels": 2,
        "audio.seconds": 2.5,
        "audio.samples": BIG,
        "audio.offset": -BIG,
        "audio.stages": ["denoise", "dereverb"],
    }
    root = web.start_span("GET /enhance", kind=SpanKind.SERVER, attributes=attributes, start_time=base)
    root_ctx = trace.set_span_in_context(root)
    client = web.start_span("call enhancer", root_ctx, kind=SpanKind.CLIENT, start_time=base + 10 * MS)
    enhance = worker.start_span(
        "enhance",
        trace.set_span_in_context(client),
        kind=SpanKind.SERVER,
        links=[Link(batch.get_span_context())],
        attributes={"audio.codec": "opus"},
        start_time=base + 20 * MS,
    )
    denoise = worker.start_span("denoise", trace.set_span_in_context(enhance), start_time=base + 30 * MS)
    denoise.add_event("chunk", {"index": 3, "ratio": 0.5}, timestamp=base + 40 * MS + 999)
    denoise.end(end_time=base + 330 * MS)
    enhance.set_status(Status(StatusCode.ERROR, "nan in output"))
    enhance.end(end_time=base + 390 * MS + 1_500)
    client.end(end_time=base + 400 * MS)
    root.set_status(Status(StatusCode.OK))
    root.end(end_time=base + 500 * MS)
    frontend.shutdown()
    enhancer.shutdown()
    fmt = lambda ctx: (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"))  # noqa: E731
    return {
        "base": base,
        "a": fmt(root.get_span_context())[0],
        "b": fmt(batch.get_span_context())[0],
        "spans": {
            s.name: (fmt(s.get_span_context())[1], s.start_time, s.end_time)
            for s in (root, client, enhance, denoise, batch)
        },
    }


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One receiver holding the two traces, shared by the read-only tests of this module (the
    settings of conftest's ``start_receiver``, which is per test: a receiver each would take ~30 s)."""
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    receiver = Receiver(
        load_config(
            None,
            storage__data_dir=str(tmp_path_factory.mktemp("jaeger") / "data"),
            server__grpc_port=0,
            server__http_port=0,
            server__api_port=0,
            tick_interval_s=0.2,
        )
    )
    receiver.start()
    try:
        yield receiver, export_traces(receiver)
    finally:
        receiver.stop(grace_s=1)


def search(receiver, **params) -> list[str]:
    return [t["traceID"] for t in jaeger(receiver, "/api/traces", **params)["data"]]


def test_services_and_operations(loaded):
    receiver, _ = loaded
    body = jaeger(receiver, "/api/services")
    assert body["data"] == ["enhancer", "frontend"] and body["total"] == 2
    assert body["limit"] == 0 and body["offset"] == 0
    legacy = jaeger(receiver, "/api/services/enhancer/operations")
    assert legacy["data"] == ["batch", "denoise", "enhance"] and legacy["total"] == 3
    ops = jaeger(receiver, "/api/operations", service="enhancer")["data"]
    assert ops == [
        {"name": "batch", "spanKind": "producer"},
        {"name": "denoise", "spanKind": "internal"},
        {"name": "enhance", "spanKind": "server"},
    ]
    servers = jaeger(receiver, "/api/operations", service="frontend", spanKind="server")["data"]
    assert servers == [{"name": "GET /enhance", "spanKind": "server"}]
    assert jaeger(receiver, "/api/services/nobody/operations")["data"] == []


def test_trace_spans_map_every_otlp_field(loaded):
    receiver, ids = loaded
    body = jaeger(receiver, f"/api/traces/{ids['a']}")
    (t,) = body["data"]
    assert t["traceID"] == ids["a"] and t["warnings"] is None
    spans = {s["operationName"]: s for s in t["spans"]}
    assert set(spans) == {"GET /enhance", "call enhancer", "enhance", "denoise"}
    for name, span in spans.items():
        span_id, start_ns, end_ns = ids["spans"][name]
        assert span["spanID"] == span_id and span["traceID"] == ids["a"]
        assert span["startTime"] == start_ns // 1000
        assert span["duration"] == (end_ns - start_ns) // 1000
        assert span["flags"] == 0  # the W3C flags byte; the Python SDK sends only 0x100 (has-is-remote)
        assert span["warnings"] is None

    def ref(kind: str, name: str, trace_id: str = ids["a"]) -> dict:
        return {"refType": kind, "traceID": trace_id, "spanID": ids["spans"][name][0]}

    assert spans["GET /enhance"]["references"] == []
    assert spans["call enhancer"]["references"] == [ref("CHILD_OF", "GET /enhance")]
    assert spans["enhance"]["references"] == [
        ref("CHILD_OF", "call enhancer"),
        ref("FOLLOWS_FROM", "batch", ids["b"]),  # the link, after the parent
    ]
    assert spans["denoise"]["references"] == [ref("CHILD_OF", "enhance")]


def test_tags_are_typed_with_kind_status_and_scope(loaded):
    receiver, ids = loaded
    spans = {s["operationName"]: s for s in jaeger(receiver, f"/api/traces/{ids['a']}")["data"][0]["spans"]}
    root = tags_of(spans["GET /enhance"])
    assert root == {
        "http.route": ("string", "/enhance"),
        "audio.stereo": ("bool", True),
        "audio.channels": ("int64", 2),
        "audio.seconds": ("float64", 2.5),
        "audio.samples": ("int64", str(BIG)),
        "audio.offset": ("int64", str(-BIG)),
        "audio.stages": ("string", '["denoise","dereverb"]'),
        "otel.scope.name": ("string", "web"),
        "otel.scope.version": ("string", "1.2"),
        "span.kind": ("string", "server"),
        "otel.status_code": ("string", "OK"),
    }
    enhance = tags_of(spans["enhance"])
    assert enhance["span.kind"] == ("string", "server")
    assert enhance["otel.status_code"] == ("string", "ERROR")
    assert enhance["otel.status_description"] == ("string", "nan in output")
    assert enhance["error"] == ("bool", True)
    assert tags_of(spans["call enhancer"])["span.kind"] == ("string", "client")
    denoise = tags_of(spans["denoise"])
    assert "span.kind" not in denoise and "error" not in denoise  # INTERNAL: no tag; UNSET: no status


def test_events_become_logs_in_microseconds(loaded):
    receiver, ids = loaded
    spans = {s["operationName"]: s for s in jaeger(receiver, f"/api/traces/{ids['a']}")["data"][0]["spans"]}
    assert spans["denoise"]["logs"] == [
        {
            "timestamp": (ids["base"] + 40 * MS + 999) // 1000,
            "fields": [
                {"key": "event", "type": "string", "value": "chunk"},
                {"key": "index", "type": "int64", "value": 3},
                {"key": "ratio", "type": "float64", "value": 0.5},
            ],
        }
    ]
    assert spans["enhance"]["logs"] == []


def test_processes_come_from_resources(loaded):
    receiver, ids = loaded
    t = jaeger(receiver, f"/api/traces/{ids['a']}")["data"][0]
    by_service = {p["serviceName"]: (pid, p) for pid, p in t["processes"].items()}
    assert set(by_service) == {"frontend", "enhancer"} and set(t["processes"]) == {"p1", "p2"}
    frontend_pid, frontend = by_service["frontend"]
    tags = tags_of(frontend)
    assert tags["deployment.environment"] == ("string", "test")
    assert tags["host.cores"] == ("int64", 8)
    assert "service.name" not in tags and tags["telemetry.sdk.language"] == ("string", "python")
    for span in t["spans"]:
        expected = frontend_pid if span["operationName"] in ("GET /enhance", "call enhancer") else None
        assert span["processID"] == (expected or by_service["enhancer"][0])


def test_search_by_service_operation_and_limit(loaded):
    receiver, ids = loaded
    assert search(receiver, service="frontend") == [ids["a"]]
    assert search(receiver, service="enhancer") == [ids["b"], ids["a"]]  # newest matching span first
    assert search(receiver, service="enhancer", limit=1) == [ids["b"]]
    assert search(receiver, service="enhancer", operation="denoise") == [ids["a"]]
    assert search(receiver, service="frontend", operation="batch") == []
    found = jaeger(receiver, "/api/traces", service="frontend")["data"][0]
    assert found == jaeger(receiver, f"/api/traces/{ids['a']}")["data"][0]  # whole traces


def test_search_by_tags_json_logfmt_and_tag(loaded):
    receiver, ids = loaded
    assert search(receiver, service="enhancer", tags=json.dumps({"audio.codec": "opus"})) == [ids["a"]]
    assert search(receiver, service="enhancer", tags="audio.codec=opus") == [ids["a"]]
    assert search(receiver, service="enhancer", tag="audio.codec:opus") == [ids["a"]]
    assert search(receiver, service="enhancer", tags='{"audio.codec": "mp3"}') == []
    assert search(receiver, service="frontend", tags=json.dumps({"audio.samples": str(BIG)})) == [ids["a"]]
    assert search(receiver, service="frontend", tags='{"audio.stereo": true}') == [ids["a"]]
    assert search(receiver, service="frontend", tags='{"deployment.environment": "test"}') == [ids["a"]]


def test_search_by_derived_tags_error_status_and_kind(loaded):
    receiver, ids = loaded
    assert search(receiver, service="enhancer", tags='{"error": "true"}') == [ids["a"]]
    assert search(receiver, service="frontend", tags='{"error": "true"}') == []
    assert search(receiver, service="enhancer", operation="enhance", tags='{"error": "false"}') == []
    assert search(receiver, service="enhancer", tags="error=false") == [ids["b"], ids["a"]]  # batch, denoise
    assert search(receiver, service="frontend", tags='{"otel.status_code": "OK"}') == [ids["a"]]
    assert search(receiver, service="enhancer", tags='{"span.kind": "producer"}') == [ids["b"]]
    assert search(receiver, service="enhancer", tags='{"span.kind": "server"}') == [ids["a"]]


def test_search_by_duration(loaded):
    receiver, ids = loaded
    assert search(receiver, service="enhancer", minDuration="350ms") == [ids["a"]]  # enhance: 370 ms
    assert search(receiver, service="enhancer", maxDuration="0.1s") == [ids["b"]]  # batch: 50 ms
    assert search(receiver, service="enhancer", minDuration="301ms", maxDuration="1s") == [ids["a"]]
    assert search(receiver, service="frontend", minDuration="1h") == []


def test_search_by_time_range_in_microseconds(loaded):
    receiver, ids = loaded
    b_start_us = ids["spans"]["batch"][1] // 1000
    assert search(receiver, service="enhancer", start=b_start_us, end=b_start_us) == [ids["b"]]
    assert search(receiver, service="enhancer", start=b_start_us + 1, end=b_start_us + 10**6) == []
    a_start_us = ids["base"] // 1000
    assert search(receiver, service="enhancer", start=a_start_us, end=a_start_us + 100_000) == [ids["a"]]
    assert search(receiver, service="enhancer", lookback="1m") == []  # everything is 10 minutes old
    assert search(receiver, service="enhancer", lookback="2d") == [ids["b"], ids["a"]]  # as Jaeger UI sends


def test_search_by_trace_ids(loaded):
    receiver, ids = loaded
    assert search(receiver, traceID=[ids["a"], ids["b"]]) == [ids["a"], ids["b"]]


def test_dependencies_count_calls_between_services(loaded):
    receiver, _ = loaded
    body = jaeger(receiver, "/api/dependencies", endTs=time.time_ns() // 10**6, lookback=3600 * 1000)
    assert body["data"] == [{"parent": "frontend", "child": "enhancer", "callCount": 1}]
    old = jaeger(receiver, "/api/dependencies", endTs=time.time_ns() // 10**6 - 3600 * 1000, lookback=1000)
    assert old["data"] == []


def test_missing_trace_is_404_in_jaeger_error_shape(loaded):
    receiver, _ = loaded
    body = jaeger(receiver, "/api/traces/" + "ab" * 16, status=404)
    assert body["data"] is None and body["errors"] == [{"code": 404, "msg": "trace not found"}]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "parameter 'service' is required"),
        ({"service": "s", "minDuration": "fast"}, "unable to parse param 'minDuration'"),
        ({"service": "s", "minDuration": "2s", "maxDuration": "1s"}, "'maxDuration' should be greater"),
        ({"service": "s", "tags": "{not json"}, "malformed 'tags' parameter"),
        ({"service": "s", "tag": "nocolon"}, "malformed 'tag' parameter"),
        ({"service": "s", "start": "yesterday"}, "unable to parse param 'start'"),
        ({"service": "s", "limit": "many"}, "unable to parse param 'limit'"),
    ],
)
def test_bad_search_is_400_in_jaeger_error_shape(loaded, params, message):
    receiver, _ = loaded
    body = jaeger(receiver, "/api/traces", status=400, **params)
    assert body["data"] is None and len(body["errors"]) == 1
    assert body["errors"][0]["code"] == 400 and body["errors"][0]["msg"].startswith(message)


def test_bad_trace_id_and_operations_without_service_are_400(loaded):
    receiver, _ = loaded
    assert jaeger(receiver, "/api/traces/not-hex", status=400)["errors"][0]["code"] == 400
    body = jaeger(receiver, "/api/operations", status=400)
    assert body["errors"] == [{"code": 400, "msg": "parameter 'service' is required"}]


def test_download_is_a_jaeger_json_file_of_the_same_trace(loaded, tmp_path):
    receiver, ids = loaded
    response = api(receiver, f"/api/traces/{ids['a']}", download=1)
    assert response.status_code == 200
    assert response.headers["content-disposition"] == f'attachment; filename="trace-{ids["a"]}.json"'
    assert response.headers["content-type"].startswith("application/json")
    saved = tmp_path / "trace.json"
    saved.write_bytes(response.content)
    loaded_file = json.loads(saved.read_text())
    assert set(loaded_file) == {"data"} and len(loaded_file["data"]) == 1
    check_trace(loaded_file["data"][0])
    assert loaded_file["data"][0] == jaeger(receiver, f"/api/traces/{ids['a']}")["data"][0]


def test_short_trace_ids_are_left_padded(loaded):
    receiver, _ = loaded
    body = jaeger(receiver, "/api/traces/" + "1" * 16, status=404)  # parsed, padded, not found
    assert body["errors"][0]["msg"] == "trace not found"


def test_routes_refuse_requests_without_the_token(start_receiver):
    receiver = start_receiver(server__auth__tokens=[TOKEN])
    for path in ("/api/services", "/api/traces", "/api/traces/" + "ab" * 16, "/api/dependencies"):
        assert api(receiver, path, service="s").status_code == 401
    assert jaeger(receiver, "/api/services", token=TOKEN)["data"] == []


def test_collector_config_sends_spans_to_jaeger_and_otel_audio_over_otlp():
    import yaml

    config = yaml.safe_load((ROOT / "collector-config" / "jaeger" / "otel-collector.yaml").read_text())
    exporters = config["service"]["pipelines"]["traces"]["exporters"]
    assert sorted(exporters) == ["otlp/jaeger", "otlp/otel-audio"]
    assert all(
        name.split("/")[0] == "otlp"
        for p in config["service"]["pipelines"].values()
        for name in p["exporters"]
    )
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"  # Jaeger's native OTLP port
    assert config["exporters"]["otlp/otel-audio"]["endpoint"].endswith(":4317")
    assert "otlp/jaeger" not in config["service"]["pipelines"]["metrics"]["exporters"]


def test_grafana_data_source_points_at_the_receiver_api_port():
    import yaml

    from otel_audio.receiver.config import load_config

    sources = yaml.safe_load((ROOT / "collector-config" / "jaeger" / "grafana-datasource.yaml").read_text())
    (ours,) = [s for s in sources["datasources"] if s["uid"] == "otel-audio-jaeger"]
    assert ours["type"] == "jaeger" and ours["access"] == "proxy"
    assert ours["url"].endswith(f":{load_config(None).server.api_port}")
    assert ours["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ours["secureJsonData"]["httpHeaderValue1"].startswith("Bearer ")
