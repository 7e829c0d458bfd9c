"""Cheap signal metrics from an audio buffer, computed in one vectorised pass over 20 ms frames.

Quality references (PESQ, STOI) need the clean signal, which production never has. These
metrics need nothing but the buffer, and still catch the failures that matter in production:
a gain bug (RMS, peak), clipping, a stage emitting silence, and an enhancer that stopped
removing noise (the blind SNR estimate).

The SNR estimate reads the distribution of frame energies: the quietest frames (10th
percentile) estimate the noise floor, the loudest half the speech-plus-noise level. It is a
coarse, reference-free indicator for drift, not a measurement to compare across datasets.

Computing them costs about 10-50 microseconds per second of 16 kHz mono audio, plus a fixed
~45 microseconds per call (``benchmarks/signal_cost.py``), so the decorators compute them for a
configurable fraction of calls (:func:`otel_audio.configure` ``signal_metrics`` and ``signal_sample_ratio``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_audio import semconv

FRAME_SECONDS = 0.02
SILENCE_DBFS = -60.0
CLIP_LEVEL = 0.999  # of full scale
_DEFAULT_RATE = 16_000
_EPS = 1e-20


@dataclass(frozen=True)
class SignalStats:
    """Level and health figures of one buffer; levels in dB relative to full scale."""

    rms_dbfs: float
    peak_dbfs: float
    clipping_ratio: float
    silence_ratio: float
    snr_estimate_db: float

    def attributes(self) -> dict[str, float]:
        """Span attributes under the semconv names."""
        return {
            semconv.SIGNAL_RMS: self.rms_dbfs,
            semconv.SIGNAL_PEAK: self.peak_dbfs,
            semconv.SIGNAL_CLIPPING_RATIO: self.clipping_ratio,
            semconv.SIGNAL_SILENCE_RATIO: self.silence_ratio,
            semconv.SIGNAL_SNR_ESTIMATE: self.snr_estimate_db,
        }

    def metric_values(self) -> dict[str, float]:
        """Metric name -> value; levels become headroom because histograms take no negatives."""
        return {
            semconv.SIGNAL_RMS_METRIC.name: -self.rms_dbfs,
            semconv.SIGNAL_PEAK_METRIC.name: -self.peak_dbfs,
            semconv.SIGNAL_CLIPPING_METRIC.name: self.clipping_ratio,
            semconv.SIGNAL_SILENCE_METRIC.name: self.silence_ratio,
            semconv.SIGNAL_SNR_METRIC.name: max(self.snr_estimate_db, 0.0),
        }


def signal_stats(audio: Any, sample_rate: int | None = None) -> SignalStats | None:
    """Compute :class:`SignalStats` for a 1-D or 2-D numeric buffer; ``None`` if it is empty.

    Integer buffers are scaled by their type's full scale, float buffers are taken as already
    in [-1, 1]. Channels are pooled: a frame's energy is the mean over all its samples.
    """
    samples = np.asarray(audio)
    if samples.size == 0 or samples.ndim not in (1, 2) or samples.dtype.kind not in "iuf":
        return None
    if samples.ndim == 2 and samples.shape[0] < samples.shape[1]:
        samples = samples.T  # (channels, frames) -> (frames, channels), a view
    full_scale, offset = _full_scale(samples.dtype)

    hi, lo = float(samples.max()) - offset, float(samples.min()) - offset
    peak = max(hi, -lo) / full_scale
    clip = CLIP_LEVEL * full_scale
    clipped = 0
    if peak >= CLIP_LEVEL:  # only scan again when clipping is possible at all
        clipped = int(np.count_nonzero((samples - offset >= clip) | (samples - offset <= -clip)))

    frame_len = max(int((sample_rate or _DEFAULT_RATE) * FRAME_SECONDS), 1)
    frames = samples.reshape(samples.shape[0], -1)
    n_frames = frames.shape[0] // frame_len
    width = frame_len * frames.shape[1]
    if n_frames == 0:
        n_frames, width = 1, frames.size
        framed = frames.reshape(1, -1)
    else:
        framed = frames[: n_frames * frame_len].reshape(n_frames, width)
    if offset:
        framed = framed.astype(np.float64) - offset
    energy = np.einsum("ij,ij->i", framed, framed, dtype=np.float64, casting="unsafe")
    energy /= width * full_scale * full_scale  # mean square per frame, full scale = 1

    mean_square = float(energy.mean())
    silent = float(np.count_nonzero(energy < 10 ** (SILENCE_DBFS / 10))) / n_frames
    return SignalStats(
        rms_dbfs=_db(mean_square),
        peak_dbfs=20.0 * float(np.log10(max(peak, _EPS))),
        clipping_ratio=clipped / samples.size,
        silence_ratio=silent,
        snr_estimate_db=_snr_estimate(energy),
    )


def _snr_estimate(energy: np.ndarray) -> float:
    """Loud-half level over the 10th-percentile floor, in dB, clamped to [-10, 100]."""
    if energy.size < 4:
        return 0.0
    noise, median = np.percentile(energy, (10, 50))
    loud = energy[energy >= median]
    active = float(loud.mean()) if loud.size else float(median)
    snr = _db(max(active - noise, _EPS)) - _db(max(noise, _EPS))
    return float(min(max(snr, -10.0), 100.0))


def _full_scale(dtype: np.dtype) -> tuple[float, float]:
    """Full-scale amplitude and DC offset of a sample type (unsigned PCM is offset binary)."""
    if dtype.kind == "f":
        return 1.0, 0.0
    bits = dtype.itemsize * 8
    if dtype.kind == "u":
        return float(2 ** (bits - 1)), float(2 ** (bits - 1))
    return float(2 ** (bits - 1)), 0.0


def _db(power: float) -> float:
    return 10.0 * float(np.log10(max(power, _EPS)))
