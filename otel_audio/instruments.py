"""The tracer and metric instruments the decorators record into, created once per provider pair.

By default they come from the global providers, through OpenTelemetry's proxies, so
decorating code at import time works before :func:`otel_audio.configure` runs. Tests and
applications that keep their own providers call :func:`bind` to record into those instead.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace

from otel_audio import semconv
from otel_audio.semconv import Kind, MetricSpec
from otel_audio.version import __version__

SCOPE = "otel_audio"


@dataclass(frozen=True)
class Instruments:
    """Everything a decorator call records into."""

    tracer: trace.Tracer
    stage_duration: Any
    pipeline_duration: Any
    processed_duration: Any
    files_processed: Any
    realtime_factor: Any
    errors: Any
    queue_size: Any
    pesq: Any
    stoi: Any
    snr: Any
    quality_index: Any
    feedback: Any
    signal: dict[str, Any]


def _create(meter: metrics.Meter, spec: MetricSpec) -> Any:
    if spec.kind is Kind.HISTOGRAM:
        return meter.create_histogram(spec.name, unit=spec.unit, description=spec.description)
    if spec.kind is Kind.COUNTER:
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    return meter.create_gauge(spec.name, unit=spec.unit, description=spec.description)


def _build(
    tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
) -> Instruments:
    tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
    signal_specs = (
        semconv.SIGNAL_RMS_METRIC,
        semconv.SIGNAL_PEAK_METRIC,
        semconv.SIGNAL_CLIPPING_METRIC,
        semconv.SIGNAL_SILENCE_METRIC,
        semconv.SIGNAL_SNR_METRIC,
    )
    return Instruments(
        tracer=tracer,
        stage_duration=_create(meter, semconv.STAGE_DURATION),
        pipeline_duration=_create(meter, semconv.PIPELINE_DURATION),
        processed_duration=_create(meter, semconv.PROCESSED_DURATION),
        files_processed=_create(meter, semconv.FILES_PROCESSED),
        realtime_factor=_create(meter, semconv.REALTIME_FACTOR),
        errors=_create(meter, semconv.ERRORS),
        queue_size=_create(meter, semconv.QUEUE_SIZE),
        pesq=_create(meter, semconv.PESQ),
        stoi=_create(meter, semconv.STOI),
        snr=_create(meter, semconv.SNR),
        quality_index=_create(meter, semconv.QUALITY_INDEX_METRIC),
        feedback=_create(meter, semconv.FEEDBACK),
        signal={spec.name: _create(meter, spec) for spec in signal_specs},
    )


_lock = threading.Lock()
_current: Instruments | None = None


def current() -> Instruments:
    """The instruments in use; built from the global providers on first use."""
    found = _current
    if found is None:
        return bind()
    return found


def bind(
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Instruments:
    """Record into these providers from now on (``None``: the global provider)."""
    global _current
    with _lock:
        _current = _build(tracer_provider, meter_provider)
        return _current
