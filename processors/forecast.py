"""Capacity forecasting, the ``forecast`` processor's entry point: options in, a processor out.

A forecast answers "when does the disk fill up?" before it does. The pieces:

- :mod:`otel_audio.processors.forecast_model`: the maths. :func:`forecast` fits one series (STL
  plus exponential smoothing or ARIMA) and returns a :class:`Forecast` with prediction
  intervals; :func:`time_to_limit` reads when it crosses a capacity limit. The ``otel-audio
  forecast`` command and the processor's workers run it.
- :mod:`otel_audio.processors.forecast_processor`: :class:`ForecastProcessor` (chain name
  ``forecast``), which refits configured metrics in worker processes on ``tick`` and emits the
  forecasts as gauge series, so alert rules can page on ``forecast.time_to_limit_seconds < 6h``.
- this module: :func:`from_options`, which the receiver calls on the module named for the chain
  entry, validates the YAML options into :class:`SeriesSpec` and builds the processor. It
  re-exports the public names of both modules above, so one import serves every caller.

Example::

    fc = forecast(times_ns, used_bytes, horizon_ns=24 * 3600 * 10**9, season_ns=86400 * 10**9)
    t_mean, t_earliest = time_to_limit(fc, limit=0.9 * disk_bytes)
"""

from __future__ import annotations

import math
from typing import Any

from otel_audio.processors.forecast_model import (
    MAX_POINTS,
    METHODS,
    MIN_POINTS,
    Forecast,
    forecast,
    parse_duration_ns,
    time_to_limit,
)
from otel_audio.processors.forecast_processor import ForecastProcessor, SeriesSpec

__all__ = [
    "MAX_POINTS",
    "METHODS",
    "MIN_POINTS",
    "Forecast",
    "ForecastProcessor",
    "SeriesSpec",
    "forecast",
    "from_options",
    "parse_duration_ns",
    "time_to_limit",
]

_SPEC_KEYS = {"metric", "limit", "direction", "horizon", "refresh", "season", "step", "level", "method"}
_SPEC_KEYS |= {"attributes"}


def from_options(options: dict[str, Any], context: Any = None) -> ForecastProcessor:
    """Build the processor from its config options (``context`` is the chain's, unused).

    Example (the receiver's YAML)::

        - name: forecast
          options:
            max_points: 4096
            workers: 1            # fitting processes; 0 fits inline, holding the chain
            series:
              - metric: system.filesystem.usage
                limit: 5.0e11
                horizon: 24h
                refresh: 10m
                season: 1d        # optional; default: detected
                attributes: {device: /dev/sda1}
    """
    if not isinstance(options, dict):
        raise ValueError(f"forecast: options must be a mapping, got {type(options).__name__}")
    unknown = set(options) - {"series", "max_points", "max_series", "workers"}
    if unknown:
        raise ValueError(
            f"forecast: unknown option(s) {sorted(unknown)}; "
            "accepted: series, max_points, max_series, workers"
        )
    entries = options.get("series")
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            "forecast.series: expected a non-empty list of {metric, limit, horizon, refresh, ...}"
        )
    specs = [_spec(entry, f"forecast.series[{i}]") for i, entry in enumerate(entries)]
    kwargs = {}
    for key in ("max_points", "max_series"):
        if key in options:
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"forecast.{key}: expected a positive integer, got {value!r}")
            kwargs[key] = value
    if kwargs.get("max_points", MIN_POINTS) < MIN_POINTS:
        raise ValueError(f"forecast.max_points: at least {MIN_POINTS}, got {kwargs['max_points']}")
    workers = options.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(
            f"forecast.workers: expected 0 (fit inline) or a number of processes, got {workers!r}"
        )
    return ForecastProcessor(specs, **kwargs, workers=workers)


def _spec(entry: Any, where: str) -> SeriesSpec:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a mapping with at least 'metric', got {entry!r}")
    unknown = set(entry) - _SPEC_KEYS
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {sorted(unknown)}; accepted: {', '.join(sorted(_SPEC_KEYS))}"
        )
    metric = entry.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"{where}.metric: expected a metric name, got {metric!r}")
    kwargs: dict[str, Any] = {"metric": metric}
    if entry.get("limit") is not None:
        limit = entry["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
            raise ValueError(f"{where}.limit: expected a number, got {limit!r}")
        kwargs["limit"] = float(limit)
    direction = entry.get("direction", "above")
    if direction not in ("above", "below"):
        raise ValueError(f"{where}.direction: expected 'above' or 'below', got {direction!r}")
    kwargs["direction"] = direction
    for key, name in (("horizon", "horizon_ns"), ("refresh", "refresh_ns"), ("step", "step_ns")):
        if entry.get(key) is not None:
            kwargs[name] = parse_duration_ns(entry[key], f"{where}.{key}")
    season = entry.get("season")
    if season is not None:
        kwargs["season_ns"] = (
            0 if season in (0, "0", "none") else parse_duration_ns(season, f"{where}.season")
        )
    level = entry.get("level", 0.95)
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"{where}.level: expected a coverage in (0, 1) such as 0.95, got {level!r}")
    kwargs["level"] = float(level)
    method = entry.get("method", "auto")
    if method not in METHODS:
        raise ValueError(f"{where}.method: expected one of {', '.join(METHODS)}, got {method!r}")
    kwargs["method"] = method
    attributes = entry.get("attributes", {})
    if not isinstance(attributes, dict):
        raise ValueError(f"{where}.attributes: expected a mapping of attribute to value, got {attributes!r}")
    kwargs["attributes"] = tuple(sorted((str(k), str(v)) for k, v in attributes.items()))
    return SeriesSpec(**kwargs)
