"""SpanMetrics: RED metrics from spans, weighted by adjusted count, emitted as cumulative series."""

from __future__ import annotations

import bisect
import json
import logging
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest

from otel_audio.processors.base import SPANS_SCHEMA, MetricBatch, SpanBatch, canonical_json
from otel_audio.processors.spanmetrics import DEFAULT_BOUNDS, SpanMetrics, adjusted_count, from_options
from otel_audio.samplers import consistent
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import QueryEngine, RangeQuery

S = 10**9
T0 = 1_700_000_000 * S
CALLS = "traces.span.metrics.calls"
DURATION = "traces.span.metrics.duration"
ERROR = "STATUS_CODE_ERROR"


def span(
    trace_id: str = "0" * 31 + "1",
    *,
    name: str = "enhance",
    service: str = "enhancer",
    kind: int = 1,
    status: int = 0,
    duration_s: float = 0.2,
    end_ns: int = T0,
    trace_state: str = "",
    attributes: dict | None = None,
    resource: dict | None = None,
    span_id: str = "00000000000000aa",
) -> dict:
    duration_ns = round(duration_s * S)
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": "",
        "trace_state": trace_state,
        "name": name,
        "kind": kind,
        "start_time_unix_nano": end_ns - duration_ns,
        "end_time_unix_nano": end_ns,
        "duration_ns": duration_ns,
        "status_code": status,
        "status_message": "",
        "service": service,
        "resource": canonical_json(resource or {"service.name": service}),
        "scope": "test",
        "scope_version": "",
        "attributes": canonical_json(attributes or {}),
        "events": "[]",
        "links": "[]",
        "flags": 0,
    }


def batch(rows: list[dict]) -> SpanBatch:
    return SpanBatch(pa.Table.from_pylist(rows, schema=SPANS_SCHEMA))


def points_by_series(out: MetricBatch, metric: str) -> dict[str, dict]:
    """Points of ``metric`` keyed by their series' attributes (JSON)."""
    series = {r["series_id"]: r for r in out.series.to_pylist() if r["metric"] == metric}
    return {
        series[p["series_id"]]["attributes"]: p for p in out.points.to_pylist() if p["series_id"] in series
    }


def th_for(p: float) -> tuple[int, str]:
    threshold = consistent.probability_to_threshold(p)
    return threshold, f"ot=th:{consistent.encode_th(threshold)}"


def estimate(out: MetricBatch) -> tuple[float, float]:
    """(calls, errors) over all series of one collected batch."""
    calls = points_by_series(out, CALLS)
    total = sum(p["value"] for p in calls.values())
    errors = sum(p["value"] for a, p in calls.items() if json.loads(a)["status.code"] == ERROR)
    return total, errors


def sampled_population(seed: int, n: int, p: float, error_ratio: float, unsampled_errors: bool = False):
    """``n`` random traces with errors at ``error_ratio``; the rows a consistent sampler at ``p`` keeps.

    Returns (true error count, sampled rows, unsampled error rows if asked for, else []).
    """
    rng = np.random.default_rng(seed)
    hi = rng.integers(0, 2**63, n, dtype=np.uint64)
    lo = rng.integers(0, 2**63, n, dtype=np.uint64) | (
        rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63)
    )
    errors = rng.random(n) < error_ratio
    durations = rng.lognormal(-1.5, 1.0, n)
    threshold, ts = th_for(p)
    randomness = lo & np.uint64(consistent.RANDOMNESS_MASK)
    keep = randomness >= np.uint64(threshold)
    rows, dropped_errors = [], []
    for i in np.flatnonzero(keep | errors if unsampled_errors else keep):
        row = span(
            f"{int(hi[i]):016x}{int(lo[i]):016x}",
            status=2 if errors[i] else 1,
            duration_s=float(durations[i]),
            trace_state=ts,
            attributes={"audio.stage": "enhancement"},
        )
        (rows if keep[i] else dropped_errors).append(row)
    return int(errors.sum()), rows, dropped_errors


# --- counting ------------------------------------------------------------------------------------


