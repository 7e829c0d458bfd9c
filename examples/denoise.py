"""A short-time spectral denoiser in numpy: STFT, noise estimate, Wiener gain, overlap-add.

The classic statistical enhancer, small enough to read in one sitting:

1. **STFT** with a square-root periodic Hann window at 75 % overlap, for analysis and for
   synthesis, which reconstructs the input exactly when the gain is 1.
2. **Noise power spectrum** from the quietest frames: speech has pauses, and in the pauses the
   spectrum is the noise's. The mean power of the lowest-energy ``noise_quantile`` of frames
   estimates it (a one-shot form of minimum statistics, right for stationary noise).
3. **Gain**: the Wiener gain ``xi / (1 + xi)`` with the a-priori SNR ``xi`` from Ephraim and
   Malah's decision-directed rule, which smooths it over time and so avoids most of the
   "musical noise" of plain spectral subtraction; floored at ``gain_floor`` so that residual
   noise stays natural rather than gated.

No scipy: the example runs with the base install (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WienerDenoiser:
    """STFT-domain Wiener filter with a decision-directed a-priori SNR.

    Args:
        n_fft: frame length in samples (512 = 32 ms at 16 kHz).
        hop: frame step; ``n_fft // 4`` for the window's exact reconstruction.
        noise_quantile: fraction of lowest-energy frames that estimate the noise spectrum.
        smoothing: decision-directed weight of the previous frame's clean estimate (0.9-0.99).
        gain_floor: lowest gain, linear (0.1 = -20 dB).
        oversubtraction: multiplies the noise estimate; above 1 removes more noise and more speech.
    """

    n_fft: int = 512
    hop: int = 128
    noise_quantile: float = 0.1
    smoothing: float = 0.98
    gain_floor: float = 0.1
    oversubtraction: float = 1.0

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """The denoised signal, same length and dtype as ``audio`` (1-D)."""
        samples = np.asarray(audio, dtype=np.float64)
        if samples.ndim != 1:
            raise ValueError(f"expected mono audio (1-D), got shape {samples.shape}")
        spectrum = stft(samples, self.n_fft, self.hop)
        power = np.abs(spectrum) ** 2
        noise = self.oversubtraction * noise_psd(power, self.noise_quantile)
        gain = wiener_gain(power, noise, self.smoothing, self.gain_floor)
        out = istft(spectrum * gain, self.n_fft, self.hop, samples.size)
        return out.astype(audio.dtype if np.asarray(audio).dtype.kind == "f" else np.float32)


def _window(n_fft: int) -> np.ndarray:
    return np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))


def _frame_index(n_frames: int, n_fft: int, hop: int) -> np.ndarray:
    return np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]


def stft(samples: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Frames x bins complex spectrum; the signal is padded by ``n_fft`` on both sides."""
    padded = np.pad(samples, (n_fft, n_fft + hop))
    n_frames = 1 + (padded.size - n_fft) // hop
    return np.fft.rfft(padded[_frame_index(n_frames, n_fft, hop)] * _window(n_fft), axis=1)


def istft(spectrum: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`stft`, cut back to ``length`` samples."""
    if n_fft % hop:
        raise ValueError(f"hop ({hop}) must divide n_fft ({n_fft})")
    frames = np.fft.irfft(spectrum, n=n_fft, axis=1) * _window(n_fft)
    n_frames, ratio = frames.shape[0], n_fft // hop
    out = np.zeros((n_frames + ratio - 1) * hop)
    blocks = frames.reshape(n_frames, ratio, hop)
    for r in range(ratio):  # overlap-add one hop-sized block of every frame at a time
        out[r * hop : r * hop + n_frames * hop] += blocks[:, r, :].reshape(-1)
    out /= ratio / 2.0  # the squared window sums to n_fft / (2 * hop) at every sample
    return out[n_fft : n_fft + length]


def noise_psd(power: np.ndarray, quantile: float) -> np.ndarray:
    """Mean power spectrum of the quietest ``quantile`` of frames (at least one frame)."""
    energy = power.sum(axis=1)
    count = max(1, round(quantile * energy.size))
    quietest = np.argsort(energy)[:count]
    return power[quietest].mean(axis=0) + 1e-12


def wiener_gain(power: np.ndarray, noise: np.ndarray, smoothing: float, floor: float) -> np.ndarray:
    """Per-frame, per-bin Wiener gain with the decision-directed a-priori SNR."""
    posterior = power / noise  # a-posteriori SNR, gamma
    gain = np.empty_like(power)
    previous = np.ones(power.shape[1])  # |S_hat|^2 / noise of the previous frame
    for t in range(power.shape[0]):
        prior = smoothing * previous + (1.0 - smoothing) * np.maximum(posterior[t] - 1.0, 0.0)
        g = np.maximum(prior / (1.0 + prior), floor)
        gain[t] = g
        previous = g * g * posterior[t]
    return gain
