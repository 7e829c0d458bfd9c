"""Runs in a separate process: continues a trace from a carrier and reports what its span saw."""

from __future__ import annotations

import numpy as np

import otel_audio
from otel_audio import semconv
from tests.conftest import make_recorded


def run_stage_from_carrier(carrier: dict[str, str]) -> tuple[int, int, str | None, str | None]:
    """(trace id, parent span id, audio.id, audio.pipeline) of a stage span started in this process."""
    recorded = make_recorded()

    @otel_audio.audio_stage("enhancement")
    def enhance(audio, sample_rate):
        return audio

    with otel_audio.attached(carrier):
        enhance(np.zeros(16_000, dtype=np.float32), 16_000)
    span = recorded.span("enhancement")
    return (
        span.context.trace_id,
        span.parent.span_id,
        span.attributes.get(semconv.AUDIO_ID),
        span.attributes.get(semconv.AUDIO_PIPELINE),
    )
