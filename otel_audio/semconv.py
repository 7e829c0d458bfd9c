"""Audio semantic conventions: the attribute and metric names otel-audio emits, with units.

Names follow the OpenTelemetry naming rules: lower-case, dot-namespaced, units in UCUM
(``s``, ``Hz``, ``dB``, ``1`` for dimensionless, ``{file}`` for annotated counts), no unit or
``_total`` suffix in a metric name. Standard conventions are reused where they exist
(``error.type``, ``service.name``); everything audio-specific lives under ``audio.``.

Cardinality rule: per-request values (:data:`AUDIO_ID`, file paths) go on spans only. Metric
attributes are limited to :data:`METRIC_ATTRIBUTES`, which the views in :mod:`otel_audio.views`
enforce, so a metric never grows a series per file.

The table in ``docs/semantic-conventions.md`` is generated from this module
(``python -m otel_audio.semconv``) and a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# --- Span attributes -------------------------------------------------------------------------

AUDIO_ID = "audio.id"
"""Identifier of one audio file's journey through the pipeline. Spans only, never metrics."""
AUDIO_PIPELINE = "audio.pipeline"
"""Name of the pipeline (e.g. ``speech_enhancement``); bounded, allowed on metrics."""
AUDIO_STAGE = "audio.stage"
"""Pipeline stage (e.g. ``load_audio``, ``enhancement``); bounded, allowed on metrics."""
AUDIO_DURATION = "audio.duration"
"""Length of the audio handled, in seconds (s)."""
AUDIO_SAMPLE_RATE = "audio.sample_rate"
"""Sampling rate in hertz (Hz)."""
AUDIO_CHANNELS = "audio.channels"
"""Number of channels."""
AUDIO_FRAMES = "audio.frames"
"""Number of sample frames (samples per channel)."""
AUDIO_FORMAT = "audio.format"
"""Container format, lower case (``wav``, ``flac``, ``ogg``, ``pcm`` for raw buffers)."""
AUDIO_CODEC = "audio.codec"
"""Sample encoding (``pcm_s16le``, ``pcm_f32le``, ``float32`` for in-memory arrays)."""
AUDIO_BIT_DEPTH = "audio.bit_depth"
"""Bits per sample."""
AUDIO_REALTIME_FACTOR = "audio.realtime_factor"
"""Wall-clock processing time divided by audio duration; below 1 is faster than real time."""
AUDIO_DIRECTION = "audio.direction"
"""Whether signal metrics describe a stage's ``input`` or ``output`` audio."""

QUALITY_PESQ = "audio.quality.pesq"
"""PESQ score: raw P.862 (-0.5 to 4.5) or MOS-LQO (about 1 to 4.64)."""
QUALITY_STOI = "audio.quality.stoi"
"""Short-time objective intelligibility, 0 to 1."""
QUALITY_SNR = "audio.quality.snr"
"""Signal-to-noise ratio in decibels (dB)."""
QUALITY_INDEX = "audio.quality.index"
"""Composite quality index, 0 to 1: 0.4*PESQ/4.5 + 0.3*STOI + 0.3*clip(SNR/30, 0, 1)."""

SIGNAL_RMS = "audio.signal.rms"
"""RMS level in dB relative to full scale (dBFS)."""
SIGNAL_PEAK = "audio.signal.peak"
"""Peak level in dB relative to full scale (dBFS)."""
SIGNAL_CLIPPING_RATIO = "audio.signal.clipping_ratio"
"""Fraction of samples at or beyond full scale."""
SIGNAL_SILENCE_RATIO = "audio.signal.silence_ratio"
"""Fraction of 20 ms frames quieter than -60 dBFS."""
SIGNAL_SNR_ESTIMATE = "audio.signal.snr_estimate"
"""Blind SNR estimate in dB from the frame-energy distribution (no reference needed)."""

FEEDBACK_RATING = "audio.feedback.rating"
"""User satisfaction rating of a processed file, 1 (bad) to 5 (excellent)."""

ERROR_TYPE = "error.type"
"""Standard OpenTelemetry attribute: the exception's fully qualified class name."""

# Sampling: written by otel_audio.samplers, read by receivers to weight spans.
SAMPLING_PROBABILITY = "sampling.probability"
"""Probability with which the trace was head-sampled; a span's adjusted count is 1/p."""
SAMPLING_PROMOTED = "sampling.promoted"
"""True on spans the tail promoter exported although the head sampler dropped them."""
SAMPLING_PRIORITY = "sampling.priority"
"""Set on a span's start attributes (> 0) to force sampling, e.g. for a VIP customer."""

# Attributes a metric may carry; anything else is dropped by the views.
METRIC_ATTRIBUTES: frozenset[str] = frozenset(
    {
        AUDIO_PIPELINE,
        AUDIO_STAGE,
        AUDIO_FORMAT,
        AUDIO_SAMPLE_RATE,
        AUDIO_CHANNELS,
        AUDIO_DIRECTION,
        ERROR_TYPE,
    }
)

