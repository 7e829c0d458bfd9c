"""Streaming condition evaluation: unit behaviours, and equality with a brute-force recomputation.

The brute force below recomputes every leaf from all points observed so far, point by point in
plain Python (increments against the previous point of the series, the window filter, the merge
of bucket increments), and combines leaves with nested loops. The streaming windows must give the
same label sets and values for random histories of gauges, counters with resets, and explicit and
exponential histograms with resets, bound and scale changes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_audio.processors.alerting.evaluate import Evaluator, Windows
from otel_audio.processors.alerting.grammar import (
    DEFAULT_WINDOW_NS,
    Absent,
    And,
    Call,
    Compare,
    Not,
    Or,
    Selector,
    parse,
    percentile,
)
from otel_audio.processors.alerting.model import LabelMatcher, matches_all
from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    MetricType,
    Temporality,
    canonical_json,
    series_row,
)
from otel_audio.store import histograms as hist

S, M = 10**9, 60 * 10**9
T0 = 1_800_000_000 * S
KIND = {
    "gauge": MetricType.GAUGE,
    "sum": MetricType.SUM,
    "histogram": MetricType.HISTOGRAM,
    "exponential_histogram": MetricType.EXPONENTIAL_HISTOGRAM,
}


def row(
    metric: str, kind: str = "gauge", service: str = "svc", resource: dict | None = None, **attrs
) -> dict:
    res = canonical_json({"service.name": service, **(resource or {})}) if resource is not None else None
    return series_row(
        metric,
        scope="test",
        attributes=attrs,
        service=service,
        resource=res,
        kind=KIND[kind],
        monotonic=kind != "gauge",
    )


def batch(points: list[dict], series: list[dict]) -> MetricBatch:
    """A batch of ``points`` (dicts with ``series``: a series row, ``t`` and POINTS_SCHEMA fields)."""
    rows = [{"series_id": p["series"]["series_id"], "time_unix_nano": p["t"], **p["fields"]} for p in points]
    table = pa.Table.from_pylist(rows, schema=POINTS_SCHEMA)
    used = {p["series"]["series_id"] for p in points}
    series_table = pa.Table.from_pylist([s for s in series if s["series_id"] in used], schema=SERIES_SCHEMA)
    return MetricBatch(table, series_table, EXEMPLARS_SCHEMA.empty_table())


def gauge_points(series: dict, values: list[tuple[int, float]]) -> list[dict]:
    return [{"series": series, "t": T0 + t, "fields": {"value": v}} for t, v in values]


def counter_points(series: dict, values: list[tuple[int, float]], start: int = T0 - S) -> list[dict]:
    return [
        {"series": series, "t": T0 + t, "fields": {"value": v, "start_time_unix_nano": start}}
        for t, v in values
    ]


def run(condition: str, points: list[dict], series: list[dict], now: int) -> list[tuple[dict, float]]:
    windows = Windows()
    ev = Evaluator(parse(condition), windows)
    windows.observe(batch(sorted(points, key=lambda p: p["t"]), series))
    return [(s.labels, s.value) for s in ev.evaluate(T0 + now)]


# -- functions, one behaviour each -----------------------------------------------------------------

A = row("lat", stage="a")
B = row("lat", stage="b")


def test_avg_is_the_mean_of_the_points_in_the_window_end_inclusive_start_exclusive():
    pts = gauge_points(A, [(0, 100.0), (10 * S, 1.0), (40 * S, 3.0), (70 * S, 1000.0)])
    assert run("avg(lat, 1m) > 0", pts, [A], 60 * S + 10 * S) == [({"service": "svc", "stage": "a"}, 501.5)]
    assert run("avg(lat, 1m) > 0", pts, [A], 60 * S) == [({"service": "svc", "stage": "a"}, 2.0)]


def test_a_bare_metric_is_its_latest_value_and_stale_after_5m():
    pts = gauge_points(A, [(0, 7.0), (30 * S, 9.0)])
    assert run("lat > 1", pts, [A], 60 * S)[0][1] == 9.0
    assert run("lat > 1", pts, [A], 30 * S + 5 * M) == []


def test_each_series_is_decided_on_its_own():
    pts = gauge_points(A, [(0, 10.0)]) + gauge_points(B, [(0, 1.0)])
    assert [labels["stage"] for labels, _ in run("max(lat, 1m) > 5", pts, [A, B], S)] == ["a"]


def test_matchers_select_series_by_point_then_resource_attribute_and_service():
    hosted = row("lat", service="enh", resource={"host.name": "h1"}, stage="a")
    pts = gauge_points(hosted, [(0, 1.0)])
    assert run('lat{host.name="h1", service="enh", stage=~"a|b"} > 0', pts, [hosted], S) == [
        ({"host.name": "h1", "service": "enh", "stage": "a"}, 1.0)
    ]
    assert run('lat{service!="enh"} > 0', pts, [hosted], S) == []


def test_rate_of_a_counter_counts_a_restart_from_zero():
    c = row("frames", "sum")
    pts = counter_points(c, [(5 * S, 10.0), (15 * S, 15.0), (25 * S, 20.0)])
    pts += [{"series": c, "t": T0 + 35 * S, "fields": {"value": 3.0, "start_time_unix_nano": T0 + 30 * S}}]
    assert run("increase(frames, 30s) > 0", pts, [c], 35 * S)[0][1] == 5.0 + 5.0 + 3.0
    assert run("rate(frames, 30s) > 0", pts, [c], 35 * S)[0][1] == pytest.approx(13.0 / 30)


def test_a_counters_first_point_counts_only_when_it_started_inside_the_window():
    old = row("frames", "sum", stage="old")
    new = row("frames", "sum", stage="new")
    pts = counter_points(old, [(10 * S, 1000.0)], start=T0 - 3600 * S) + counter_points(
        new, [(10 * S, 7.0)], start=T0
    )
    assert run("increase(frames, 1m) >= 0", pts, [old, new], 20 * S) == [
        ({"service": "svc", "stage": "new"}, 7.0),
        ({"service": "svc", "stage": "old"}, 0.0),
    ]


def test_rate_of_a_gauge_gives_nothing():
    assert run("rate(lat, 1m) >= 0", gauge_points(A, [(0, 1.0), (S, 2.0)]), [A], 2 * S) == []


def test_rate_of_change_is_the_least_squares_slope_per_second():
    pts = gauge_points(A, [(0, 0.0), (10 * S, 1.0), (20 * S, 5.0)])
    slope = np.polyfit([0.0, 10.0, 20.0], [0.0, 1.0, 5.0], 1)[0]
    assert run("rate_of_change(lat, 1m) > 0", pts, [A], 20 * S)[0][1] == pytest.approx(slope)


def test_gauge_percentiles_interpolate_as_numpy():
    pts = gauge_points(A, [(i * S, float(v)) for i, v in enumerate([5, 1, 9, 3])])
    assert run("p90(lat, 1m) > 0", pts, [A], 10 * S)[0][1] == pytest.approx(np.quantile([5, 1, 9, 3], 0.9))


def test_histogram_count_sum_avg_are_increases_of_count_and_sum():
    h = row("dur", "histogram")
    pts = [
        {
            "series": h,
            "t": T0 + i * 10 * S,
            "fields": {
                "count": c,
                "value": v,
                "start_time_unix_nano": T0 - S,
                "bounds": [1.0],
                "bucket_counts": [c, 0],
            },
        }
        for i, (c, v) in enumerate([(10, 5.0), (14, 9.0), (20, 21.0)])
    ]
    assert run("count(dur, 15s) > 0", pts, [h], 20 * S)[0][1] == 10.0
    assert run("sum(dur, 15s) > 0", pts, [h], 20 * S)[0][1] == 16.0
    assert run("avg(dur, 15s) > 0", pts, [h], 20 * S)[0][1] == 1.6


def test_absent_holds_when_no_selected_series_has_a_point_in_the_window():
    pts = gauge_points(A, [(0, 1.0)])
    assert run('absent(lat{stage="a", x=~".*"}, 1m)', pts, [A], 30 * S) == []
    assert run('absent(lat{stage="a", x=~".*"}, 1m)', pts, [A], 90 * S) == [({"stage": "a"}, 1.0)]
    assert run("absent(nothing)", pts, [A], 0) == [({}, 1.0)]


def test_anomaly_reads_the_latest_score_of_the_metrics_series():
    score = row("anomaly.score", stage="a", **{"anomaly.metric": "lat", "anomaly.detector": "mad"})
    other = row("anomaly.score", stage="a", **{"anomaly.metric": "other", "anomaly.detector": "mad"})
    pts = gauge_points(score, [(0, 0.95)]) + gauge_points(other, [(0, 0.99)])
    (sample,) = run('anomaly(lat{stage="a"}) > 0.9', pts, [score, other], S)
    assert sample == (
        {"anomaly.detector": "mad", "anomaly.metric": "lat", "service": "svc", "stage": "a"},
        0.95,
    )


def test_and_pairs_label_sets_that_agree_on_shared_names_and_keeps_the_left_value():
    err = row("errors", "gauge", stage="a", code="500")
    pts = gauge_points(A, [(0, 10.0)]) + gauge_points(B, [(0, 10.0)]) + gauge_points(err, [(0, 3.0)])
    assert run("lat > 5 and errors > 1", pts, [A, B, err], S) == [
        ({"code": "500", "service": "svc", "stage": "a"}, 10.0)
    ]


def test_or_is_the_union_and_the_left_side_wins_on_equal_label_sets():
    pts = gauge_points(A, [(0, 10.0)]) + gauge_points(B, [(0, 1.0)])
    assert run("lat > 5 or min(lat, 1m) > 0", pts, [A, B], S) == [
        ({"service": "svc", "stage": "a"}, 10.0),
        ({"service": "svc", "stage": "b"}, 1.0),
    ]


def test_not_holds_for_the_series_its_operand_reads_where_the_operand_is_false():
    pts = gauge_points(A, [(0, 10.0)]) + gauge_points(B, [(0, 1.0)])
    assert run("not lat > 5", pts, [A, B], S) == [({"service": "svc", "stage": "b"}, 1.0)]


def test_comparisons_with_nan_are_false():
    h = row("dur", "histogram")
    pts = [{"series": h, "t": T0, "fields": {"count": 0, "value": 0.0, "start_time_unix_nano": T0 - S}}]
    assert run("avg(dur, 1m) != 1", pts, [h], S) == []
    assert run("not avg(dur, 1m) > 1", pts, [h], S)[0][1] != run("not avg(dur, 1m) > 1", pts, [h], S)[0][1]


def test_two_rules_on_one_leaf_share_its_computation():
    windows = Windows()
    rules = [Evaluator(parse(f"avg(lat, 5m) > {x}"), windows) for x in range(100)]
    windows.observe(batch(gauge_points(A, [(0, 50.5)]), [A]))
    assert [len(r.evaluate(T0 + S)) for r in rules] == [1] * 51 + [0] * 49
    assert len(windows._cache) == 1


def test_observe_reports_the_watched_metrics_a_batch_touched():
    windows = Windows()
    ev = Evaluator(parse("avg(lat, 1m) > 1"), windows)
    other = row("unwatched")
    assert windows.observe(batch(gauge_points(other, [(0, 1.0)]), [other])) == set()
    assert windows.observe(batch(gauge_points(A, [(0, 1.0)]), [A])) == {"lat"}
    assert ev.metrics & {"lat"}


def test_points_older_than_the_longest_window_are_dropped():
    windows = Windows()
    Evaluator(parse("avg(lat, 1m) > 1"), windows)
    for i in range(100):
        windows.observe(batch(gauge_points(A, [(i * 10 * S, 1.0)]), [A]))
    assert windows.held_points() <= 7


def test_closing_the_last_evaluator_of_a_metric_forgets_it():
    windows = Windows()
    ev = Evaluator(parse("avg(lat, 1m) > 1"), windows)
    windows.observe(batch(gauge_points(A, [(0, 1.0)]), [A]))
    ev.close()
    assert windows.metrics == frozenset() and windows.held_points() == 0


def test_series_differing_only_in_scope_give_one_label_set_the_first_seen():
    first, second = A, {**row("lat", stage="a"), "scope": "other"}
    second["series_id"] = A["series_id"] + 1
    pts = gauge_points(first, [(0, 7.0)]) + gauge_points(second, [(S, 9.0)])
    assert run("lat > 1", pts, [first, second], 2 * S) == [({"service": "svc", "stage": "a"}, 7.0)]
    assert run("lat > 1 or lat > 1", pts, [first, second], 2 * S) == [({"service": "svc", "stage": "a"}, 7.0)]


def test_a_point_older_than_its_series_newest_is_dropped():
    windows = Windows()
    ev = Evaluator(parse("count(lat, 1m) > 0"), windows)
    windows.observe(batch(gauge_points(A, [(20 * S, 1.0)]), [A]))
    windows.observe(batch(gauge_points(A, [(10 * S, 5.0)]), [A]))
    assert [s.value for s in ev.evaluate(T0 + 30 * S)] == [1.0]


def test_series_may_arrive_out_of_time_order_across_batches():
    windows = Windows()
    ev = Evaluator(parse("avg(lat, 1m) > 0"), windows)
    windows.observe(batch(gauge_points(A, [(50 * S, 1.0)]), [A]))
    windows.observe(batch(gauge_points(B, [(10 * S, 3.0), (40 * S, 5.0)]), [B]))
    assert [(s.labels["stage"], s.value) for s in ev.evaluate(T0 + 55 * S)] == [("a", 1.0), ("b", 4.0)]


def test_old_points_of_a_new_series_beyond_every_window_are_not_kept():
    windows = Windows()
    ev = Evaluator(parse("avg(lat, 1m) > 0"), windows)
    windows.observe(batch(gauge_points(A, [(3600 * S, 1.0)]), [A]))
    windows.observe(batch(gauge_points(B, [(0, 3.0)]), [B]))
    assert [s.labels["stage"] for s in ev.evaluate(T0 + 3600 * S)] == ["a"]


def test_a_delta_counters_points_are_its_increments():
    d = {**row("frames", "sum"), "temporality": Temporality.DELTA.value}
    pts = counter_points(d, [(10 * S, 4.0), (20 * S, 6.0)], start=T0 - 3600 * S)
    assert run("increase(frames, 1m) > 0", pts, [d], 20 * S)[0][1] == 10.0


def test_an_up_down_counter_goes_down_without_a_reset():
    u = {**row("queue", "sum"), "monotonic": False}
    pts = counter_points(u, [(10 * S, 10.0), (20 * S, 4.0)])
    assert run("increase(queue, 15s) < 0", pts, [u], 20 * S)[0][1] == -6.0


def test_a_summary_has_count_and_sum_but_no_percentile():
    summary = {**row("lat_summary", "sum"), "type": MetricType.SUMMARY.value}
    pts = [
        {"series": summary, "t": T0 + t, "fields": {"count": c, "value": v, "start_time_unix_nano": T0 - S}}
        for t, c, v in ((10 * S, 4, 2.0), (20 * S, 10, 5.0))
    ]
    assert run("avg(lat_summary, 15s) > 0", pts, [summary], 20 * S)[0][1] == 0.5
    assert run("p99(lat_summary, 1m) > 0", pts, [summary], 20 * S) == []


# -- streaming equals brute force ------------------------------------------------------------------

SPECS = (("g", "gauge", 3), ("c", "sum", 3), ("h", "histogram", 2), ("e", "exponential_histogram", 2))
BOUNDS = ([1.0, 5.0, 10.0], [1.0, 2.0, 5.0, 10.0])


def _dense(buckets: dict[int, int]) -> tuple[int, list[int]]:
    if not buckets:
        return 0, []
    lo, hi = min(buckets), max(buckets)
    return lo, [buckets.get(i, 0) for i in range(lo, hi + 1)]


def history(seed: int) -> tuple[list[dict], list[dict]]:
    """Series rows and their points, sorted by time: gauges, counters that restart or drop, explicit
    histograms that restart, change bounds or move counts between buckets, exponential histograms
    that restart, lower their scale or move counts."""
    rng = np.random.default_rng(seed)
    series, points = [], []
    for metric, kind, n in SPECS:
        for i in range(n):
            s = row(metric, kind, i=str(i))
            series.append(s)
            t = T0 + int(rng.integers(0, 20)) * S + i
            st = t - int(rng.choice([1, 1000])) * S
            v, counts, bounds, total = 0.0, np.zeros(4, np.int64), BOUNDS[0], 0.0
            scale, zero, pos, neg = 3, 0, {}, {}
            for _ in range(int(rng.integers(3, 30))):
                t += int(rng.integers(1, 40)) * S
                event = rng.random()
                fields: dict = {"start_time_unix_nano": st}
                if kind == "gauge":
                    fields = {"value": float(rng.integers(0, 20))}
                elif kind == "sum":
                    if event < 0.1:
                        st, v = t - S, float(rng.integers(0, 5))
                    elif event < 0.15:
                        v = float(v // 2)
                    else:
                        v += float(rng.integers(0, 6))
                    fields = {"value": v, "start_time_unix_nano": st}
                elif kind == "histogram":
                    if event < 0.1:
                        st, counts, total = t - S, np.zeros(len(bounds) + 1, np.int64), 0.0
                    elif event < 0.15:
                        bounds = BOUNDS[1] if bounds is BOUNDS[0] else BOUNDS[0]
                        counts = np.zeros(len(bounds) + 1, np.int64)
                    elif event < 0.2 and counts.sum():
                        j = int(np.flatnonzero(counts)[0])
                        counts[j] -= 1
                        counts[(j + 1) % counts.size] += 1
                    for _ in range(int(rng.integers(0, 4))):
                        counts[int(rng.integers(0, counts.size))] += 1
                        total += float(rng.uniform(0, 12))
                    fields = {
                        "start_time_unix_nano": st,
                        "count": int(counts.sum()),
                        "value": total,
                        "bounds": list(bounds),
                        "bucket_counts": [int(c) for c in counts],
                        "min": float(rng.uniform(0, 1)) if event > 0.3 else None,
                        "max": float(rng.uniform(10, 20)) if event > 0.3 else None,
                    }
                else:
                    if event < 0.1:
                        st, zero, pos, neg, total = t - S, 0, {}, {}, 0.0
                    elif event < 0.2 and scale > 0:
                        scale -= 1
                        pos = _downscaled(pos, 1)
                        neg = _downscaled(neg, 1)
                    elif event < 0.25 and any(pos.values()):
                        j = min(k for k, c in pos.items() if c)
                        pos[j] -= 1
                        pos[j + 1] = pos.get(j + 1, 0) + 1
                    for _ in range(int(rng.integers(0, 4))):
                        side = rng.random()
                        if side < 0.1:
                            zero += 1
                        else:
                            which = neg if side < 0.3 else pos
                            j = int(rng.integers(-4, 12))
                            which[j] = which.get(j, 0) + 1
                        total += float(rng.uniform(-5, 12))
                    p_off, p_counts = _dense(pos)
                    n_off, n_counts = _dense(neg)
                    fields = {
                        "start_time_unix_nano": st,
                        "count": zero + sum(pos.values()) + sum(neg.values()),
                        "value": total,
                        "exp_scale": scale,
                        "exp_zero_count": zero,
                        "exp_zero_threshold": 0.0,
                        "exp_positive_offset": p_off,
                        "exp_positive_counts": p_counts,
                        "exp_negative_offset": n_off,
                        "exp_negative_counts": n_counts,
                    }
                points.append({"series": s, "t": t, "fields": fields})
    return series, sorted(points, key=lambda p: p["t"])


def _downscaled(buckets: dict[int, int], by: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for index, count in buckets.items():
        out[index >> by] = out.get(index >> by, 0) + count
    return out


def _exp_buckets(f: dict, down: int = 0) -> dict[tuple, int]:
    """An exponential point's buckets, lowered ``down`` scales: {("z", 0) | ("p", i) | ("n", i): count}."""
    out = {("z", 0): f["exp_zero_count"]}
    for side, offset, counts in (
        ("p", f["exp_positive_offset"], f["exp_positive_counts"]),
        ("n", f["exp_negative_offset"], f["exp_negative_counts"]),
    ):
        for k, c in enumerate(counts):
            key = (side, (offset + k) >> down)
            out[key] = out.get(key, 0) + c
    return out


