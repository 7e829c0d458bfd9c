"""The real OpenTelemetry SDK exporters, and the otel-audio plugin, export to a running receiver;
the data comes back through the query API with the right values, types and attributes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_audio import semconv
from tests.receiver_helpers import api

ROOT = Path(__file__).resolve().parents[1]


def sdk_tracer(exporter, service: str):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spans_come_back_with_every_field(start_receiver, transport):
    receiver = start_receiver()
    exporter = (
        GrpcSpanExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True)
        if transport == "grpc"
        else HttpSpanExporter(endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/traces")
    )
    provider = sdk_tracer(exporter, f"svc-{transport}")
    tracer = provider.get_tracer("test-scope", "1.0")
    with tracer.start_as_current_span(
        "request", kind=SpanKind.SERVER, attributes={"http.route": "/enhance"}
    ) as root:
        with tracer.start_as_current_span("enhancement", attributes={"audio.duration": 2.5}) as child:
            child.add_event("chunk", {"index": 3})
            child.set_status(Status(StatusCode.ERROR, "nan in output"))
    provider.shutdown()

    trace_id = format(root.get_span_context().trace_id, "032x")
    body = api(receiver, f"/api/v1/traces/{trace_id}").json()
    spans = {s["name"]: s for s in body["spans"]}
    assert set(spans) == {"request", "enhancement"}
    parent, kid = spans["request"], spans["enhancement"]
    assert kid["parent_span_id"] == parent["span_id"] == format(root.get_span_context().span_id, "016x")
    assert parent["kind"] == 2 and parent["attributes"] == {"http.route": "/enhance"}
    assert kid["attributes"] == {"audio.duration": 2.5}
    assert kid["status_code"] == 2 and kid["status_message"] == "nan in output"
    assert kid["events"][0]["name"] == "chunk" and kid["events"][0]["attributes"] == {"index": 3}
    assert kid["service"] == f"svc-{transport}" and kid["scope"] == "test-scope"
    assert kid["duration_ns"] == kid["end_time_unix_nano"] - kid["start_time_unix_nano"]

    found = api(receiver, "/api/v1/traces", service=f"svc-{transport}", status="error").json()["traces"]
    assert [t["trace_id"] for t in found] == [trace_id]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_metrics_come_back_as_series_with_values(start_receiver, transport):
    receiver = start_receiver()
    exporter = (
        GrpcMetricExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True)
        if transport == "grpc"
        else HttpMetricExporter(endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/metrics")
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create({"service.name": "denoiser"}), metric_readers=[reader])
    meter = provider.get_meter("m")
    files = meter.create_counter("files", unit="{file}")
    latency = meter.create_histogram("latency", unit="ms")
    files.add(3, {"stage": "enhancement"})
    files.add(4, {"stage": "output"})
    for value in (10, 20, 30, 40):
        latency.record(value, {"stage": "enhancement"})
    provider.shutdown()  # exports once

    metrics = {m["name"]: m for m in api(receiver, "/api/v1/metrics").json()["metrics"]}
    assert metrics["files"]["type"] == "sum" and metrics["files"]["monotonic"] is True
    assert metrics["files"]["temporality"] == "cumulative" and metrics["files"]["unit"] == "{file}"
    assert metrics["latency"]["type"] == "histogram"
    series = api(receiver, "/api/v1/series", metric="files").json()["series"]
    assert sorted(s["attributes"]["stage"] for s in series) == ["enhancement", "output"]
    assert all(s["service"] == "denoiser" for s in series)

    last = api(
        receiver,
        "/api/v1/query_range",
        metric="files",
        agg="last",
        group_by="stage",
        step="1h",
        start="now-1h",
        end="now+1m",
    ).json()
    values = {s["labels"]["stage"]: s["points"][-1][1] for s in last["series"]}
    assert values == {"enhancement": 3.0, "output": 4.0}
    count = api(
        receiver,
        "/api/v1/query_range",
        metric="latency",
        agg="count",
        step="1h",
        start="now-1h",
        end="now+1m",
    ).json()
    assert count["series"][0]["points"][-1][1] == 4.0


def test_sdk_logs_come_back_searchable_by_text_and_trace(start_receiver):
    receiver = start_receiver()
    provider = LoggerProvider(resource=Resource.create({"service.name": "denoiser"}))
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(
            GrpcLogExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True)
        )
    )
    logger = logging.getLogger("test-receiver-logs")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    tracer_provider = TracerProvider()
    with tracer_provider.get_tracer("t").start_as_current_span("work") as span:
        logger.error("enhancement failed for call-42")
    logger.removeHandler(handler)
    provider.shutdown()

    logs = api(receiver, "/api/v1/logs", q="CALL-42", service="denoiser").json()["logs"]
    assert len(logs) == 1
    assert logs[0]["body"] == "enhancement failed for call-42"
    assert logs[0]["severity_number"] == 17  # ERROR
    assert logs[0]["trace_id"] == format(span.get_span_context().trace_id, "032x")
    by_trace = api(receiver, "/api/v1/logs", trace_id=logs[0]["trace_id"]).json()["logs"]
    assert len(by_trace) == 1


def test_otel_audio_plugin_exports_to_the_receiver(start_receiver):
    receiver = start_receiver()
    script = textwrap.dedent(
        f"""
        import numpy as np, otel_audio
        from otel_audio import audio_pipeline, audio_stage
        t = otel_audio.configure(
            "plugin-pipeline", endpoint="http://127.0.0.1:{receiver.grpc_port}", system_metrics=True
        )

        @audio_stage("enhancement")
        def enhance(audio, sample_rate):
            return audio

        with audio_pipeline(audio_id="file-1", name="speech"):
            enhance(np.zeros(32000, dtype=np.float32), 16000)
            otel_audio.record_quality(pesq=3.7, stoi=0.91, snr=18.0)
        assert t.force_flush()
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

    spans = api(receiver, "/api/v1/spans", service="plugin-pipeline", operation="enhancement").json()["spans"]
    assert len(spans) == 1
    assert spans[0]["attributes"][semconv.AUDIO_ID] == "file-1"
    assert spans[0]["attributes"][semconv.AUDIO_DURATION] == 2.0
    metrics = {m["name"]: m for m in api(receiver, "/api/v1/metrics").json()["metrics"]}
    assert metrics[semconv.STAGE_DURATION.name]["type"] == "exponential_histogram"
    pesq = api(
        receiver,
        "/api/v1/query_range",
        metric=semconv.PESQ.name,
        agg="avg",
        step="1h",
        start="now-1h",
        end="now+1m",
    ).json()
    assert pesq["series"][0]["points"][-1][1] == pytest.approx(3.7)
    for series in api(receiver, "/api/v1/series", metric=semconv.STAGE_DURATION.name).json()["series"]:
        assert semconv.AUDIO_ID not in series["attributes"]
    # The process's resources arrive under the OpenTelemetry system/process conventions.
    assert metrics["system.memory.usage"]["unit"] == "By"
    cpu = api(receiver, "/api/v1/series", metric="system.cpu.time").json()["series"]
    assert cpu and all(s["service"] == "plugin-pipeline" for s in cpu)
    assert {s["attributes"].get("state") for s in cpu} >= {"user", "system"}  # the contrib names
