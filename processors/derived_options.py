"""The ``derived`` processor's options: window, lateness, prices and input metrics, validated.

Kept apart from the windows (:mod:`otel_audio.processors.derived`) so the accepted keys, their
defaults and the error messages read in one place. :func:`parse_options` turns the receiver
config's ``derived`` map into :class:`~otel_audio.processors.derived.DerivedMetrics`' keyword
arguments; every error names the option (``prices.cpu_second``), what it accepts and the value
it got. The option reference, with a full example, is ``docs/derived.md`` (Options).

Example::

    kwargs = parse_options({"window": "1m", "prices": {"cpu_second": 1.4e-5, "gb_hour": 4.5e-3}})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from otel_audio.processors.units import duration_ns

SOURCES: dict[str, str] = {
    "files": "audio.pipeline.files",
    "stage_seconds": "audio.stage.duration",
    "audio_seconds": "audio.processed.duration",
    "cpu_seconds": "process.cpu.time",
    "gpu_utilization": "hw.gpu.utilization",
    "memory_bytes": "process.memory.usage",
}
"""Role -> the metric read for it; the ``sources`` option renames any of them."""

_OPTIONS = ("window", "allowed_lateness", "trend_windows", "prices", "sources", "audio_stage")
_PRICE_KEYS = ("cpu_second", "gpu_second", "gb_hour", "currency")


@dataclass(frozen=True)
class Prices:
    """What one unit of each resource costs, in ``currency``."""

    cpu_second: float = 0.0
    gpu_second: float = 0.0
    gb_hour: float = 0.0
    currency: str = "USD"


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool: what a price, or a quality score, must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of :class:`~otel_audio.processors.derived.DerivedMetrics` for the
    receiver config's ``derived`` options.

    Keys (all optional): ``window`` (default ``1m``), ``allowed_lateness`` (``0s``),
    ``trend_windows`` (30), ``prices`` (``cpu_second``, ``gpu_second``, ``gb_hour``: numbers >= 0;
    ``currency``: a name, default ``USD``), ``sources`` (role -> metric name; roles as in
    :data:`SOURCES`), ``audio_stage`` (a stage name).

    Raises:
        ValueError: naming the option that is wrong and what it accepts.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(_OPTIONS))
    _require(not unknown, unknown[0] if unknown else "", options, f"only the keys {', '.join(_OPTIONS)}")
    label = options.get("window", "1m")
    window = _duration(label, "window")
    _require(window > 0, "window", label, "a positive duration")
    lateness = _duration(options.get("allowed_lateness", "0s"), "allowed_lateness")
    trend = options.get("trend_windows", 30)
    ok = isinstance(trend, int) and not isinstance(trend, bool) and trend >= 3
    _require(ok, "trend_windows", trend, "an integer of at least 3")
    audio_stage = options.get("audio_stage")
    _require(audio_stage is None or (isinstance(audio_stage, str) and audio_stage), "audio_stage",
             audio_stage, "a stage name")  # fmt: skip
    return {
        "window_ns": window,
        "lateness_ns": lateness,
        "prices": _prices(options.get("prices", {})),
        "sources": _sources(options.get("sources", {})),
        "trend_windows": trend,
        "audio_stage": audio_stage,
        "window_label": label,
    }


def _prices(value: Any) -> Prices:
    _require(isinstance(value, dict), "prices", value, f"a map with the keys {', '.join(_PRICE_KEYS)}")
    extra = sorted(set(value) - set(_PRICE_KEYS))
    _require(
        not extra, f"prices.{extra[0] if extra else ''}", value, f"only the keys {', '.join(_PRICE_KEYS)}"
    )
    numbers = {}
    for key in _PRICE_KEYS[:3]:
        price = value.get(key, 0.0)
        ok = is_number(price) and price >= 0
        _require(ok, f"prices.{key}", price, "a price per unit, a number >= 0")
        numbers[key] = float(price)
    currency = value.get("currency", "USD")
    _require(
        isinstance(currency, str) and currency.isidentifier(), "prices.currency", currency, "a name like USD"
    )
    return Prices(currency=currency, **numbers)


def _sources(value: Any) -> dict[str, str]:
    _require(isinstance(value, dict), "sources", value, f"a map of {', '.join(SOURCES)} to metric names")
    for role, metric in value.items():
        _require(role in SOURCES, f"sources.{role}", role, f"one of {', '.join(SOURCES)}")
        _require(isinstance(metric, str) and metric.strip() != "", f"sources.{role}", metric, "a metric name")
    merged = {**SOURCES, **value}
    repeated = sorted({m for m in merged.values() if list(merged.values()).count(m) > 1})
    _require(not repeated, "sources", value, "a different metric for every role")
    return value


def _duration(value: Any, option: str) -> int:
    try:
        return duration_ns(value if isinstance(value, str) else "", option)
    except ValueError:
        _require(False, option, value, "a duration like '30s', '1m', '1h'")
        raise


def _require(ok: bool, option: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"derived option {option}: expected {accepted}, got {value!r}")
