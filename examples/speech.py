"""Speech-like test signals and noise, generated with numpy alone, reproducible from a seed.

Real speech corpora are large and licensed; an enhancement pipeline's telemetry only needs
signals that behave like speech where a denoiser looks: harmonic voiced sounds with a moving
pitch, formant-shaped spectra, noisy fricatives, and pauses in which the noise floor shows.

- **Voiced syllables** are sums of harmonics of a fundamental F0 (100-250 Hz per talker) with
  slow intonation, 5 Hz vibrato and smoothed jitter. Each harmonic's amplitude is the magnitude
  of a cascade of three formant resonances (a vowel) at that harmonic's instantaneous frequency,
  times a glottal tilt; harmonics stop at 4 kHz. This builds the spectrum directly, so no
  sample-by-sample IIR loop is needed.
- **Fricatives** are white noise shaped in the frequency domain to a high band.
- **Timing**: syllables of 120-300 ms with raised-cosine envelopes, gaps of 20-60 ms inside
  words and 100-300 ms between words, and silence at both ends (0.3 s, less for short signals).

``mix_at_snr`` scales a noise to a wanted SNR over the whole clean signal; ``white_noise`` and
``pink_noise`` (1/f power, shaped through the FFT) are the noises.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16_000
MAX_HARMONIC_HZ = 4_000.0

# (F1, F2, F3) in Hz of a few vowels, adult averages (Peterson & Barney).
VOWELS: dict[str, tuple[float, float, float]] = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
_BANDWIDTHS = (90.0, 110.0, 170.0)  # formant bandwidths in Hz


def _formant_gain(freq: np.ndarray, formants: tuple[float, float, float]) -> np.ndarray:
    """Magnitude of a cascade of second-order resonances (unit gain at 0 Hz) at ``freq``."""
    gain = np.ones_like(freq)
    for centre, bandwidth in zip(formants, _BANDWIDTHS, strict=True):
        gain *= centre**2 / np.sqrt((centre**2 - freq**2) ** 2 + (bandwidth * freq) ** 2)
    return gain


def _smooth_noise(rng: np.random.Generator, n: int, sample_rate: int, corner_hz: float) -> np.ndarray:
    """Unit-variance noise low-passed at ``corner_hz`` (for jitter and shimmer)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum *= 1.0 / (1.0 + (freqs / corner_hz) ** 4)
    out = np.fft.irfft(spectrum, n)
    return out / (out.std() + 1e-12)


