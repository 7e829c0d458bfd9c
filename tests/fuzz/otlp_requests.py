"""Valid OTLP export requests built with opentelemetry-proto, and byte-level mutations of them."""

from __future__ import annotations

from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2 as lpb
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as tpb

T0 = 1_700_000_000_000_000_000
_u64 = st.integers(0, 2**64 - 1)
_times = st.one_of(st.just(T0), st.integers(T0 - 10**12, T0 + 10**12), _u64)
_names = st.sampled_from(["audio.stage.duration", "a", "", "x" * 300, "é.ü", "rtf"])
_doubles = st.floats(allow_nan=True, allow_infinity=True)

scalar_values = st.one_of(
    st.builds(AnyValue, string_value=st.text(max_size=20)),
    st.builds(AnyValue, int_value=st.integers(-(2**63), 2**63 - 1)),
    st.builds(AnyValue, double_value=_doubles),
    st.builds(AnyValue, bool_value=st.booleans()),
    st.builds(AnyValue, bytes_value=st.binary(max_size=8)),
    st.just(AnyValue()),
)
any_values = st.one_of(
    scalar_values,
    st.builds(lambda vs: AnyValue(array_value=ArrayValue(values=vs)), st.lists(scalar_values, max_size=3)),
)
attributes = st.lists(
    st.builds(KeyValue, key=st.sampled_from(["audio.stage", "k", "", "service.name"]), value=any_values),
    max_size=4,
)
resources = st.builds(Resource, attributes=attributes)
scopes = st.builds(InstrumentationScope, name=st.text(max_size=8), version=st.text(max_size=4))


def _number_point(attrs, time, start, value, as_int, flags):
    p = mpb.NumberDataPoint(attributes=attrs, time_unix_nano=time, start_time_unix_nano=start, flags=flags)
    if value is not None:
        if as_int:
            p.as_int = int(value) if abs(value) < 2**62 else 7
        else:
            p.as_double = value
    return p


number_points = st.builds(
    _number_point,
    attributes,
    _times,
    _times,
    st.one_of(st.none(), _doubles),
    st.booleans(),
    st.sampled_from([0, 1]),
)
histogram_points = st.builds(
    lambda attrs, t, counts, bounds, total: mpb.HistogramDataPoint(
        attributes=attrs,
        time_unix_nano=t,
        count=total,
        bucket_counts=counts,
        explicit_bounds=bounds,
    ),
    attributes,
    _times,
    st.lists(st.integers(0, 100), max_size=4),
    st.lists(st.floats(allow_nan=False), max_size=3),
    st.integers(0, 400),
)


def _metric(name, kind, points, hpoints, temporality, unit):
    if kind == "gauge":
        return mpb.Metric(name=name, unit=unit, gauge=mpb.Gauge(data_points=points))
    if kind == "sum":
        data = mpb.Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=True)
        return mpb.Metric(name=name, unit=unit, sum=data)
    if kind == "histogram":
        data = mpb.Histogram(data_points=hpoints, aggregation_temporality=temporality)
        return mpb.Metric(name=name, unit=unit, histogram=data)
    return mpb.Metric(name=name, unit=unit)  # no data


metrics = st.builds(
    _metric,
    _names,
    st.sampled_from(["gauge", "sum", "histogram", "none"]),
    st.lists(number_points, max_size=4),
    st.lists(histogram_points, max_size=2),
    st.integers(0, 3),
    st.sampled_from(["", "s", "ms"]),
)
metrics_requests = st.builds(
    lambda groups: ExportMetricsServiceRequest(
        resource_metrics=[
            mpb.ResourceMetrics(resource=r, scope_metrics=[mpb.ScopeMetrics(scope=s, metrics=ms)])
            for r, s, ms in groups
        ]
    ),
    st.lists(st.tuples(resources, scopes, st.lists(metrics, max_size=4)), min_size=1, max_size=2),
)

_ids16 = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=17))
_ids8 = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=9))
spans = st.builds(
    lambda tid, sid, parent, name, kind, start, end, attrs, code: tpb.Span(
        trace_id=tid,
        span_id=sid,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs,
        status=tpb.Status(code=code, message="m"),
        events=[tpb.Span.Event(name="e", time_unix_nano=start, attributes=attrs)],
    ),
    _ids16,
    _ids8,
    st.one_of(st.just(b""), _ids8),
    st.text(max_size=10),
    st.integers(0, 7),
    _times,
    _times,
    attributes,
    st.integers(0, 3),
)
trace_requests = st.builds(
    lambda groups: ExportTraceServiceRequest(
        resource_spans=[
            tpb.ResourceSpans(resource=r, scope_spans=[tpb.ScopeSpans(scope=s, spans=ss)])
            for r, s, ss in groups
        ]
    ),
    st.lists(st.tuples(resources, scopes, st.lists(spans, max_size=4)), min_size=1, max_size=2),
)
log_records = st.builds(
    lambda t, sev, body, attrs, tid, sid: lpb.LogRecord(
        time_unix_nano=t,
        severity_number=sev,
        body=body,
        attributes=attrs,
        trace_id=tid,
        span_id=sid,
    ),
    _times,
    st.integers(0, 30),
    any_values,
    attributes,
    st.one_of(st.just(b""), _ids16),
    st.one_of(st.just(b""), _ids8),
)
logs_requests = st.builds(
    lambda groups: ExportLogsServiceRequest(
        resource_logs=[
            lpb.ResourceLogs(resource=r, scope_logs=[lpb.ScopeLogs(scope=s, log_records=ls)])
            for r, s, ls in groups
        ]
    ),
    st.lists(st.tuples(resources, scopes, st.lists(log_records, max_size=4)), min_size=1, max_size=2),
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy) -> bytes:
    """A serialized valid request with a few byte-level edits: flips, inserts, deletes, cuts."""
    buf = bytearray(draw(valid).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, len(buf)))
        if op == "flip" and buf:
            i = min(at, len(buf) - 1)
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[min(at, len(buf) - 1)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A]))
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[at:]
        elif op == "duplicate":
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]
    return bytes(buf)