def test_counts_and_durations_per_dimension_match_brute_force():
    rng = np.random.default_rng(7)
    processor = SpanMetrics(dimensions=from_options({"dimensions": ["audio.pipeline"]}).dimensions)
    rows, truth_calls, truth_buckets = [], Counter(), defaultdict(lambda: [0] * (len(DEFAULT_BOUNDS) + 1))
    truth_sum = defaultdict(float)
    for i in range(3000):
        stage = rng.choice(["load_audio", "enhancement", None])
        attributes = {"audio.pipeline": "speech"} if i % 3 else {}
        if stage is not None:
            attributes["audio.stage"] = str(stage)
        row = span(
            f"{i:032x}",
            name=str(rng.choice(["a", "b"])),
            service=str(rng.choice(["svc1", "svc2"])),
            kind=int(rng.integers(0, 6)),
            status=int(rng.integers(0, 3)),
            duration_s=float(rng.exponential(0.5)),
            attributes=attributes,
        )
        rows.append(row)
        key = (
            row["service"],
            row["name"],
            row["kind"],
            row["status_code"],
            stage,
            attributes.get("audio.pipeline"),
        )
        truth_calls[key] += 1
        seconds = row["duration_ns"] / S
        truth_buckets[key][bisect.bisect_left(DEFAULT_BOUNDS, seconds)] += 1
        truth_sum[key] += seconds
    for start in range(0, len(rows), 500):
        processor.process(batch(rows[start : start + 500]))
    out = processor.collect(T0 + S)
    calls, durations = points_by_series(out, CALLS), points_by_series(out, DURATION)
    kinds = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT",
             "SPAN_KIND_PRODUCER", "SPAN_KIND_CONSUMER"]  # fmt: skip
    statuses = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", ERROR]
    assert len(calls) == len(durations) == len(truth_calls)
    for (service, name, kind, status, stage, pipeline), count in truth_calls.items():
        attributes = {"service.name": service, "span.name": name, "span.kind": kinds[kind],
                      "status.code": statuses[status]}  # fmt: skip
        if stage is not None:
            attributes["audio.stage"] = stage
        if pipeline is not None:
            attributes["audio.pipeline"] = pipeline
        key = canonical_json(attributes)
        assert calls[key]["value"] == count
        assert durations[key]["count"] == count
        assert (
            durations[key]["bucket_counts"] == truth_buckets[(service, name, kind, status, stage, pipeline)]
        )
        assert durations[key]["value"] == pytest.approx(
            truth_sum[(service, name, kind, status, stage, pipeline)]
        )


def test_errors_are_calls_split_by_status_code():
    processor = SpanMetrics()
    processor.process(batch([span(status=2), span(status=2), span(status=1), span(status=0)]))
    calls = {
        json.loads(a)["status.code"]: p["value"]
        for a, p in points_by_series(processor.collect(T0 + S), CALLS).items()
    }
    assert calls == {ERROR: 2.0, "STATUS_CODE_OK": 1.0, "STATUS_CODE_UNSET": 1.0}


def test_extra_dimensions_come_from_span_then_resource_then_default_else_are_omitted():
    processor = from_options({"dimensions": ["region", {"name": "tier", "default": "free"}, "absent"]})
    processor.process(
        batch(
            [
                span(attributes={"region": "eu"}, resource={"service.name": "enhancer", "region": "us"}),
                span(resource={"service.name": "enhancer", "region": "us", "tier": "pro"}),
            ]
        )
    )
    keys = [json.loads(a) for a in points_by_series(processor.collect(T0 + S), CALLS)]
    assert {(k["region"], k["tier"]) for k in keys} == {("eu", "free"), ("us", "pro")}
    assert all("absent" not in k and "audio.stage" not in k for k in keys)


# --- weighting -----------------------------------------------------------------------------------


def test_adjusted_count_from_threshold_attribute_or_one():
    _, ts = th_for(0.25)
    high_r = "f" * 32  # randomness above every threshold: a span any sampler keeps
    assert adjusted_count(ts, high_r, {}) == (4.0, False)
    assert adjusted_count("", high_r, {"sampling.probability": 0.1}) == (pytest.approx(10.0), False)
    assert adjusted_count("vendor=x,ot=th:8;rv:ffffffffffffff", high_r, {"sampling.probability": 0.1}) == (
        2.0,
        False,
    )
    assert adjusted_count("", high_r, {}) == (1.0, False)
    assert adjusted_count("ot=th:zz", high_r, {"sampling.probability": 0}) == (1.0, False)


def test_promoted_spans_count_zero():
    _, ts = th_for(0.25)
    assert adjusted_count(ts, "f" * 32, {"sampling.promoted": True}) == (0.0, True)
    # Randomness below the span's own threshold: kept by tail promotion, not by the sampler.
    assert adjusted_count(ts, "0" * 32, {}) == (0.0, True)


