"""Derived audio metrics: the numbers an audio team asks for first, computed per event-time window.

:class:`DerivedMetrics` is a stage of the receiver's processor chain. It reads the metrics and
spans audio pipelines send (the SDK plugin's, or any sender following ``docs/semantic-
conventions.md``) and, for every tumbling window (``window``, default ``1m``), emits gauges at
the window's end (start time: its start) with ``aggregation.window`` set:
throughput, error ratio and its trend, real-time factor, quality index, CPU and GPU seconds,
memory GB-hours, cost and cost per audio hour, each as ``audio.derived.<name>``. Their labels,
units and exact definitions are tabled in ``docs/derived.md`` (Output); ``_DESCRIPTIONS`` below
gives each one's unit and description.

**Why ratios of sums.** A window's real-time factor is total processing time over total audio,
not the mean of per-call factors (a 1 s clip at RTF 2 and a 1 h file at RTF 0.1 together ran at
about 0.1, not 1.05); the same holds for the error ratio. Counts come from the metrics, which
are never sampled; the quality index needs each file's three scores together, which only its
span has, so it is a mean over spans weighted by their adjusted counts (as in
:mod:`~otel_audio.processors.spanmetrics`: ``1/p``, promoted spans 0), unbiased at any sampling
rate.

**Hours of audio.** ``audio.processed.duration`` counts a file's seconds once per stage that
handles it, so the audio of a pipeline in a window is the *largest* of its stages' increases
(every file passes the first stage), summed over pipelines; ``audio_stage`` names one stage to
use instead.

**Gauges as time.** GPU-seconds and GB-hours integrate a sampled level over the window; the mean
of the samples stands for the time average, exact for the periodic readers OpenTelemetry SDKs use.
GPU series of an ``hw.gpu.task`` other than ``general`` (decoder, encoder) are left out so a GPU
is not counted twice. A GB is 2^30 bytes, as cloud price lists bill memory.

**Time.** Windows are aligned to the epoch. A window keeps the points of its input series until
it closes (a few metrics, bounded by ``window + allowed_lateness``); counter increases are then
exact across batches and windows, in any arrival order (each series' newest point is carried to
the next window, with the reset rule of :func:`otel_audio.store.rollup.rollup`). The watermark
is the newest event time seen minus ``allowed_lateness``; ``tick(now)`` raises it to
``now - allowed_lateness``. A window is emitted once the watermark passes its end; points and
spans for an emitted window are counted in ``late_points``.

The options are validated by :mod:`otel_audio.processors.derived_options`, which also holds the
price table (:class:`Prices`) and the default input metrics (:data:`SOURCES`).

Example::

    derived = from_options({"window": "1m", "prices": {"cpu_second": 1.4e-5, "gb_hour": 4.5e-3}})
    derived.bind_emit(store.process)
    derived.process(batch)
    derived.tick(now_unix_nano)
"""

from __future__ import annotations

import json
import math
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    SpanBatch,
    Temporality,
    series_row,
)
from otel_audio.processors.derived_options import SOURCES, Prices, is_number, parse_options
from otel_audio.processors.spanmetrics import adjusted_count
from otel_audio.semconv import (
    AUDIO_PIPELINE,
    AUDIO_STAGE,
    ERROR_TYPE,
    QUALITY_PESQ,
    QUALITY_SNR,
    QUALITY_STOI,
    quality_index,
)
from otel_audio.store.rollup import Carry, rollup
from otel_audio.version import __version__

__all__ = ["GIB", "PREFIX", "SOURCES", "WINDOW_ATTRIBUTE", "DerivedMetrics", "Prices", "from_options"]

WINDOW_ATTRIBUTE = "aggregation.window"
PREFIX = "audio.derived"
GIB = 2**30
_SCOPE = "otel_audio.processors.derived"
_QUALITY_KEYS = (QUALITY_PESQ, QUALITY_STOI, QUALITY_SNR)
_RESOURCE_SERIES = (("cpu", "cpu_seconds"), ("gpu", "gpu_seconds"), ("gb_hours", "memory_gb_hours"))


