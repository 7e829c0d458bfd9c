"""configure() in a fresh process, exporting over real OTLP gRPC and HTTP to a local endpoint.

Each test runs its pipeline in a subprocess because OpenTelemetry's global providers can be
set only once per process, exactly as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from otel_audio import semconv
from tests.otlp_sink import attributes

ROOT = Path(__file__).resolve().parents[1]

PIPELINE = """
import json, logging
import numpy as np
import otel_audio
from otel_audio import audio_pipeline, audio_stage

@audio_stage("enhancement")
def enhance(audio, sample_rate):
    return audio

def run_pipeline(n=3):
    for i in range(n):
        with audio_pipeline(audio_id=f"file-{i}", name="speech"):
            enhance(np.zeros(16000, dtype=np.float32), 16000)
            logging.getLogger("pipeline").warning("enhanced file-%d", i)
"""


def run(code: str, **env: str) -> dict:
    """Run PIPELINE + code in a fresh interpreter; return the JSON it prints last."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(env)
    clean["PYTHONPATH"] = str(ROOT)
    script = textwrap.dedent(PIPELINE) + textwrap.dedent(code)
    done = subprocess.run(
        [sys.executable, "-c", script], env=clean, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def resource_of(sink, span_name: str) -> dict:
    for resource, _scope, span in sink.spans():
        if span.name == span_name:
            return attributes(resource.attributes)
    raise AssertionError(f"no span {span_name!r} received")


def test_spans_metrics_and_logs_arrive_over_grpc(otlp_sink):
    run(
        f"""
        t = otel_audio.configure("denoiser", endpoint="{otlp_sink.grpc_endpoint}", environment="test",
                                 service_version="1.2.3")
        run_pipeline()
        assert t.force_flush()
        """
    )
    names = [span.name for _r, _s, span in otlp_sink.spans()]
    assert names.count("enhancement") == 3 and names.count("speech") == 3
    resource = resource_of(otlp_sink, "enhancement")
    assert resource["service.name"] == "denoiser"
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment.name"] == "test"
    assert resource["telemetry.distro.name"] == "otel-audio"

    metrics = {metric.name: metric for _r, metric in otlp_sink.metric_list()}
    duration = metrics[semconv.STAGE_DURATION.name]
    assert duration.WhichOneof("data") == "exponential_histogram"
    assert sum(p.count for p in duration.exponential_histogram.data_points) == 3
    for metric in metrics.values():
        for point in getattr(metric, metric.WhichOneof("data")).data_points:
            assert semconv.AUDIO_ID not in attributes(point.attributes)

    logs = [r for r in otlp_sink.log_records() if r.body.string_value.startswith("enhanced file-")]
    assert len(logs) == 3
    span_trace_ids = {span.trace_id for _r, _s, span in otlp_sink.spans()}
    assert all(r.trace_id in span_trace_ids for r in logs)


def test_http_protobuf_with_headers(otlp_sink):
    run(
        f"""
        t = otel_audio.configure("denoiser", endpoint="{otlp_sink.http_endpoint}", protocol="http/protobuf",
                                 headers={{"authorization": "Bearer s3cret"}})
        run_pipeline(1)
        assert t.force_flush()
        """
    )
    assert otlp_sink.wait_for(lambda: any(s.name == "enhancement" for _r, _x, s in otlp_sink.spans()))
    assert any(h.get("authorization") == "Bearer s3cret" for h in otlp_sink.headers)
    assert otlp_sink.metric_list()


def test_environment_variables_win_over_arguments(otlp_sink):
    run(
        """
        t = otel_audio.configure("from-code", endpoint="http://127.0.0.1:9", metric_export_interval_s=5)
        run_pipeline(1)
        assert t.force_flush()
        reader = t.metric_readers[0]
        print(json.dumps({"interval_ms": reader._export_interval_millis}))
        """,
        OTEL_SERVICE_NAME="from-env",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_sink.grpc_endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="250",
        OTEL_RESOURCE_ATTRIBUTES="team=audio",
    )
    resource = resource_of(otlp_sink, "enhancement")
    assert resource["service.name"] == "from-env"
    assert resource["team"] == "audio"


def test_metric_export_interval_defaults_to_one_second():
    out = run(
        """
        t = otel_audio.configure("x", span_exporter=None)
        reader = t.metric_readers[0]
        print(json.dumps({"interval_ms": reader._export_interval_millis}))
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
    )
    assert out["interval_ms"] == 1000


def test_metric_export_interval_from_environment():
    out = run(
        """
        t = otel_audio.configure("x")
        reader = t.metric_readers[0]
        print(json.dumps({"interval_ms": reader._export_interval_millis}))
        """,
        OTEL_METRIC_EXPORT_INTERVAL="250",
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    assert out["interval_ms"] == 250


def test_second_call_returns_the_first_configuration():
    out = run(
        """
        from opentelemetry import trace
        a = otel_audio.configure("first")
        b = otel_audio.configure("second", target_traces_per_second=99)
        print(json.dumps({"same": a is b, "global": trace.get_tracer_provider() is a.tracer_provider,
                          "service": a.tracer_provider.resource.attributes["service.name"]}))
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    assert out == {"same": True, "global": True, "service": "first"}


def test_default_sampler_is_adaptive_with_tail_promotion_and_records_probability(otlp_sink):
    out = run(
        f"""
        t = otel_audio.configure("s", endpoint="{otlp_sink.grpc_endpoint}", target_traces_per_second=50)
        run_pipeline(2)
        assert t.force_flush()
        processors = t.span_processors
        print(json.dumps({{"sampler": t.sampler.get_description(),
                          "processors": [type(p).__name__ for p in processors]}}))
        """,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    assert "target=50/s" in out["sampler"]
    assert out["processors"] == ["TailPromotionProcessor"]
    roots = [span for _r, _s, span in otlp_sink.spans() if span.name == "speech"]
    assert len(roots) == 2
    for span in roots:
        assert attributes(span.attributes)[semconv.SAMPLING_PROBABILITY] == 1.0
        assert span.trace_state == "ot=th:0"


def test_sampler_named_by_environment_wins(otlp_sink):
    out = run(
        f"""
        t = otel_audio.configure("s", endpoint="{otlp_sink.grpc_endpoint}")
        run_pipeline(2)
        assert t.force_flush()
        print(json.dumps({{"sampler": t.sampler.get_description()}}))
        """,
        OTEL_TRACES_SAMPLER="always_off",
        OTEL_LOGS_EXPORTER="none",
    )
    assert out["sampler"] == "AlwaysOffSampler"
    assert otlp_sink.spans() == []
    # Sampling thins traces, never metrics.
    names = {metric.name for _r, metric in otlp_sink.metric_list()}
    assert semconv.STAGE_DURATION.name in names


def test_sdk_disabled_configures_nothing_and_decorators_still_run():
    out = run(
        """
        t = otel_audio.configure("s")
        run_pipeline(1)
        print(json.dumps({"providers": [t.tracer_provider, t.meter_provider, t.logger_provider]}))
        """,
        OTEL_SDK_DISABLED="true",
    )
    assert out == {"providers": [None, None, None]}


def test_unknown_exporter_name_is_a_clear_error():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(PYTHONPATH=str(ROOT), OTEL_TRACES_EXPORTER="zipkin_json_typo")
    done = subprocess.run(
        [sys.executable, "-c", "import otel_audio; otel_audio.configure('s')"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "no opentelemetry_traces_exporter entry point named 'zipkin_json_typo'" in done.stderr


def test_system_metrics_record_the_process_and_host_under_the_otel_conventions():
    out = run(
        """
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        reader = InMemoryMetricReader()
        otel_audio.configure("x", metric_readers=[reader], system_metrics=True)
        data = reader.get_metrics_data()
        scopes = [sm for rm in data.resource_metrics for sm in rm.scope_metrics]
        names = sorted({m.name for sm in scopes for m in sm.metrics})
        print(json.dumps({"names": names}))
        """,
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    names = set(out["names"])
    assert {"system.cpu.time", "system.memory.usage"} <= names
    assert any(name.startswith(("process.cpu", "cpython.gc", "process.memory")) for name in names)
