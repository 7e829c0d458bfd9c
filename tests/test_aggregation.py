"""Windowed aggregation: results equal a brute-force recomputation; lateness; sliding; queries."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.processors.aggregation import WINDOW_ATTRIBUTE, Aggregation, from_options
from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    canonical_json,
    series_id,
)
from otel_audio.store import histograms as hist
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import Matcher, QueryEngine, RangeQuery

S = 10**9
SERVICES = ("a", "b")
STAGES = ("decode", "mix")


def _series(metric: str, kind: str, service: str, stage: str) -> dict:
    resource = canonical_json({"service.name": service})
    attributes = canonical_json({"audio.stage": stage})
    return {
        "series_id": series_id(metric, resource, "", attributes),
        "metric": metric,
        "type": kind,
        "unit": "",
        "description": "",
        "temporality": "cumulative" if kind == "sum" else "unspecified",
        "monotonic": kind == "sum",
        "service": service,
        "resource": resource,
        "scope": "",
        "scope_version": "",
        "attributes": attributes,
    }


def _batch(series_rows: list[dict], points: list[dict]) -> MetricBatch:
    return MetricBatch(
        points=pa.Table.from_pylist(
            [{"flags": 0, "start_time_unix_nano": 1, **p} for p in points], POINTS_SCHEMA
        ),
        series=pa.Table.from_pylist(series_rows, schema=SERIES_SCHEMA),
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )


def _collect(agg: Aggregation) -> list[MetricBatch]:
    out: list[MetricBatch] = []
    agg.bind_emit(out.append)
    return out


def _results(batches: list[MetricBatch]) -> dict[tuple, float]:
    """(metric, service, window end) -> value."""
    out = {}
    for b in batches:
        rows = {r["series_id"]: r for r in b.series.to_pylist()}
        for p in b.points.to_pylist():
            row = rows[p["series_id"]]
            out[(row["metric"], row["service"], p["time_unix_nano"])] = p["value"]
    return out


def _rule(metric: str, aggs: list[str], window: str = "10s", slide: str | None = None, lateness: str = "0s"):
    rule = {"metric": metric, "window": window, "by": ["service"], "aggs": aggs, "allowed_lateness": lateness}
    if slide:
        rule["slide"] = slide
    return from_options({"rules": [rule]})


# -- brute force ------------------------------------------------------------------------------------

GAUGE_AGGS = ["avg", "min", "max", "count", "sum", "last", "p50", "p90"]


def _windows_of(t: int, window: int, slide: int) -> list[int]:
    """Ends of the windows [end - window, end) holding t."""
    first_end = (t // slide) * slide + slide
    return [first_end + k * slide for k in range(window // slide)]


def _brute_gauge(points: list[tuple[str, int, float]], window: int, slide: int) -> dict[tuple, float]:
    groups: dict[tuple[str, int], list[tuple[int, float]]] = defaultdict(list)
    for service, t, v in points:
        for end in _windows_of(t, window, slide):
            groups[(service, end)].append((t, v))
    out = {}
    for (service, end), tv in groups.items():
        values = np.array([v for _, v in tv])
        computed = {
            "avg": values.mean(),
            "min": values.min(),
            "max": values.max(),
            "count": float(values.size),
            "sum": values.sum(),
            "last": max(tv)[1],
            "p50": np.quantile(values, 0.5),
            "p90": np.quantile(values, 0.9),
        }
        for agg, value in computed.items():
            out[(f"m.{agg}", service, end)] = value
    return out


def _brute_counter(points: list[tuple[str, str, int, float]], window: int) -> dict[tuple, float]:
    """points: (service, stage, t, cumulative value); increments under the reset rule."""
    by_series = defaultdict(list)
    for service, stage, t, v in points:
        by_series[(service, stage)].append((t, v))
    inc: dict[tuple[str, int], float] = defaultdict(float)
    for (service, _), tv in by_series.items():
        tv.sort()
        for i, (t, v) in enumerate(tv):
            step = v - tv[i - 1][1] if i and v >= tv[i - 1][1] else v
            inc[(service, (t // window) * window + window)] += step
    out = {}
    for (service, end), value in inc.items():
        out[("c.increase", service, end)] = value
        out[("c.rate", service, end)] = value / (window / S)
    return out


def _assert_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


gauge_points = st.lists(
    st.tuples(
        st.sampled_from(SERVICES),
        st.sampled_from(STAGES),
        st.integers(0, 120).map(lambda k: k * S // 2),  # half seconds: often on a window edge
        st.floats(-1e3, 1e3, allow_nan=False).map(lambda x: round(x, 3)),
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda p: p[2],  # distinct times: "last" is then unambiguous
)


def _gauge_batches(points, chunks: int) -> list[MetricBatch]:
    rows = {(s, g): _series("m", "gauge", s, g) for s in SERVICES for g in STAGES}
    pts = [{"series_id": rows[(s, g)]["series_id"], "time_unix_nano": t, "value": v} for s, g, t, v in points]
    return [_batch(list(rows.values()), pts[i::chunks]) for i in range(chunks)]


# -- properties -------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(points=gauge_points, chunks=st.integers(1, 4))
def test_tumbling_gauge_windows_equal_brute_force(points, chunks):
    agg = _rule("m", GAUGE_AGGS, lateness="100s")
    out = _collect(agg)
    for batch in _gauge_batches(points, chunks):
        agg.process(batch)
    agg.close()
    _assert_close(_results(out), _brute_gauge([(s, t, v) for s, _, t, v in points], 10 * S, 10 * S))
    assert agg.late_points == 0


@settings(max_examples=25, deadline=None)
@given(points=gauge_points, slide=st.sampled_from([1, 2, 5]))
def test_sliding_gauge_windows_equal_brute_force(points, slide):
    agg = _rule("m", GAUGE_AGGS, slide=f"{slide}s", lateness="100s")
    out = _collect(agg)
    for batch in _gauge_batches(points, 2):
        agg.process(batch)
    agg.close()
    _assert_close(_results(out), _brute_gauge([(s, t, v) for s, _, t, v in points], 10 * S, slide * S))


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(SERVICES),
            st.sampled_from(STAGES),
            st.integers(1, 3 * S),
            st.integers(-5, 20).filter(bool),  # negative: the counter restarted lower
        ),
        min_size=1,
        max_size=40,
    ),
    chunks=st.integers(1, 3),
)
def test_counter_increase_and_rate_with_resets_equal_brute_force(steps, chunks):
    rows = {(s, g): _series("c", "sum", s, g) for s in SERVICES for g in STAGES}
    state = defaultdict(lambda: (0, 0.0))
    points = []
    for service, stage, dt, dv in steps:
        t, v = state[(service, stage)]
        t, v = t + dt, (v + dv if dv >= 0 else float(-dv))
        state[(service, stage)] = (t, v)
        points.append((service, stage, t, v))
    agg = _rule("c", ["increase", "rate"], lateness="1000s")
    out = _collect(agg)
    pts = [{"series_id": rows[(s, g)]["series_id"], "time_unix_nano": t, "value": v} for s, g, t, v in points]
    for i in range(chunks):
        agg.process(_batch(list(rows.values()), pts[i::chunks]))
    agg.close()
    _assert_close(_results(out), _brute_counter(points, 10 * S))


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(SERVICES),
            st.integers(1, 8).map(lambda k: k * S // 2),
            st.integers(-5, 20).filter(bool),
        ),
        min_size=5,
        max_size=40,
    )
)
def test_counter_windows_closed_as_data_arrives_keep_the_previous_point(steps):
    """No lateness, points in time order: each window closes early and the next needs its carry."""
    rows = {s: _series("c", "sum", s, "decode") for s in SERVICES}
    t, values, points = 0, dict.fromkeys(SERVICES, 0.0), []
    for service, dt, dv in steps:
        t += dt
        values[service] = values[service] + dv if dv >= 0 else float(-dv)
        points.append((service, "decode", t, values[service]))
    agg = _rule("c", ["increase", "rate"])
    out = _collect(agg)
    for service, _, t, v in points:
        agg.process(
            _batch(
                [rows[service]], [{"series_id": rows[service]["series_id"], "time_unix_nano": t, "value": v}]
            )
        )
        agg.tick(t)
    agg.close()
    _assert_close(_results(out), _brute_counter(points, 10 * S))
    assert agg.late_points == 0


# -- lateness ---------------------------------------------------------------------------------------


def _one(t: int, v: float, service: str = "a") -> MetricBatch:
    row = _series("m", "gauge", service, "decode")
    return _batch([row], [{"series_id": row["series_id"], "time_unix_nano": t, "value": v}])


def test_watermark_closes_a_window_only_after_the_allowed_lateness():
    agg = _rule("m", ["sum"], lateness="5s")
    out = _collect(agg)
    agg.process(_one(1 * S, 1.0))
    agg.process(_one(12 * S, 2.0))  # watermark 7 s: window [0, 10) still open
    assert _results(out) == {}
    agg.process(_one(9 * S, 4.0))  # late but within lateness: counted in its window
    agg.process(_one(15 * S, 8.0))  # watermark 10 s: [0, 10) closes
    assert _results(out) == {("m.sum", "a", 10 * S): 5.0}
    assert agg.late_points == 0


def test_points_beyond_the_lateness_are_counted_not_aggregated():
    agg = _rule("m", ["count"], lateness="5s")
    out = _collect(agg)
    agg.process(_one(1 * S, 1.0))
    agg.process(_one(15 * S, 1.0))  # closes [0, 10)
    agg.process(_one(3 * S, 1.0))  # its window was emitted
    agg.close()
    assert _results(out) == {("m.count", "a", 10 * S): 1.0, ("m.count", "a", 20 * S): 1.0}
    assert agg.late_points == 1


def test_tick_closes_windows_of_quiet_inputs():
    agg = _rule("m", ["max"], lateness="5s")
    out = _collect(agg)
    agg.process(_one(1 * S, 3.0))
    agg.tick(14 * S)
    assert _results(out) == {}
    agg.tick(15 * S)
    assert _results(out) == {("m.max", "a", 10 * S): 3.0}
    agg.tick(100 * S)
    assert len(out) == 1  # nothing more to emit


def test_explicit_histogram_percentile_interpolates_within_the_bucket():
    row = _series("h", "histogram", "a", "decode") | {"temporality": "cumulative"}
    base = {"series_id": row["series_id"], "bounds": [1.0, 2.0, 4.0]}
    points = [
        {**base, "time_unix_nano": 1 * S, "value": 0.0, "count": 0, "bucket_counts": [0, 0, 0, 0]},
        {**base, "time_unix_nano": 11 * S, "value": 30.0, "count": 10, "bucket_counts": [0, 10, 0, 0]},
    ]
    agg = _rule("h", ["p50", "count", "avg"])
    out = _collect(agg)
    agg.process(_batch([row], points))
    agg.close()
    got = _results(out)
    assert got[("h.p50", "a", 20 * S)] == pytest.approx(1.5)
    assert got[("h.count", "a", 20 * S)] == 10
    assert got[("h.avg", "a", 20 * S)] == pytest.approx(3.0)


def test_exponential_histogram_percentile_is_the_bucket_estimate_of_the_window_increment():
    row = _series("e", "exponential_histogram", "a", "decode") | {"temporality": "cumulative"}
    base = {"series_id": row["series_id"], "exp_scale": 0, "exp_zero_count": 0, "exp_positive_offset": 0}
    points = [
        {**base, "time_unix_nano": 1 * S, "value": 3.0, "count": 2, "exp_positive_counts": [1, 1]},
        {**base, "time_unix_nano": 2 * S, "value": 30.0, "count": 12, "exp_positive_counts": [3, 9]},
    ]
    agg = _rule("e", ["p50", "count"])
    out = _collect(agg)
    agg.process(_batch([row], points))
    agg.close()
    got = _results(out)
    whole_window = hist.quantile_exponential(
        hist.ExponentialHistogram(0, positive_counts=np.array([3, 9])), 0.5
    )
    assert got[("e.p50", "a", 10 * S)] == pytest.approx(whole_window)  # first point counts in full
    assert got[("e.count", "a", 10 * S)] == 12


def test_sliding_window_point_late_for_one_window_counts_in_the_open_ones():
    agg = _rule("m", ["count"], window="10s", slide="5s")
    out = _collect(agg)
    agg.process(_one(1 * S, 1.0))
    agg.process(_one(10 * S, 1.0))  # closes [0, 10)
    agg.process(_one(7 * S, 1.0))  # in closed [0, 10) and open [5, 15)
    agg.close()
    got = _results(out)
    assert got[("m.count", "a", 10 * S)] == 1
    assert got[("m.count", "a", 15 * S)] == 2
    assert agg.late_points == 0


# -- the emitted series are queryable ---------------------------------------------------------------


def test_emitted_series_are_queryable_through_the_store():
    store = MemoryStore()
    agg = from_options(
        {"rules": [{"metric": "m", "window": "10s", "by": ["service", "audio.stage"], "aggs": ["avg"]}]}
    )
    agg.bind_emit(store.process)
    for t, v, service in ((1, 2.0, "a"), (2, 4.0, "a"), (3, 10.0, "b")):
        agg.process(_one(t * S, v, service))
    agg.close()
    q = RangeQuery(
        "m.avg",
        0,
        30 * S,
        30 * S,
        agg="last",
        group_by=("service",),
        matchers=(Matcher(WINDOW_ATTRIBUTE, "=", "10s"),),
    )
    got = {r.labels["service"]: float(r.values[0]) for r in QueryEngine(store).query_range(q)}
    assert got == {"a": 3.0, "b": 10.0}


# -- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "rules"),
        ({"rules": []}, "rules"),
        ({"rules": [{"window": "1m"}]}, r"rules\[0\]\.metric"),
        ({"rules": [{"metric": "m", "window": "1 minute"}]}, r"rules\[0\]\.window"),
        ({"rules": [{"metric": "m", "window": "1m", "slide": "7s"}]}, r"rules\[0\]\.slide"),
        ({"rules": [{"metric": "m", "slide": "2m"}]}, r"rules\[0\]\.slide"),
        ({"rules": [{"metric": "m", "aggs": ["median"]}]}, r"rules\[0\]\.aggs\[0\]"),
        ({"rules": [{"metric": "m", "aggs": ["p100"]}]}, r"rules\[0\]\.aggs\[0\]"),
        ({"rules": [{"metric": "m", "by": "service"}]}, r"rules\[0\]\.by"),
        ({"rules": [{"metric": "m", "allowed_lateness": -1}]}, r"rules\[0\]\.allowed_lateness"),
        ({"rules": [{"metric": "m", "windw": "1m"}]}, r"rules\[0\]\.windw"),
        ({"rules": ["m"]}, r"rules\[0\]"),
        ({"rule": []}, "rule"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        from_options(options)


def test_defaults_are_a_one_minute_tumbling_average():
    rule = from_options({"rules": [{"metric": "m"}]}).rules[0]
    assert (rule.window_ns, rule.slide_ns, rule.aggs, rule.lateness_ns) == (60 * S, 60 * S, ("avg",), 0)


# -- panes: cached rollups and carries, flagged points, bounded state -------------------------------


def _replay_counter(batches: list[list[tuple]], window: int, slide: int, lateness: int) -> dict[tuple, float]:
    """Brute force of a sliding ``increase`` with points arriving late, by replaying the arrivals.

    ``batches``: lists of (service, stage, t, cumulative value) in arrival order. After each batch
    the windows whose end the watermark (newest time - lateness) reached close, every one holding a
    point; a window's increase is the sum, over the points that had arrived by then and lie in it,
    of each one's step from its series' previous arrived point. A point older than the oldest open
    window's start is late: dropped, for every window and as a previous point.
    """
    arrived: list[tuple] = []
    closed_through, newest, out = None, None, {}

    def close(watermark: int | None) -> None:
        nonlocal closed_through
        ends = sorted({e for _, _, t, _ in arrived for e in _windows_of(t, window, slide)})
        ends = [e for e in ends if closed_through is None or e > closed_through]
        for end in [e for e in ends if watermark is None or e <= watermark]:
            by_series = defaultdict(list)
            for service, stage, t, v in arrived:
                by_series[(service, stage)].append((t, v))
            for (service, _), tv in by_series.items():
                tv.sort()
                for i, (t, v) in enumerate(tv):
                    if end - window <= t < end:
                        step = v - tv[i - 1][1] if i and v >= tv[i - 1][1] else v
                        key = ("c.increase", service, end)
                        out[key] = out.get(key, 0.0) + step
            closed_through = end

    for batch in batches:
        for point in batch:
            if closed_through is None or point[2] >= closed_through - window + slide:
                arrived.append(point)
                newest = point[2] if newest is None else max(newest, point[2])
        if newest is not None:
            close(newest - lateness)
    close(None)
    return out


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(SERVICES),
            st.sampled_from(STAGES),
            st.integers(1, 4).map(lambda k: k * S // 2),
            st.integers(-5, 20).filter(bool),
            st.sampled_from([0, 0, 0, 5 * S, 9 * S, 12 * S]),  # how long the point is delayed
        ),
        min_size=1,
        max_size=60,
    ),
    per_batch=st.integers(1, 3),
    slide=st.sampled_from([1, 2, 5]),
)
def test_sliding_counter_with_delayed_points_equals_a_replay_of_the_arrivals(steps, per_batch, slide):
    """Delayed points land in panes whose rollups and carries were cached for a closed window."""
    rows = {(s, g): _series("c", "sum", s, g) for s in SERVICES for g in STAGES}
    state = defaultdict(lambda: (0, 0.0))
    points, arrival = [], []
    for service, stage, dt, dv, delay in steps:
        t, v = state[(service, stage)]
        t, v = t + dt, (v + dv if dv >= 0 else float(-dv))
        state[(service, stage)] = (t, v)
        points.append((service, stage, t, v))
        arrival.append(t + delay)
    ordered = [points[i] for i in sorted(range(len(points)), key=arrival.__getitem__)]
    batches = [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]
    agg = _rule("c", ["increase"], slide=f"{slide}s", lateness="3s")
    out = _collect(agg)
    for batch in batches:
        agg.process(
            _batch(
                list(rows.values()),
                [
                    {"series_id": rows[(s, g)]["series_id"], "time_unix_nano": t, "value": v}
                    for s, g, t, v in batch
                ],
            )
        )
    agg.close()
    _assert_close(_results(out), _replay_counter(batches, 10 * S, slide * S, 3 * S))


def test_a_delayed_counter_point_is_the_previous_point_of_the_next_increment():
    """a@6 arrives after windows up to 15 s closed (kept: the window [6, 16) is open); a@16's
    increment is then 16 - 6, not 16 - 2, though the panes between were rolled up before."""
    rows = {s: _series("c", "sum", s, "decode") for s in ("a", "b")}
    arrivals = [("b", 1), ("a", 2), ("b", 2), ("b", 3), ("b", 14), ("b", 18), ("a", 6), ("a", 16), ("b", 30)]
    agg = _rule("c", ["increase"], slide="1s", lateness="3s")
    out = _collect(agg)
    for service, second in arrivals:
        point = {
            "series_id": rows[service]["series_id"],
            "time_unix_nano": second * S,
            "value": float(second),
        }
        agg.process(_batch(list(rows.values()), [point]))
    agg.close()
    got = {end // S: v for (_, service, end), v in _results(out).items() if service == "a"}
    assert agg.late_points == 0
    assert (got[12], got[16], got[17], got[26]) == (2.0, 4.0, 10.0, 10.0)
    assert 13 not in got  # [3, 13) had closed before a@6 arrived


def test_counter_increment_skips_a_flagged_point_before_the_window():
    row = _series("c", "sum", "a", "decode")
    sid = row["series_id"]
    points = [
        {"series_id": sid, "time_unix_nano": 1 * S, "value": 10.0},
        {"series_id": sid, "time_unix_nano": 9 * S, "value": float("nan"), "flags": 1},  # no value
        {"series_id": sid, "time_unix_nano": 12 * S, "value": 13.0},
    ]
    agg = _rule("c", ["increase"])
    out = _collect(agg)
    for p in points:
        agg.process(_batch([row], [p]))
    agg.close()
    assert _results(out) == {("c.increase", "a", 10 * S): 10.0, ("c.increase", "a", 20 * S): 3.0}


def test_held_points_stay_bounded_by_the_open_windows():
    """A long steady stream: the processor holds about one window and the lateness of points."""
    rows = [_series("m", "gauge", s, g) for s in SERVICES for g in STAGES]
    agg = _rule("m", ["avg", "p90"], window="10s", slide="5s", lateness="2s")
    _collect(agg)
    held = []
    for second in range(600):
        pts = [{"series_id": r["series_id"], "time_unix_nano": second * S, "value": 1.0} for r in rows]
        agg.process(_batch(rows, pts))
        held.append(agg.held_points())
    per_second = len(rows)
    assert max(held) <= per_second * (10 + 5 + 2 + 1) + per_second  # open panes, plus the carry
    assert max(held[300:]) == max(held[:100])  # no growth with the run's length


def test_percentiles_of_many_groups_equal_numpy_quantile_per_group():
    """Past a few dozen groups the percentiles are taken for all groups in one sort."""
    services = [f"s{i:03d}" for i in range(100)]
    rows = {s: _series("m", "gauge", s, "decode") for s in services}
    rng = np.random.default_rng(11)
    values = {s: np.round(rng.normal(0.0, 50.0, 7), 1) for s in services}
    pts = [
        {"series_id": rows[s]["series_id"], "time_unix_nano": (k + 1) * S, "value": float(v)}
        for s in services
        for k, v in enumerate(values[s])
    ]
    agg = _rule("m", ["p50", "p99", "p12.5"])
    out = _collect(agg)
    agg.process(_batch(list(rows.values()), pts))
    agg.close()
    want = {
        (f"m.{name}", s, 10 * S): float(np.quantile(values[s], q))
        for s in services
        for name, q in (("p50", 0.5), ("p99", 0.99), ("p12.5", 0.125))
    }
    assert _results(out) == want  # bit for bit