@dataclass
class Increment:
    count: float  # sums: of the value; histograms: of the observation count
    sum: float  # histograms: of their sum
    buckets: tuple  # explicit: (bounds, counts); exponential: (scale, {key: count})
    first: bool
    start: int


def increments(kind: str, pts: list[dict]) -> list[Increment]:
    """Each point's increment against the previous point of its series, the store's reset rule."""
    out = []
    for i, p in enumerate(pts):
        f, prev = p["fields"], pts[i - 1]["fields"] if i else None
        st = f.get("start_time_unix_nano", 0)
        x = f["value"] if kind == "sum" else f.get("count", 0)
        ok = prev is not None and prev.get("start_time_unix_nano", 0) == st
        ok = ok and x >= (prev["value"] if kind == "sum" else prev["count"])
        count = x - (prev["value"] if kind == "sum" else prev["count"]) if ok else x
        total = f["value"] - prev["value"] if ok else f["value"]
        buckets: tuple = ()
        if kind == "histogram":
            if (
                ok
                and prev["bounds"] == f["bounds"]
                and all(c >= d for c, d in zip(f["bucket_counts"], prev["bucket_counts"], strict=True))
            ):
                diff = [c - d for c, d in zip(f["bucket_counts"], prev["bucket_counts"], strict=True)]
                buckets = (tuple(f["bounds"]), diff)
            else:
                buckets = (tuple(f["bounds"]), list(f["bucket_counts"]))
        elif kind == "exponential_histogram":
            own = (f["exp_scale"], _exp_buckets(f))
            buckets = own
            if ok:
                low = min(f["exp_scale"], prev["exp_scale"])
                mine = _exp_buckets(f, f["exp_scale"] - low)
                theirs = _exp_buckets(prev, prev["exp_scale"] - low)
                diff = {k: mine.get(k, 0) - theirs.get(k, 0) for k in mine.keys() | theirs.keys()}
                if all(c >= 0 for c in diff.values()):
                    buckets = (low, diff)
        out.append(Increment(count, total, buckets, prev is None, st))
    return out


