"""The ``anomaly`` processor: one detector per series of the configured metrics, scores as new series.

For each gauge or sum point of a configured metric, the series' detector scores the value (the
increase since the previous point for cumulative sums), and the processor emits, through the
chain's ``emit``, four gauge series per source series: ``anomaly.score``, ``anomaly.expected``,
``anomaly.lower`` and ``anomaly.upper``, with the source's resource and attributes plus
``anomaly.metric`` (the source metric) and ``anomaly.detector``. Anomalous points are also kept as
events (newest last, at most ``max_events``), readable with :meth:`AnomalyProcessor.events`.

Options (``from_options``)::

    metrics: [audio.processing.duration, ...]   # required
    detector: ensemble                          # a name of DETECTORS
    params: {period: 288}                       # that detector's parameters
    max_events: 1000
    max_series: 10000                           # detectors kept at most; more series are skipped
    idle_seconds: 86400                         # tick(now) drops detectors of series silent longer
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.anomaly import params as check
from otel_audio.processors.anomaly.registry import DETECTORS, make_detector
from otel_audio.processors.anomaly.score import Detector
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
from otel_audio.version import __version__

OUTPUTS = ("anomaly.score", "anomaly.expected", "anomaly.lower", "anomaly.upper")
_SCOPE_NAME = "otel_audio.processors.anomaly"
_SCOPE = canonical_json({"attributes": {}, "name": _SCOPE_NAME, "version": __version__})
_KINDS = (MetricType.GAUGE.value, MetricType.SUM.value)
_NO_VALUE = 1  # OTLP DataPointFlags bit 0
OPTIONS = ("metrics", "detector", "params", "max_events", "max_series", "idle_seconds")


class _Series:
    __slots__ = ("detector", "last_seen", "meta", "out_ids", "previous", "start")

    def __init__(self, detector: Detector, meta: dict[str, Any], out_ids: list[int]) -> None:
        self.detector = detector
        self.meta = meta
        self.out_ids = out_ids
        self.last_seen = 0
        self.previous: float | None = None  # cumulative sums: the last value
        self.start = 0  # cumulative sums: the start time it belongs to


class AnomalyProcessor:
    """Processor running a detector per series of the configured metrics.

    Args:
        metrics: metric names to watch.
        detector: a name of :data:`DETECTORS`.
        params: the detector's parameters (checked here, by building one detector).
        max_events: anomaly events kept.
        max_series: detectors kept at most.
        idle_seconds: a series silent for longer loses its detector on ``tick``.
    """

    name = "anomaly"

    def __init__(
        self,
        metrics: list[str],
        detector: str = "ensemble",
        params: dict[str, Any] | None = None,
        max_events: int = 1000,
        max_series: int = 10_000,
        idle_seconds: float = 86_400,
    ) -> None:
        self.metrics = frozenset(metrics)
        self.detector = detector
        self.params = dict(params or {})
        make_detector(detector, **self.params)  # fail now, not on the first point
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._max_series = max_series
        self._idle_ns = int(idle_seconds * 1e9)
        self._series: dict[int, _Series] = {}
        self._out_table: pa.Table | None = None  # output series rows of every series, in _series order
        self._out_rows: dict[int, int] = {}  # id(_Series) -> its position in _out_table
        self._emit: Callable[[Batch], None] | None = None

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        """The chain hands over how to pass new series to the processors after this one."""
        self._emit = emit

    def events(self) -> list[dict[str, Any]]:
        """The latest anomaly events, oldest first."""
        return list(self._events)

    def process(self, batch: Batch) -> None:
        if not isinstance(batch, MetricBatch) or batch.points.num_rows == 0:
            return
        self._register(batch.series)
        if not self._series:
            return
        points = batch.points
        ids = points.column("series_id").to_numpy(zero_copy_only=False)
        wanted = np.isin(ids, np.fromiter(self._series, dtype=np.uint64, count=len(self._series)))
        if not wanted.any():
            return
        index = np.flatnonzero(wanted)
        all_times = points.column("time_unix_nano").to_numpy(zero_copy_only=False)
        # Each series' points in time order, one series after another: a detector's state stays in
        # the CPU's caches while its points are scored (about 1.6x faster over 1,000 series than
        # going through all series by time). Results are put back in time order at the end.
        order = index[np.lexsort((all_times[index], ids[index]))]
        rank = np.empty(ids.size, np.int64)
        rank[index[np.argsort(all_times[index], kind="stable")]] = np.arange(index.size)
        rows = zip(  # Python values: one conversion per column, not per point
            rank[order].tolist(),
            *(
                points.column(name).to_numpy(zero_copy_only=False)[order].tolist()
                for name in ("series_id", "time_unix_nano", "value", "start_time_unix_nano", "flags")
            ),
            strict=True,
        )
        ranks: list[int] = []
        touched: list[_Series] = []
        out_times: list[int] = []
        out_values: list[tuple[float, float, float, float]] = []
        events: list[tuple[int, dict[str, Any]]] = []
        for position, sid, t, value, start, flag in rows:
            if flag == flag and int(flag) & _NO_VALUE:
                continue
            value = float(value)
            if value != value:
                continue
            state = self._series[sid]
            t = int(t)
            state.last_seen = max(state.last_seen, t)
            if state.meta["cumulative"]:
                start = int(start) if start == start else 0
                previous, state.previous = state.previous, value
                reset = start != state.start or previous is None or value < previous
                state.start = start
                if reset:
                    continue
                value -= previous
            score = state.detector.update(t, value)
            if score is None:
                continue
            ranks.append(position)
            touched.append(state)
            out_times.append(t)
            out_values.append((score.score, score.expected, score.lower, score.upper))
            if score.is_anomaly:
                events.append(
                    (
                        position,
                        {
                            "time_unix_nano": t,
                            "metric": state.meta["metric"],
                            "series_id": sid,
                            "service": state.meta["service"],
                            "attributes": state.meta["attributes"],
                            "detector": self.detector,
                            "value": value,
                            "score": score.score,
                            "expected": score.expected,
                            "lower": score.lower,
                            "upper": score.upper,
                            "explanation": score.explanation,
                        },
                    )
                )
        self._events.extend(event for _, event in sorted(events, key=lambda pair: pair[0]))
        if self._emit is not None and touched:
            by_time = np.argsort(np.array(ranks, np.int64)).tolist()
            self._emit(
                self._outputs(
                    [touched[i] for i in by_time],
                    [out_times[i] for i in by_time],
                    [out_values[i] for i in by_time],
                )
            )

    def _register(self, series: pa.Table) -> None:
        """Start a detector for each new watched series of ``series``, up to ``max_series``."""
        watched = pc.and_(
            pc.is_in(series.column("metric"), value_set=pa.array(sorted(self.metrics), pa.string())),
            pc.is_in(series.column("type"), value_set=pa.array(_KINDS, pa.string())),
        )
        candidates = series.filter(watched)
        if candidates.num_rows == 0 or len(self._series) >= self._max_series:
            return
        new = [sid not in self._series for sid in candidates.column("series_id").to_pylist()]
        if not any(new):
            return
        for row in candidates.filter(pa.array(new)).to_pylist():
            if row["series_id"] not in self._series and len(self._series) < self._max_series:
                self._series[row["series_id"]] = self._new_series(row)
                self._out_table = None

    def _outputs(self, touched: list[_Series], times: list[int], values: list[tuple]) -> MetricBatch:
        """The four output points of each scored point, and the output series of the touched ones."""
        n = 4 * len(times)
        columns = {
            "series_id": pa.array(np.array([s.out_ids for s in touched], np.uint64).ravel()),
            "time_unix_nano": pa.array(np.repeat(np.array(times, np.int64), 4)),
            "value": pa.array(np.array(values, np.float64).ravel()),
        }
        full = pa.table(
            [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in POINTS_SCHEMA],
            schema=POINTS_SCHEMA,
        )
        if self._out_table is None:  # every series' output rows, rebuilt when the series change
            self._out_rows = {}
            for i, state in enumerate(self._series.values()):
                self._out_rows[id(state)] = i
            rows = [r for state in self._series.values() for r in state.meta["out_rows"]]
            self._out_table = pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)
        first = np.array([self._out_rows[k] for k in {id(s): None for s in touched}], np.int64)
        taken = self._out_table.take((4 * first[:, None] + np.arange(4)).ravel())
        return MetricBatch(points=full, series=taken, exemplars=EXEMPLARS_SCHEMA.empty_table())

    def _new_series(self, row: dict[str, Any]) -> _Series:
        attributes = json.loads(row["attributes"] or "{}")
        attributes.update({"anomaly.metric": row["metric"], "anomaly.detector": self.detector})
        attrs = canonical_json(attributes)
        rows = []
        for name in OUTPUTS:
            sid = series_id(name, row["resource"], _SCOPE, attrs)
            rows.append(
                {
                    "series_id": sid,
                    "metric": name,
                    "type": MetricType.GAUGE.value,
                    "unit": "1" if name == "anomaly.score" else row["unit"],
                    "description": f"{name} of {row['metric']} by the {self.detector} detector",
                    "temporality": Temporality.UNSPECIFIED.value,
                    "monotonic": False,
                    "service": row["service"],
                    "resource": row["resource"],
                    "scope": _SCOPE_NAME,
                    "scope_version": __version__,
                    "attributes": attrs,
                }
            )
        meta = {
            "metric": row["metric"],
            "service": row["service"],
            "attributes": json.loads(row["attributes"] or "{}"),
            "cumulative": row["type"] == MetricType.SUM.value
            and row["temporality"] == Temporality.CUMULATIVE.value,
            "out_rows": rows,
        }
        return _Series(make_detector(self.detector, **self.params), meta, [r["series_id"] for r in rows])

    def tick(self, now_unix_nano: int) -> None:
        """Drop the detectors of series silent for longer than ``idle_seconds``."""
        cutoff = now_unix_nano - self._idle_ns
        for sid in [sid for sid, s in self._series.items() if s.last_seen < cutoff]:
            del self._series[sid]
            self._out_table = None

    def close(self) -> None:
        pass


def from_options(options: dict[str, Any]) -> AnomalyProcessor:
    """Build the processor from its config options; ValueError naming the bad key and what is accepted."""
    if not isinstance(options, dict):
        raise ValueError(f"anomaly options must be a mapping, got {type(options).__name__}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"anomaly: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(OPTIONS)}")
    metrics = options.get("metrics")
    if isinstance(metrics, str):
        metrics = [metrics]
    if not metrics or not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
        raise ValueError(f"anomaly.metrics must be a non-empty list of metric names, got {metrics!r}")
    detector = options.get("detector", "ensemble")
    if detector not in DETECTORS:
        raise ValueError(f"anomaly.detector: unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
    params = options.get("params") or {}
    if not isinstance(params, dict):
        raise ValueError(f"anomaly.params must be a mapping of parameter names to values, got {params!r}")
    try:
        return AnomalyProcessor(
            metrics,
            detector=detector,
            params=params,
            max_events=check.integer("anomaly.max_events", options.get("max_events", 1000), 1),
            max_series=check.integer("anomaly.max_series", options.get("max_series", 10_000), 1),
            idle_seconds=check.number("anomaly.idle_seconds", options.get("idle_seconds", 86_400), 0, 1e12),
        )
    except ValueError as exc:
        raise ValueError(f"anomaly: {exc}") from None
