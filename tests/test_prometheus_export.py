"""``/metrics``: OpenTelemetry→Prometheus names, the processors' newest series, a real Prometheus scraping."""

from __future__ import annotations

import re
import time

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge

from otel_audio.api.exposition import Exposition
from otel_audio.receiver.config import ExpositionConfig
from otel_audio.receiver.promnames import describe, label_name, metric_name, samples
from tests.external import Prometheus
from tests.receiver_helpers import SECOND, cumulative_counter, gauge, grpc_export_metrics, metrics_request

TOKEN = "scrape-secret"
QUEUE_RULE = {"metric": "audio.queue.depth", "window": "1m", "by": ["service"], "aggs": ["avg", "max"]}
PROCESSORS = [
    "selfmon",
    {"spanmetrics": {"flush_interval_s": 1}},
    {"aggregation": {"rules": [QUEUE_RULE]}},
    {"derived": {"window": "1m"}},
    {"slo": {"evaluation_interval": "1s"}},
    "store",
]


def scrape(receiver, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"http://127.0.0.1:{receiver.api_port}/metrics", headers=headers, timeout=30)


def run_example_pipeline(receiver, files: int = 4) -> None:
    """The example audio pipeline, instrumented by the SDK plugin, exporting to ``receiver``."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    import otel_audio
    from examples.enhance_pipeline import Faults, run
    from otel_audio.views import audio_views

    endpoint = f"http://127.0.0.1:{receiver.grpc_port}"
    headers = (("authorization", f"Bearer {TOKEN}"),)
    resource = Resource.create({"service.name": "enhancer"})
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True, headers=headers), 3_600_000
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader], views=audio_views())
    tracer = TracerProvider(resource=resource)
    tracer.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers))
    )
    otel_audio.bind(tracer, meters)
    try:
        for seed in (3, 4):  # two exports: SLIs over rates need two points of each counter
            faults = Faults(error_probability=0.5, error_stages=("load_audio",))
            run(files // 2, seconds=1.0, seed=seed, faults=faults)
            meters.force_flush()
        tracer.force_flush()
    finally:
        otel_audio.bind(None, None)
        meters.shutdown()
        tracer.shutdown()


def start_fed_receiver(start_receiver, **overrides):
    """A receiver running spanmetrics, aggregation, derived and slo, fed by the example pipeline
    and a queue-depth gauge, with every window closed: its /metrics holds every processor's series."""
    settings = {"processors": PROCESSORS, "tick_interval_s": 3600, "server__auth__tokens": [TOKEN]}
    receiver = start_receiver(**{**settings, **overrides})
    minute = (time.time_ns() // (60 * SECOND) - 1) * 60 * SECOND  # the last minute: one window
    depth = gauge("audio.queue.depth", [(minute + 10 * SECOND, 3.0, {}), (minute + 20 * SECOND, 5.0, {})])
    grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", [depth]), token=TOKEN)
    run_example_pipeline(receiver)
    later = time.time_ns() + 120 * SECOND  # past every open window's end, past a flush and an evaluation
    receiver.chain.tick(later)
    receiver.chain.tick(later + 2 * SECOND)
    return receiver


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit", "kind", "monotonic", "expected"),
    [
        ("traces.span.metrics.calls", "{call}", "sum", True, ("traces_span_metrics_calls", "counter")),
        ("traces.span.metrics.duration", "s", "histogram", True,
         ("traces_span_metrics_duration_seconds", "histogram")),
        ("slo.burn_rate", "1", "gauge", False, ("slo_burn_rate_ratio", "gauge")),
        ("slo.time_to_exhaustion_seconds", "s", "gauge", False, ("slo_time_to_exhaustion_seconds", "gauge")),
        ("audio.derived.throughput", "{file}/min", "gauge", False,
         ("audio_derived_throughput_per_minute", "gauge")),
        ("system.memory.usage", "By", "sum", False, ("system_memory_usage_bytes", "gauge")),
        ("http.requests.total", "", "sum", True, ("http_requests", "counter")),
        ("audio.stage.duration.p95", "", "gauge", False, ("audio_stage_duration_p95", "gauge")),
        ("9lives..odd-name", "", "gauge", False, ("_9lives_odd_name", "gauge")),
    ],
)  # fmt: skip
def test_metric_names_follow_the_compatibility_spec(name, unit, kind, monotonic, expected):
    assert metric_name(name, unit, kind, monotonic) == expected


def test_attributes_become_sanitized_labels_and_service_name_becomes_job():
    prom = describe(
        "m",
        "",
        "gauge",
        False,
        "",
        '{"service.instance.id":"i-1","service.name":"enhancer","service.namespace":"audio"}',
        '{"2d":"x","audio.stage":"denoise","audio_stage":"other"}',
    )
    assert dict(prom.labels) == {
        "audio_stage": "denoise;other",  # two keys, one label: values joined in key order
        "instance": "i-1",
        "job": "audio/enhancer",
        "key_2d": "x",
    }
    assert label_name("ok_name") == "ok_name"


def test_an_explicit_histogram_point_becomes_cumulative_buckets_sum_and_count():
    prom = describe("d", "s", "histogram", True, "", '{"service.name":"e"}', "{}")
    point = {"value": 2.5, "count": 6, "bounds": [0.1, 1.0], "bucket_counts": [1, 3, 2]}
    got = [(name, labels.get("le"), value) for name, labels, value in samples(prom, point)]
    assert got == [
        ("d_seconds_bucket", "0.1", 1.0),
        ("d_seconds_bucket", "1.0", 4.0),
        ("d_seconds_bucket", "+Inf", 6.0),
        ("d_seconds_sum", None, 2.5),
        ("d_seconds_count", None, 6.0),
    ]


