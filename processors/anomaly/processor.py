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
        touched: list[_Series] = []
        columns: dict[str, list] = {"series_id": [], "time_unix_nano": [], "value": []}
        for row in batch.series.to_pylist():
            watched = row["metric"] in self.metrics and row["type"] in _KINDS
            if watched and row["series_id"] not in self._series and len(self._series) < self._max_series:
                self._series[row["series_id"]] = self._new_series(row)
        if not self._series:
            return
        points = batch.points
        ids = points.column("series_id").to_numpy(zero_copy_only=False)
        wanted = np.isin(ids, np.fromiter(self._series, dtype=np.uint64, count=len(self._series)))
        if not wanted.any():
            return
        index = np.flatnonzero(wanted)
        times = points.column("time_unix_nano").to_numpy(zero_copy_only=False)[index]
        order = index[np.argsort(times, kind="stable")]
        values = points.column("value").to_numpy(zero_copy_only=False)
        starts = points.column("start_time_unix_nano").to_numpy(zero_copy_only=False)
        flags = points.column("flags").to_numpy(zero_copy_only=False)
        all_times = points.column("time_unix_nano").to_numpy(zero_copy_only=False)
        for i in order.tolist():
            if flags[i] == flags[i] and int(flags[i]) & _NO_VALUE:
                continue
            value = float(values[i])
            if value != value:
                continue
            state = self._series[int(ids[i])]
            t = int(all_times[i])
            state.last_seen = max(state.last_seen, t)
            if state.meta["cumulative"]:
                start = int(starts[i]) if starts[i] == starts[i] else 0
                previous, state.previous = state.previous, value
                reset = start != state.start or previous is None or value < previous
                state.start = start
                if reset:
                    continue
                value -= previous
            score = state.detector.update(t, value)
            if score is None:
                continue
            touched.append(state)
            outputs = (score.score, score.expected, score.lower, score.upper)
            for sid, v in zip(state.out_ids, outputs, strict=True):
                columns["series_id"].append(sid)
                columns["time_unix_nano"].append(t)
                columns["value"].append(v)
            if score.is_anomaly:
                self._events.append(
                    {
                        "time_unix_nano": t,
                        "metric": state.meta["metric"],
                        "series_id": int(ids[i]),
                        "service": state.meta["service"],
                        "attributes": state.meta["attributes"],
                        "detector": self.detector,
                        "value": value,
                        "score": score.score,
                        "expected": score.expected,
                        "lower": score.lower,
                        "upper": score.upper,
                        "explanation": score.explanation,
                    }
                )
        if self._emit is not None and columns["series_id"]:
            n = len(columns["series_id"])
            table = pa.table(
                {
                    "series_id": pa.array(columns["series_id"], pa.uint64()),
                    "time_unix_nano": pa.array(columns["time_unix_nano"], pa.int64()),
                    "value": pa.array(columns["value"], pa.float64()),
                }
            )
            full = pa.table(
                {
                    f.name: table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type)
                    for f in POINTS_SCHEMA
                },
                schema=POINTS_SCHEMA,
            )
            emitted = {id(s): s for s in touched}.values()
            series_rows = [r for s in emitted for r in s.meta["out_rows"]]
            self._emit(
                MetricBatch(
                    points=full,
                    series=pa.Table.from_pylist(series_rows, schema=SERIES_SCHEMA),
                    exemplars=EXEMPLARS_SCHEMA.empty_table(),
                )
            )

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
