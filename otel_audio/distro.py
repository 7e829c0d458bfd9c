"""Zero-code setup: the distro and configurator ``opentelemetry-instrument`` loads from entry points.

``opentelemetry-instrument python pipeline.py`` finds these through the ``opentelemetry_distro``
and ``opentelemetry_configurator`` entry points of the ``otel-audio`` distribution and so sets
up the process exactly as :func:`otel_audio.configure` would: views, the adaptive sampler, tail
promotion, OTLP exporters. Standard ``OTEL_*`` variables apply as usual; two more switch on the
buffer signal metrics:

- ``OTEL_AUDIO_SIGNAL_METRICS=true``
- ``OTEL_AUDIO_SIGNAL_SAMPLE_RATIO=0.1``

When another distro is installed too (``opentelemetry-distro``), the auto-instrumentation
takes whichever it finds first; set ``OTEL_PYTHON_DISTRO=otel_audio`` and
``OTEL_PYTHON_CONFIGURATOR=otel_audio`` to choose this one.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro

from otel_audio.configure import configure


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{name} must be true or false, got {raw!r}")
    return value in ("true", "1")


def _ratio(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number in [0, 1], got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {raw!r}")
    return value


class OtelAudioDistro(BaseDistro):
    """Distro entry point; the SDK setup itself happens in :class:`OtelAudioConfigurator`."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")


class OtelAudioConfigurator:
    """Configurator entry point: ``opentelemetry-instrument`` calls ``configure()`` once at start."""

    def configure(self, **kwargs: Any) -> None:
        version = kwargs.get("auto_instrumentation_version")
        configure(
            resource_attributes={"telemetry.auto.version": version} if version else None,
            signal_metrics=_flag("OTEL_AUDIO_SIGNAL_METRICS", False),
            signal_sample_ratio=_ratio("OTEL_AUDIO_SIGNAL_SAMPLE_RATIO", 0.1),
        )
