"""What the SLO engine reads from the store: per-series raw samples of counters and histograms.

Prometheus-equal windowed ratios need each series' raw samples, not bucketed aggregates, so the
series are selected with the ``QueryEngine`` (its label rules: point attribute, then resource
attribute, then ``service.name``) and their points read from the store's view (head and raw
blocks). A counter gives its value, a histogram its observation count, or with ``le`` the count
of observations ``<= le`` (:mod:`otel_audio.processors.slo.compute`). Delta sums and histograms
are accumulated into cumulative samples so the same counter maths applies.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pyarrow as pa

from otel_audio.processors.alerting.grammar import Selector
from otel_audio.processors.slo import compute
from otel_audio.processors.slo.compute import explicit_good_count, exponential_good_count
from otel_audio.store.query import Matcher, QueryEngine, QueryError
from otel_audio.store.tiers import MINUTE
from otel_audio.store.view import settled_view

_HIST = ("histogram", "exponential_histogram")


def matchers(selector: Selector, service: str = "") -> tuple[Matcher, ...]:
    """The query matchers of an alert-grammar selector, plus ``service="..."`` when given."""
    out = [Matcher(m.name, m.op, m.value) for m in selector.matchers]
    if service:
        out.append(Matcher("service", "=", service))
    return tuple(out)


class Selection(list):
    """The raw samples of the selected series (a list of ``(times, values)``), and the events of
    their 1-minute rollups older than their raw points in the asked range (``archived_t``: each
    rollup row's newest point time, ``archived_inc``: its increase).

    Raw points are kept for ``storage.blocks.retention.raw`` (7 days by default); a longer SLO
    window reads its older part from the rollups: plain increases, no extrapolation. The rollup
    window holding a series' first raw point is left to neither (up to a minute of events at the
    seam is not counted) so nothing counts twice.
    """

    archived_t: np.ndarray = np.zeros(0, np.int64)
    archived_inc: np.ndarray = np.zeros(0)

    def archived_events(self) -> float:
        return float(self.archived_inc.sum())


def samples(
    engine: QueryEngine, store: Any, selector: Selector, service: str, start_ns: int, end_ns: int,
    le: float = math.nan,
) -> Selection:  # fmt: skip
    """Raw samples with time in ``[start_ns, end_ns]`` of every matching series (empty if the
    metric is unknown), with the older rollup events (:class:`Selection`).

    Raises:
        ValueError: ``le`` is given and an explicit histogram has no bound equal to it.
    """
    try:
        meta = {m["name"]: m for m in engine.list_metrics()}.get(selector.metric)
        if meta is None:
            return Selection()
        rows = engine.list_series(selector.metric, matchers(selector, service))
    except QueryError:
        return Selection()
    if not rows:
        return Selection()
    kind, delta = meta["type"], meta["temporality"] == "delta"
    ids = np.array([r["series_id"] for r in rows], np.uint64)
    columns = ["series_id", "time_unix_nano", "flags"]
    if kind not in _HIST:
        columns.append("value")
    elif math.isnan(le):
        columns.append("count")
    elif kind == "histogram":
        columns += ["bounds", "bucket_counts"]
    else:
        columns += ["exp_scale", "exp_zero_count", "exp_positive_offset", "exp_positive_counts"]
    try:
        return _read(store.view(), ids, columns, kind, delta, start_ns, end_ns, le)
    except FileNotFoundError:  # compaction or retention removed a block under the view: once more
        return _read(settled_view(store), ids, columns, kind, delta, start_ns, end_ns, le)


def _read(
    view: Any, ids: np.ndarray, columns: list[str], kind: str, delta: bool, start_ns: int, end_ns: int,
    le: float,
) -> Selection:  # fmt: skip
    """The samples and older rollup events of series ``ids`` as one store view holds them."""
    points = view.points(ids, start_ns, end_ns + 1, columns).select(columns)
    sid = points.column("series_id").to_numpy(zero_copy_only=False)
    times = points.column("time_unix_nano").to_numpy(zero_copy_only=False)
    flags = points.column("flags").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    keep = np.isin(sid, ids) & (times >= start_ns) & (times <= end_ns) & ((flags & 1) == 0)
    index = np.flatnonzero(keep)
    index = index[np.lexsort((times[index], sid[index]))]  # by series, then time
    points = points.take(pa.array(index))
    sid, times = sid[index], times[index]
    if kind in _HIST:
        values = _histogram_values(points, kind, le)
    else:
        values = points.column("value").to_numpy(zero_copy_only=False).astype(float)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if len(sid) else np.array([], np.int64)
    out = Selection()
    first_raw: dict[int, int] = {}
    ends = [*starts[1:], len(sid)] if len(starts) else []  # no points in the range: no series
    for lo, hi in zip(starts, ends, strict=True):
        t, v = times[lo:hi], values[lo:hi]
        if delta:
            v = np.cumsum(v)
        out.append((t, v))
        first_raw[int(sid[lo])] = int(t[0])
    if view.has_blocks and math.isnan(le):  # histogram le needs bucket bounds: raw points only
        _archive(out, view.rollups(MINUTE, ids, start_ns, end_ns + 1, histograms=False), start_ns, first_raw)
    return out


def _archive(out: Selection, rolled: pa.Table, start_ns: int, first_raw: dict[int, int]) -> None:
    if rolled.num_rows == 0:
        return
    sid = rolled.column("series_id").to_numpy(zero_copy_only=False)
    begins = rolled.column("window_start_ns").to_numpy(zero_copy_only=False)
    ends = begins + rolled.column("window_ns").to_numpy(zero_copy_only=False)
    increase = rolled.column("increase").to_numpy(zero_copy_only=False).astype(float)
    last = rolled.column("last_time_ns").to_numpy(zero_copy_only=False)
    never = np.iinfo(np.int64).max
    first = np.array([first_raw.get(int(x), never) for x in sid], dtype=np.int64)
    keep = (begins >= start_ns) & (ends <= first) & ~np.isnan(increase)
    out.archived_t, out.archived_inc = last[keep], increase[keep]


def window_events(selection: Selection, start: int, end: int) -> float:
    """Events of the whole window: Prometheus's increase of the raw samples plus older rollup events."""
    raw = compute.sum_increase(selection, start, end)
    archived = selection.archived_events() if len(selection.archived_inc) else math.nan
    if math.isnan(raw):
        return archived
    return raw + (0.0 if math.isnan(archived) else archived)


def step_events(selection: Selection, start: int, end: int, step: int) -> np.ndarray:
    """Events per step: raw increments plus rollup events, each at the time it was reported."""
    out = compute.step_increases(selection, start, end, step)
    k = (selection.archived_t - start) // step
    inside = (selection.archived_t >= start) & (k < len(out))
    np.add.at(out, k[inside], selection.archived_inc[inside])
    return out


def _histogram_values(points: pa.Table, kind: str, le: float) -> np.ndarray:
    if math.isnan(le):
        return points.column("count").to_numpy(zero_copy_only=False).astype(float)
    if kind == "histogram":
        bounds = points.column("bounds").to_pylist()
        counts = points.column("bucket_counts").to_pylist()
        return np.array([explicit_good_count(b, c, le) for b, c in zip(bounds, counts, strict=True)])
    cols = [points.column(c).to_pylist() for c in ("exp_scale", "exp_zero_count", "exp_positive_offset",
                                                    "exp_positive_counts")]  # fmt: skip
    return np.array(
        [
            exponential_good_count(s, z or 0, o or 0, np.array(c or [], float), le)
            for s, z, o, c in zip(*cols, strict=True)
        ]
    )


def attributes(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
