"""The seed's building blocks under the names its readers look for, each a thin door to the real module.

=========================  ===================================================================
seed name                  what it is here
=========================  ===================================================================
``trace_audio_pipeline``   :func:`otel_audio.audio_pipeline` (root span of one file's journey)
``trace_audio_stage``      :func:`otel_audio.audio_stage` (a stage's span and metrics)
``MetricAggregationEngine``  event-time windows, rates, histogram merges:
                           ``otel_audio.processors.aggregation`` (``docs/aggregation.md``)
``SLOManager``             SLOs of a :class:`~otel_audio.monitor.ProductionMonitor` and
                           ``calculate_error_budget`` from ``otel_audio.processors.slo.compute``
``PredictiveMonitor``      capacity forecasts and time to a limit:
                           ``otel_audio.processors.forecast_model`` (``docs/forecast.md``)
``TimeSeriesOptimizer``    downsampling (the store's rollups, ``otel_audio.store.rollup``) and
                           compression (the blocks' value codec, ``otel_audio.store.value_codec``)
``IntelligentAlertGenerator``  rule suggestions from history: ``otel_audio.processors.rulegen``
=========================  ===================================================================

Nothing here computes anything itself. The receiver-side modules are imported when a block is
first used, so ``from monitoring import ProductionMonitor`` works with the base install.

Example::

    from monitoring import SLOManager, PredictiveMonitor

    budget = SLOManager.calculate_error_budget(0.999, good=999_600, total=1_000_000, period_s=30 * 86400)
    budget.remaining_ratio                  # 0.6
    fc = PredictiveMonitor(horizon="7d").forecast(times_ns, disk_bytes)
    PredictiveMonitor.time_to_limit(fc, limit=0.9e12)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_audio.decorators import audio_stage
from otel_audio.pipeline import audio_pipeline

trace_audio_pipeline = audio_pipeline
trace_audio_stage = audio_stage


def MetricAggregationEngine(options: dict[str, Any]) -> Any:  # a factory under the seed's class name
    """The receiver's aggregation stage (``otel_audio.processors.aggregation.Aggregation``) from its
    options, e.g. ``{"rules": [{"metric": "latency", "window": "1m", "aggs": ["avg", "p95"]}]}``;
    feed it with ``process(batch)`` and ``tick(now)``, collect windows with ``bind_emit``."""
    from otel_audio.processors.aggregation import from_options

    return from_options(options)


class SLOManager:
    """SLOs at run time (through a monitor) and the error-budget arithmetic.

    Args:
        monitor: the :class:`~otel_audio.monitor.ProductionMonitor` whose receiver holds the SLOs.
    """

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def define(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.monitor.define_slo(spec)

    def list(self) -> list[dict[str, Any]]:
        return self.monitor.list_slos()

    def status(self, name: str) -> dict[str, Any]:
        return self.monitor.slo_status(name)

    def delete(self, name: str) -> None:
        self.monitor.delete_slo(name)

    @staticmethod
    def calculate_error_budget(
        slo: Any, good: float, total: float, *, period_s: float | None = None,
        current_burn_rate: float | None = None,
    ) -> Any:  # fmt: skip
        """``otel_audio.processors.slo.compute.calculate_error_budget``: budget total, consumed,
        remaining (events and ratios), burn rate and time to exhaustion."""
        from otel_audio.processors.slo.compute import calculate_error_budget

        return calculate_error_budget(
            slo, good, total, period_s=period_s, current_burn_rate=current_burn_rate
        )


class PredictiveMonitor:
    """Forecasts with prediction intervals (STL + ETS or ARIMA) and when a limit is crossed.

    Args:
        horizon: how far ahead, a duration (``"7d"``) or seconds.
        season: the seasonality, a duration (``"1d"``) or seconds, or None to let the model find it.
        level: the prediction interval's coverage.
    """

    def __init__(
        self, horizon: str | int = "1d", season: str | int | None = None, level: float = 0.95
    ) -> None:
        from otel_audio.processors.forecast_model import parse_duration_ns

        self.horizon_ns = parse_duration_ns(horizon, "horizon")
        self.season_ns = None if season is None else parse_duration_ns(season, "season")
        self.level = level

    def forecast(self, times_ns: Any, values: Any, method: str = "auto") -> Any:
        """``otel_audio.processors.forecast_model.forecast`` over the observations."""
        from otel_audio.processors.forecast_model import forecast

        return forecast(times_ns, values, self.horizon_ns, season_ns=self.season_ns, level=self.level,
                        method=method)  # fmt: skip

    @staticmethod
    def time_to_limit(fc: Any, limit: float, direction: str = "above") -> tuple[int | None, int | None]:
        """``(t_mean, t_earliest)``: when the forecast's mean, and its interval, cross ``limit``."""
        from otel_audio.processors.forecast_model import time_to_limit

        return time_to_limit(fc, limit, direction)


class TimeSeriesOptimizer:
    """Downsampling and compression as the store does them."""

    @staticmethod
    def downsample(points: Any, series: Any, window: str | float, carry: Any = None) -> tuple[Any, Any]:
        """``otel_audio.store.rollup.rollup``: one row per series and window (count, sum, min, max,
        last, increase, merged histogram buckets) from ``POINTS_SCHEMA`` points of ``series``."""
        from otel_audio.processors.forecast_model import parse_duration_ns
        from otel_audio.store.rollup import rollup

        return rollup(points, series, parse_duration_ns(window, "window"), carry)

    @staticmethod
    def compress(values: Any, series_starts: Any = (0,), times: Any = None) -> dict[str, Any]:
        """``otel_audio.store.value_codec.encode``: decimal-scaled integers, raw or as deltas,
        float64 exceptions; rows sorted by series then time, ``series_starts`` where each begins."""
        from otel_audio.store.value_codec import encode

        return encode(np.asarray(values, np.float64), np.asarray(series_starts, np.int64),
                      None if times is None else np.asarray(times, np.int64))  # fmt: skip

    @staticmethod
    def decompress(columns: dict[str, Any]) -> np.ndarray:
        """``otel_audio.store.value_codec.decode``: the float64 values back, bit-exactly."""
        from otel_audio.store.value_codec import decode

        names = ("value_scale", "value_int", "value_delta", "value_float")
        return decode(*(columns[n] for n in names), columns.get("value_residual")).to_numpy(
            zero_copy_only=False
        )


class IntelligentAlertGenerator:
    """Alert rules suggested from history (thresholds from quantiles, trends, composites, and
    thresholds fitted to labelled incidents): ``otel_audio.processors.rulegen``."""

    @staticmethod
    def suggest(series: dict[str, tuple[Any, Any]], step_ns: int | None = None,
                labels: dict[str, Any] | None = None) -> list[Any]:  # fmt: skip
        """``suggest_rules``: ``series`` maps metric names to (timestamps_ns, values)."""
        from otel_audio.processors.rulegen import suggest_rules

        return suggest_rules(series, step_ns=step_ns, labels=labels)

    @staticmethod
    def install(
        monitor: Any, suggestions: list[Any], channels: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Add suggested rules to a monitor's receiver (each ``RuleSuggestion.to_dict()``'s rule)."""
        out = []
        for suggestion in suggestions:
            rule = suggestion.to_dict()
            name, condition, severity, for_ = (rule.pop(k) for k in ("name", "condition", "severity", "for"))
            out.append(monitor.add_alert_rule(name, condition, severity, channels, for_=for_, **rule))
        return out
