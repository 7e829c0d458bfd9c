"""Capacity forecasting maths: where a resource series is heading, with prediction intervals.

A forecast answers "when does the disk fill up?" before it does. :func:`forecast` takes one
series (times in Unix nanoseconds, values), puts it on a regular grid (the median spacing
unless told), and fits

- **STL + model** when the series has a season (given, or detected among an hour, a day and a
  week by autocorrelation): statsmodels' ``STLForecast`` splits off the seasonal component with
  STL, fits the model on the seasonally adjusted series and adds the last season back;
- **the model alone** when there is no season.

The model is exponential smoothing (statsmodels ``ETSModel``, additive errors; ``method="auto"``
picks no trend, a trend or a damped trend by AICc) or ARIMA(1,1,1) with drift
(``method="arima"``). The prediction intervals come from the fitted model's own prediction
variance (``get_prediction``), not from a second forecast. :func:`time_to_limit` reads from a
:class:`Forecast` when the mean, and the interval bound, first cross a capacity limit.

These are pure functions of one series, kept apart from the chain processor
(:mod:`otel_audio.processors.forecast`) because three callers run them: the processor's worker
processes, the ``otel-audio forecast`` command (:mod:`otel_audio.processors.forecast_cli`) and
the backtest (``benchmarks/forecast.py``). Importing them loads no pyarrow and no chain machinery.

Example::

    fc = forecast(times_ns, used_bytes, horizon_ns=24 * 3600 * 10**9, season_ns=86400 * 10**9)
    t_mean, t_earliest = time_to_limit(fc, limit=0.9 * disk_bytes)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_audio.processors.units import duration_ns

METHODS = ("auto", "ets", "arima")
MIN_POINTS = 8  # fewer than this and no model is worth fitting
MAX_POINTS = 4096  # the newest points kept on the grid; older ones add fit time, not accuracy
_HOUR_NS = 3600 * 10**9
_SEASON_CANDIDATES_NS = (_HOUR_NS, 24 * _HOUR_NS, 7 * 24 * _HOUR_NS)
_SEASON_MIN_ACF = 0.3  # autocorrelation at the seasonal lag that counts as a season
# STL smooths each phase of the season across 11 cycles with a local constant: at the series' end,
# where the forecast starts, a local line would extrapolate the noise of the last few cycles.
_STL_KW = {"seasonal": 11, "seasonal_deg": 0}
# STLForecast treats the seasonal component as known. It is estimated from n / period cycles, so
# its error (and the noise STL absorbs into it) widens the interval: variance x (1 + 3 period / n),
# calibrated on benchmarks/forecast.py to about nominal coverage.
_SEASON_VAR = 3.0


@dataclass(frozen=True)
class Forecast:
    """A forecast on a regular grid after the last observation; all arrays have one entry per step."""

    timestamps_ns: np.ndarray  # int64, origin_ns + step_ns * (1..n)
    mean: np.ndarray  # float64
    lower: np.ndarray  # lower bound of the `level` prediction interval
    upper: np.ndarray
    level: float
    method: str  # what was fitted, e.g. "stl(168)+ets(A,Ad,N)", "arima(1,1,1)+drift", "constant"
    step_ns: int
    season_ns: int | None  # the season used (None: no seasonal decomposition)
    origin_ns: int  # time of the last observation on the grid
    last_value: float  # its value


def parse_duration_ns(text: str | float, name: str = "duration") -> int:
    """``250ms``, ``15s``, ``5m``, ``2h``, ``1d``, ``1w`` or plain seconds (str or number), as nanoseconds."""
    if isinstance(text, bool):
        raise ValueError(f"{name}: expected a duration like 15s, 5m, 2h, 1d, 1w or seconds, got {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        seconds = duration_ns(str(text), name) / 1e9
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name}: must be a positive duration, got {text!r}")
    return round(seconds * 1e9)


def forecast(
    times_ns: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    horizon_ns: int,
    step_ns: int | None = None,
    season_ns: int | None = None,
    level: float = 0.95,
    method: str = "auto",
) -> Forecast:
    """Forecast ``values`` over ``horizon_ns`` after the last observation.

    Args:
        times_ns: observation times, Unix nanoseconds, any order, irregular spacing allowed.
        values: the observations; NaNs are dropped.
        horizon_ns: how far ahead to forecast.
        step_ns: the grid step; default the median spacing of the observations.
        season_ns: the season length; None detects one (hour, day, week), 0 means none. A season
            with fewer than two whole cycles in the data is not used (``Forecast.season_ns`` is None).
        level: nominal coverage of the prediction interval, in (0, 1).
        method: ``auto`` or ``ets`` (exponential smoothing, trend chosen by AICc) or ``arima``.

    Raises:
        ValueError: mismatched or too few observations, a non-positive horizon or step, a level
            outside (0, 1), an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a coverage in (0, 1) such as 0.95, got {level!r}")
    if horizon_ns <= 0:
        raise ValueError(f"horizon_ns: must be positive, got {horizon_ns}")
    t = np.asarray(times_ns, dtype=np.int64)
    y = np.asarray(values, dtype=np.float64)
    if t.shape != y.shape or t.ndim != 1:
        raise ValueError(f"times_ns and values must be 1-d of one length, got {t.shape} and {y.shape}")
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if len(np.unique(t)) < MIN_POINTS:
        raise ValueError(
            f"need at least {MIN_POINTS} observations at distinct times, got {len(np.unique(t))}"
        )
    if step_ns is None:
        step_ns = int(np.median(np.diff(np.unique(t))))
    if step_ns <= 0:
        raise ValueError(f"step_ns: must be positive, got {step_ns}")
    grid_y = _regular(t, y, step_ns)[-MAX_POINTS:]
    origin = int(t[-1])
    steps = max(1, math.ceil(horizon_ns / step_ns))
    stamps = origin + step_ns * np.arange(1, steps + 1, dtype=np.int64)
    period = _period(grid_y, step_ns, season_ns)
    scale = float(np.std(grid_y))
    if scale == 0 or len(grid_y) < MIN_POINTS:
        flat = np.full(steps, grid_y[-1])
        return Forecast(
            stamps, flat, flat.copy(), flat.copy(), level, "constant", step_ns, None, origin, flat[0]
        )
    center = float(np.mean(grid_y))
    z = (grid_y - center) / scale  # optimisers behave on unit-scale data (bytes can be 1e12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from statsmodels' optimisers
        mean, lower, upper, name = _fit_predict(z, steps, period, level, method)
    return Forecast(
        timestamps_ns=stamps,
        mean=mean * scale + center,
        lower=lower * scale + center,
        upper=upper * scale + center,
        level=level,
        method=name,
        step_ns=step_ns,
        season_ns=period * step_ns if period else None,
        origin_ns=origin,
        last_value=float(grid_y[-1]),
    )


