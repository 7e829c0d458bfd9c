"""The ``forecast`` chain processor: keeps configured series, refits them off the chain, emits gauges.

:class:`ForecastProcessor` keeps the points of configured metrics, refits them on ``tick`` with
:func:`~otel_audio.processors.forecast_model.forecast` and emits the forecasts as gauge series,
so alert rules can page on ``forecast.time_to_limit_seconds < 6h`` before a resource runs out.
A fit takes about a second per series, so the processor runs :func:`forecast` in a worker
process (``workers``, default 1) and its ``tick`` only hands due series over and collects
finished forecasts: ingest, which waits for the chain's lock, never waits for a fit.
``workers: 0`` fits inline, inside ``tick``.

This module is the processor's runtime (buffering, scheduling, the worker pool, the emitted
series). The model maths are in :mod:`otel_audio.processors.forecast_model`; the receiver's
options are parsed into :class:`SeriesSpec` by :func:`otel_audio.processors.forecast.from_options`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
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
from otel_audio.processors.forecast_model import MAX_POINTS, MIN_POINTS, Forecast, forecast, time_to_limit

# The name the processor logged under before it moved out of forecast.py: log filters keep matching.
_log = logging.getLogger("otel_audio.processors.forecast")

_HOUR_NS = 3600 * 10**9
_SCOPE_NAME = "otel_audio.processors.forecast"
_SCOPE = canonical_json({"attributes": {}, "name": _SCOPE_NAME, "version": ""})
_OUTPUTS = ("value", "lower", "upper")


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
