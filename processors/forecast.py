"""Capacity forecasting: where a resource series is heading, with prediction intervals.

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

:class:`ForecastProcessor` (chain name ``forecast``) does this continuously for configured
metrics and emits the forecasts as gauge series, so alert rules can page on
``forecast.time_to_limit_seconds < 6h`` before a resource runs out. A fit takes about a second
per series, so the processor runs :func:`forecast` in a worker process (``workers``, default 1)
and its ``tick`` only hands due series over and collects finished forecasts: ingest, which waits
for the chain's lock, never waits for a fit. ``workers: 0`` fits inline, inside ``tick``.

Example::

    fc = forecast(times_ns, used_bytes, horizon_ns=24 * 3600 * 10**9, season_ns=86400 * 10**9)
    t_mean, t_earliest = time_to_limit(fc, limit=0.9 * disk_bytes)
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
    MetricType,
    Temporality,
    canonical_json,
    series_id,
)
from otel_audio.processors.units import duration_ns

_log = logging.getLogger(__name__)

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


# -- the processor --------------------------------------------------------------------------------

_SCOPE_NAME = "otel_audio.processors.forecast"
_SCOPE = canonical_json({"attributes": {}, "name": _SCOPE_NAME, "version": ""})
_OUTPUTS = ("value", "lower", "upper")
_SPEC_KEYS = {"metric", "limit", "direction", "horizon", "refresh", "season", "step", "level", "method"}
_SPEC_KEYS |= {"attributes"}


@dataclass(frozen=True)
class SeriesSpec:
    """What to forecast: every gauge or sum series of ``metric`` whose attributes match.

    Args:
        metric: the source metric name.
        limit: the capacity limit; when set, ``forecast.time_to_limit_seconds`` is emitted.
        direction: ``above`` (usage growing towards a limit) or ``below`` (free space shrinking).
        horizon_ns: how far ahead to forecast.
        refresh_ns: how often to refit (on ``tick``).
        season_ns, step_ns, level, method: as for :func:`forecast`.
        attributes: only series with these point or resource attribute values.
    """

    metric: str
    limit: float | None = None
    direction: str = "above"
    horizon_ns: int = 24 * _HOUR_NS
    refresh_ns: int = 600 * 10**9
    season_ns: int | None = None
    step_ns: int | None = None
    level: float = 0.95
    method: str = "auto"
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass
class _Tracked:
    spec: SeriesSpec
    row: dict[str, Any]  # the source series' SERIES_SCHEMA row
    points: deque[tuple[int, float]]


@dataclass(frozen=True)
class _Refit:
    tracked: _Tracked
    now: int  # the tick that found the series due: its time_to_limit points are stamped with it
    future: Future
    executor: Executor  # the one that runs it, to tell a broken pool from one started since


class _Inline(Executor):
    """Runs each call at once, on the caller's thread (``workers: 0``)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class ForecastProcessor:
    """Processor that refits configured series on ``tick`` and emits their forecasts as gauges.

    Per source series it emits ``forecast.value``, ``forecast.lower`` and ``forecast.upper`` (one
    point per step across the horizon, at future times) and, with a limit,
    ``forecast.time_to_limit_seconds`` (from ``now`` to the mean's crossing) and
    ``forecast.time_to_limit_earliest_seconds`` (to the interval bound's crossing); a crossing
    beyond the horizon is a point without a value (OTLP's no-recorded-value flag). Every emitted
    series carries the source's resource and attributes plus ``forecast.metric``.

    Refits run in ``workers`` processes (spawned, so the receiver's GIL and the chain's lock are
    free meanwhile). ``tick(now)`` submits each due series' points, at most one refit in flight
    per series (one still running is skipped until the next refresh), and emits, in submission
    order, the forecasts that finished since the last tick; their ``now`` is the submitting
    tick's, so the output equals an inline fit's. A refit that fails (a worker crashed, the fit
    raised) is logged, counted in ``failures``, recorded in ``errors`` and retried at the next
    refresh; a broken pool is replaced.

    Args:
        specs: the series to forecast.
        max_points: newest points kept per source series.
        max_series: source series tracked at most (further ones are ignored).
        workers: worker processes; 0 fits inline, inside ``tick``.
        fit: what a refit runs, with :func:`forecast`'s signature (the default, which the
            ``otel-audio forecast`` command runs too); a module-level function, since workers
            receive it by reference. Tests substitute one that blocks or crashes.
        close_timeout_s: how long ``close`` waits for running refits before stopping workers.
    """

    name = "forecast"

    def __init__(
        self,
        specs: Sequence[SeriesSpec],
        max_points: int = MAX_POINTS,
        max_series: int = 1000,
        *,
        workers: int = 1,
        fit: Callable[..., Forecast] = forecast,
        close_timeout_s: float = 2.0,
    ):
        if workers < 0:
            raise ValueError(f"workers: expected 0 (fit inline) or more processes, got {workers}")
        self.specs = list(specs)
        self._max_points = max_points
        self._max_series = max_series
        self._workers = workers
        self._fit = fit
        self._close_timeout_s = close_timeout_s
        self._by_metric: dict[str, list[SeriesSpec]] = {}
        for spec in self.specs:
            self._by_metric.setdefault(spec.metric, []).append(spec)
        self._tracked: dict[int, list[_Tracked]] = {}
        self._last_fit: dict[SeriesSpec, int] = {}
        self._running: dict[tuple[int, SeriesSpec], _Refit] = {}
        self._executor: Executor | None = None
        self._emit: Callable[[Batch], None] | None = None
        self.errors: dict[int, str] = {}  # source series id -> why its last fit failed
        self.failures = 0  # refits that raised something other than "this data cannot be fitted"

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        """The chain hands over how to pass new series to the processors after this one."""
        self._emit = emit

    def process(self, batch: Batch) -> None:
        """Buffer the points of configured series (gauges and sums) from a metric batch."""
        if not isinstance(batch, MetricBatch) or batch.points.num_rows == 0:
            return
        series = batch.series
        wanted = series.filter(pc.is_in(series.column("metric"), pa.array(list(self._by_metric))))
        for row in wanted.to_pylist():
            self._track(row)
        if not self._tracked:
            return
        points = batch.points.select(["series_id", "time_unix_nano", "value", "flags"])
        ids = pa.array(list(self._tracked), pa.uint64())
        points = points.filter(pc.is_in(points.column("series_id"), ids))
        if points.num_rows == 0:
            return
        sids = points.column("series_id").to_numpy(zero_copy_only=False)
        times = points.column("time_unix_nano").to_numpy(zero_copy_only=False)
        values = points.column("value").to_numpy(zero_copy_only=False)
        flags = points.column("flags").fill_null(0).to_numpy(zero_copy_only=False)
        ok = ((flags & 1) == 0) & np.isfinite(values.astype(np.float64))
        for sid, t, v in zip(sids[ok].tolist(), times[ok].tolist(), values[ok].tolist(), strict=True):
            for tracked in self._tracked[sid]:
                tracked.points.append((t, v))

    def _track(self, row: dict[str, Any]) -> None:
        sid = row["series_id"]
        if sid in self._tracked or row["type"] not in (MetricType.GAUGE.value, MetricType.SUM.value):
            return
        if len(self._tracked) >= self._max_series:
            return
        attrs = {**json.loads(row["resource"] or "{}"), **json.loads(row["attributes"] or "{}")}
        matching = [
            _Tracked(spec, row, deque(maxlen=self._max_points))
            for spec in self._by_metric[row["metric"]]
            if all(str(attrs.get(k)) == v for k, v in spec.attributes)
        ]
        if matching:
            self._tracked[sid] = matching

    @property
    def in_flight(self) -> int:
        """Refits submitted and not yet collected by a ``tick``."""
        return len(self._running)

    def tick(self, now_unix_nano: int) -> None:
        """Submit the series of every spec whose refresh interval has passed; emit finished fits."""
        due = {
            spec
            for spec in self.specs
            if now_unix_nano - self._last_fit.get(spec, -(2**62)) >= spec.refresh_ns
        }
        for sid, tracked_list in self._tracked.items():
            for tracked in tracked_list:
                if tracked.spec in due and len(tracked.points) >= MIN_POINTS:
                    self._submit(sid, tracked, now_unix_nano)
        for spec in due:
            self._last_fit[spec] = now_unix_nano
        self._collect()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the refits in flight have finished (a later ``tick`` emits them); True if
        they all did within ``timeout_s``. For tests and benchmarks: the chain never waits."""
        _, running = wait_futures([refit.future for refit in list(self._running.values())], timeout_s)
        return not running

    def close(self) -> None:
        """Stop the workers: pending refits are cancelled, running ones get ``close_timeout_s``."""
        executor, self._executor = self._executor, None
        running = [refit.future for refit in self._running.values()]
        self._running.clear()
        if executor is None:
            return
        # Python 3.11 has no public way to stop a busy worker (shutdown forgets them): a stuck
        # fit must not hold the receiver's exit, and its result is not wanted any more.
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        _, unfinished = wait_futures(running, self._close_timeout_s)
        if unfinished:
            for process in processes:
                process.terminate()

    def _pool(self) -> Executor:
        if self._executor is None:
            if self._workers == 0:
                self._executor = _Inline()
            else:
                spawn = multiprocessing.get_context("spawn")  # no fork of a threaded receiver
                self._executor = ProcessPoolExecutor(self._workers, mp_context=spawn)
        return self._executor

    def _submit(self, sid: int, tracked: _Tracked, now: int) -> None:
        key = (sid, tracked.spec)
        if key in self._running:
            return
        spec = tracked.spec
        times, values = zip(*tracked.points, strict=True)
        executor = self._pool()
        try:
            future = executor.submit(
                self._fit,
                np.array(times, np.int64),
                np.array(values, np.float64),
                spec.horizon_ns,
                step_ns=spec.step_ns,
                season_ns=spec.season_ns,
                level=spec.level,
                method=spec.method,
            )
        except (BrokenProcessPool, RuntimeError) as exc:  # RuntimeError: the pool was shut down
            self._failed(sid, spec, exc, executor, broken=True)
            return
        self._running[key] = _Refit(tracked, now, future, executor)

    def _collect(self) -> None:
        series: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        for key, refit in list(self._running.items()):
            if not refit.future.done():
                continue
            del self._running[key]
            sid = key[0]
            try:
                fc = refit.future.result()
            except ValueError as exc:  # this data cannot be fitted (yet): not a failure of ours
                self.errors[sid] = str(exc)
                continue
            except Exception as exc:
                broken = isinstance(exc, BrokenProcessPool)
                self._failed(sid, refit.tracked.spec, exc, refit.executor, broken=broken)
                continue
            self.errors.pop(sid, None)
            self._outputs(refit.tracked, fc, refit.now, series, points)
        if points and self._emit is not None:
            self._emit(
                MetricBatch(
                    points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
                    series=pa.Table.from_pylist(series, schema=SERIES_SCHEMA),
                    exemplars=EXEMPLARS_SCHEMA.empty_table(),
                )
            )

    def _failed(
        self, sid: int, spec: SeriesSpec, exc: BaseException, executor: Executor, broken: bool
    ) -> None:
        self.failures += 1
        self.errors[sid] = f"refit failed: {exc!r}"
        _log.warning(
            "forecast of %s (series %d) failed, retried at the next refresh: %r", spec.metric, sid, exc
        )
        if broken and executor is self._executor:
            # A worker died (killed, out of memory): the pool takes no more work; start another.
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)

    def _outputs(self, tracked: _Tracked, fc: Forecast, now: int, series: list, points: list) -> None:
        row, spec = tracked.row, tracked.spec
        attrs = {**json.loads(row["attributes"] or "{}"), "forecast.metric": spec.metric}
        attributes = canonical_json(attrs)
        stamps = fc.timestamps_ns.tolist()

        def add(metric: str, unit: str, description: str) -> int:
            sid = series_id(metric, row["resource"], _SCOPE, attributes)
            series.append(
                {
                    "series_id": sid,
                    "metric": metric,
                    "type": MetricType.GAUGE.value,
                    "unit": unit,
                    "description": description,
                    "temporality": Temporality.UNSPECIFIED.value,
                    "monotonic": False,
                    "service": row["service"],
                    "resource": row["resource"],
                    "scope": _SCOPE_NAME,
                    "scope_version": "",
                    "attributes": attributes,
                }
            )
            return sid

        for kind, values in zip(_OUTPUTS, (fc.mean, fc.lower, fc.upper), strict=True):
            sid = add(
                f"forecast.{kind}", row["unit"] or "", f"Forecast {kind} of {spec.metric} ({fc.method})"
            )
            points.extend(
                {"series_id": sid, "time_unix_nano": t, "value": v}
                for t, v in zip(stamps, values.tolist(), strict=True)
            )
        if spec.limit is None:
            return
        crossings = time_to_limit(fc, spec.limit, spec.direction)
        names = ("forecast.time_to_limit_seconds", "forecast.time_to_limit_earliest_seconds")
        for metric, crossing in zip(names, crossings, strict=True):
            sid = add(metric, "s", f"Seconds until {spec.metric} crosses {spec.limit:g} ({spec.direction})")
            if crossing is None:
                points.append({"series_id": sid, "time_unix_nano": now, "value": None, "flags": 1})
            else:
                points.append(
                    {"series_id": sid, "time_unix_nano": now, "value": max(crossing - now, 0) / 1e9}
                )


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