def exp_quantile(parts: list[tuple[int, dict]], q: float) -> float:
    parts = [(scale, b) for scale, b in parts if sum(b.values()) > 0]
    if not parts:
        return math.nan
    low = min(scale for scale, _ in parts)
    merged: dict[tuple, int] = {}
    for scale, b in parts:
        for (side, index), c in b.items():
            key = (side, index >> (scale - low) if side != "z" else 0)
            merged[key] = merged.get(key, 0) + c
    rank = max(math.ceil(q * sum(merged.values())), 1)
    order = sorted((k for k in merged if k[0] == "n"), key=lambda k: -k[1])
    order += [("z", 0), *sorted((k for k in merged if k[0] == "p"), key=lambda k: k[1])]
    seen = 0
    for side, index in order:
        seen += merged.get((side, index), 0)
        if seen >= rank:
            if side == "z":
                return 0.0
            lower, upper = 2 ** (index / 2**low), 2 ** ((index + 1) / 2**low)
            return (1 if side == "p" else -1) * 2 * lower * upper / (lower + upper)
    raise AssertionError("rank beyond the total")


def brute_leaf(func: str, selector: Selector, window: int, now: int, observed: list) -> dict:
    """{label key: (labels, value)} of every matching series with a point in (now - window, now]."""
    kind = next((k for m, k, _ in SPECS if m == selector.metric), None)
    q = percentile(func)
    if kind is None or (q is None and func not in _DEFINED[kind]):
        return {}
    out = {}
    for s, pts in observed:
        if s["metric"] != selector.metric:
            continue
        lookup = {"service": s["service"], **{k: str(v) for k, v in _attrs(s).items()}}
        if not matches_all(selector.matchers, lookup):
            continue
        incs = increments(kind, pts) if kind != "gauge" else []
        idx = [i for i, p in enumerate(pts) if now - window < p["t"] <= now]
        if not idx:
            continue
        values = [pts[i]["fields"].get("value") for i in idx]
        counted = [c for c in (incs[i] for i in idx if incs) if not (c.first and c.start <= now - window)]
        if func == "_points":
            value = float(len(idx))
        elif kind in ("gauge", "sum") and func not in ("rate", "increase"):
            value = _plain(func, q, values, [(pts[i]["t"] - now) / 1e9 for i in idx])
        elif func in ("count", "increase", "rate"):
            value = sum(c.count for c in counted) / (window / 1e9 if func == "rate" else 1)
        elif func == "sum":
            value = sum(c.sum for c in counted)
        elif func == "avg":
            n = sum(c.count for c in counted)
            value = sum(c.sum for c in counted) / n if n else math.nan
        elif func in ("min", "max"):
            fields = [pts[i]["fields"].get(func) for i in idx]
            fields = [x for x in fields if x is not None]
            value = (min if func == "min" else max)(fields) if fields else math.nan
        elif kind == "histogram":
            layouts = {tuple(pts[i]["fields"]["bounds"]) for i in idx}
            value = math.nan
            if len(layouts) == 1:
                bounds = next(iter(layouts))
                summed = np.zeros(len(bounds) + 1)
                for c in counted:
                    summed += np.asarray(c.buckets[1], dtype=float)
                value = hist.quantile_explicit(bounds, summed, q) if summed.sum() else math.nan
        else:
            value = exp_quantile([c.buckets for c in counted], q)
        labels = {k: v for k, v in lookup.items() if v}
        out[tuple(sorted(labels.items()))] = (labels, float(value))
    return out


