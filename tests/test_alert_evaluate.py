"""Streaming condition evaluation: unit behaviours, and equality with a brute-force recomputation.

The brute force below recomputes every leaf from all points observed so far, point by point in
plain Python (increments against the previous point of the series, the window filter, the merge
of bucket increments), and combines leaves with nested loops. The streaming windows must give the
same label sets and values for random histories of gauges, counters with resets, and explicit and
exponential histograms with resets, bound and scale changes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from otel_audio.processors.alerting.evaluate import Evaluator, Windows
from otel_audio.processors.alerting.grammar import (
    parse,
)
from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    MetricType,
    canonical_json,
    series_row,
)

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
