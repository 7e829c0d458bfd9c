"""Values a pipeline knows only mid-flight or afterwards: quality scores, ratings, queue depth.

These complement the decorators. Each records a metric (with bounded attributes only) and,
where there is a span to tell, the same value on the current span, so a slow or bad file found
on a dashboard can be opened as a trace with its scores.
"""

from __future__ import annotations

import math
from typing import Any

from opentelemetry import trace

from otel_audio import instruments, semconv
from otel_audio.propagation import current_audio


def _metric_attributes(pipeline: str | None, stage: str | None = None) -> dict[str, str]:
    attrs: dict[str, str] = {}
    pipeline = pipeline or current_audio()[1]
    if pipeline:
        attrs[semconv.AUDIO_PIPELINE] = pipeline
    if stage:
        attrs[semconv.AUDIO_STAGE] = stage
    return attrs


def _check(name: str, value: float | None, low: float, high: float) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return number


def record_quality(
    pesq: float | None = None,
    stoi: float | None = None,
    snr: float | None = None,
    *,
    pipeline: str | None = None,
    stage: str | None = None,
) -> float | None:
    """Record quality scores of the current file; return the composite index when all three are given.

    Args:
        pesq: PESQ, -0.5 to 4.64 (raw P.862 score or MOS-LQO).
        stoi: STOI, 0 to 1.
        snr: SNR in dB (any finite value; the index saturates it at 0 and 30 dB).
        pipeline: metric attribute; defaults to the enclosing :class:`~otel_audio.audio_pipeline`.
        stage: metric attribute naming the stage that measured the scores, if wanted.

    Raises:
        ValueError: a score outside its range, naming the score; nothing is recorded then.
    """
    pesq = _check("pesq", pesq, -0.5, 4.64)
    stoi = _check("stoi", stoi, 0.0, 1.0)
    snr = _check("snr", snr, -math.inf, math.inf)
    attrs = _metric_attributes(pipeline, stage)
    inst = instruments.current()
    span_attrs: dict[str, Any] = {}
    for value, instrument, key in (
        (pesq, inst.pesq, semconv.QUALITY_PESQ),
        (stoi, inst.stoi, semconv.QUALITY_STOI),
        (snr, inst.snr, semconv.QUALITY_SNR),
    ):
        if value is not None:
            instrument.record(max(value, 0.0), attrs)  # histograms take no negatives
            span_attrs[key] = value
    index = None
    if pesq is not None and stoi is not None and snr is not None:
        index = semconv.quality_index(pesq, stoi, snr)
        inst.quality_index.record(index, attrs)
        span_attrs[semconv.QUALITY_INDEX] = index
    span = trace.get_current_span()
    if span.is_recording() and span_attrs:
        span.set_attributes(span_attrs)
    return index


def record_feedback(audio_id: str, rating: float, *, pipeline: str | None = None) -> None:
    """Record a user's satisfaction rating (1 to 5) of a processed file.

    Ratings arrive after the file's trace has ended, so the rating is recorded as a metric
    (without the file id) and as a short ``audio.feedback`` span carrying ``audio.id``, which
    joins it to the file's trace by id.

    Raises:
        ValueError: a rating outside [1, 5] or an empty id.
    """
    if not audio_id:
        raise ValueError("audio_id must be a non-empty string")
    value = _check("rating", rating, 1.0, 5.0)
    attrs = _metric_attributes(pipeline)
    inst = instruments.current()
    inst.feedback.record(value, attrs)
    span_attrs: dict[str, Any] = {semconv.AUDIO_ID: str(audio_id), semconv.FEEDBACK_RATING: value, **attrs}
    inst.tracer.start_span("audio.feedback", attributes=span_attrs).end()


def record_queue_size(size: int, *, pipeline: str | None = None) -> None:
    """Record how many files wait to be processed (a gauge: the last value wins)."""
    if size < 0:
        raise ValueError(f"queue size must be >= 0, got {size!r}")
    instruments.current().queue_size.set(size, _metric_attributes(pipeline))


def set_audio_attributes(**values: Any) -> None:
    """Set audio attributes on the current span explicitly, by short name.

    ``set_audio_attributes(sample_rate=48000, channels=2, format="flac")`` sets
    ``audio.sample_rate``, ``audio.channels`` and ``audio.format``; for values the decorators
    cannot see (raw PCM handed over as bytes, a codec decided mid-stage).
    """
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"audio.{key}": value for key, value in values.items()})