# --- Metrics ---------------------------------------------------------------------------------


class Kind(Enum):
    """Instrument kinds used by otel-audio."""

    HISTOGRAM = "histogram"  # distribution of per-call values
    COUNTER = "counter"  # monotonic sum
    GAUGE = "gauge"  # last value (synchronous gauge)


class Buckets(Enum):
    """How a histogram is aggregated by the views."""

    EXPONENTIAL = "exponential"  # base-2 exponential buckets: latency-like, wide dynamic range
    EXPLICIT = "explicit"  # fixed boundaries on a known scale: quality scores, ratings
    NONE = "none"  # not a histogram


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its name, kind, unit, description and how it is bucketed."""

    name: str
    kind: Kind
    unit: str
    description: str
    buckets: Buckets = Buckets.NONE
    boundaries: tuple[float, ...] = ()


STAGE_DURATION = MetricSpec(
    "audio.stage.duration",
    Kind.HISTOGRAM,
    "s",
    "Wall-clock time of one pipeline stage call.",
    Buckets.EXPONENTIAL,
)
PIPELINE_DURATION = MetricSpec(
    "audio.pipeline.duration",
    Kind.HISTOGRAM,
    "s",
    "Wall-clock time of one file's whole journey through the pipeline.",
    Buckets.EXPONENTIAL,
)
PROCESSED_DURATION = MetricSpec(
    "audio.processed.duration",
    Kind.COUNTER,
    "s",
    "Seconds of audio processed, per stage.",
)
FILES_PROCESSED = MetricSpec(
    "audio.pipeline.files",
    Kind.COUNTER,
    "{file}",
    "Files that finished the pipeline; error.type is set on failures.",
)
REALTIME_FACTOR = MetricSpec(
    "audio.stage.realtime_factor",
    Kind.HISTOGRAM,
    "1",
    "Processing time divided by audio duration, per stage call.",
    Buckets.EXPONENTIAL,
)
ERRORS = MetricSpec(
    "audio.errors",
    Kind.COUNTER,
    "{error}",
    "Exceptions raised by pipeline stages, by error.type and stage.",
)
QUEUE_SIZE = MetricSpec(
    "audio.queue.size",
    Kind.GAUGE,
    "{file}",
    "Files waiting to be processed.",
)
PESQ = MetricSpec(
    QUALITY_PESQ,
    Kind.HISTOGRAM,
    "1",
    "PESQ MOS-LQO of processed files.",
    Buckets.EXPLICIT,
    (1.0, 1.5, 2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5),
)
STOI = MetricSpec(
    QUALITY_STOI,
    Kind.HISTOGRAM,
    "1",
    "STOI intelligibility of processed files.",
    Buckets.EXPLICIT,
    (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.975, 1.0),
)
SNR = MetricSpec(
    QUALITY_SNR,
    Kind.HISTOGRAM,
    "dB",
    "SNR of processed files; values below 0 dB are recorded as 0.",
    Buckets.EXPLICIT,
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0),
)
QUALITY_INDEX_METRIC = MetricSpec(
    QUALITY_INDEX,
    Kind.HISTOGRAM,
    "1",
    "Composite quality index of processed files.",
    Buckets.EXPLICIT,
    (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0),
)
FEEDBACK = MetricSpec(
    FEEDBACK_RATING,
    Kind.HISTOGRAM,
    "1",
    "User satisfaction ratings, 1 to 5.",
    Buckets.EXPLICIT,
    (1.0, 2.0, 3.0, 4.0, 5.0),
)
# OpenTelemetry histograms take no negative values, so levels in dBFS (always <= 0) are
# recorded as headroom below full scale, and SNRs below 0 dB fall into the first bucket as 0.
_HEADROOM = (0.0, 1.0, 3.0, 6.0, 12.0, 20.0, 30.0, 40.0, 50.0, 60.0, 90.0)
_RATIOS = (0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
SIGNAL_RMS_METRIC = MetricSpec(
    "audio.signal.rms_headroom",
    Kind.HISTOGRAM,
    "dB",
    "How far the RMS level of stage audio sits below full scale (-audio.signal.rms).",
    Buckets.EXPLICIT,
    _HEADROOM,
)
SIGNAL_PEAK_METRIC = MetricSpec(
    "audio.signal.peak_headroom",
    Kind.HISTOGRAM,
    "dB",
    "How far the peak of stage audio sits below full scale (-audio.signal.peak).",
    Buckets.EXPLICIT,
    _HEADROOM,
)
SIGNAL_CLIPPING_METRIC = MetricSpec(
    SIGNAL_CLIPPING_RATIO,
    Kind.HISTOGRAM,
    "1",
    "Fraction of clipped samples in stage audio.",
    Buckets.EXPLICIT,
    _RATIOS,
)
SIGNAL_SILENCE_METRIC = MetricSpec(
    SIGNAL_SILENCE_RATIO,
    Kind.HISTOGRAM,
    "1",
    "Fraction of silent 20 ms frames in stage audio.",
    Buckets.EXPLICIT,
    _RATIOS,
)
SIGNAL_SNR_METRIC = MetricSpec(
    SIGNAL_SNR_ESTIMATE,
    Kind.HISTOGRAM,
    "dB",
    "Blind SNR estimate of stage audio; estimates below 0 dB are recorded as 0.",
    Buckets.EXPLICIT,
    (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0),
)

METRICS: tuple[MetricSpec, ...] = (
    STAGE_DURATION,
    PIPELINE_DURATION,
    PROCESSED_DURATION,
    FILES_PROCESSED,
    REALTIME_FACTOR,
    ERRORS,
    QUEUE_SIZE,
    PESQ,
    STOI,
    SNR,
    QUALITY_INDEX_METRIC,
    FEEDBACK,
    SIGNAL_RMS_METRIC,
    SIGNAL_PEAK_METRIC,
    SIGNAL_CLIPPING_METRIC,
    SIGNAL_SILENCE_METRIC,
    SIGNAL_SNR_METRIC,
)

_SPAN_ATTRIBUTES: tuple[tuple[str, str, str], ...] = (
    (AUDIO_ID, "string", ""),
    (AUDIO_PIPELINE, "string", ""),
    (AUDIO_STAGE, "string", ""),
    (AUDIO_DURATION, "double", "s"),
    (AUDIO_SAMPLE_RATE, "int", "Hz"),
    (AUDIO_CHANNELS, "int", ""),
    (AUDIO_FRAMES, "int", ""),
    (AUDIO_FORMAT, "string", ""),
    (AUDIO_CODEC, "string", ""),
    (AUDIO_BIT_DEPTH, "int", "bit"),
    (AUDIO_REALTIME_FACTOR, "double", "1"),
    (AUDIO_DIRECTION, "string", ""),
    (QUALITY_PESQ, "double", "1"),
    (QUALITY_STOI, "double", "1"),
    (QUALITY_SNR, "double", "dB"),
    (QUALITY_INDEX, "double", "1"),
    (SIGNAL_RMS, "double", "dB"),
    (SIGNAL_PEAK, "double", "dB"),
    (SIGNAL_CLIPPING_RATIO, "double", "1"),
    (SIGNAL_SILENCE_RATIO, "double", "1"),
    (SIGNAL_SNR_ESTIMATE, "double", "dB"),
    (FEEDBACK_RATING, "double", "1"),
    (ERROR_TYPE, "string", ""),
    (SAMPLING_PROBABILITY, "double", "1"),
    (SAMPLING_PROMOTED, "boolean", ""),
    (SAMPLING_PRIORITY, "int", ""),
)


def quality_index(pesq: float, stoi: float, snr: float) -> float:
    """Composite quality index in [0, 1]: 0.4*PESQ/4.5 + 0.3*STOI + 0.3*clip(SNR/30, 0, 1).

    The weights are the product's published definition; PESQ is scaled by its maximum (4.5)
    and SNR saturates at 30 dB, beyond which listeners hear no further improvement.
    """
    snr_term = min(max(snr / 30.0, 0.0), 1.0)
    return 0.4 * pesq / 4.5 + 0.3 * stoi + 0.3 * snr_term


def _docstrings() -> dict[str, str]:
    """Attribute docstrings, read from this module's source so the table has one source of truth."""
    import ast
    import inspect
    import itertools
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    docs: dict[str, str] = {}
    body = tree.body
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.value.value] = " ".join(str(following.value.value).split())
    return docs


def markdown_table() -> str:
    """The semantic-conventions tables for the docs, generated from the definitions above."""
    docs = _docstrings()
    lines = [
        "## Span attributes",
        "",
        "| attribute | type | unit | on metrics | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, typ, unit in _SPAN_ATTRIBUTES:
        on_metrics = "yes" if name in METRIC_ATTRIBUTES else "no"
        lines.append(f"| `{name}` | {typ} | {unit or '-'} | {on_metrics} | {docs.get(name, '')} |")
    lines += [
        "",
        "## Metrics",
        "",
        "| metric | instrument | unit | aggregation | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in METRICS:
        aggregation = {
            Buckets.EXPONENTIAL: "base-2 exponential histogram",
            Buckets.EXPLICIT: "explicit buckets " + ", ".join(f"{b:g}" for b in spec.boundaries),
            Buckets.NONE: "sum" if spec.kind is Kind.COUNTER else "last value",
        }[spec.buckets]
        lines.append(
            f"| `{spec.name}` | {spec.kind.value} | `{spec.unit}` | {aggregation} | {spec.description} |"
        )
    lines += [
        "",
        "Metric attributes are limited to: " + ", ".join(f"`{a}`" for a in sorted(METRIC_ATTRIBUTES)) + ".",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