def _regular(t: np.ndarray, y: np.ndarray, step_ns: int) -> np.ndarray:
    """Values on a grid ending at the last time: means per cell, gaps filled linearly."""
    cell = np.rint((t - t[-1]) / step_ns).astype(np.int64)
    cell -= cell[0]
    n = int(cell[-1]) + 1
    sums = np.bincount(cell, weights=y, minlength=n)
    counts = np.bincount(cell, minlength=n)
    have = counts > 0
    out = np.empty(n)
    out[have] = sums[have] / counts[have]
    if not have.all():
        idx = np.arange(n)
        out[~have] = np.interp(idx[~have], idx[have], out[have])
    return out


def _period(y: np.ndarray, step_ns: int, season_ns: int | None) -> int:
    """The season in grid steps, 0 for none: the given one if the data hold two cycles, else detected."""
    if season_ns is not None:
        if season_ns < 0:
            raise ValueError(f"season_ns: must be positive, 0 (no season) or None (detect), got {season_ns}")
        period = round(season_ns / step_ns)
        return period if period >= 2 and len(y) >= 2 * period else 0
    x = y - np.polyval(np.polyfit(np.arange(len(y)), y, 1), np.arange(len(y)))
    scores: dict[int, float] = {}
    for candidate in _SEASON_CANDIDATES_NS:
        period = round(candidate / step_ns)
        if period < 2 or len(y) < 3 * period:
            continue
        a, b = x[period:], x[:-period]
        if a.std() > 0 and b.std() > 0:
            scores[period] = float(np.corrcoef(a, b)[0, 1])
    if not scores or max(scores.values()) < _SEASON_MIN_ACF:
        return 0
    # A week also repeats its days: prefer the longer season when it correlates about as well.
    top = max(scores.values())
    return max(p for p, score in scores.items() if score >= top - 0.05)


