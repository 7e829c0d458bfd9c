"""soundfile reads and writes become spans with audio attributes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from opentelemetry.trace import StatusCode

from otel_audio import semconv
from otel_audio.instrumentation.soundfile import SoundfileInstrumentor


@pytest.fixture
def instrumented(recorded):
    instrumentor = SoundfileInstrumentor()
    instrumentor.instrument(tracer_provider=recorded.tracer_provider)
    yield recorded
    instrumentor.uninstrument()


def test_write_and_read_are_traced_with_audio_attributes(instrumented, tmp_path):
    path = tmp_path / "out.flac"
    soundfile.write(path, np.zeros((24_000, 2), dtype=np.float32), 48_000, subtype="PCM_16")
    data, rate = soundfile.read(path)

    write, read = instrumented.span("soundfile.write"), instrumented.span("soundfile.read")
    assert write.attributes["file.path"] == str(path)
    assert write.attributes[semconv.AUDIO_FORMAT] == "flac"
    assert write.attributes[semconv.AUDIO_CODEC] == "pcm_16"
    assert write.attributes[semconv.AUDIO_DURATION] == 0.5
    assert read.attributes[semconv.AUDIO_SAMPLE_RATE] == 48_000
    assert read.attributes[semconv.AUDIO_CHANNELS] == 2
    assert read.attributes[semconv.AUDIO_DURATION] == 0.5
    assert read.attributes[semconv.AUDIO_FORMAT] == "flac"
    assert data.shape == (24_000, 2) and rate == 48_000


def test_failed_read_marks_span_and_reraises(instrumented, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF garbage")
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(bad)
    span = instrumented.span("soundfile.read")
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[semconv.ERROR_TYPE] == "soundfile.LibsndfileError"


def test_uninstrument_restores_the_original_functions(recorded, tmp_path):
    instrumentor = SoundfileInstrumentor()
    instrumentor.instrument(tracer_provider=recorded.tracer_provider)
    instrumentor.uninstrument()
    soundfile.write(tmp_path / "x.wav", np.zeros(100), 8_000)
    assert recorded.spans() == []