@dataclass
class _Source:
    """What the stage needs to know of one input series."""

    role: str
    service: str
    pipeline: str
    stage: str
    failed: bool  # files: error.type set
    counted: bool = True  # False for GPU series of a non-general task
    cumulative: bool = False


@dataclass
class _Window:
    """What one open window holds: its input points and its files' weighted quality indexes."""

    points: list[pa.Table] = field(default_factory=list)
    quality: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(_pair))


class DerivedMetrics:
    """Processor emitting derived audio metrics per window (see the module docstring).

    Args:
        window_ns: window width; windows start at multiples of it.
        lateness_ns: how far behind the newest event time inputs are still accepted.
        prices: the price table for the cost series; all zero gives no cost series.
        sources: role -> metric name, overriding :data:`SOURCES`.
        trend_windows: how many recent windows the error-ratio trend is fitted on (at least 3).
        audio_stage: the stage whose ``audio.processed.duration`` counts audio hours.
        window_label: the window as written in the options (the ``aggregation.window`` value).
    """

    name = "derived"

    def __init__(
        self,
        window_ns: int = 60 * 10**9,
        lateness_ns: int = 0,
        prices: Prices | None = None,
        sources: Mapping[str, str] | None = None,
        trend_windows: int = 30,
        audio_stage: str | None = None,
        window_label: str = "1m",
    ) -> None:
        self.window_ns = window_ns
        self.lateness_ns = lateness_ns
        self.prices = prices or Prices()
        self.sources = {**SOURCES, **(sources or {})}
        self.trend_windows = trend_windows
        self.audio_stage = audio_stage
        self.window_label = window_label
        self.late_points = 0
        self._role_of = {metric: role for role, metric in self.sources.items()}
        self._inputs: dict[int, _Source] = {}
        self._series_rows: list[dict[str, Any]] = []
        self._series_table = SERIES_SCHEMA.empty_table()
        self._carry = Carry.empty()
        self._started: set[int] = set()  # series whose first point was seen
        self._open: dict[int, _Window] = {}  # window start -> sums
        self._closed_through: int | None = None  # every window starting before this was emitted
        self._max_event_ns: int | None = None
        self._ratios: dict[tuple[str, str], deque[tuple[float, float]]] = {}
        self._emit: Callable[[Batch], None] | None = None

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        """Where results go: the processors after this one."""
        self._emit = emit

    def process(self, batch: Batch) -> None:
        if isinstance(batch, MetricBatch) and batch.points.num_rows:
            self._add_metrics(batch)
        elif isinstance(batch, SpanBatch) and batch.spans.num_rows:
            self._add_spans(batch)
        else:
            return
        if self._max_event_ns is not None:
            self._advance(self._max_event_ns - self.lateness_ns)

    def tick(self, now_unix_nano: int) -> None:
        """Emit windows by processing time: the watermark is at least ``now - allowed_lateness``."""
        self._advance(now_unix_nano - self.lateness_ns)

    def close(self) -> None:
        """Emit every window holding data."""
        if self._open:
            self._advance(max(self._open) + self.window_ns)

    # -- inputs --------------------------------------------------------------------------------

    def _add_metrics(self, batch: MetricBatch) -> None:
        wanted = pc.is_in(batch.series.column("metric"), value_set=pa.array(list(self._role_of)))
        series = batch.series.filter(wanted)
        if series.num_rows == 0:
            return
        new = [row for row in series.to_pylist() if row["series_id"] not in self._inputs]
        for row in new:
            self._inputs[row["series_id"]] = self._source(row)
            self._series_rows.append(row)
        if new:
            self._series_table = pa.Table.from_pylist(self._series_rows, schema=SERIES_SCHEMA)
        ids = pa.array(list(self._inputs), pa.uint64())
        points = batch.points.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA)
        points = points.filter(pc.is_in(points.column("series_id"), value_set=ids))
        if points.num_rows == 0:
            return
        t = points.column("time_unix_nano").to_numpy()
        self._max_event_ns = _newest(self._max_event_ns, int(t.max()))
        starts = t - t % self.window_ns
        for start in np.unique(starts).tolist():
            part = points.filter(pa.array(starts == start))
            if self._is_closed(start):
                self.late_points += part.num_rows
            else:
                self._open.setdefault(start, _Window()).points.append(part)

    def _baselines(self, points: pa.Table) -> pa.Table:
        """Carry, rather than count, the first point of a cumulative series that began earlier.

        Its value holds everything since the sender's start; only a series whose start time lies
        inside the point's window had all of it happen there. The others' first point serves as
        the baseline of the next one (a receiver started mid-run shows no burst).
        """
        sid = points.column("series_id").to_numpy()
        fresh = np.flatnonzero([int(s) not in self._started and self._inputs[int(s)].cumulative for s in sid])
        self._started.update(int(s) for s in np.unique(sid))
        if fresh.size == 0:
            return points
        t = points.column("time_unix_nano").to_numpy()[fresh]
        order = fresh[np.lexsort((t, sid[fresh]))]
        first = order[np.r_[True, sid[order][1:] != sid[order][:-1]]]
        st = pc.fill_null(points.column("start_time_unix_nano"), 0).to_numpy()[first]
        t_first = points.column("time_unix_nano").to_numpy()[first]
        baseline = first[(st <= 0) | (st < t_first - t_first % self.window_ns)]
        if baseline.size == 0:
            return points
        self._carry = Carry(pa.concat_tables([self._carry.points, points.take(baseline)]))
        keep = np.ones(points.num_rows, bool)
        keep[baseline] = False
        return points.filter(pa.array(keep))

    def _source(self, row: dict[str, Any]) -> _Source:
        attrs = _loads(row["attributes"])
        role = self._role_of[row["metric"]]
        task = attrs.get("hw.gpu.task")
        return _Source(
            role=role,
            service=row["service"] or "",
            pipeline=_text(attrs.get(AUDIO_PIPELINE)),
            stage=_text(attrs.get(AUDIO_STAGE)),
            failed=_text(attrs.get(ERROR_TYPE)) != "",
            counted=role != "gpu_utilization" or task in (None, "", "general"),
            cumulative=row["temporality"] == Temporality.CUMULATIVE.value,
        )

    def _add_spans(self, batch: SpanBatch) -> None:
        spans = batch.spans
        scored = pc.match_substring(spans.column("attributes"), QUALITY_PESQ)
        spans = spans.filter(pc.fill_null(scored, False))
        if spans.num_rows == 0:
            return
        columns = ("trace_state", "trace_id", "end_time_unix_nano", "service", "attributes")
        cols = {name: spans.column(name).to_pylist() for name in columns}
        for i in range(spans.num_rows):
            attrs = _loads(cols["attributes"][i])
            scores = [attrs.get(key) for key in _QUALITY_KEYS]
            if not all(is_number(s) for s in scores):
                continue
            weight, _ = adjusted_count(cols["trace_state"][i], cols["trace_id"][i], attrs)
            end = cols["end_time_unix_nano"][i] or 0
            self._max_event_ns = _newest(self._max_event_ns, end)
            start = end - end % self.window_ns
            if self._is_closed(start):
                self.late_points += 1
                continue
            if weight:
                sums = self._open.setdefault(start, _Window()).quality[
                    (cols["service"][i] or "", _text(attrs.get(AUDIO_PIPELINE)))
                ]
                sums[0] += weight * quality_index(*(float(s) for s in scores))
                sums[1] += weight

    def _is_closed(self, start: int) -> bool:
        return self._closed_through is not None and start < self._closed_through

    # -- windows -------------------------------------------------------------------------------

    def _advance(self, watermark: int) -> None:
        due = sorted(start for start in self._open if start + self.window_ns <= watermark)
        if not due:
            return
        series: dict[int, dict[str, Any]] = {}
        points: list[dict[str, Any]] = []
        for start in due:
            window = self._open.pop(start)
            for metric, labels, value in self._results(start, window):
                if not math.isfinite(value):
                    continue
                row = self._series_row(metric, labels)
                series.setdefault(row["series_id"], row)
                points.append(
                    {
                        "series_id": row["series_id"],
                        "time_unix_nano": start + self.window_ns,
                        "start_time_unix_nano": start,
                        "value": float(value),
                        "flags": 0,
                    }
                )
        self._closed_through = due[-1] + self.window_ns
        if self._emit is not None and points:
            self._emit(
                MetricBatch(
                    points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
                    series=pa.Table.from_pylist(list(series.values()), schema=SERIES_SCHEMA),
                    exemplars=EXEMPLARS_SCHEMA.empty_table(),
                )
            )

    def _results(self, start: int, window: _Window):
        """``(metric, labels, value)`` of every derived series of one window."""
        sums = self._sums(window)
        seconds = self.window_ns / 1e9
        files: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        stage_s: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        resources: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        audio_by_stage: dict[tuple[str, str, str], float] = defaultdict(float)
        for sid, (increase, sum_increase, total, count) in sums.items():
            src = self._inputs[sid]
            if src.role == "files":
                files[(src.service, src.pipeline)][0] += increase
                files[(src.service, src.pipeline)][1] += increase if src.failed else 0.0
            elif src.role == "stage_seconds":
                stage_s[(src.service, src.pipeline, src.stage)][0] += sum_increase
            elif src.role == "audio_seconds":
                stage_s[(src.service, src.pipeline, src.stage)][1] += increase
                audio_by_stage[(src.service, src.pipeline, src.stage)] += increase
            elif src.role == "cpu_seconds":
                resources[src.service]["cpu"] += increase
            elif src.role == "gpu_utilization" and src.counted and count:
                resources[src.service]["gpu"] += total / count * seconds
            elif src.role == "memory_bytes" and count:
                resources[src.service]["gb_hours"] += total / count / GIB * seconds / 3600
        for (service, pipeline), (done, failed) in sorted(files.items()):
            labels = {"service": service, AUDIO_PIPELINE: pipeline}
            yield "throughput", labels, done * 60.0 / seconds
            if done > 0:
                yield "error_ratio", labels, failed / done
                trend = self._trend((service, pipeline), (start + self.window_ns) / 3.6e12, failed / done)
                if trend is not None:
                    yield "error_ratio.trend", labels, trend
        for (service, pipeline, stage), (busy, audio) in sorted(stage_s.items()):
            if audio > 0:
                yield (
                    "realtime_factor",
                    {"service": service, AUDIO_PIPELINE: pipeline, AUDIO_STAGE: stage},
                    busy / audio,
                )
        for (service, pipeline), (weighted, weight) in sorted(window.quality.items()):
            if weight > 0:
                yield "quality_index", {"service": service, AUDIO_PIPELINE: pipeline}, weighted / weight
        yield from self._costs(resources, self._audio_hours(audio_by_stage))

    def _costs(self, resources: dict[str, dict[str, float]], audio_hours: dict[str, float]):
        prices = self.prices
        priced = prices.cpu_second or prices.gpu_second or prices.gb_hour
        for service, used in sorted(resources.items()):
            labels = {"service": service}
            for key, metric in (
                ("cpu", "cpu_seconds"),
                ("gpu", "gpu_seconds"),
                ("gb_hours", "memory_gb_hours"),
            ):
                if key in used:
                    yield metric, labels, used[key]
            if not priced:
                continue
            cost = (
                used.get("cpu", 0.0) * prices.cpu_second
                + used.get("gpu", 0.0) * prices.gpu_second
                + used.get("gb_hours", 0.0) * prices.gb_hour
            )
            yield "cost", labels, cost
            if audio_hours.get(service, 0.0) > 0:
                yield "cost_per_audio_hour", labels, cost / audio_hours[service]

    def _audio_hours(self, by_stage: dict[tuple[str, str, str], float]) -> dict[str, float]:
        """Hours of audio per service: per pipeline the named stage's, else the largest stage's."""
        per_pipeline: dict[tuple[str, str], float] = defaultdict(float)
        for (service, pipeline, stage), audio in by_stage.items():
            if self.audio_stage is None:
                per_pipeline[(service, pipeline)] = max(per_pipeline[(service, pipeline)], audio)
            elif stage == self.audio_stage:
                per_pipeline[(service, pipeline)] += audio
        hours: dict[str, float] = defaultdict(float)
        for (service, _), audio in per_pipeline.items():
            hours[service] += audio / 3600
        return hours

    def _sums(self, window: _Window) -> dict[int, tuple[float, float, float, int]]:
        """Per input series: (increase, sum increase, sum of values, count) in the window.

        Windows close in time order and each holds all its points by then, so one
        :func:`rollup` per window, with the carry of the previous one, gives exact increases
        whatever order the points arrived in within the allowed lateness.
        """
        if not window.points:
            return {}
        points = self._baselines(pa.concat_tables(window.points))
        rows, self._carry = rollup(points, self._series_table, self.window_ns, self._carry)
        self.late_points += self._carry.skipped_late
        out = {}
        for row in rows.select(["series_id", "increase", "sum_increase", "sum", "count"]).to_pylist():
            out[row["series_id"]] = (
                row["increase"] or 0.0,
                row["sum_increase"] or 0.0,
                row["sum"] or 0.0,
                row["count"] or 0,
            )
        return out

    def _trend(self, key: tuple[str, str], hours: float, ratio: float) -> float | None:
        """Least-squares slope (per hour) of the recent error ratios of one pipeline."""
        history = self._ratios.setdefault(key, deque(maxlen=self.trend_windows))
        history.append((hours, ratio))
        if len(history) < 3:
            return None
        x, y = np.array(history).T
        return float(np.polyfit(x - x[-1], y, 1)[0])

    def _series_row(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        service = labels.get("service", "")
        attrs = {k: v for k, v in labels.items() if k != "service" and v != ""}
        attrs[WINDOW_ATTRIBUTE] = self.window_label
        unit, description = _DESCRIPTIONS[name]
        if name.startswith("cost"):
            unit = unit.format(currency=self.prices.currency)
        return series_row(
            f"{PREFIX}.{name}",
            scope=_SCOPE,
            scope_version=__version__,
            service=service,
            attributes=attrs,
            unit=unit,
            description=description,
        )


_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "throughput": ("{file}/min", "Files finished per minute."),
    "error_ratio": ("1", "Share of finished files that failed."),
    "error_ratio.trend": ("1/h", "Slope of the error ratio over recent windows, per hour."),
    "realtime_factor": ("1", "Processing seconds per second of audio (total over total)."),
    "quality_index": ("1", "Mean composite quality index of scored files, sampling-weighted."),
    "cpu_seconds": ("s", "CPU seconds used."),
    "gpu_seconds": ("s", "GPU seconds used (utilization integrated over time)."),
    "memory_gb_hours": ("GiBy.h", "Memory held, in GB-hours (GB = 2^30 bytes)."),
    "cost": ("{{{currency}}}", "Cost of the resources used, from the configured prices."),
    "cost_per_audio_hour": ("{{{currency}}}/h", "Cost per hour of audio processed."),
}


# -- helpers ---------------------------------------------------------------------------------------


def _pair() -> list[float]:
    return [0.0, 0.0]


def _newest(current: int | None, candidate: int | None) -> int | None:
    if candidate is None:
        return current
    return candidate if current is None else max(current, candidate)


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# -- options ---------------------------------------------------------------------------------------


def from_options(options: dict[str, Any] | None) -> DerivedMetrics:
    """Build a :class:`DerivedMetrics` from the receiver config's ``derived`` options.

    Keys (all optional): ``window`` (default ``1m``), ``allowed_lateness`` (``0s``),
    ``trend_windows`` (30), ``prices`` (``cpu_second``, ``gpu_second``, ``gb_hour``: numbers >= 0;
    ``currency``: a name, default ``USD``), ``sources`` (role -> metric name; roles as in
    :data:`SOURCES`), ``audio_stage`` (a stage name).

    Raises:
        ValueError: naming the option that is wrong and what it accepts.
    """
    return DerivedMetrics(**parse_options(options))