def _envelope(n: int, sample_rate: int, attack_s: float = 0.025, release_s: float = 0.04) -> np.ndarray:
    """A raised-cosine attack and release around a flat middle."""
    env = np.ones(n)
    attack = min(int(attack_s * sample_rate), n // 2)
    release = min(int(release_s * sample_rate), n // 2)
    if attack:
        env[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    if release:
        env[n - release :] = 0.5 + 0.5 * np.cos(np.pi * np.arange(release) / release)
    return env


def voiced(
    rng: np.random.Generator,
    seconds: float,
    f0: float,
    vowel: str,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """One voiced syllable: a formant-shaped harmonic series with intonation, vibrato and jitter."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    glide = 1.0 + rng.uniform(-0.12, 0.08) * t / max(seconds, 1e-3)  # rising or falling pitch
    vibrato = 1.0 + 0.012 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * t + rng.uniform(0, 2 * np.pi))
    jitter = 1.0 + 0.01 * _smooth_noise(rng, n, sample_rate, 30.0)
    f0_track = f0 * glide * vibrato * jitter
    phase = 2 * np.pi * np.cumsum(f0_track) / sample_rate
    formants = VOWELS[vowel]
    out = np.zeros(n)
    for k in range(1, int(MAX_HARMONIC_HZ / f0) + 1):
        freq = k * f0_track
        amplitude = _formant_gain(freq, formants) / k  # glottal source falls about 6 dB/octave
        amplitude[freq > MAX_HARMONIC_HZ] = 0.0
        out += amplitude * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    shimmer = 1.0 + 0.05 * _smooth_noise(rng, n, sample_rate, 20.0)
    return out * shimmer * _envelope(n, sample_rate)


def fricative(rng: np.random.Generator, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """An unvoiced consonant: noise shaped to a band between about 3 and 7 kHz."""
    n = int(seconds * sample_rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    centre = rng.uniform(4_000.0, 5_500.0)
    spectrum *= np.exp(-0.5 * ((freqs - centre) / 1_200.0) ** 2)
    return np.fft.irfft(spectrum, n) * _envelope(n, sample_rate, 0.01, 0.02)


def speech(
    seconds: float = 3.0,
    *,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
    level_dbfs: float = -23.0,
) -> np.ndarray:
    """A speech-like float32 signal of about ``seconds``, with pauses, at an RMS of ``level_dbfs``.

    Args:
        seconds: target length; the signal is filled with words until it is reached.
        seed: the same seed gives the same signal, sample for sample.
        sample_rate: in Hz; 16 kHz by default.
        level_dbfs: RMS level of the whole signal, pauses included.
    """
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    f0 = rng.uniform(100.0, 250.0)  # one talker per signal
    quiet = min(0.3, 0.1 * seconds)  # leading and trailing silence, shorter for short signals
    pieces: list[np.ndarray] = [np.zeros(int(rng.uniform(0.8, 1.2) * quiet * sample_rate))]
    length = pieces[0].size
    lead_out = int(quiet * sample_rate)
    while length < total - lead_out or len(pieces) == 1:  # at least one word
        for syllable in range(int(rng.integers(1, 4))):
            if syllable:
                pieces.append(np.zeros(int(rng.uniform(0.02, 0.06) * sample_rate)))
            if rng.random() < 0.3:
                pieces.append(0.25 * fricative(rng, rng.uniform(0.06, 0.12), sample_rate))
            vowel = str(rng.choice(list(VOWELS)))
            pieces.append(voiced(rng, rng.uniform(0.12, 0.3), f0 * rng.uniform(0.9, 1.1), vowel, sample_rate))
        pieces.append(np.zeros(int(rng.uniform(0.1, 0.3) * sample_rate)))
        length = sum(p.size for p in pieces)
    signal = np.concatenate(pieces)[:total]
    if signal.size < total:
        signal = np.pad(signal, (0, total - signal.size))
    if lead_out:
        signal[-lead_out:] = 0.0  # end in silence, as a recording does
    return _at_level(signal, level_dbfs).astype(np.float32)


def white_noise(n: int, *, seed: int = 0) -> np.ndarray:
    """Gaussian white noise, unit variance, float32."""
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def pink_noise(n: int, *, seed: int = 0) -> np.ndarray:
    """Pink (1/f power) noise, unit variance, float32: white noise shaped through the FFT."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]  # keep DC finite; it is removed below
    spectrum /= np.sqrt(freqs)
    spectrum[0] = 0.0
    out = np.fft.irfft(spectrum, n)
    return (out / out.std()).astype(np.float32)


NOISES = {"white": white_noise, "pink": pink_noise}


def noise(kind: str, n: int, *, seed: int = 0) -> np.ndarray:
    """Noise of a named kind (``white`` or ``pink``)."""
    try:
        make = NOISES[kind]
    except KeyError:
        raise ValueError(f"unknown noise kind {kind!r}; accepted: {', '.join(NOISES)}") from None
    return make(n, seed=seed)


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean`` plus ``noise`` scaled so the mixture's SNR over the whole signal is ``snr_db``.

    The noise is repeated or cut to the clean signal's length. The result keeps the clean
    signal's dtype when it is floating point.
    """
    clean = np.asarray(clean)
    noise = np.resize(np.asarray(noise, dtype=np.float64), clean.shape)
    clean_power = float(np.mean(np.square(clean, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise)))
    if clean_power == 0.0 or noise_power == 0.0:
        raise ValueError("clean signal or noise is all zeros; no SNR can be set between them")
    scale = np.sqrt(clean_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    mixed = clean.astype(np.float64) + scale * noise
    return mixed.astype(clean.dtype if clean.dtype.kind == "f" else np.float64)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """SNR of ``estimate`` against ``reference`` in dB: reference power over error power."""
    reference = np.asarray(reference, dtype=np.float64)
    error = np.asarray(estimate, dtype=np.float64)[: reference.size] - reference[: len(estimate)]
    signal_power = float(np.sum(np.square(reference[: len(estimate)])))
    error_power = float(np.sum(np.square(error)))
    return 10.0 * float(np.log10(max(signal_power, 1e-20) / max(error_power, 1e-20)))


def _at_level(signal: np.ndarray, level_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(signal))))
    return signal * (10.0 ** (level_dbfs / 20.0) / rms) if rms > 0 else signal
