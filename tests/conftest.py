"""Shared fixtures: an in-memory OpenTelemetry SDK bound to the decorators, and an OTLP sink."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler

import otel_audio
from otel_audio.views import audio_views
from tests.external import MailInbox, RecordingServer, free_port
from tests.otlp_sink import OtlpSink


@dataclass
class Recorded:
    """What the decorators recorded during one test."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        found = self.spans(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def metrics(self) -> dict[str, Any]:
        """Metric name -> the SDK Metric (data, unit) from one collection."""
        data = self.reader.get_metrics_data()
        out: dict[str, Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return list(metric.data.data_points) if metric is not None else []


def make_recorded(sampler: Sampler = ALWAYS_ON) -> Recorded:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=audio_views())
    otel_audio.bind(tracer_provider, meter_provider)
    return Recorded(exporter, reader, tracer_provider)


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Decorators record into a fresh in-memory SDK for the duration of the test."""
    rec = make_recorded()
    yield rec
    otel_audio.bind(None, None)


@pytest.fixture
def otlp_sink() -> Iterator[OtlpSink]:
    """A real OTLP gRPC + HTTP endpoint on loopback that keeps every request it receives."""
    sink = OtlpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def start_receiver(tmp_path):
    """Start receivers on free loopback ports with data under tmp_path; all stopped after the test."""
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    started = []

    def start(data_dir=None, **overrides):
        settings = {
            "storage__data_dir": str(data_dir or tmp_path / "data"),
            "server__grpc_port": 0,
            "server__http_port": 0,
            "server__api_port": 0,
            "tick_interval_s": 0.2,
        }
        settings.update(overrides)
        receiver = Receiver(load_config(None, **settings))
        receiver.start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        if receiver.serving:
            receiver.stop(grace_s=1)


@pytest.fixture
def hook() -> Iterator[RecordingServer]:
    """A real HTTP server on loopback recording every request (webhook, Slack, PagerDuty targets)."""
    server = RecordingServer().start()
    yield server
    server.stop()


@pytest.fixture
def inbox() -> Iterator[tuple[int, MailInbox]]:
    """A plain SMTP server on loopback (STARTTLS and AUTH are covered by test_notify_channels)."""
    from aiosmtpd.controller import Controller

    box, port = MailInbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, box
    controller.stop()
