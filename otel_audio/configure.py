"""One call that wires a pipeline process to OpenTelemetry: providers, exporters, sampler, views.

``configure()`` builds the tracer, meter and logger providers with otel-audio's defaults:

- resource: ``service.name``, ``service.version``, ``deployment.environment.name``, host and
  process attributes;
- traces: the :class:`~otel_audio.samplers.AdaptiveSampler` (a per-operation traces/s target),
  in-process tail promotion of errored or slow traces the head sampler dropped, and a
  ``BatchSpanProcessor`` into an OTLP exporter;
- metrics: the views of :mod:`otel_audio.views` and a 1 s export interval, so a value reaches
  the receiver within about a second of being recorded;
- logs: the standard :mod:`logging` records of the process, with trace and span ids, over OTLP;
- flush on exit: every provider shuts down (and so flushes) at interpreter exit.

Every standard ``OTEL_*`` environment variable wins where it is set, so operators can redirect
or tune a deployed pipeline without touching its code: ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and per signal),
``OTEL_EXPORTER_OTLP_PROTOCOL`` (and per signal), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` (``otlp``,
``console``, ``none`` or any installed exporter entry point), ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_BSP_*``, and
``OTEL_SDK_DISABLED``.

The call is idempotent: OpenTelemetry's global providers can be set once per process, so a
second call returns the first call's :class:`Telemetry` unchanged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from otel_audio import exporters, instruments
from otel_audio.samplers import AdaptiveSampler, TailPromotionProcessor
from otel_audio.settings import settings
from otel_audio.version import __version__
from otel_audio.views import audio_views

_log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_METRIC_INTERVAL_S = 1.0


@dataclass
class Telemetry:
    """The providers ``configure()`` built; ``shutdown()`` flushes and stops them."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    logger_provider: LoggerProvider | None
    sampler: Sampler | None
    span_processors: list[SpanProcessor] = field(default_factory=list)
    metric_readers: list[MetricReader] = field(default_factory=list)
    logging_handler: logging.Handler | None = None

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export everything recorded so far; ``True`` when every provider flushed in time."""
        ok = True
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                ok = bool(provider.force_flush(timeout_millis)) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop all providers (also done automatically at interpreter exit)."""
        if self.logging_handler is not None:
            logging.getLogger().removeHandler(self.logging_handler)
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()


_lock = threading.Lock()
_configured: Telemetry | None = None


