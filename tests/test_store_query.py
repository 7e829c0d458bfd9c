"""QueryEngine: metric ranges (gauges, counters, histograms, summaries), spans, traces, logs, errors.

Times in the tests are small numbers of seconds (``S`` = 1 s in ns); ranges use 10 s steps.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from otel_audio.store.histograms import exponential_histogram, relative_error
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import (
    LogQuery,
    Matcher,
    QueryEngine,
    QueryError,
    RangeQuery,
    SpanQuery,
)
from tests.test_store_memory import S, log, log_batch, metric_batch, series, span, span_batch

NAN = float("nan")


def engine_with(*batches) -> QueryEngine:
    store = MemoryStore()
    for batch in batches:
        store.process(batch)
    return QueryEngine(store)


def points(s: dict, *rows: tuple) -> list[dict]:
    """Point rows (time_s, value[, start_s]) of series ``s``."""
    return [
        {
            "s": s,
            "time_unix_nano": int(r[0] * S),
            "value": r[1],
            "start_time_unix_nano": int(r[2] * S) if len(r) > 2 else 0,
        }
        for r in rows
    ]


def query(engine: QueryEngine, metric: str, agg: str, start=0, end=40, step=10, **kw):
    return engine.query_range(RangeQuery(metric, start * S, end * S, step * S, agg=agg, **kw))


def only(results) -> list[float]:
    assert len(results) == 1
    return results[0].values.tolist()


def assert_values(actual, expected):
    np.testing.assert_allclose(np.array(actual, dtype=float), np.array(expected, dtype=float), equal_nan=True)


# Two gauge series in bucket [0, 10): a has 1, 3 (at 1 s, 5 s); b has 10 (at 3 s). Bucket [10, 20): a has 5.
A = series("latency", attributes={"stage": "denoise"})
B = series("latency", attributes={"stage": "vad"}, service="gateway")
GAUGES = metric_batch([A, B], points(A, (1, 1.0), (5, 3.0), (12, 5.0)) + points(B, (3, 10.0)))


@pytest.fixture
def gauges() -> QueryEngine:
    return engine_with(GAUGES)


# -- gauges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agg", "expected"),
    [
        ("avg", [14 / 3, 5.0, NAN, NAN]),
        ("min", [1.0, 5.0, NAN, NAN]),
        ("max", [10.0, 5.0, NAN, NAN]),
        ("count", [3.0, 1.0, NAN, NAN]),
        ("last", [3.0, 5.0, NAN, NAN]),  # the most recent point in the bucket across the group
        ("sum", [13.0, 5.0, NAN, NAN]),  # each series' last value in the bucket, summed
        ("p50", [3.0, 5.0, NAN, NAN]),
        ("p90", [np.quantile([1, 3, 10], 0.9), 5.0, NAN, NAN]),
    ],
)
def test_gauge_aggregations(gauges, agg, expected):
    assert_values(only(query(gauges, "latency", agg)), expected)


def test_buckets_are_reported_at_their_start(gauges):
    (result,) = query(gauges, "latency", "avg", start=0, end=40, step=10)
    assert result.timestamps_ns.tolist() == [0, 10 * S, 20 * S, 30 * S]


def test_a_point_on_a_bucket_boundary_belongs_to_the_later_bucket():
    s = series("g")
    engine = engine_with(metric_batch([s], points(s, (10, 1.0))))
    assert_values(only(query(engine, "g", "count", end=20)), [NAN, 1.0])


def test_points_before_start_are_not_in_the_first_bucket(gauges):
    assert_values(only(query(gauges, "latency", "count", start=2, end=12)), [2.0])


def test_range_not_a_multiple_of_step_ends_with_a_full_bucket(gauges):
    assert_values(only(query(gauges, "latency", "max", start=0, end=11, step=10)), [10.0, 5.0])


def test_group_by_splits_results_by_label(gauges):
    results = query(gauges, "latency", "max", group_by=("stage",))
    assert [r.labels for r in results] == [{"stage": "denoise"}, {"stage": "vad"}]
    assert_values(results[1].values, [10.0, NAN, NAN, NAN])


def test_group_by_service_uses_the_resource_service_name(gauges):
    results = query(gauges, "latency", "count", group_by=("service",))
    assert [r.labels for r in results] == [{"service": "enhancer"}, {"service": "gateway"}]


def test_group_by_missing_label_gives_empty_string(gauges):
    (result,) = query(gauges, "latency", "count", group_by=("region",))
    assert result.labels == {"region": ""}


def test_group_by_resource_attribute():
    s = series("g", resource={"host.name": "box1"})
    engine = engine_with(metric_batch([s], points(s, (1, 1.0))))
    assert query(engine, "g", "count", group_by=("host.name",))[0].labels == {"host.name": "box1"}


def test_point_attribute_shadows_resource_attribute():
    s = series("g", attributes={"host.name": "point"}, resource={"host.name": "resource"})
    engine = engine_with(metric_batch([s], points(s, (1, 1.0))))
    assert query(engine, "g", "count", group_by=("host.name",))[0].labels == {"host.name": "point"}


def test_non_string_attribute_values_become_label_strings():
    s = series("g", attributes={"channels": 2, "mono": False})
    engine = engine_with(metric_batch([s], points(s, (1, 1.0))))
    assert query(engine, "g", "count", group_by=("channels", "mono"))[0].labels == {
        "channels": "2",
        "mono": "false",
    }


@pytest.mark.parametrize(
    ("matcher", "expected_max"),
    [
        (Matcher("stage", "=", "vad"), 10.0),
        (Matcher("stage", "!=", "vad"), 3.0),
        (Matcher("stage", "=~", "den.*"), 3.0),
        (Matcher("stage", "!~", "den.*"), 10.0),
        (Matcher("service", "=", "gateway"), 10.0),
    ],
)
def test_matchers(gauges, matcher, expected_max):
    assert only(query(gauges, "latency", "max", end=10, matchers=(matcher,))) == [expected_max]


def test_regex_matcher_must_match_the_whole_value(gauges):
    assert query(gauges, "latency", "max", matchers=(Matcher("stage", "=~", "den"),)) == []


def test_equality_with_empty_string_matches_a_missing_label(gauges):
    assert len(query(gauges, "latency", "max", matchers=(Matcher("region", "=", ""),))) == 1


def test_groups_without_data_in_range_are_left_out(gauges):
    results = query(gauges, "latency", "max", start=10, end=20, group_by=("stage",))
    assert [r.labels for r in results] == [{"stage": "denoise"}]


def test_percentile_on_a_gauge_reads_raw_values(gauges):
    assert_values(only(query(gauges, "latency", "p99.5", end=10)), [np.quantile([1, 3, 10], 0.995)])


def test_points_flagged_no_recorded_value_are_ignored():
    s = series("g")
    rows = points(s, (1, 1.0), (2, 100.0))
    rows[1]["flags"] = 1
    engine = engine_with(metric_batch([s], rows))
    assert only(query(engine, "g", "max", end=10)) == [1.0]


# -- sums --------------------------------------------------------------------------------------------


def counter(metric="requests", **kw) -> dict:
    return series(metric, type="sum", temporality="cumulative", monotonic=True, **kw)


def test_increase_and_rate_across_a_sender_restart():
    c = counter()
    # start 0: 10 (lookback), 15, 20; the sender restarts at 30 s: 3, 8
    rows = points(c, (5, 10.0, 0), (15, 15.0, 0), (25, 20.0, 0), (35, 3.0, 30), (45, 8.0, 30))
    engine = engine_with(metric_batch([c], rows))
    assert only(query(engine, "requests", "increase", start=10, end=50)) == [5.0, 5.0, 3.0, 5.0]
    assert only(query(engine, "requests", "rate", start=10, end=50)) == [0.5, 0.5, 0.3, 0.5]


def test_a_drop_without_new_start_time_is_a_reset():
    c = counter()
    engine = engine_with(metric_batch([c], points(c, (5, 10.0), (15, 4.0))))
    assert only(query(engine, "requests", "increase", start=10, end=20)) == [4.0]


def test_counter_born_inside_the_range_counts_its_first_value():
    c = counter()
    engine = engine_with(metric_batch([c], points(c, (15, 7.0, 12), (25, 9.0, 12))))
    assert only(query(engine, "requests", "increase", start=10, end=30)) == [7.0, 2.0]


def test_counter_born_before_the_range_without_earlier_point_does_not_count_its_first_value():
    c = counter()
    engine = engine_with(metric_batch([c], points(c, (15, 7.0, 1), (25, 9.0, 1))))
    assert only(query(engine, "requests", "increase", start=10, end=30)) == [0.0, 2.0]


def test_previous_point_older_than_the_lookback_is_not_used():
    c = counter()
    store = MemoryStore()
    store.process(metric_batch([c], points(c, (0, 10.0, 0), (100, 15.0, 0))))
    engine = QueryEngine(store, lookback_ns=50 * S)
    assert only(engine.query_range(RangeQuery("requests", 100 * S, 110 * S, 10 * S, "increase"))) == [0.0]


def test_increase_sums_over_series_in_a_group():
    a, b = counter(attributes={"k": "a"}), counter(attributes={"k": "b"})
    rows = points(a, (5, 1.0), (15, 3.0)) + points(b, (5, 10.0), (15, 20.0))
    engine = engine_with(metric_batch([a, b], rows))
    assert only(query(engine, "requests", "increase", start=10, end=20)) == [12.0]


def test_delta_sum_increments_are_the_values():
    d = series("bytes", type="sum", temporality="delta", monotonic=True)
    engine = engine_with(metric_batch([d], points(d, (1, 4.0), (5, 6.0), (15, 1.0))))
    assert only(query(engine, "bytes", "increase", end=20)) == [10.0, 1.0]
    assert only(query(engine, "bytes", "rate", end=20)) == [1.0, 0.1]


def test_value_aggregations_on_a_sum_read_the_values():
    c = counter()
    engine = engine_with(metric_batch([c], points(c, (1, 4.0), (5, 6.0))))
    assert only(query(engine, "requests", "avg", end=10)) == [5.0]


def test_non_monotonic_cumulative_sum_keeps_real_decreases():
    u = series("queue", type="sum", temporality="cumulative", monotonic=False)
    engine = engine_with(metric_batch([u], points(u, (5, 10.0), (15, 4.0))))
    assert only(query(engine, "queue", "increase", start=10, end=20)) == [-6.0]


# -- explicit histograms -----------------------------------------------------------------------------

BOUNDS = [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0]


def explicit_point(s, t, samples, start=0.0, bounds=BOUNDS):
    counts = np.bincount(np.searchsorted(bounds, samples, side="left"), minlength=len(bounds) + 1)
    return {
        "s": s,
        "time_unix_nano": int(t * S),
        "start_time_unix_nano": int(start * S),
        "count": len(samples),
        "value": float(np.sum(samples)),
        "min": float(np.min(samples)) if len(samples) else None,
        "max": float(np.max(samples)) if len(samples) else None,
        "bounds": list(bounds),
        "bucket_counts": counts.tolist(),
    }


def histogram_series(metric="duration", temporality="cumulative", **kw):
    return series(metric, type="histogram", temporality=temporality, **kw)


@pytest.fixture
def explicit():
    """Two cumulative series; in [10, 20) each gets a new lognormal sample set (`samples`)."""
    rng = np.random.default_rng(1)
    old = [rng.lognormal(3, 1, 200) for _ in range(2)]
    new = [rng.lognormal(4, 0.5, 1000) for _ in range(2)]
    s = [histogram_series(attributes={"i": i}) for i in range(2)]
    rows = []
    for i in range(2):
        rows.append(explicit_point(s[i], 5, old[i]))
        rows.append(explicit_point(s[i], 15, np.concatenate([old[i], new[i]])))
    return engine_with(metric_batch(s, rows)), np.concatenate(new)


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_explicit_percentile_matches_the_samples_within_bucket_resolution(explicit, q):
    engine, samples = explicit
    (value,) = only(query(engine, "duration", f"p{int(q * 100)}", start=10, end=20))
    true = np.quantile(samples, q)
    b = int(np.searchsorted(BOUNDS, true))
    width = BOUNDS[b] - (BOUNDS[b - 1] if b else 0.0)
    assert abs(value - true) <= width


def test_histogram_count_sum_avg_are_increments(explicit):
    engine, samples = explicit
    assert only(query(engine, "duration", "count", start=10, end=20)) == [2000.0]
    assert only(query(engine, "duration", "rate", start=10, end=20)) == [200.0]
    (total,) = only(query(engine, "duration", "sum", start=10, end=20))
    assert total == pytest.approx(samples.sum())
    (avg,) = only(query(engine, "duration", "avg", start=10, end=20))
    assert avg == pytest.approx(samples.mean())


def test_histogram_min_max_read_the_fields():
    h = histogram_series()
    engine = engine_with(
        metric_batch([h], [explicit_point(h, 1, [3.0, 7.0]), explicit_point(h, 2, [2.0, 9.0])])
    )
    assert only(query(engine, "duration", "min", end=10)) == [2.0]
    assert only(query(engine, "duration", "max", end=10)) == [9.0]


def test_delta_histogram_percentile_merges_points_as_they_are():
    h = histogram_series(temporality="delta")
    rows = [explicit_point(h, 1, [1.0] * 10), explicit_point(h, 2, [7.0] * 10)]
    engine = engine_with(metric_batch([h], rows))
    assert only(query(engine, "duration", "p25", end=10)) == [2.5]  # rank 5 of 10 in (0, 5]


def test_histogram_percentile_with_bounds_conflict_in_a_group_is_an_error():
    a, b = histogram_series(attributes={"i": 0}), histogram_series(attributes={"i": 1})
    rows = [explicit_point(a, 1, [1.0], start=1), explicit_point(b, 1, [1.0], start=1, bounds=[1.0, 2.0])]
    engine = engine_with(metric_batch([a, b], rows))
    with pytest.raises(QueryError, match=r"bucket bounds differ \(\[5.0, 10.0.*\] vs \[1.0, 2.0\]\)"):
        query(engine, "duration", "p50", end=10)
    assert len(query(engine, "duration", "p50", end=10, group_by=("i",))) == 2


def test_last_is_not_defined_for_histograms(explicit):
    with pytest.raises(
        QueryError, match="agg 'last' is not defined for histogram 'duration'; accepted: count"
    ):
        query(explicit[0], "duration", "last")


# -- exponential histograms --------------------------------------------------------------------------


def exp_point(s, t, values, scale, start=0.0):
    h = exponential_histogram(np.asarray(values, dtype=float), scale)
    return {
        "s": s,
        "time_unix_nano": int(t * S),
        "start_time_unix_nano": int(start * S),
        "count": len(values),
        "value": float(np.sum(values)),
        "exp_scale": scale,
        "exp_zero_count": h.zero_count,
        "exp_zero_threshold": 0.0,
        "exp_positive_offset": h.positive_offset,
        "exp_positive_counts": h.positive_counts.tolist(),
        "exp_negative_offset": h.negative_offset,
        "exp_negative_counts": h.negative_counts.tolist(),
    }


def exp_series(temporality="cumulative", **kw):
    return series("latency.exp", type="exponential_histogram", temporality=temporality, **kw)


def test_exponential_percentile_merges_series_of_different_scales():
    rng = np.random.default_rng(2)
    a_vals, b_vals = rng.lognormal(3, 1, 500), rng.lognormal(5, 1, 500)
    a, b = (
        exp_series(temporality="delta", attributes={"i": 0}),
        exp_series(temporality="delta", attributes={"i": 1}),
    )
    engine = engine_with(metric_batch([a, b], [exp_point(a, 1, a_vals, 6), exp_point(b, 2, b_vals, 3)]))
    for q in (0.5, 0.9, 0.99):
        true = np.quantile(np.concatenate([a_vals, b_vals]), q, method="inverted_cdf")
        (value,) = only(query(engine, "latency.exp", f"p{int(q * 100)}", end=10))
        assert abs(value - true) <= relative_error(3) * true * (1 + 1e-9)


def test_cumulative_exponential_increment_survives_a_downscale_between_points():
    rng = np.random.default_rng(3)
    old, new = rng.lognormal(2, 1, 300), rng.lognormal(6, 0.3, 300)
    e = exp_series()
    rows = [exp_point(e, 5, old, 4), exp_point(e, 15, np.concatenate([old, new]), 2)]
    engine = engine_with(metric_batch([e], rows))
    (value,) = only(query(engine, "latency.exp", "p50", start=10, end=20))
    true = np.quantile(new, 0.5, method="inverted_cdf")
    assert abs(value - true) <= relative_error(2) * true * (1 + 1e-9)


def test_cumulative_exponential_increments_keep_negative_and_zero_buckets():
    e = exp_series()
    old, new = [-4.0, 0.0, 9.0], [-50.0, -40.0, 0.0, 0.0, 1.0]
    rows = [exp_point(e, 5, old, 3), exp_point(e, 15, old + new, 3)]
    engine = engine_with(metric_batch([e], rows))
    bound = relative_error(3) * 1.000001
    assert only(query(engine, "latency.exp", "p20", start=10, end=20)) == [pytest.approx(-50.0, rel=bound)]
    assert only(query(engine, "latency.exp", "p60", start=10, end=20)) == [0.0]
    assert only(query(engine, "latency.exp", "p100", start=10, end=20)) == [pytest.approx(1.0, rel=bound)]


def test_cumulative_exponential_restart_uses_the_new_point_whole():
    e = exp_series()
    rows = [exp_point(e, 5, [1000.0] * 9, 3, start=0), exp_point(e, 15, [1.0, 2.0, 3.0], 3, start=12)]
    engine = engine_with(metric_batch([e], rows))
    (value,) = only(query(engine, "latency.exp", "p50", start=10, end=20))
    assert value == pytest.approx(2.0, rel=relative_error(3) * 1.000001)
    assert only(query(engine, "latency.exp", "count", start=10, end=20)) == [3.0]


# -- summaries ---------------------------------------------------------------------------------------


def summary_point(s, t, count, total, qv: dict[float, float]):
    return {
        "s": s,
        "time_unix_nano": int(t * S),
        "count": count,
        "value": total,
        "quantiles": list(qv),
        "quantile_values": list(qv.values()),
    }


@pytest.fixture
def summaries():
    s = series("rtf", type="summary")
    rows = [
        summary_point(s, 5, 10, 5.0, {0.5: 0.4, 0.99: 0.9}),
        summary_point(s, 15, 30, 15.0, {0.5: 0.5, 0.99: 1.2}),
    ]
    return engine_with(metric_batch([s], rows))


def test_summary_percentile_is_the_latest_reported_quantile(summaries):
    assert only(summaries.query_range(RangeQuery("rtf", 0, 20 * S, 10 * S, "p99"))) == [0.9, 1.2]


def test_summary_percentile_not_reported_is_an_error_listing_the_reported_ones(summaries):
    with pytest.raises(
        QueryError, match=r"summary 'rtf' has no quantile 0.95 in range; it reports \[0.5, 0.99\]"
    ):
        summaries.query_range(RangeQuery("rtf", 0, 20 * S, 10 * S, "p95"))


def test_summary_count_is_an_increase(summaries):
    assert only(summaries.query_range(RangeQuery("rtf", 10 * S, 20 * S, 10 * S, "count"))) == [20.0]


# -- metadata and exemplars --------------------------------------------------------------------------


def test_list_metrics_describes_each_metric_once(gauges):
    (metric,) = gauges.list_metrics()
    assert metric == {
        "name": "latency",
        "type": "gauge",
        "unit": "ms",
        "description": "",
        "temporality": "unspecified",
        "monotonic": False,
        "series": 2,
    }


def test_list_series_applies_matchers_and_decodes_attributes(gauges):
    (s,) = gauges.list_series("latency", (Matcher("stage", "=", "vad"),))
    assert s["series_id"] == B["series_id"]
    assert (s["service"], s["attributes"], s["resource"]) == (
        "gateway",
        {"stage": "vad"},
        {"service.name": "gateway"},
    )


def test_exemplars_of_matching_series_in_range():
    rows = [
        {"s": A, "time_unix_nano": 1 * S, "value": 1.0, "trace_id": "a" * 32, "span_id": "b" * 16},
        {"s": B, "time_unix_nano": 2 * S, "value": 2.0, "trace_id": "c" * 32, "span_id": "d" * 16},
        {"s": A, "time_unix_nano": 20 * S, "value": 3.0, "trace_id": "e" * 32, "span_id": "f" * 16},
    ]
    engine = engine_with(metric_batch([A, B], points(A, (1, 1.0)), rows))
    table = engine.exemplars("latency", 0, 10 * S, (Matcher("stage", "=", "denoise"),))
    assert table.column("trace_id").to_pylist() == ["a" * 32]


# -- errors ------------------------------------------------------------------------------------------


def test_unknown_metric_names_the_known_ones_and_a_close_match(gauges):
    with pytest.raises(
        QueryError, match=r"unknown metric 'latncy' \(did you mean 'latency'\?\); known: latency"
    ):
        query(gauges, "latncy", "avg")


def test_unknown_metric_list_is_truncated():
    batches = [metric_batch([s], points(s, (1, 1.0))) for s in (series(f"m{i:02}") for i in range(25))]
    with pytest.raises(QueryError, match=r"known: m00, m01, .*m19, \.\.\. \(5 more\)"):
        query(engine_with(*batches), "zzz", "avg")


def test_unknown_agg_lists_the_accepted(gauges):
    with pytest.raises(
        QueryError, match="unknown agg 'median'; accepted: avg, min, max, sum, count, last, rate"
    ):
        query(gauges, "latency", "median")


def test_rate_on_a_gauge_is_an_error(gauges):
    with pytest.raises(QueryError, match="agg 'rate' is not defined for gauge 'latency'"):
        query(gauges, "latency", "rate")


@pytest.mark.parametrize(
    ("start", "end", "step", "message"),
    [
        (0, 10, 0, "step_ns must be > 0, got 0"),
        (10, 0, 1, "end_ns 0 is before start_ns 10"),
        (0, 11_001, 1, "11001 buckets requested; at most 11000"),
    ],
)
def test_bad_ranges_are_errors(gauges, start, end, step, message):
    with pytest.raises(QueryError, match=message):
        gauges.query_range(RangeQuery("latency", start, end, step))


def test_bad_regex_is_an_error(gauges):
    with pytest.raises(QueryError, match=r"bad regex '\(' for 'stage'"):
        query(gauges, "latency", "avg", matchers=(Matcher("stage", "=~", "("),))


def test_lookaround_regex_is_rejected(gauges):
    with pytest.raises(QueryError, match="lookaround or backreferences"):
        query(gauges, "latency", "avg", matchers=(Matcher("stage", "=~", "(?=d).*"),))


def test_unknown_matcher_op_is_an_error(gauges):
    with pytest.raises(QueryError, match=r"unknown matcher op '==' for 'stage'; accepted: =, !=, =~, !~"):
        query(gauges, "latency", "avg", matchers=(Matcher("stage", "==", "x"),))


# -- spans and traces --------------------------------------------------------------------------------


@pytest.fixture
def traces() -> QueryEngine:
    return engine_with(
        span_batch(
            [
                span(1, 1, "pipeline", start_s=0, duration_s=3, attributes={"audio.codec": "opus"}),
                span(1, 2, "denoise", start_s=1, duration_s=2, status_code=2),
                span(1, 3, "vad", start_s=0.5, duration_s=0.1),
                span(
                    2, 4, "denoise", start_s=10, duration_s=0.5, service="gateway", resource={"region": "eu"}
                ),
                span(3, 5, "denoise", start_s=20, duration_s=1),
            ]
        )
    )


def span_ids(table) -> list[str]:
    return [int(x, 16) for x in table.column("span_id").to_pylist()]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (SpanQuery(service="gateway"), [4]),
        (SpanQuery(operation="denoise"), [5, 4, 2]),
        (SpanQuery(min_duration_ns=2 * S), [2, 1]),
        (SpanQuery(max_duration_ns=S // 2), [4, 3]),
        (SpanQuery(status_code=2), [2]),
        (SpanQuery(status_code="error"), [2]),
        (SpanQuery(attributes={"audio.codec": "opus"}), [1]),
        (SpanQuery(attributes={"region": "eu"}), [4]),  # a resource attribute
        (SpanQuery(start_ns=5 * S, end_ns=20 * S), [4]),
        (SpanQuery(trace_id=f"{1:032x}"), [2, 3, 1]),
        (SpanQuery(limit=2), [5, 4]),
    ],
)
def test_span_search_newest_first(traces, q, expected):
    assert span_ids(traces.search_spans(q)) == expected


def test_trace_search_returns_traces_with_any_matching_span_most_recent_first(traces):
    assert traces.search_traces(SpanQuery(operation="denoise")) == [f"{3:032x}", f"{2:032x}", f"{1:032x}"]
    assert traces.search_traces(SpanQuery(status_code=2)) == [f"{1:032x}"]


def test_get_trace_returns_all_spans_ordered_by_start(traces):
    assert span_ids(traces.get_trace(f"{1:032X}")) == [1, 3, 2]


def test_get_unknown_trace_is_empty(traces):
    assert traces.get_trace("f" * 32).num_rows == 0


def test_bad_trace_id_is_an_error(traces):
    with pytest.raises(QueryError, match="trace_id must be 32 hex characters, got 'xyz'"):
        traces.get_trace("xyz")


def test_span_limit_is_bounded(traces):
    with pytest.raises(QueryError, match="limit must be an integer from 1 to 10000, got 0"):
        traces.search_spans(SpanQuery(limit=0))


# -- logs --------------------------------------------------------------------------------------------


@pytest.fixture
def logs() -> QueryEngine:
    return engine_with(
        log_batch(
            [
                log(1, "Model loaded", severity=9),
                log(2, "clipping detected in chunk 7", severity=13, trace_id="a" * 32, span_id="b" * 16),
                log(3, "decoder FAILED", severity=17, service="gateway", attributes={"codec": "opus"}),
                log(4, "done", severity=5),
            ]
        )
    )


def bodies(table) -> list[str]:
    return table.column("body").to_pylist()


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (LogQuery(), ["done", "decoder FAILED", "clipping detected in chunk 7", "Model loaded"]),
        (LogQuery(start_ns=2 * S, end_ns=4 * S), ["decoder FAILED", "clipping detected in chunk 7"]),
        (LogQuery(min_severity=13), ["decoder FAILED", "clipping detected in chunk 7"]),
        (LogQuery(min_severity="error"), ["decoder FAILED"]),
        (LogQuery(service="gateway"), ["decoder FAILED"]),
        (LogQuery(text="failed"), ["decoder FAILED"]),
        (LogQuery(trace_id="A" * 32), ["clipping detected in chunk 7"]),
        (LogQuery(span_id="b" * 16), ["clipping detected in chunk 7"]),
        (LogQuery(attributes={"codec": "opus"}), ["decoder FAILED"]),
        (LogQuery(limit=1), ["done"]),
    ],
)
def test_log_search_newest_first(logs, q, expected):
    assert bodies(logs.search_logs(q)) == expected


def test_unknown_severity_name_is_an_error(logs):
    with pytest.raises(QueryError, match="unknown severity 'loud'; accepted: 1-24 or TRACE"):
        logs.search_logs(LogQuery(min_severity="loud"))


# -- concurrency -------------------------------------------------------------------------------------


def test_queries_during_appends_do_not_fail():
    store = MemoryStore()
    engine = QueryEngine(store)
    g = series("g")
    store.process(metric_batch([g], points(g, (0, 0.0))))
    errors: list[BaseException] = []
    done = threading.Event()

    def write():
        for i in range(1, 400):
            store.process(metric_batch([g], points(g, (i, float(i)))))
            store.process(span_batch([span(i, i, start_s=i)]))
        done.set()

    def read():
        try:
            while not done.is_set():
                engine.query_range(RangeQuery("g", 0, 400 * S, 100 * S, "count"))
                engine.search_spans(SpanQuery(operation="denoise"))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    writer = threading.Thread(target=write)
    for t in [*readers, writer]:
        t.start()
    for t in [*readers, writer]:
        t.join()
    assert errors == []
    assert np.nansum(only(engine.query_range(RangeQuery("g", 0, 400 * S, 100 * S, "count")))) == 400
