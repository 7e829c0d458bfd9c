"""otel-audio: OpenTelemetry for audio-enhancement pipelines.

The SDK plugin's public API::

    import otel_audio
    from otel_audio import audio_pipeline, audio_stage, record_quality

    otel_audio.configure(service_name="denoiser", endpoint="http://127.0.0.1:4317")

    @audio_stage("enhancement")
    def enhance(audio, sample_rate): ...

    with audio_pipeline(audio_id="call-0042"):
        clean = enhance(noisy, sample_rate=16_000)
        record_quality(pesq=3.9, stoi=0.93, snr=21.0)

``ProductionMonitor`` (:mod:`otel_audio.monitor`) is loaded on first access, and imports the
receiver only when an embedded monitor starts.

This package never imports the receiver side (``otel_audio.receiver``, ``.store``, ``.api``,
``.processors``); installing ``otel-audio`` without extras gives exactly this.
"""

from otel_audio.audio_info import AudioInfo, describe
from otel_audio.configure import Telemetry, configure
from otel_audio.decorators import audio_stage, error_type
from otel_audio.instruments import bind
from otel_audio.pipeline import audio_pipeline
from otel_audio.propagation import ContextExecutor, attached, extract, inject, wrap
from otel_audio.recording import record_feedback, record_quality, record_queue_size, set_audio_attributes
from otel_audio.semconv import quality_index
from otel_audio.signal import SignalStats, signal_stats
from otel_audio.version import __version__

__all__ = [
    "AudioInfo",
    "ContextExecutor",
    "ProductionMonitor",
    "SignalStats",
    "Telemetry",
    "__version__",
    "attached",
    "audio_pipeline",
    "audio_stage",
    "bind",
    "configure",
    "describe",
    "error_type",
    "extract",
    "inject",
    "quality_index",
    "record_feedback",
    "record_quality",
    "record_queue_size",
    "set_audio_attributes",
    "signal_stats",
    "wrap",
]


def __getattr__(name: str) -> object:
    if name == "ProductionMonitor":  # lazily: the SDK side stays light
        from otel_audio.monitor import ProductionMonitor

        return ProductionMonitor
    raise AttributeError(f"module 'otel_audio' has no attribute {name!r}")
