"""The example enhancement pipeline: its signals, its denoiser, and the telemetry it records."""

from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.trace import StatusCode

import otel_audio
from examples import enhance_pipeline, speech, wav_io
from examples.denoise import WienerDenoiser, istft, stft
from examples.enhance_pipeline import STAGES, AudioDecodeError, EnhancementPipeline, Faults, run
from otel_audio import semconv

RATE = speech.SAMPLE_RATE


def noisy_speech(kind: str, snr_db: float, seed: int, seconds: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    clean = speech.speech(seconds, seed=seed)
    return clean, speech.mix_at_snr(clean, speech.noise(kind, clean.size, seed=1000 + seed), snr_db)


# --- signals ---------------------------------------------------------------------------------


def test_speech_is_reproducible_from_its_seed():
    assert np.array_equal(speech.speech(1.0, seed=3), speech.speech(1.0, seed=3))
    assert not np.array_equal(speech.speech(1.0, seed=3), speech.speech(1.0, seed=4))


def test_speech_has_pauses_and_the_requested_level():
    stats = otel_audio.signal_stats(speech.speech(3.0, seed=1), RATE)
    assert stats.rms_dbfs == pytest.approx(-23.0, abs=0.01)
    assert 0.2 < stats.silence_ratio < 0.7  # words with gaps, not a drone and not mostly silence


def test_voiced_speech_energy_lies_below_4_khz():
    clean = speech.speech(3.0, seed=2)
    power = np.abs(np.fft.rfft(clean)) ** 2
    freqs = np.fft.rfftfreq(clean.size, 1 / RATE)
    assert power[freqs < 4_000].sum() / power.sum() > 0.95


def test_short_speech_still_holds_a_word():
    assert otel_audio.signal_stats(speech.speech(0.5, seed=0), RATE).rms_dbfs == pytest.approx(-23.0)


def test_mix_at_snr_rejects_a_silent_signal():
    with pytest.raises(ValueError, match="all zeros"):
        speech.mix_at_snr(np.zeros(100), np.ones(100), 5.0)


def test_mix_at_snr_gives_the_requested_snr():
    clean, noisy = noisy_speech("white", 7.5, seed=0)
    assert speech.snr_db(clean, noisy) == pytest.approx(7.5, abs=1e-6)


def test_pink_noise_power_falls_as_one_over_frequency():
    n = 1 << 16
    power = np.abs(np.fft.rfft(speech.pink_noise(n, seed=0))) ** 2
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    band = (freqs > 50) & (freqs < 7_000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_unknown_noise_kind_is_rejected_with_the_accepted_kinds():
    with pytest.raises(ValueError, match="white, pink"):
        speech.noise("brown", 10)


# --- denoiser --------------------------------------------------------------------------------


def test_stft_round_trip_reconstructs_the_signal():
    clean = speech.speech(1.0, seed=5).astype(np.float64)
    assert np.max(np.abs(istft(stft(clean, 512, 128), 512, 128, clean.size) - clean)) < 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_denoiser_improves_snr_by_at_least_5_db_on_white_noise_at_5_db(seed):
    clean, noisy = noisy_speech("white", 5.0, seed)
    enhanced = WienerDenoiser()(noisy)
    assert enhanced.shape == noisy.shape
    assert speech.snr_db(clean, enhanced) - speech.snr_db(clean, noisy) >= 5.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_denoiser_improves_snr_on_pink_noise(seed):
    clean, noisy = noisy_speech("pink", 5.0, seed)
    assert speech.snr_db(clean, WienerDenoiser()(noisy)) - speech.snr_db(clean, noisy) >= 2.0


# --- pipeline telemetry ----------------------------------------------------------------------


def test_every_stage_span_is_a_child_of_the_pipeline_span_and_carries_the_audio_id(recorded):
    clean, noisy = noisy_speech("white", 5.0, seed=0)
    EnhancementPipeline().process(noisy, audio_id="call-7", reference=clean)
    root = recorded.span(enhance_pipeline.PIPELINE_NAME)
    assert root.attributes[semconv.AUDIO_ID] == "call-7"
    for stage in STAGES:
        span = recorded.span(stage)
        assert span.parent is not None and span.parent.span_id == root.context.span_id
        assert span.context.trace_id == root.context.trace_id
        assert span.attributes[semconv.AUDIO_ID] == "call-7"
        assert span.attributes[semconv.AUDIO_STAGE] == stage
        assert span.attributes[semconv.AUDIO_SAMPLE_RATE] == RATE


def test_validation_records_pesq_stoi_and_snr_of_the_enhanced_file(recorded):
    clean, noisy = noisy_speech("white", 5.0, seed=0)
    checked = EnhancementPipeline().process(noisy, reference=clean).validation

    assert checked.reference_based
    assert checked.snr_improvement_db >= 5.0
    assert checked.pesq_after > checked.pesq_before
    for metric, value in (
        (semconv.PESQ.name, checked.pesq_after),
        (semconv.STOI.name, checked.stoi_after),
        (semconv.SNR.name, checked.output_snr_db),
        (semconv.QUALITY_INDEX_METRIC.name, checked.quality_index),
    ):
        (point,) = recorded.points(metric)
        assert point.count == 1 and point.sum == pytest.approx(value)
        assert point.attributes[semconv.AUDIO_PIPELINE] == enhance_pipeline.PIPELINE_NAME
    span = recorded.span("validation")
    assert span.attributes[semconv.QUALITY_PESQ] == pytest.approx(checked.pesq_after)
    assert span.attributes[semconv.QUALITY_STOI] == pytest.approx(checked.stoi_after)
    assert recorded.span("quality_analysis").attributes[semconv.QUALITY_SNR] == pytest.approx(5.0)


def test_injected_errors_end_spans_in_error_and_count_audio_errors(recorded):
    faults = Faults(error_probability=1.0, error_stages=("enhancement",))
    results = run(3, seconds=1.0, faults=faults)

    kind = otel_audio.error_type(enhance_pipeline.EnhancementError())
    assert [r.error_type for r in results] == [kind] * 3
    failed = recorded.spans("enhancement")
    assert len(failed) == 3
    assert all(s.status.status_code is StatusCode.ERROR for s in failed)
    assert all(s.attributes[semconv.ERROR_TYPE] == kind for s in failed)
    assert recorded.spans("validation") == [] and recorded.spans("output") == []
    (point,) = recorded.points(semconv.ERRORS.name)
    assert point.value == 3
    assert point.attributes[semconv.ERROR_TYPE] == kind
    assert point.attributes[semconv.AUDIO_STAGE] == "enhancement"


def test_quality_drop_fault_lowers_the_output_snr(recorded):
    healthy = run(2, seconds=1.5, noises=("white",))
    dropped = run(2, seconds=1.5, noises=("white",), faults=Faults(quality_drop_probability=1.0))
    for good, bad in zip(healthy, dropped, strict=True):
        assert bad.faults == ["quality_drop"]
        assert bad.validation.output_snr_db < good.validation.output_snr_db - 10.0


def test_memory_leak_fault_keeps_the_memory_it_took(recorded):
    before = enhance_pipeline.leaked_bytes()
    run(2, seconds=0.5, faults=Faults(leak_bytes_per_file=1 << 12))
    assert enhance_pipeline.leaked_bytes() - before == 2 << 12


def test_a_wav_file_without_reference_is_validated_by_blind_snr(recorded, tmp_path):
    _, noisy = noisy_speech("white", 5.0, seed=0)
    source = tmp_path / "call-9.wav"
    wav_io.write_wav(source, noisy, RATE)
    result = EnhancementPipeline(output_dir=tmp_path / "out").process(source)

    assert result.audio_id == "call-9"
    assert not result.validation.reference_based
    assert result.validation.snr_improvement_db > 0
    enhanced, rate = wav_io.read_wav(result.output)
    assert rate == RATE and enhanced.shape == noisy.shape
    assert recorded.span("load_audio").attributes[semconv.AUDIO_FORMAT] == "wav"


def test_a_wav_file_at_another_rate_is_rejected_naming_both_rates(recorded, tmp_path):
    source = tmp_path / "call-8k.wav"
    wav_io.write_wav(source, np.zeros(8_000, dtype=np.float32), 8_000)
    with pytest.raises(AudioDecodeError, match=r"8000 Hz.*16000 Hz"):
        EnhancementPipeline().process(source)
    assert recorded.span("load_audio").status.status_code is StatusCode.ERROR


def test_wav_round_trip_without_soundfile_uses_16_bit_pcm(monkeypatch, tmp_path):
    monkeypatch.setattr(wav_io, "HAVE_SOUNDFILE", False)
    audio = speech.speech(0.5, seed=0)
    wav_io.write_wav(tmp_path / "x.wav", audio, RATE)
    back, rate = wav_io.read_wav(tmp_path / "x.wav")
    assert rate == RATE and back.dtype == np.float32
    assert np.max(np.abs(back - audio)) <= 1 / 32768