def test_one_percent_sampling_estimates_calls_and_error_ratio_within_5_percent():
    n = 200_000
    truth_errors, rows, _ = sampled_population(seed=2024, n=n, p=0.01, error_ratio=0.3)
    processor = SpanMetrics()
    processor.process(batch(rows))
    calls, errors = estimate(processor.collect(T0 + S))
    assert 1_500 < len(rows) < 2_500
    assert calls == pytest.approx(n, rel=0.05)
    assert errors / calls == pytest.approx(truth_errors / n, rel=0.05)


def test_sampled_estimates_are_unbiased_on_average():
    """Over 100 independent 1 % samples the mean estimates lie within 1 % (about 3 standard errors)."""
    n, ratios, totals = 100_000, [], []
    for seed in range(100):
        truth_errors, rows, _ = sampled_population(seed=seed, n=n, p=0.01, error_ratio=0.3)
        processor = SpanMetrics()
        processor.process(batch(rows))
        calls, errors = estimate(processor.collect(T0 + S))
        totals.append(calls / n)
        ratios.append((errors / calls) / (truth_errors / n))
    assert np.mean(totals) == pytest.approx(1.0, abs=0.01)
    assert np.mean(ratios) == pytest.approx(1.0, abs=0.015)


def test_promoted_error_spans_do_not_change_the_estimates():
    _, rows, dropped_errors = sampled_population(11, 50_000, 0.01, error_ratio=0.3, unsampled_errors=True)
    marked = [
        {**r, "attributes": canonical_json({**json.loads(r["attributes"]), "sampling.promoted": True})}
        for r in dropped_errors[:500]
    ]
    unmarked = dropped_errors[500:1000]  # their randomness below their threshold gives them away
    alone, with_promoted = SpanMetrics(), SpanMetrics()
    alone.process(batch(rows))
    with_promoted.process(batch(rows + marked + unmarked))
    out = with_promoted.collect(T0 + S)
    assert estimate(out) == estimate(alone.collect(T0 + S))
    exemplars = out.exemplars.to_pylist()
    assert any(json.loads(e["attributes"]).get("sampling.promoted") for e in exemplars)


def test_fractional_weights_round_each_cumulative_bucket_to_within_half():
    processor = SpanMetrics(bounds=(1.0,))
    for k in range(1, 8):
        processor.process(batch([span(duration_s=0.5, attributes={"sampling.probability": 1 / 1.3})]))
        point = next(iter(points_by_series(processor.collect(T0 + k * S), DURATION).values()))
        assert abs(point["bucket_counts"][0] - 1.3 * k) <= 0.5
        assert point["count"] == sum(point["bucket_counts"])
        assert point["value"] == pytest.approx(0.65 * k)
        calls = next(iter(points_by_series(processor.collect(T0 + k * S), CALLS).values()))
        assert calls["value"] == pytest.approx(1.3 * k)


# --- output --------------------------------------------------------------------------------------


def test_exemplars_carry_ids_of_real_spans_bounded_per_series():
    processor = SpanMetrics(exemplars_per_series=3)
    rows = [span(f"{i:032x}", span_id=f"{i:016x}", end_ns=T0 + i) for i in range(1, 11)]
    processor.process(batch(rows))
    exemplars = processor.collect(T0 + S).exemplars.to_pylist()
    assert [e["trace_id"] for e in exemplars] == [f"{i:032x}" for i in (8, 9, 10)]
    assert [e["span_id"] for e in exemplars] == [f"{i:016x}" for i in (8, 9, 10)]
    assert exemplars[0]["value"] == pytest.approx(0.2)
    assert processor.collect(T0 + 2 * S).exemplars.num_rows == 0  # each exemplar is emitted once


def test_points_are_cumulative_with_stable_start_times_and_flush_on_the_interval():
    emitted: list[MetricBatch] = []
    processor = SpanMetrics(flush_interval_s=10)
    processor.bind_emit(emitted.append)
    processor.tick(T0)  # nothing seen yet: nothing emitted
    processor.process(batch([span(end_ns=T0 + S)]))
    processor.tick(T0 + 5 * S)  # before the interval has passed
    assert emitted == []
    starts, values = set(), []
    for k in range(1, 4):
        processor.process(batch([span(end_ns=T0 + k * 10 * S)]))
        processor.tick(T0 + k * 10 * S)
        point = next(iter(points_by_series(emitted[-1], CALLS).values()))
        starts.add(point["start_time_unix_nano"])
        values.append(point["value"])
    assert len(emitted) == 3
    assert starts == {T0}  # the tick before the series was first seen
    assert values == [2.0, 3.0, 4.0]


