"""Signal metrics on buffers with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from otel_audio.signal import signal_stats

RATE = 16_000


def sine(amplitude: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return amplitude * np.sin(2 * np.pi * 440 * t)


def test_sine_levels():
    stats = signal_stats(sine(0.5), RATE)
    assert stats.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert stats.peak_dbfs == pytest.approx(20 * np.log10(0.5), abs=0.01)
    assert stats.clipping_ratio == 0.0
    assert stats.silence_ratio == 0.0


def test_int16_matches_float():
    x = sine(0.25)
    as_int = np.round(x * 32768).astype(np.int16)
    a, b = signal_stats(x, RATE), signal_stats(as_int, RATE)
    assert b.rms_dbfs == pytest.approx(a.rms_dbfs, abs=0.01)
    assert b.peak_dbfs == pytest.approx(a.peak_dbfs, abs=0.01)


def test_unsigned_8bit_is_offset_binary():
    x = sine(0.5)
    as_u8 = np.round(x * 127 + 128).astype(np.uint8)
    assert signal_stats(as_u8, RATE).rms_dbfs == pytest.approx(-9.03, abs=0.1)


def test_clipping_ratio_counts_samples_at_full_scale():
    x = np.clip(sine(2.0), -1.0, 1.0)
    expected = np.count_nonzero(np.abs(x) >= 0.999) / x.size
    stats = signal_stats(x, RATE)
    assert stats.clipping_ratio == pytest.approx(expected)
    assert stats.clipping_ratio > 0.5
    assert stats.peak_dbfs == pytest.approx(0.0, abs=1e-6)


def test_silence_ratio_of_half_silent_buffer():
    x = np.concatenate([sine(0.5, 0.5), np.zeros(RATE // 2)])
    assert signal_stats(x, RATE).silence_ratio == pytest.approx(0.5)


def test_stereo_in_both_layouts_gives_same_stats():
    x = np.stack([sine(0.5), sine(0.25)], axis=1)
    a, b = signal_stats(x, RATE), signal_stats(x.T, RATE)
    assert a == b


def test_snr_estimate_falls_as_noise_rises():
    rng = np.random.default_rng(0)
    # Speech-like: bursts of tone separated by pauses.
    burst = np.concatenate([sine(0.5, 0.3), np.zeros(int(0.2 * RATE))] * 4)
    estimates = [
        signal_stats(burst + rng.normal(0, noise, burst.size), RATE).snr_estimate_db
        for noise in (0.001, 0.01, 0.1)
    ]
    assert estimates[0] > estimates[1] > estimates[2]
    assert estimates[0] > 30
    assert estimates[2] < 15


def test_empty_or_non_numeric_buffers_give_none():
    assert signal_stats(np.zeros(0), RATE) is None
    assert signal_stats(np.array(["a", "b"]), RATE) is None
    assert signal_stats(np.zeros((2, 2, 2)), RATE) is None
