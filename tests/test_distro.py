"""Zero-code setup: `opentelemetry-instrument` applies otel-audio's distro, views, sampler, instrumentor."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from otel_audio import semconv
from otel_audio.distro import OtelAudioConfigurator, OtelAudioDistro
from otel_audio.instrumentation.soundfile import SoundfileInstrumentor
from tests.otlp_sink import attributes

SCRIPT = """
import numpy as np
import soundfile
from opentelemetry import trace
from otel_audio import audio_pipeline, audio_stage

@audio_stage("enhancement")
def enhance(audio, sample_rate):
    return audio

soundfile.write("{wav}", np.zeros(8000, dtype=np.float32), 16000)
with audio_pipeline(audio_id="zero-code", name="speech"):
    audio, rate = soundfile.read("{wav}")
    enhance(audio, rate)
print("SAMPLER", trace.get_tracer_provider().sampler.get_description())
"""


def instrument(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent(SCRIPT.format(wav=tmp_path / "in.wav")))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(env)
    bindir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bindir / "opentelemetry-instrument"), sys.executable, str(script)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_entry_points_are_registered():
    def load(group: str, name: str):
        (ep,) = entry_points(group=group, name=name)
        return ep.load()

    assert load("opentelemetry_distro", "otel_audio") is OtelAudioDistro
    assert load("opentelemetry_configurator", "otel_audio") is OtelAudioConfigurator
    assert load("opentelemetry_instrumentor", "soundfile") is SoundfileInstrumentor
    assert callable(load("opentelemetry_traces_sampler", "audio_adaptive"))


def test_opentelemetry_instrument_applies_views_sampler_and_soundfile_instrumentor(otlp_sink, tmp_path):
    done = instrument(
        tmp_path,
        OTEL_SERVICE_NAME="zero-code-pipeline",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_sink.grpc_endpoint,
        OTEL_LOGS_EXPORTER="none",
    )
    assert "SAMPLER AudioAdaptiveSampler" in done.stdout

    spans = {span.name: (resource, span) for resource, _scope, span in otlp_sink.spans()}
    assert {"speech", "enhancement", "soundfile.read", "soundfile.write"} <= set(spans)
    resource, root = spans["speech"]
    assert attributes(resource.attributes)["service.name"] == "zero-code-pipeline"
    assert attributes(root.attributes)[semconv.SAMPLING_PROBABILITY] == 1.0
    _resource, read = spans["soundfile.read"]
    assert read.parent_span_id == root.span_id
    assert attributes(read.attributes)[semconv.AUDIO_DURATION] == 0.5

    metrics = {metric.name: metric for _r, metric in otlp_sink.metric_list()}
    assert metrics[semconv.STAGE_DURATION.name].WhichOneof("data") == "exponential_histogram"


def test_sampler_chosen_by_name_through_the_entry_point(otlp_sink, tmp_path):
    done = instrument(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_sink.grpc_endpoint,
        OTEL_TRACES_SAMPLER="audio_adaptive",
        OTEL_TRACES_SAMPLER_ARG="target=3",
        OTEL_LOGS_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
    )
    sampler_line = next(line for line in done.stdout.splitlines() if line.startswith("SAMPLER"))
    assert "AudioAdaptiveSampler" in sampler_line
    assert "target=3/s" in sampler_line
