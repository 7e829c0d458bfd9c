"""The analytics processors are chain members named in the receiver's YAML: they build from
their options (bad ones are config errors naming the entry) and their series reach the store."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import Status, StatusCode

from otel_audio.receiver.config import ConfigError, load_config
from otel_audio.receiver.service import Receiver
from tests.receiver_helpers import SECOND, api, gauge, grpc_export_metrics, metrics_request
from tests.test_receiver_sdk import sdk_tracer


def test_each_analytics_processor_builds_from_the_config(tmp_path):
    config = load_config(
        None,
        storage__data_dir=str(tmp_path / "d"),
        processors=[
            "selfmon",
            {"spanmetrics": {"flush_interval_s": 1}},
            {"anomaly": {"metrics": ["audio.stage.duration"], "detector": "robust_z"}},
            {"forecast": {"series": [{"metric": "system.memory.usage", "limit": 1e9, "horizon": "1h"}]}},
            {"aggregation": {"rules": [{"metric": "audio.stage.duration", "aggs": ["p95"]}]}},
            "store",
        ],
    )
    receiver = Receiver(config)
    receiver.start()
    try:
        names = [p.name for p in receiver.chain.processors]
        # the dashboard's live-update hub always comes last: it pushes what was stored
        assert names == ["selfmon", "spanmetrics", "anomaly", "forecast", "aggregation", "store", "dashboard"]
    finally:
        receiver.stop(grace_s=1)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"spanmetrics": {"flush_interval_s": -1}}, "processors.spanmetrics: "),
        ({"anomaly": {"detector": "crystal_ball"}}, "processors.anomaly: "),
        ({"forecast": {"series": [{"metric": "m", "horizon": "soon"}]}}, "processors.forecast: "),
        ({"aggregation": {"rules": [{"metric": "m", "slide": "7s"}]}}, "processors.aggregation: "),
    ],
)
def test_bad_processor_options_are_config_errors_naming_the_processor(tmp_path, entry, message):
    config = load_config(None, storage__data_dir=str(tmp_path / "d"), processors=[entry, "store"])
    with pytest.raises(ConfigError, match=message):
        Receiver(config).start()


def test_span_metrics_from_sdk_spans_are_queryable(start_receiver):
    receiver = start_receiver(processors=["selfmon", {"spanmetrics": {"flush_interval_s": 1}}, "store"])
    provider = sdk_tracer(
        OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True), "enhancer"
    )
    tracer = provider.get_tracer("test")
    for i in range(10):
        with tracer.start_as_current_span("denoise") as span:
            if i < 3:
                span.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    receiver.chain.tick(time.time_ns() + 5 * 10**9)  # as the ticker does after flush_interval_s
    series = api(receiver, "/api/v1/series", metric="traces.span.metrics.calls").json()["series"]
    denoise = [s for s in series if s["attributes"]["span.name"] == "denoise"]
    by_status = {s["attributes"]["status.code"]: s for s in denoise}
    assert set(by_status) == {"STATUS_CODE_ERROR", "STATUS_CODE_UNSET"}
    assert all(s["service"] == "enhancer" for s in by_status.values())
    counts = api(
        receiver,
        "/api/v1/query_range",
        metric="traces.span.metrics.calls",
        agg="last",
        group_by="status.code",
        step="1h",
        start="now-1h",
        end="now+1h",
    ).json()["series"]
    last = {s["labels"]["status.code"]: [v for _, v in s["points"] if v is not None][-1] for s in counts}
    assert last == {"STATUS_CODE_ERROR": 3.0, "STATUS_CODE_UNSET": 7.0}


def test_forecasts_of_points_sent_over_otlp_are_stored_and_queryable(start_receiver):
    forecast = {"metric": "disk.used", "limit": 100, "horizon": "6h", "refresh": "10m", "season": 0}
    receiver = start_receiver(processors=[{"forecast": {"series": [forecast]}}, "store"])
    now = time.time_ns() // SECOND * SECOND
    points = [
        (now - (47 - i) * 3600 * SECOND, 10.0 + i + 0.1 * (i % 3), {"device": "sda"}) for i in range(48)
    ]
    reply = grpc_export_metrics(receiver.grpc_port, metrics_request("storage", [gauge("disk.used", points)]))
    assert not reply.partial_success.rejected_data_points
    [forecaster] = [p for p in receiver.chain.processors if p.name == "forecast"]
    later = time.time_ns() + 20 * 60 * SECOND  # past any refresh the ticker began
    receiver.chain.tick(later)  # submits the refit to the worker process
    assert forecaster.wait(120)
    receiver.chain.tick(later + 1)  # emits it (unless the ticker was first), through the store
    [found] = api(receiver, "/api/v1/series", metric="forecast.value").json()["series"]
    assert found["service"] == "storage"
    assert found["attributes"] == {"device": "sda", "forecast.metric": "disk.used"}
    assert forecaster.failures == 0 and forecaster.errors == {}
