"""An instrumented speech-enhancement pipeline: the kind of service otel-audio watches.

Every file goes through five stages, each an :func:`otel_audio.audio_stage` under one
:class:`otel_audio.audio_pipeline` span carrying the file's ``audio.id``:

``load_audio``        read a WAV file (:mod:`examples.wav_io`) or take a generated signal
``quality_analysis``  input signal statistics (:func:`otel_audio.signal_stats`) and, when the clean
                      reference is known, the input SNR
``enhancement``       the STFT Wiener denoiser of :mod:`examples.denoise`
``validation``        SNR improvement (against the clean reference when the input is synthetic,
                      else from the blind SNR estimate), PESQ and STOI when ``pesq``/``pystoi``
                      are installed (the ``[quality]`` extra), recorded with
                      :func:`otel_audio.record_quality`
``output``            write the enhanced audio as 16-bit WAV (to memory when no directory is given)

Faults can be switched on (:class:`Faults`) so that alerts have something to fire on: latency
spikes, a gain regression that drops quality, exceptions in a stage, and a memory leak.

Run it on generated speech with :func:`run`::

    results = run(20, faults=Faults(error_probability=0.1))
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from opentelemetry import trace

import otel_audio
from examples import speech
from examples.denoise import WienerDenoiser
from examples.wav_io import AudioDecodeError, read_wav, write_wav
from otel_audio import audio_pipeline, audio_stage, record_quality, semconv

# The reference-based scores come with the [quality] extra. They are imported here, not on
# first use, so the first file's validation span does not carry half a second of imports.
try:
    from pesq import PesqError
    from pesq import pesq as pesq_score
except ImportError:
    pesq_score = None
try:
    from pystoi import stoi as stoi_score
except ImportError:
    stoi_score = None
HAVE_PESQ = pesq_score is not None
HAVE_STOI = stoi_score is not None

PIPELINE_NAME = "speech_enhancement"
STAGES = ("load_audio", "quality_analysis", "enhancement", "validation", "output")


_leaked: list[np.ndarray] = []  # the memory-leak fault's never-evicted "cache", process-wide


def leaked_bytes() -> int:
    """Memory held by the injected leak in this process."""
    return sum(block.nbytes for block in _leaked)


def release_leaked() -> int:
    """Drop the injected leak's memory (the demo "restarts" the leaking worker); the bytes freed."""
    freed = leaked_bytes()
    _leaked.clear()
    return freed


class EnhancementError(RuntimeError):
    """The denoiser failed on a file."""


class OutputWriteError(OSError):
    """The enhanced audio could not be written."""


@dataclass(frozen=True)
class Faults:
    """Injected faults, each a per-file probability (or size), all off by default.

    Args:
        latency_spike_probability: chance that ``enhancement`` stalls for ``latency_spike_s``.
        latency_spike_s: length of a stall, in seconds.
        quality_drop_probability: chance of a gain regression in ``enhancement``: the output
            is amplified 20 dB and clips, so SNR, PESQ and STOI fall (and clipping shows).
        error_probability: chance that one of ``error_stages`` raises.
        error_stages: stages an injected error may come from (one chosen per failing file).
        leak_bytes_per_file: memory added to a process-wide list for every file, never released.
    """

    latency_spike_probability: float = 0.0
    latency_spike_s: float = 0.25
    quality_drop_probability: float = 0.0
    error_probability: float = 0.0
    error_stages: tuple[str, ...] = ("load_audio", "enhancement", "output")
    leak_bytes_per_file: int = 0

    @classmethod
    def demo(cls) -> Faults:
        """A mix that shows every fault within twenty files."""
        return cls(
            latency_spike_probability=0.15,
            quality_drop_probability=0.15,
            error_probability=0.15,
            leak_bytes_per_file=4 << 20,
        )


@dataclass
class Validation:
    """What the ``validation`` stage measured; scores are ``None`` when not measurable."""

    input_snr_db: float
    output_snr_db: float
    reference_based: bool
    pesq_before: float | None = None
    pesq_after: float | None = None
    stoi_before: float | None = None
    stoi_after: float | None = None
    quality_index: float | None = None

    @property
    def snr_improvement_db(self) -> float:
        return self.output_snr_db - self.input_snr_db


@dataclass
class FileResult:
    """One file's outcome: its scores, or the type of the error that stopped it."""

    audio_id: str
    noise: str | None = None
    validation: Validation | None = None
    output: str | None = None
    error_type: str | None = None
    faults: list[str] = field(default_factory=list)