_DEFINED = {
    "gauge": {"avg", "min", "max", "sum", "count", "last", "rate_of_change", "_points"},
    "sum": {"avg", "min", "max", "sum", "count", "last", "rate_of_change", "rate", "increase", "_points"},
    "histogram": {"avg", "min", "max", "sum", "count", "rate", "increase", "_points"},
    "exponential_histogram": {"avg", "min", "max", "sum", "count", "rate", "increase", "_points"},
}


def _attrs(s: dict) -> dict:
    return json.loads(s["attributes"])


def _plain(func: str, q: float | None, values: list[float], seconds: list[float]) -> float:
    if q is not None:
        return float(np.quantile(values, q))
    if func == "rate_of_change":
        return float(np.polyfit(seconds, values, 1)[0]) if len(values) >= 2 else math.nan
    return {
        "avg": lambda: sum(values) / len(values),
        "min": lambda: min(values),
        "max": lambda: max(values),
        "count": lambda: float(len(values)),
        "sum": lambda: values[-1],
        "last": lambda: values[-1],
    }[func]()


_OPS = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}


def brute(cond, now: int, observed: list) -> tuple[dict, dict]:
    """(label sets where ``cond`` holds, label sets it is decided for), from scratch."""
    if isinstance(cond, Compare):
        operand = cond.operand
        if isinstance(operand, Call):
            decided = brute_leaf(operand.func, operand.selector, operand.window_ns, now, observed)
        else:
            decided = brute_leaf("last", operand, DEFAULT_WINDOW_NS, now, observed)
        holds = {
            k: v for k, v in decided.items() if not math.isnan(v[1]) and _OPS[cond.op](v[1], cond.number)
        }
        return holds, decided
    if isinstance(cond, Absent):
        labels = {m.name: m.value for m in cond.selector.matchers if m.op == "="}
        key = tuple(sorted(labels.items()))
        if brute_leaf("_points", cond.selector, cond.window_ns, now, observed):
            return {}, {key: (labels, 0.0)}
        return {key: (labels, 1.0)}, {key: (labels, 1.0)}
    if isinstance(cond, Not):
        holds, decided = brute(cond.operand, now, observed)
        return {k: v for k, v in decided.items() if k not in holds}, decided
    (lh, ld), (rh, rd) = brute(cond.left, now, observed), brute(cond.right, now, observed)
    if isinstance(cond, Or):
        return {**rh, **lh}, {**rd, **ld}
    return _pairs(lh, rh), _pairs(ld, rd)