def _fit_predict(
    z: np.ndarray, steps: int, period: int, level: float, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    from statsmodels.tsa.arima.model import ARIMA
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    from statsmodels.tsa.forecasting.stl import STLForecast

    if method == "arima":
        candidates = [(ARIMA, {"order": (1, 1, 1), "trend": "t"}, "arima(1,1,1)+drift")]
    else:
        candidates = [
            (ETSModel, {"error": "add", "trend": None}, "ets(A,N,N)"),
            (ETSModel, {"error": "add", "trend": "add"}, "ets(A,A,N)"),
            (ETSModel, {"error": "add", "trend": "add", "damped_trend": True}, "ets(A,Ad,N)"),
        ]
    import pandas as pd

    series = pd.Series(z)  # ETSModel's prediction wants an index
    best = None
    for model, kwargs, name in candidates:
        if period:
            fitted = STLForecast(series, model, model_kwargs=kwargs, period=period, **_STL_KW).fit(
                fit_kwargs={"disp": False} if model is ETSModel else None
            )
            score = _aicc(fitted.model_result)
            name = f"stl({period})+{name}"
        else:
            fitted = model(series, **kwargs).fit(**({"disp": False} if model is ETSModel else {}))
            score = _aicc(fitted)
        if best is None or score < best[0]:
            best = (score, fitted, name)
    assert best is not None
    _, fitted, name = best
    n = len(z)
    pred = fitted.get_prediction(start=n, end=n + steps - 1)
    mean = np.asarray(pred.predicted_mean, dtype=np.float64)
    var = np.asarray(pred.var_pred_mean, dtype=np.float64)
    if period:
        var = var * (1 + _SEASON_VAR * period / n)
    se = np.sqrt(var)
    from scipy.stats import norm

    q = float(norm.ppf(0.5 + level / 2))
    return mean, mean - q * se, mean + q * se, name


def _aicc(result: Any) -> float:
    value = getattr(result, "aicc", None)
    value = result.aic if value is None else value
    return float(value) if np.isfinite(value) else math.inf


def time_to_limit(fc: Forecast, limit: float, direction: str = "above") -> tuple[int | None, int | None]:
    """When the forecast first crosses ``limit``: ``(t_mean, t_earliest)`` in Unix nanoseconds.

    ``t_mean`` is when the mean crosses, ``t_earliest`` when the interval's near bound does (the
    upper bound for ``direction="above"``, the lower for ``"below"``), so the limit is reached
    before ``t_earliest`` with probability about ``(1 - level) / 2``. Crossings are interpolated
    linearly between grid steps, from the last observation on; a series already past the limit
    answers ``origin_ns``. None where no crossing happens within the horizon.
    """
    if direction not in ("above", "below"):
        raise ValueError(f"direction: expected 'above' or 'below', got {direction!r}")
    sign = 1.0 if direction == "above" else -1.0
    near = fc.upper if direction == "above" else fc.lower
    times = np.concatenate([[fc.origin_ns], fc.timestamps_ns]).astype(np.float64)
    return (
        _crossing(times, np.concatenate([[fc.last_value], fc.mean]), limit, sign),
        _crossing(times, np.concatenate([[fc.last_value], near]), limit, sign),
    )


def _crossing(times: np.ndarray, values: np.ndarray, limit: float, sign: float) -> int | None:
    over = sign * (values - limit) >= 0
    if not over.any():
        return None
    i = int(np.argmax(over))
    if i == 0:
        return int(times[0])
    v0, v1 = values[i - 1], values[i]
    frac = (limit - v0) / (v1 - v0) if v1 != v0 else 1.0
    return round(float(times[i - 1] + frac * (times[i] - times[i - 1])))
