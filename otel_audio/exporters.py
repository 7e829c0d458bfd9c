"""Choose span, metric and log exporters the way the OpenTelemetry SDK does, with otel-audio defaults.

``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` name the exporters (``otlp`` by default, ``console``,
``none``, or any installed ``opentelemetry_*_exporter`` entry point). For ``otlp`` the protocol
and endpoint come from the ``OTEL_EXPORTER_OTLP_*`` variables when set, else from the
arguments given to :func:`otel_audio.configure`, else gRPC to ``127.0.0.1:4317`` (the
receiver binds loopback, and ``localhost`` may resolve to ``::1`` first).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.util._importlib_metadata import entry_points

GRPC = "grpc"
HTTP = "http/protobuf"
_DEFAULT_GRPC = "http://127.0.0.1:4317"
_DEFAULT_HTTP = "http://127.0.0.1:4318"
_SIGNAL_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}


@dataclass(frozen=True)
class Target:
    """Where OTLP goes, as given in code; environment variables override each field."""

    endpoint: str | None = None
    protocol: str | None = None
    headers: Mapping[str, str] | None = None
    insecure: bool | None = None


def load_entry_point(group: str, name: str) -> Any:
    """Load the entry point ``name`` of ``group``, with the installed names in the error."""
    found = list(entry_points(group=group, name=name))
    if not found:
        names = sorted({ep.name for ep in entry_points(group=group)})
        raise ValueError(f"no {group} entry point named {name!r}; installed: {', '.join(names) or 'none'}")
    return found[0].load()


def _names(variable: str) -> list[str]:
    raw = os.environ.get(variable, "otlp")
    return [name.strip().lower() for name in raw.split(",") if name.strip()]


def _env(signal: str, suffix: str) -> str | None:
    """``OTEL_EXPORTER_OTLP_<SIGNAL>_<SUFFIX>`` or ``OTEL_EXPORTER_OTLP_<SUFFIX>``."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{suffix}") or os.environ.get(
        f"OTEL_EXPORTER_OTLP_{suffix}"
    )


def _otlp_kwargs(signal: str, target: Target) -> tuple[str, dict[str, Any]]:
    protocol = (_env(signal, "PROTOCOL") or target.protocol or GRPC).strip().lower()
    if protocol not in (GRPC, HTTP):
        raise ValueError(f"OTLP protocol must be {GRPC!r} or {HTTP!r}, got {protocol!r}")
    kwargs: dict[str, Any] = {}
    if not _env(signal, "ENDPOINT"):
        if protocol == GRPC:
            kwargs["endpoint"] = target.endpoint or _DEFAULT_GRPC
        else:
            kwargs["endpoint"] = (target.endpoint or _DEFAULT_HTTP).rstrip("/") + _SIGNAL_PATHS[signal]
    if target.headers and not _env(signal, "HEADERS"):
        kwargs["headers"] = dict(target.headers)
    if protocol == GRPC and target.insecure is not None and not _env(signal, "INSECURE"):
        kwargs["insecure"] = target.insecure
    return protocol, kwargs


# signal -> (variable naming its exporters, entry point group, OTLP gRPC, OTLP HTTP, console class)
_CLASSES = {
    "traces": (
        "OTEL_TRACES_EXPORTER",
        "opentelemetry_traces_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
        "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
    ),
    "metrics": (
        "OTEL_METRICS_EXPORTER",
        "opentelemetry_metrics_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter:OTLPMetricExporter",
        "opentelemetry.exporter.otlp.proto.http.metric_exporter:OTLPMetricExporter",
        "opentelemetry.sdk.metrics.export:ConsoleMetricExporter",
    ),
    "logs": (
        "OTEL_LOGS_EXPORTER",
        "opentelemetry_logs_exporter",
        "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter",
        "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter",
        "opentelemetry.sdk._logs.export:ConsoleLogRecordExporter",
    ),
}


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def exporters_for(signal: str, target: Target) -> list[Any]:
    """The exporters ``OTEL_<SIGNAL>_EXPORTER`` names for ``signal`` (traces, metrics or logs)."""
    variable, group, grpc_class, http_class, console_class = _CLASSES[signal]
    exporters = []
    for name in _names(variable):
        if name == "none":
            continue
        if name == "otlp":
            protocol, kwargs = _otlp_kwargs(signal, target)
            exporters.append(_load(grpc_class if protocol == GRPC else http_class)(**kwargs))
        elif name == "console":
            exporters.append(_load(console_class)())
        else:
            exporters.append(load_entry_point(group, name)())
    return exporters