def _pairs(left: dict, right: dict) -> dict:
    out = {}
    for labels, value in left.values():
        for other, _ in right.values():
            if all(labels[k] == other[k] for k in labels.keys() & other.keys()):
                merged = {**other, **labels}
                out.setdefault(tuple(sorted(merged.items())), (merged, value))
    return out


_FUNCS = [
    "avg",
    "min",
    "max",
    "sum",
    "count",
    "last",
    "rate",
    "increase",
    "rate_of_change",
    "p50",
    "p95",
    "p99.9",
]
_MATCHERS = [(), (("i", "=", "0"),), (("i", "=~", "0|1"),), (("i", "!=", "1"),), (("i", "=", "9"),)]
_selectors_r = st.builds(
    lambda metric, ms: Selector(metric, tuple(LabelMatcher(*m) for m in ms)),
    st.sampled_from([m for m, _, _ in SPECS]),
    st.sampled_from(_MATCHERS),
)
_windows_r = st.sampled_from([10 * S, 45 * S, 2 * M, 5 * M])
_leaves_r = st.one_of(
    st.builds(
        Compare,
        st.one_of(st.builds(Call, st.sampled_from(_FUNCS), _selectors_r, _windows_r), _selectors_r),
        st.sampled_from(list(_OPS)),
        st.sampled_from([-0.5, 0.0123457, 0.7312345, 2.3456789, 7.654321, 15.51234, 33.3331]),
    ),
    st.builds(Absent, _selectors_r, _windows_r),
)
_conditions_r = st.recursive(
    _leaves_r,
    lambda inner: st.one_of(st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)),
    max_leaves=4,
)