# -- /metrics of a receiver -------------------------------------------------------------------------


@pytest.fixture
def fed_receiver(start_receiver):
    return start_fed_receiver(start_receiver)


def test_metrics_page_has_self_metrics_aggregates_span_metrics_derived_and_slo_series(fed_receiver):
    reply = scrape(fed_receiver)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.text
    for needle in (
        "# TYPE otel_audio_receiver_requests_total counter",  # self-metrics, as before
        "# TYPE audio_queue_depth_max gauge",
        'audio_queue_depth_max{aggregation_window="1m",job="enhancer",service="enhancer"} 5.0',
        "# TYPE traces_span_metrics_calls_total counter",
        "# TYPE traces_span_metrics_duration_seconds histogram",
        'le="+Inf"',
        "# TYPE audio_derived_error_ratio gauge",
        "# TYPE audio_derived_realtime_factor_ratio gauge",
        "# HELP slo_error_budget_remaining_ratio",
        'slo_sli_ratio{slo="availability",window="30d"}',
    ):
        assert needle in text, needle


def test_metrics_page_needs_the_token_unless_public_metrics(start_receiver):
    receiver = start_receiver(server__auth__tokens=[TOKEN])
    assert scrape(receiver, token=None).status_code == 401
    assert scrape(receiver).status_code == 200
    public = start_receiver(
        data_dir=receiver.data_dir.parent / "public",
        server__auth__tokens=[TOKEN],
        server__auth__public_metrics=True,
    )
    assert scrape(public, token=None).status_code == 200


def test_two_renders_of_unchanged_data_are_byte_identical(fed_receiver):
    exposition = Exposition(fed_receiver.store, CollectorRegistry(), ExpositionConfig(cache_ms=0))
    now = time.time_ns()
    first = exposition.render(now)
    assert b"slo_objective_ratio" in first
    assert exposition.render(now + SECOND) == first


def test_a_page_is_reused_for_cache_ms_then_rebuilt(fed_receiver):
    registry = CollectorRegistry()
    level = Gauge("level", "A value that changes.", registry=registry)
    exposition = Exposition(fed_receiver.store, registry, ExpositionConfig(cache_ms=1000))
    now = time.time_ns()
    level.set(1)
    assert b"level 1.0" in exposition.render(now)
    level.set(2)
    assert b"level 1.0" in exposition.render(now + 999 * 10**6)
    assert b"level 2.0" in exposition.render(now + 1000 * 10**6)


def test_ingested_metrics_are_served_only_when_allow_listed(start_receiver):
    now = time.time_ns()
    counter = cumulative_counter("audio.pipeline.files", [(now - 60 * SECOND, now, 7.0)])
    plain = start_receiver(data_dir=None)
    grpc_export_metrics(plain.grpc_port, metrics_request("enhancer", [counter]))
    assert "audio_pipeline_files" not in scrape(plain, token=None).text
    listed = start_receiver(
        data_dir=plain.data_dir.parent / "listed", exposition__metrics=[r"audio\.pipeline\..*"]
    )
    grpc_export_metrics(listed.grpc_port, metrics_request("enhancer", [counter]))
    assert 'audio_pipeline_files_total{job="enhancer"} 7.0' in scrape(listed, token=None).text


def test_series_beyond_max_series_are_left_out_and_counted(start_receiver):
    receiver = start_fed_receiver(start_receiver, exposition__max_series=3, exposition__cache_ms=0)
    text = scrape(receiver).text
    dropped = re.search(r"^otel_audio_exposition_series_dropped (\S+)$", text, re.M)
    assert dropped and float(dropped.group(1)) > 0
    store_samples = [
        line
        for line in _without_self_metrics(text).splitlines()
        if line and not line.startswith("#") and "_bucket" not in line and "exposition" not in line
    ]
    assert len({line.split("{")[0].split(" ")[0].removesuffix("_sum").removesuffix("_count")
                + line.split("}")[0] for line in store_samples}) <= 3  # fmt: skip


def _without_self_metrics(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "otel_audio_receiver" not in line)


# -- a real Prometheus scraping it --------------------------------------------------------------------


def test_a_real_prometheus_scrapes_the_page_and_answers_promql_over_it(fed_receiver, tmp_path):
    prometheus = Prometheus(tmp_path / "prom")
    prometheus.scrape(f"127.0.0.1:{fed_receiver.api_port}", bearer_token=TOKEN)
    prometheus.start()
    try:

        def values(expr: str) -> dict[str, float]:
            deadline = time.monotonic() + 30
            while True:
                result = prometheus.query(expr, time.time())
                if result or time.monotonic() > deadline:
                    return {str(r["metric"]): float(r["value"][1]) for r in result}
                time.sleep(0.5)

        assert list(values('audio_queue_depth_avg{job="enhancer",aggregation_window="1m"}').values()) == [4.0]
        objective = values('slo_objective_ratio{slo="availability"}')
        assert list(objective.values()) == [pytest.approx(0.999)]
        assert values('up{job="otel-audio"}') and list(values('up{job="otel-audio"}').values()) == [1.0]
        accepted = values('sum(otel_audio_receiver_accepted_items_total{signal="traces"})')
        assert next(iter(accepted.values())) > 0
        calls = values('sum(traces_span_metrics_calls_total{job="enhancer"})')
        assert next(iter(calls.values())) > 0
    finally:
        prometheus.stop()