class EnhancementPipeline:
    """The pipeline; one instance processes files one after another.

    Args:
        sample_rate: the rate the pipeline works at; inputs at another rate are rejected.
        output_dir: where enhanced WAV files go; ``None`` encodes them in memory only.
        denoiser: the enhancement algorithm.
        faults: fault injection (:class:`Faults`).
        seed: seeds the fault dice, so a run with faults is reproducible.
        name: the pipeline name (``audio.pipeline``).
    """

    def __init__(
        self,
        sample_rate: int = speech.SAMPLE_RATE,
        output_dir: str | os.PathLike[str] | None = None,
        denoiser: WienerDenoiser | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        name: str = PIPELINE_NAME,
    ) -> None:
        self.sample_rate = sample_rate
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.denoiser = denoiser or WienerDenoiser()
        self.faults = faults or Faults()
        self.name = name
        self._rng = np.random.default_rng(seed)
        self._planned: dict[str, bool] = {}
        self._failing_stage: str | None = None
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)

    def process(
        self,
        source: str | os.PathLike[str] | np.ndarray,
        *,
        audio_id: str | None = None,
        reference: np.ndarray | None = None,
    ) -> FileResult:
        """Run one file through every stage; exceptions propagate after being recorded."""
        self._plan_faults()
        if self.faults.leak_bytes_per_file:  # a cache that is filled and never evicted
            _leaked.append(np.ones(self.faults.leak_bytes_per_file // 8))
        audio_id = audio_id or (Path(source).stem if isinstance(source, (str, os.PathLike)) else None)
        result = FileResult(audio_id or "", faults=[k for k, on in self._planned.items() if on])
        described = source if isinstance(source, (str, os.PathLike)) else np.asarray(source)
        with audio_pipeline(audio_id, name=self.name, source=described, sample_rate=self.sample_rate) as run:
            result.audio_id = run.audio_id or ""
            audio = self.load_audio(source, sample_rate=self.sample_rate)
            self.quality_analysis(audio, self.sample_rate, reference)
            enhanced = self.enhancement(audio, self.sample_rate)
            result.validation = self.validation(enhanced, self.sample_rate, audio, reference)
            result.output = self.output(enhanced, self.sample_rate, result.audio_id)
        return result

    # --- stages ----------------------------------------------------------------------------

    @audio_stage("load_audio")
    def load_audio(self, source: str | os.PathLike[str] | np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float32 samples from a WAV path or an array, checked against ``sample_rate``."""
        self._maybe_fail("load_audio", AudioDecodeError("truncated RIFF header (injected fault)"))
        if isinstance(source, (str, os.PathLike)):
            audio, rate = read_wav(source)
            if rate != sample_rate:
                raise AudioDecodeError(
                    f"{os.fspath(source)}: sample rate {rate} Hz, the pipeline works at {sample_rate} Hz"
                )
        else:
            audio = np.asarray(source, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise AudioDecodeError(f"expected mono or (frames, channels) audio, got shape {audio.shape}")
        return audio

    @audio_stage("quality_analysis")
    def quality_analysis(
        self, audio: np.ndarray, sample_rate: int, reference: np.ndarray | None = None
    ) -> otel_audio.SignalStats | None:
        """Signal statistics of the input, and its SNR when the clean reference is known."""
        stats = otel_audio.signal_stats(audio, sample_rate)
        span = trace.get_current_span()
        if stats is not None and span.is_recording():
            span.set_attributes(stats.attributes())
            if reference is not None:
                span.set_attribute(semconv.QUALITY_SNR, speech.snr_db(reference, audio))
        return stats

    @audio_stage("enhancement")
    def enhancement(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Denoise; the place where the latency, quality and error faults strike."""
        if self._planned.get("latency_spike"):
            time.sleep(self.faults.latency_spike_s)
        self._maybe_fail("enhancement", EnhancementError("denoiser backend out of memory (injected fault)"))
        enhanced = self.denoiser(audio)
        if self._planned.get("quality_drop"):
            enhanced = np.clip(enhanced * 10.0, -1.0, 1.0)  # a +20 dB gain regression
        return enhanced

    @audio_stage("validation")
    def validation(
        self,
        enhanced: np.ndarray,
        sample_rate: int,
        noisy: np.ndarray,
        reference: np.ndarray | None = None,
    ) -> Validation:
        """Measure what the enhancement did and record it with :func:`otel_audio.record_quality`."""
        if reference is not None:
            result = Validation(speech.snr_db(reference, noisy), speech.snr_db(reference, enhanced), True)
            if HAVE_PESQ and sample_rate in (8_000, 16_000):
                result.pesq_before = _pesq(reference, noisy, sample_rate)
                result.pesq_after = _pesq(reference, enhanced, sample_rate)
            if HAVE_STOI:
                result.stoi_before = _stoi(reference, noisy, sample_rate)
                result.stoi_after = _stoi(reference, enhanced, sample_rate)
        else:  # production: no clean reference, so compare blind SNR estimates
            before = otel_audio.signal_stats(noisy, sample_rate)
            after = otel_audio.signal_stats(enhanced, sample_rate)
            result = Validation(
                before.snr_estimate_db if before else math.nan,
                after.snr_estimate_db if after else math.nan,
                False,
            )
        if math.isfinite(result.output_snr_db):
            result.quality_index = record_quality(
                pesq=result.pesq_after, stoi=result.stoi_after, snr=result.output_snr_db
            )
        return result

    @audio_stage("output")
    def output(self, enhanced: np.ndarray, sample_rate: int, audio_id: str) -> str:
        """Write 16-bit WAV; the path, or ``memory:<bytes>`` when there is no output directory."""
        self._maybe_fail("output", OutputWriteError(28, "No space left on device (injected fault)"))
        if self.output_dir is None:
            buffer = io.BytesIO()
            write_wav(buffer, enhanced, sample_rate)
            return f"memory:{buffer.tell()}"
        path = self.output_dir / f"{audio_id}.wav"
        write_wav(path, enhanced, sample_rate)
        return str(path)

    # --- faults ----------------------------------------------------------------------------

    def _plan_faults(self) -> None:
        """Roll every fault's dice once per file, before it starts."""
        f = self.faults
        self._planned = {
            "latency_spike": bool(self._rng.random() < f.latency_spike_probability),
            "quality_drop": bool(self._rng.random() < f.quality_drop_probability),
            "error": bool(self._rng.random() < f.error_probability) and bool(f.error_stages),
        }
        self._failing_stage = str(self._rng.choice(f.error_stages)) if self._planned["error"] else None

    def _maybe_fail(self, stage: str, exc: Exception) -> None:
        if self._failing_stage == stage:
            raise exc


def run(
    n_files: int = 20,
    *,
    seconds: float = 3.0,
    snr_db: tuple[float, float] = (0.0, 10.0),
    noises: Sequence[str] = ("white", "pink"),
    seed: int = 0,
    faults: Faults | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    sample_rate: int = speech.SAMPLE_RATE,
) -> list[FileResult]:
    """Enhance ``n_files`` generated noisy speech files; failed files are kept with their error type.

    File ``i`` is speech seeded from ``seed`` and ``i``, with noise ``noises[i % len(noises)]``
    at an SNR drawn uniformly from ``snr_db``; the same arguments give the same files.
    """
    pipeline = EnhancementPipeline(sample_rate, output_dir, faults=faults, seed=seed)
    rng = np.random.default_rng(seed)
    results = []
    for i in range(n_files):
        otel_audio.record_queue_size(n_files - i, pipeline=pipeline.name)
        kind = noises[i % len(noises)]
        clean = speech.speech(seconds, seed=seed * 100_003 + i, sample_rate=sample_rate)
        noise = speech.noise(kind, clean.size, seed=seed * 100_003 + i + 50_000)
        noisy = speech.mix_at_snr(clean, noise, float(rng.uniform(*snr_db)))
        audio_id = f"file-{seed}-{i:04d}"
        try:
            result = pipeline.process(noisy, audio_id=audio_id, reference=clean)
        except Exception as exc:
            result = FileResult(audio_id, error_type=otel_audio.error_type(exc), faults=["error"])
        result.noise = kind
        results.append(result)
    otel_audio.record_queue_size(0, pipeline=pipeline.name)
    return results


# --- reference-based scores -------------------------------------------------------------------


def _pesq(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float | None:
    """PESQ MOS-LQO (wide-band at 16 kHz), ``None`` when PESQ finds no utterance."""
    mode = "wb" if sample_rate == 16_000 else "nb"
    score = pesq_score(sample_rate, reference, degraded, mode, on_error=PesqError.RETURN_VALUES)
    return float(score) if score >= -0.5 else None


def _stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float | None:
    """STOI, ``None`` when the signal is too short to measure (pystoi then warns and returns 1e-5)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(stoi_score(reference, degraded, sample_rate))
    if caught or not math.isfinite(score):
        return None
    return min(max(score, 0.0), 1.0)


def summarise(results: Sequence[FileResult]) -> dict[str, Any]:
    """Means over the files that finished: SNR in and out, improvement, PESQ and STOI."""
    done = [r.validation for r in results if r.validation is not None]

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(present)) if present else None

    return {
        "files": len(results),
        "failed": sum(r.error_type is not None for r in results),
        "input_snr_db": mean([v.input_snr_db for v in done]),
        "output_snr_db": mean([v.output_snr_db for v in done]),
        "snr_improvement_db": mean([v.snr_improvement_db for v in done]),
        "pesq_before": mean([v.pesq_before for v in done]),
        "pesq_after": mean([v.pesq_after for v in done]),
        "stoi_before": mean([v.stoi_before for v in done]),
        "stoi_after": mean([v.stoi_after for v in done]),
    }
