"""The native fast path decodes every request exactly as the reference decoder does."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode import decode_metrics
from otel_audio.receiver.decode_fast import decode_metrics_bytes
from tests.test_decode import SPAN, T0, TRACE, gauge, kv, metrics_request, point, sdk_metrics_request


def both(request: ExportMetricsServiceRequest, budget: int = 1000):
    reference = decode_metrics(request, CardinalityLimiter(budget))
    fast = decode_metrics_bytes(request.SerializeToString(), CardinalityLimiter(budget))
    return reference, fast


def assert_same(request: ExportMetricsServiceRequest, budget: int = 1000) -> None:
    reference, fast = both(request, budget)
    assert fast.batch.points.equals(reference.batch.points)
    # Series rows are a set: the fast path lists histogram series before number series.
    assert fast.batch.series.sort_by("series_id").equals(reference.batch.series.sort_by("series_id"))
    assert fast.batch.exemplars.equals(reference.batch.exemplars)
    # The same refusals with the same messages; the fast path names point refusals after metric ones.
    assert (fast.rejected, sorted(fast.errors), fast.rejected_over_budget) == (
        reference.rejected,
        sorted(reference.errors),
        reference.rejected_over_budget,
    )


def counter(name: str, *points: mpb.NumberDataPoint, temporality: int = 2) -> mpb.Metric:
    return mpb.Metric(
        name=name,
        sum=mpb.Sum(data_points=list(points), aggregation_temporality=temporality, is_monotonic=True),
    )


def test_sdk_request_with_every_metric_kind():
    assert_same(sdk_metrics_request())


def test_gauges_and_sums_with_int_values_flags_and_many_series():
    flagged = mpb.NumberDataPoint(time_unix_nano=T0, flags=1, attributes=[kv("stage", "x")])
    ints = mpb.NumberDataPoint(time_unix_nano=T0, as_int=-(2**62) - 1, attributes=[kv("stage", "y")])
    assert_same(
        metrics_request(
            gauge("g", *(point(float(i), file=f"f{i % 7}", stage="s") for i in range(50)), flagged, ints),
            counter("c", point(3.0, stage="s"), point(5.0, stage="t")),
            counter("d", point(1.0), temporality=1),
        )
    )


def test_refusals_are_counted_and_named_the_same():
    late = mpb.NumberDataPoint(time_unix_nano=2**63 + 5, as_double=1.0)
    empty = mpb.NumberDataPoint(time_unix_nano=T0)
    assert_same(
        metrics_request(
            gauge("", point(1.0)),
            counter("bad_temporality", point(1.0), temporality=0),
            gauge("g", point(1.0), late, empty, point(2.0, a="b")),
            mpb.Metric(name="no_data"),
        )
    )


def test_series_budget_refusals_match():
    assert_same(metrics_request(gauge("per_file", *(point(1.0, file=f"f{i}") for i in range(10)))), budget=4)


def test_exemplars_of_number_points():
    p = point(1.0, stage="s")
    p.exemplars.append(
        mpb.Exemplar(
            time_unix_nano=T0, as_double=0.5, trace_id=TRACE, span_id=SPAN, filtered_attributes=[kv("k", 1)]
        )
    )
    assert_same(metrics_request(gauge("g", p, point(2.0, stage="t"))))


def test_same_series_named_by_two_metric_messages_is_described_by_the_first():
    first = gauge("g", point(1.0, stage="s"))
    second = mpb.Metric(name="g", unit="s", gauge=mpb.Gauge(data_points=[point(2.0, stage="s")]))
    assert_same(metrics_request(first, second))


def test_several_resources_and_scopes():
    request = metrics_request(gauge("g", point(1.0)))
    other = mpb.ResourceMetrics(
        resource=Resource(attributes=[kv("service.name", "other")]),
        scope_metrics=[
            mpb.ScopeMetrics(scope=InstrumentationScope(name="a"), metrics=[gauge("g", point(2.0))]),
            mpb.ScopeMetrics(
                scope=InstrumentationScope(name="b", version="2"), metrics=[counter("c", point(3.0))]
            ),
        ],
    )
    request.resource_metrics.append(other)
    assert_same(request)


def test_malformed_bytes_raise_decode_error():
    with pytest.raises(DecodeError, match="byte"):
        decode_metrics_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage", CardinalityLimiter(10))


def test_series_cache_survives_across_requests_and_stays_correct():
    request = metrics_request(gauge("g", *(point(float(i), i=i % 5) for i in range(20))))
    for _ in range(3):
        assert_same(request)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["g1", "g2", "c1"]),
            st.floats(allow_nan=False, allow_infinity=False, width=64),
            st.sampled_from(["a", "b", "c"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_random_requests_decode_identically(rows):
    metrics = []
    for name, value, label, as_int in rows:
        p = (
            mpb.NumberDataPoint(time_unix_nano=T0, as_int=int(value) % 2**62, attributes=[kv("l", label)])
            if as_int
            else point(value, l=label)
        )
        metrics.append(counter(name, p) if name.startswith("c") else gauge(name, p))
    assert_same(metrics_request(*metrics), budget=2)


def test_fast_path_values_are_numpy_backed_columns():
    fast = decode_metrics_bytes(
        metrics_request(gauge("g", point(1.5), point(2.5, a="x"))).SerializeToString(), CardinalityLimiter(10)
    )
    assert np.array_equal(fast.batch.points["value"].to_numpy(), [1.5, 2.5])


def test_one_series_named_with_attributes_in_two_orders_is_one_series():
    # Different attribute bytes (two series keys) with the same canonical attributes: one series,
    # described once, both points on it, in both the at-once and the one-by-one row paths.
    request = metrics_request(
        gauge("g", point(1.0, a="1", b="2"), point(2.0, b="2", a="1"), point(3.0, c="x"))
    )
    assert_same(request)
    _, fast = both(request)
    assert fast.batch.series.num_rows == 2
    assert len(set(fast.batch.points.column("series_id").to_pylist())) == 2


def test_attribute_lists_whose_bytes_join_alike_are_told_apart_across_requests():
    """``[{a: true}, {}]`` and ``[{a}, {"": true}]`` serialize to the same joined bytes; the
    attribute caches shared by requests once gave the second list the first one's JSON."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def request(*attributes: KeyValue) -> ExportMetricsServiceRequest:
        return metrics_request(
            gauge("g", mpb.NumberDataPoint(attributes=list(attributes), time_unix_nano=T0, as_double=1.0))
        )

    first = request(kv("a", True), KeyValue())
    second = request(KeyValue(key="a"), KeyValue(value=AnyValue(bool_value=True)))
    for req, expected in ((first, '{"":null,"a":true}'), (second, '{"":true,"a":null}')):
        reference, fast = both(req)
        assert reference.batch.series["attributes"].to_pylist() == [expected]
        assert fast.batch.series["attributes"].to_pylist() == [expected]
