"""Meter views: histogram shapes and attribute allow-lists for every otel-audio metric.

One view per instrument, because the SDK emits one stream per matching view: a second view
matching the same instrument (say, one for buckets and one for attributes) would double it.

- Durations and real-time factors get the base-2 exponential histogram: it covers
  microseconds to minutes with a bounded relative error (about 4% at the default 160 buckets
  over that range), and receivers merge such histograms exactly across series and windows.
- Quality scores and ratings live on known scales, so they get explicit buckets at the
  boundaries people set thresholds at (PESQ 3.5, STOI 0.8, ...).
- Every view keeps only :data:`otel_audio.semconv.METRIC_ATTRIBUTES`, so per-file values
  such as ``audio.id`` can never become metric series, whatever a caller passes.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)

from otel_audio import semconv
from otel_audio.instruments import SCOPE
from otel_audio.semconv import Buckets, MetricSpec

EXPONENTIAL_MAX_SIZE = 160


def _view(spec: MetricSpec) -> View:
    aggregation = None
    if spec.buckets is Buckets.EXPONENTIAL:
        aggregation = ExponentialBucketHistogramAggregation(max_size=EXPONENTIAL_MAX_SIZE)
    elif spec.buckets is Buckets.EXPLICIT:
        aggregation = ExplicitBucketHistogramAggregation(boundaries=spec.boundaries)
    return View(
        instrument_name=spec.name,
        meter_name=SCOPE,
        aggregation=aggregation,
        attribute_keys=set(semconv.METRIC_ATTRIBUTES),
    )


def audio_views() -> list[View]:
    """The views to pass to ``MeterProvider(views=...)`` for otel-audio's instruments."""
    return [_view(spec) for spec in semconv.METRICS]