def _same(stream: list, expected: dict) -> None:
    want = [expected[k] for k in sorted(expected)]
    assert [s.labels for s in stream] == [labels for labels, _ in want]
    for sample, (_, value) in zip(stream, want, strict=True):
        if math.isnan(value):
            assert math.isnan(sample.value)
        else:
            assert sample.value == pytest.approx(value, rel=1e-7, abs=1e-9)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), conditions=st.lists(_conditions_r, min_size=1, max_size=6))
def test_streaming_evaluation_equals_a_brute_force_recomputation(seed, conditions):
    series, points = history(seed)
    windows = Windows()
    evaluators = [Evaluator(parse(str(c)), windows) for c in conditions]
    rng = np.random.default_rng(seed)
    observed: dict[int, list[dict]] = {}
    rows = {s["series_id"]: s for s in series}
    start = 0
    while start < len(points):
        part = points[start : start + int(rng.integers(1, 40))]
        start += len(part)
        windows.observe(batch(part, series))
        for p in part:
            observed.setdefault(p["series"]["series_id"], []).append(p)
        now = max(p["t"] for p in part) + int(rng.choice([0, 0, 3 * S, 70 * S]))
        by_series = [(rows[sid], pts) for sid, pts in observed.items()]
        for cond, ev in zip(conditions, evaluators, strict=True):
            _same(ev.evaluate(now), brute(cond, now, by_series)[0])


def test_the_references_python_example_runs_and_prints_what_it_says():
    import re
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "alerting-rules.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Sample(labels={'audio.stage': 'denoise', 'service': 'enh'}, value=0.666" in done.stdout