def configure(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    sampler: Sampler | None = None,
    target_traces_per_second: float = 10.0,
    tail_promotion: bool = True,
    latency_threshold_s: float = 5.0,
    metric_export_interval_s: float = DEFAULT_METRIC_INTERVAL_S,
    logs: bool = True,
    signal_metrics: bool = False,
    signal_sample_ratio: float = 0.1,
    system_metrics: bool = False,
    span_exporter: SpanExporter | None = None,
    metric_readers: Sequence[MetricReader] | None = None,
    log_exporter: LogRecordExporter | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Set up tracing, metrics and logs for an audio pipeline process; see the module docs.

    Args:
        service_name: ``service.name`` unless ``OTEL_SERVICE_NAME`` is set.
        endpoint: the OTLP receiver, e.g. ``http://127.0.0.1:4317`` (gRPC) or
            ``http://127.0.0.1:4318`` (HTTP); ``OTEL_EXPORTER_OTLP_*ENDPOINT`` wins.
        protocol: ``grpc`` (default) or ``http/protobuf``; ``OTEL_EXPORTER_OTLP_*PROTOCOL`` wins.
        headers: extra export headers, e.g. ``{"authorization": "Bearer <token>"}``.
        insecure: plaintext gRPC; defaults to true for ``http://`` endpoints.
        service_version, environment: ``service.version``, ``deployment.environment.name``.
        resource_attributes: further resource attributes (``OTEL_RESOURCE_ATTRIBUTES`` wins).
        sampler: replaces the adaptive sampler (``OTEL_TRACES_SAMPLER`` still wins).
        target_traces_per_second: the adaptive sampler's per-operation target.
        tail_promotion: export dropped traces that turn out errored or slow.
        latency_threshold_s: a span longer than this promotes its trace.
        metric_export_interval_s: metric export period (``OTEL_METRIC_EXPORT_INTERVAL`` wins).
        logs: export :mod:`logging` records over OTLP.
        signal_metrics, signal_sample_ratio: buffer signal metrics on stage audio, and for
            which fraction of calls (see :mod:`otel_audio.signal`).
        system_metrics: also record the process's and host's resources (CPU, memory, threads,
            disk and network I/O) under the OpenTelemetry system/process metric conventions, so
            the receiver can relate cost and saturation to the pipeline's work.
        span_exporter, metric_readers, log_exporter: use these instead of the exporters chosen
            from the environment (tests, custom backends).
        set_global: install the providers as OpenTelemetry's globals. With ``False`` the
            decorators still record into them, but other instrumentation does not.
    """
    global _configured
    with _lock:
        if _configured is not None:
            _log.debug("otel_audio.configure() called again; keeping the first configuration")
            return _configured
        settings.signal_metrics = signal_metrics
        settings.signal_sample_ratio = signal_sample_ratio
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            _configured = Telemetry(None, None, None, None)
            return _configured

        resource = build_resource(service_name, service_version, environment, resource_attributes)
        target = exporters.Target(endpoint, protocol, headers, insecure)
        chosen_sampler = sampler_from_env() or sampler
        tail = tail_promotion and chosen_sampler is None
        if chosen_sampler is None:
            chosen_sampler = AdaptiveSampler(target_traces_per_second, record_only_for_tail=tail)

        tracer_provider = TracerProvider(resource=resource, sampler=chosen_sampler)
        processors = _span_processors(target, span_exporter, tail, latency_threshold_s)
        for processor in processors:
            tracer_provider.add_span_processor(processor)

        readers = (
            list(metric_readers)
            if metric_readers is not None
            else _metric_readers(target, metric_export_interval_s)
        )
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, views=audio_views())

        logger_provider = None
        handler = None
        if logs:
            logger_provider, handler = _logging(resource, target, log_exporter)

        if set_global:
            trace.set_tracer_provider(tracer_provider)
            metrics.set_meter_provider(meter_provider)
            if logger_provider is not None:
                set_logger_provider(logger_provider)
        instruments.bind(tracer_provider, meter_provider)
        if system_metrics:
            _instrument_system_metrics(meter_provider)
        _configured = Telemetry(
            tracer_provider, meter_provider, logger_provider, chosen_sampler, processors, readers, handler
        )
        return _configured


def _instrument_system_metrics(meter_provider: MeterProvider) -> None:
    """The contrib system-metrics instrumentation on our meter provider (its default set)."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    instrumentor = SystemMetricsInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(meter_provider=meter_provider)


def build_resource(
    service_name: str | None,
    service_version: str | None = None,
    environment: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Resource:
    """The process's resource; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` win."""
    attrs: dict[str, Any] = {
        "host.name": socket.gethostname(),
        "telemetry.distro.name": "otel-audio",
        "telemetry.distro.version": __version__,
    }
    if service_name:
        attrs["service.name"] = service_name
    if service_version:
        attrs["service.version"] = service_version
    if environment:
        attrs["deployment.environment.name"] = environment
    attrs.update(extra or {})
    return Resource.create(attrs).merge(OTELResourceDetector().detect())


def sampler_from_env() -> Sampler | None:
    """The sampler ``OTEL_TRACES_SAMPLER`` names, built-in or from an entry point; else ``None``."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "").strip()
    if not name:
        return None
    from opentelemetry.sdk.trace import sampling

    if name.lower() in sampling._KNOWN_SAMPLERS:
        return sampling._get_from_env_or_default()
    factory = exporters.load_entry_point("opentelemetry_traces_sampler", name)
    return factory(os.environ.get("OTEL_TRACES_SAMPLER_ARG"))


def _span_processors(
    target: exporters.Target, exporter: SpanExporter | None, tail: bool, latency_threshold_s: float
) -> list[SpanProcessor]:
    chosen = [exporter] if exporter is not None else exporters.exporters_for("traces", target)
    processors: list[SpanProcessor] = []
    for each in chosen:
        batch = BatchSpanProcessor(each)
        processors.append(
            TailPromotionProcessor(batch, latency_threshold_s=latency_threshold_s) if tail else batch
        )
    return processors


def _metric_readers(target: exporters.Target, interval_s: float) -> list[MetricReader]:
    interval_ms = None if os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") else interval_s * 1000
    return [
        PeriodicExportingMetricReader(each, export_interval_millis=interval_ms)
        for each in exporters.exporters_for("metrics", target)
    ]


def _logging(
    resource: Resource, target: exporters.Target, exporter: LogRecordExporter | None
) -> tuple[LoggerProvider | None, logging.Handler | None]:
    chosen = [exporter] if exporter is not None else exporters.exporters_for("logs", target)
    if not chosen:
        return None, None
    provider = LoggerProvider(resource=resource)
    for each in chosen:
        provider.add_log_record_processor(BatchLogRecordProcessor(each))
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=provider)
    logging.getLogger().addHandler(handler)
    return provider, handler
