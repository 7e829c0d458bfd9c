"""OTLP protobuf decoders under random and mutated bytes: decode or DecodeError, never a crash.

The native scanner (``_otlp_scan.c``) reads untrusted bytes in C: a bug there is a segfault that
takes the receiver down, so every input also goes through it, and its answer must be the
reference decoder's (the same batch and refusals) or, when protobuf refuses the bytes, a refusal.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode import decode_logs, decode_metrics, decode_traces
from otel_audio.receiver.decode_fast import decode_metrics_bytes
from otel_audio.receiver.decode_spans_fast import decode_traces_bytes
from tests.fuzz import budget, tried
from tests.fuzz.otlp_requests import logs_requests, metrics_requests, mutated, trace_requests

BUDGET = 1000  # series per metric: high enough that random requests rarely reach it


def same_table(a, b) -> bool:
    """Arrow tables equal, NaNs included (``Table.equals`` counts NaN as unequal to itself)."""
    return a.equals(b) or (a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist()))


def _reference(parse, decode, buf: bytes):
    """The reference decoder's result, or None when protobuf refuses the bytes."""
    try:
        message = parse(buf)
    except DecodeError as exc:
        assert str(exc), "a refusal says why"
        return None
    return decode(message)


def assert_metrics_agree(buf: bytes) -> None:
    expected = _reference(
        ExportMetricsServiceRequest.FromString, lambda m: decode_metrics(m, CardinalityLimiter(BUDGET)), buf
    )
    try:
        got = decode_metrics_bytes(buf, CardinalityLimiter(BUDGET))
    except DecodeError as exc:
        assert str(exc), "a refusal says why"
        assert expected is None, f"the native scan refused what protobuf reads: {exc}"
        return
    assert expected is not None, "the native scan read what protobuf refuses"
    assert same_table(got.batch.points, expected.batch.points)
    assert same_table(got.batch.series.sort_by("series_id"), expected.batch.series.sort_by("series_id"))
    assert (got.rejected, sorted(got.errors)) == (expected.rejected, sorted(expected.errors))


def assert_traces_agree(buf: bytes) -> None:
    expected = _reference(ExportTraceServiceRequest.FromString, decode_traces, buf)
    try:
        got = decode_traces_bytes(buf)
    except DecodeError as exc:
        assert str(exc), "a refusal says why"
        assert expected is None, f"the native scan refused what protobuf reads: {exc}"
        return
    assert expected is not None, "the native scan read what protobuf refuses"
    assert same_table(got.batch.spans, expected.batch.spans)
    assert (got.rejected, got.errors) == (expected.rejected, expected.errors)


def assert_logs_decode(buf: bytes) -> None:
    decoded = _reference(ExportLogsServiceRequest.FromString, decode_logs, buf)
    if decoded is not None:
        assert decoded.rejected >= 0 and all(decoded.errors)


@budget(150)
@given(st.binary(max_size=512))
def test_random_bytes_as_metrics(buf: bytes) -> None:
    tried["protobuf.metrics.random"] += 1
    assert_metrics_agree(buf)


@budget(200)
@given(mutated(metrics_requests))
def test_mutated_metrics_requests(buf: bytes) -> None:
    tried["protobuf.metrics.mutated"] += 1
    assert_metrics_agree(buf)


@budget(60)
@given(metrics_requests)
def test_valid_metrics_requests_decode_alike(request: ExportMetricsServiceRequest) -> None:
    tried["protobuf.metrics.valid"] += 1
    assert_metrics_agree(request.SerializeToString())


@budget(150)
@given(st.binary(max_size=512))
def test_random_bytes_as_traces(buf: bytes) -> None:
    tried["protobuf.traces.random"] += 1
    assert_traces_agree(buf)


@budget(200)
@given(mutated(trace_requests))
def test_mutated_trace_requests(buf: bytes) -> None:
    tried["protobuf.traces.mutated"] += 1
    assert_traces_agree(buf)


@budget(60)
@given(trace_requests)
def test_valid_trace_requests_decode_alike(request: ExportTraceServiceRequest) -> None:
    tried["protobuf.traces.valid"] += 1
    assert_traces_agree(request.SerializeToString())


@budget(100)
@given(st.one_of(st.binary(max_size=512), mutated(logs_requests)))
def test_random_and_mutated_logs(buf: bytes) -> None:
    tried["protobuf.logs"] += 1
    assert_logs_decode(buf)


def test_a_series_named_by_a_gauge_and_a_later_histogram_is_described_by_the_gauge() -> None:
    # Found by the fuzz profile: the fast path decodes histograms first and let them describe it.
    from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb

    from tests.fuzz.otlp_requests import T0

    number = mpb.NumberDataPoint(time_unix_nano=T0, as_double=1.0)
    histogram = mpb.HistogramDataPoint(time_unix_nano=T0, count=1, bucket_counts=[1])
    request = ExportMetricsServiceRequest(
        resource_metrics=[
            {
                "scope_metrics": [
                    {
                        "metrics": [
                            mpb.Metric(name="m", gauge=mpb.Gauge(data_points=[number])),
                            mpb.Metric(
                                name="m",
                                histogram=mpb.Histogram(data_points=[histogram], aggregation_temporality=1),
                            ),
                        ]
                    }
                ]
            }
        ]
    )
    assert_metrics_agree(request.SerializeToString())
    (row,) = decode_metrics_bytes(
        request.SerializeToString(), CardinalityLimiter(BUDGET)
    ).batch.series.to_pylist()
    assert (row["type"], row["temporality"]) == ("gauge", "unspecified")
