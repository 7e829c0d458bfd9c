"""Other languages: a Node.js service instrumented with the OpenTelemetry JavaScript SDK exports to the
receiver over OTLP gRPC, and its spans and metrics come back through the query API and the Jaeger API.

``tests/node/export.mjs`` uses ``@opentelemetry/sdk-trace-node``, ``@opentelemetry/sdk-metrics`` and
the OTLP gRPC exporters at the versions pinned in ``tests/node/package.json`` and its lock file. It
exports a ``request`` span (SERVER) with two children, ``enhancement`` (an event) and ``encode``
(ERROR status), at fixed offsets from a whole second it prints, and a counter, a histogram, a gauge
and an observable gauge named ``audio.*``. The packages are installed from the npm registry by
``npm ci --prefix tests/node`` (run by ``.ci/run``; once by hand for a local run). Without ``node``
or those packages the tests skip, and under ``OTEL_AUDIO_REQUIRE_EXTERNAL=1`` they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.external import REQUIRE_EXTERNAL, require_external
from tests.receiver_helpers import api

NODE_DIR = Path(__file__).resolve().parent / "node"
SERVICE = "node-denoiser"  # service.name in export.mjs's resource
SCOPE = ("otel-audio-node-test", "0.1.0")  # its tracer's and meter's name and version
# telemetry.sdk.version: the version of @opentelemetry/core, released together with resources
SDK_VERSION = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["@opentelemetry/resources"]
# span -> (start, end) in ns after the printed whole second, as export.mjs sets them
SPAN_TIMES = {
    "request": (100_000_500, 800_000_999),
    "enhancement": (200_000_000, 600_000_000),
    "encode": (650_000_000, 700_000_250),
}
EVENT_TIME = 250_000_000


@dataclass(frozen=True)
class NodeExport:
    """What one run of export.mjs sent to ``receiver``: ``time_ns`` is the second its times count from."""

    receiver: Any
    run_id: str
    trace_id: str
    span_ids: dict[str, str]
    time_ns: int


def require_node() -> str:
    """The path of ``node`` with the packages of tests/node installed; skips or fails as require_external."""
    node = require_external("node", "Node.js 20, on the machine")
    if (NODE_DIR / "node_modules" / "@opentelemetry" / "sdk-trace-node").is_dir():
        return node
    reason = "the OpenTelemetry JS packages are not installed (npm ci --prefix tests/node)"
    if REQUIRE_EXTERNAL:
        pytest.fail(f"OTEL_AUDIO_REQUIRE_EXTERNAL=1 and {reason}")
    pytest.skip(reason)


def run_export(node: str, receiver: Any, run_id: str) -> NodeExport:
    """Run export.mjs against ``receiver``'s gRPC port; fails the test unless it exported cleanly."""
    # OTEL_* variables would configure the JS exporters and resource; the program gets only argv.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    endpoint = f"http://127.0.0.1:{receiver.grpc_port}"
    done = subprocess.run(
        [node, "export.mjs", endpoint, run_id],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"export.mjs exited {done.returncode}:\n{done.stderr}"
    out = json.loads(done.stdout)
    return NodeExport(receiver, run_id, out["trace_id"], out["span_ids"], out["time_s"] * 10**9)


@pytest.fixture
def exported(start_receiver) -> NodeExport:
    node = require_node()  # before the receiver starts, so a skip is quick
    return run_export(node, start_receiver(), f"run-{uuid.uuid4().hex[:12]}")


def _spans(run: NodeExport) -> dict[str, dict[str, Any]]:
    reply = api(run.receiver, f"/api/v1/traces/{run.trace_id}")
    assert reply.status_code == 200, reply.text
    return {s["name"]: s for s in reply.json()["spans"]}


def _typed(mapping: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """Values with their Python types, so 16000 and 16000.0 or 0 and False differ."""
    return {k: (type(v), v) for k, v in mapping.items()}


def _tags(tags: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """Jaeger key-values as key -> (type, value); their order carries no meaning in Jaeger's model."""
    found = {t["key"]: (t["type"], t["value"]) for t in tags}
    assert len(found) == len(tags), f"a key appears twice: {tags}"
    return found


def _last_value(run: NodeExport, metric: str, agg: str) -> dict[str, float]:
    """audio.stage -> the newest value of ``agg`` over the last hour."""
    reply = api(
        run.receiver,
        "/api/v1/query_range",
        metric=metric,
        agg=agg,
        group_by="audio.stage",
        step="1h",
        start="now-1h",
        end="now+1m",
    )
    assert reply.status_code == 200, reply.text
    return {s["labels"]["audio.stage"]: s["points"][-1][1] for s in reply.json()["series"]}


# -- the query API ---------------------------------------------------------------------------------


def test_node_spans_come_back_with_the_js_resource_and_scope(exported):
    spans = _spans(exported)
    assert set(spans) == set(SPAN_TIMES)
    for span in spans.values():
        assert span["trace_id"] == exported.trace_id
        assert span["service"] == SERVICE
        assert span["resource"] == {
            "service.name": SERVICE,
            "service.version": "1.4.0",
            "service.instance.id": exported.run_id,
            "telemetry.sdk.language": "nodejs",
            "telemetry.sdk.name": "opentelemetry",
            "telemetry.sdk.version": SDK_VERSION,
        }
        assert (span["scope"], span["scope_version"]) == SCOPE


def test_node_children_point_at_their_parent(exported):
    spans = _spans(exported)
    assert {name: s["span_id"] for name, s in spans.items()} == exported.span_ids
    assert spans["request"]["parent_span_id"] == ""
    assert spans["enhancement"]["parent_span_id"] == exported.span_ids["request"]
    assert spans["encode"]["parent_span_id"] == exported.span_ids["request"]
    assert {name: s["kind"] for name, s in spans.items()} == {"request": 2, "enhancement": 1, "encode": 1}
    # the JS SDK sets the sampled flag and says the parent is not remote (0x100 | 0x01)
    assert {s["flags"] for s in spans.values()} == {0x101}


def test_node_span_times_keep_their_nanoseconds(exported):
    spans = _spans(exported)
    for name, (start, end) in SPAN_TIMES.items():
        assert spans[name]["start_time_unix_nano"] == exported.time_ns + start
        assert spans[name]["end_time_unix_nano"] == exported.time_ns + end
        assert spans[name]["duration_ns"] == end - start


def test_node_attributes_keep_their_types(exported):
    spans = _spans(exported)
    assert _typed(spans["request"]["attributes"]) == {
        "http.route": (str, "/enhance"),
        "audio.sample_rate": (int, 16000),  # a JS integer goes out as an OTLP int
        "audio.duration": (float, 2.5),
        "audio.stereo": (bool, False),
        "audio.stages": (list, ["enhancement", "encode"]),
    }
    assert _typed(spans["enhancement"]["attributes"]) == {
        "audio.stage": (str, "enhancement"),
        "audio.frames": (int, 40000),
    }
    assert _typed(spans["encode"]["attributes"]) == {"audio.stage": (str, "encode")}


def test_node_error_status_and_event_come_back(exported):
    spans = _spans(exported)
    assert (spans["encode"]["status_code"], spans["encode"]["status_message"]) == (2, "clipping in output")
    assert spans["request"]["status_code"] == spans["enhancement"]["status_code"] == 0
    [event] = spans["enhancement"]["events"]
    assert event["name"] == "chunk"
    assert event["time_unix_nano"] == exported.time_ns + EVENT_TIME
    assert _typed(event["attributes"]) == {"index": (int, 3), "audio.signal.peak": (float, 0.75)}
    assert spans["request"]["events"] == spans["encode"]["events"] == []

    errors = api(exported.receiver, "/api/v1/traces", service=SERVICE, status="error").json()["traces"]
    assert [t["trace_id"] for t in errors] == [exported.trace_id]


def test_node_metrics_are_listed_with_their_types(exported):
    listed = {m["name"]: m for m in api(exported.receiver, "/api/v1/metrics").json()["metrics"]}
    fields = ("type", "unit", "temporality", "monotonic", "series")
    assert {name: tuple(listed[name][f] for f in fields) for name in listed if name.startswith("audio.")} == {
        "audio.files.processed": ("sum", "{file}", "cumulative", True, 2),
        "audio.stage.latency": ("histogram", "ms", "cumulative", False, 1),
        "audio.signal.peak": ("gauge", "1", "unspecified", False, 1),
        "audio.realtime_factor": ("gauge", "1", "unspecified", False, 1),
    }
    assert listed["audio.files.processed"]["description"] == "Files processed"

    series = api(exported.receiver, "/api/v1/series", metric="audio.files.processed").json()["series"]
    assert sorted(s["attributes"]["audio.stage"] for s in series) == ["encode", "enhancement"]
    for s in series:
        assert s["service"] == SERVICE
        assert s["resource"]["service.instance.id"] == exported.run_id
        assert s["resource"]["telemetry.sdk.language"] == "nodejs"
        assert s["scope"] == SCOPE[0]


def test_node_metric_values_come_back(exported):
    # export.mjs sends the cumulative points twice (forceFlush, then shutdown): counted once
    assert _last_value(exported, "audio.files.processed", "last") == {"enhancement": 7.0, "encode": 2.0}
    assert _last_value(exported, "audio.stage.latency", "count") == {"enhancement": 4.0}
    assert _last_value(exported, "audio.stage.latency", "sum") == {"enhancement": 100.0}
    assert _last_value(exported, "audio.signal.peak", "last") == {"enhancement": 0.75}
    assert _last_value(exported, "audio.realtime_factor", "last") == {"enhancement": 0.25}


# -- the Jaeger API --------------------------------------------------------------------------------


def test_jaeger_api_lists_the_node_service_and_operations(exported):
    services = api(exported.receiver, "/api/services").json()
    assert (services["data"], services["total"]) == ([SERVICE], 1)
    operations = api(exported.receiver, f"/api/services/{SERVICE}/operations").json()
    assert operations["data"] == ["encode", "enhancement", "request"]


def test_jaeger_api_returns_the_node_trace_in_microseconds(exported):
    reply = api(exported.receiver, f"/api/traces/{exported.trace_id}")
    assert reply.status_code == 200, reply.text
    [trace] = reply.json()["data"]
    assert trace["traceID"] == exported.trace_id and trace["warnings"] is None
    spans = {s["operationName"]: s for s in trace["spans"]}
    assert {name: s["spanID"] for name, s in spans.items()} == exported.span_ids
    time_us = exported.time_ns // 1000
    for name, (start, end) in SPAN_TIMES.items():
        span = spans[name]
        assert span["traceID"] == exported.trace_id
        assert span["startTime"] == time_us + start // 1000  # truncated: the 500 ns are dropped
        assert span["duration"] == (end - start) // 1000
        assert (span["flags"], span["processID"], span["warnings"]) == (1, "p1", None)
    assert spans["request"]["references"] == []
    for child in ("enhancement", "encode"):
        assert spans[child]["references"] == [
            {"refType": "CHILD_OF", "traceID": exported.trace_id, "spanID": exported.span_ids["request"]}
        ]

    assert list(trace["processes"]) == ["p1"]
    assert trace["processes"]["p1"]["serviceName"] == SERVICE
    assert _tags(trace["processes"]["p1"]["tags"]) == {
        "service.instance.id": ("string", exported.run_id),
        "service.version": ("string", "1.4.0"),
        "telemetry.sdk.language": ("string", "nodejs"),
        "telemetry.sdk.name": ("string", "opentelemetry"),
        "telemetry.sdk.version": ("string", SDK_VERSION),
    }


def test_jaeger_api_types_the_node_tags_status_and_event(exported):
    [trace] = api(exported.receiver, f"/api/traces/{exported.trace_id}").json()["data"]
    spans = {s["operationName"]: s for s in trace["spans"]}
    scope_tags = {"otel.scope.name": ("string", SCOPE[0]), "otel.scope.version": ("string", SCOPE[1])}
    assert _tags(spans["request"]["tags"]) == {
        "http.route": ("string", "/enhance"),
        "audio.sample_rate": ("int64", 16000),
        "audio.duration": ("float64", 2.5),
        "audio.stereo": ("bool", False),
        "audio.stages": ("string", '["enhancement","encode"]'),  # arrays as their JSON
        "span.kind": ("string", "server"),
        **scope_tags,
    }
    assert _tags(spans["enhancement"]["tags"]) == {
        "audio.stage": ("string", "enhancement"),
        "audio.frames": ("int64", 40000),
        **scope_tags,
    }
    assert _tags(spans["encode"]["tags"]) == {
        "audio.stage": ("string", "encode"),
        "otel.status_code": ("string", "ERROR"),
        "otel.status_description": ("string", "clipping in output"),
        "error": ("bool", True),
        **scope_tags,
    }
    [log] = spans["enhancement"]["logs"]
    assert log["timestamp"] == (exported.time_ns + EVENT_TIME) // 1000
    assert _tags(log["fields"]) == {
        "event": ("string", "chunk"),
        "index": ("int64", 3),
        "audio.signal.peak": ("float64", 0.75),
    }
    assert spans["request"]["logs"] == spans["encode"]["logs"] == []