def test_close_emits_what_arrived_since_the_last_flush():
    emitted: list[MetricBatch] = []
    processor = SpanMetrics()
    processor.bind_emit(emitted.append)
    processor.tick(T0)
    processor.process(batch([span()]))
    processor.close()
    assert len(emitted) == 1
    assert next(iter(points_by_series(emitted[0], CALLS).values()))["value"] == 1.0


def test_series_beyond_max_series_share_one_overflow_series_logged_once(caplog):
    processor = SpanMetrics(max_series=2)
    with caplog.at_level(logging.WARNING):
        processor.process(batch([span(name=f"op{i}") for i in range(5)]))
        processor.process(batch([span(name="op9")]))
    calls = points_by_series(processor.collect(T0 + S), CALLS)
    assert processor.series_count == 2
    assert processor.overflow_spans == 4
    assert calls[canonical_json({"otel.metric.overflow": "true"})]["value"] == 4.0
    assert sum(p["value"] for p in calls.values()) == 6.0
    assert sum("max_series" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bucket": [1]}, "unknown option 'bucket'"),
        ({"bounds": []}, "bounds"),
        ({"bounds": [0.1, "2x"]}, "bounds[1]"),
        ({"bounds": [1, 0.5]}, "bounds[1]"),
        ({"bounds": "1s"}, "bounds"),
        ({"flush_interval_s": 0}, "flush_interval_s"),
        ({"flush_interval_s": "10"}, "flush_interval_s"),
        ({"max_series": 0}, "max_series"),
        ({"max_series": True}, "max_series"),
        ({"exemplars_per_series": -1}, "exemplars_per_series"),
        ({"dimensions": "region"}, "dimensions"),
        ({"dimensions": [""]}, "dimensions[0].name"),
        ({"dimensions": ["span.name"]}, "dimensions[0].name"),
        ({"dimensions": ["a", "a"]}, "dimensions[1].name"),
        ({"dimensions": [{"name": "a", "dflt": "x"}]}, "dimensions[0].dflt"),
        ({"namespace": ""}, "namespace"),
    ],
)
def test_bad_options_raise_errors_naming_the_option(options, message):
    with pytest.raises(ValueError, match="spanmetrics") as info:
        from_options(options)
    assert message in str(info.value)


def test_options_accept_durations_and_defaults():
    processor = from_options({"bounds": ["2ms", 0.5, "1s", "1m"], "flush_interval_s": 5, "max_series": 10})
    assert processor.bounds == (0.002, 0.5, 1.0, 60.0)
    assert processor.flush_interval_ns == 5 * S
    assert from_options({}).bounds == DEFAULT_BOUNDS
    assert from_options(None).calls_metric == CALLS


def test_emitted_series_are_queryable_from_the_store():
    store = MemoryStore()
    processor = SpanMetrics(flush_interval_s=10)
    processor.bind_emit(store.process)
    rng = np.random.default_rng(3)
    processor.tick(T0)
    for window in range(1, 8):  # 50 spans per 10 s of "enhancement", 20 of "load"
        rows = [
            span(f"{window:08x}{i:024x}", name=name, end_ns=T0 + window * 10 * S - S,
                 duration_s=float(rng.uniform(0.0, 1.0)) if name == "enhancement" else 0.001)
            for name, count in (("enhancement", 50), ("load", 20))
            for i in range(count)
        ]  # fmt: skip
        processor.process(batch(rows))
        processor.tick(T0 + window * 10 * S)
    engine = QueryEngine(store)
    rates = engine.query_range(
        RangeQuery(CALLS, T0 + 15 * S, T0 + 75 * S, step_ns=60 * S, agg="rate", group_by=("span.name",))
    )
    by_name = {r.labels["span.name"]: r.values[0] for r in rates}
    assert by_name == {"enhancement": pytest.approx(5.0), "load": pytest.approx(2.0)}
    p95 = engine.query_range(
        RangeQuery(DURATION, T0 + 15 * S, T0 + 75 * S, step_ns=60 * S, agg="p95", group_by=("span.name",))
    )
    by_name = {r.labels["span.name"]: r.values[0] for r in p95}
    assert by_name["enhancement"] == pytest.approx(0.95, abs=0.05)
    assert by_name["load"] <= 0.005
    exemplars = engine.exemplars(DURATION, T0, T0 + 80 * S)
    assert exemplars.num_rows > 0
    windows = {f"{w:08x}" for w in range(1, 8)}
    assert {t[:8] for t in exemplars.column("trace_id").to_pylist()} <= windows
