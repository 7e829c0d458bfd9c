"""The native trace decoder gives exactly what protobuf's parse and the reference decoder give."""

from __future__ import annotations

import math

import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2 as tpb

from otel_audio.receiver import decode_spans_fast, fastscan
from otel_audio.receiver.decode_spans import decode_traces
from otel_audio.receiver.decode_spans_fast import decode_traces_bytes
from tests.test_decode import PARENT, RESOURCE, SCOPE, SPAN, T0, TRACE, kv


def reference(buf: bytes):
    return decode_traces(ExportTraceServiceRequest.FromString(buf))


def assert_same(buf: bytes, scanned: bool = True) -> None:
    """The fast decoder's result is the reference's; ``scanned``: without falling back to protobuf."""
    assert (fastscan.scan_spans(buf) is not None) is scanned
    expected, got = reference(buf), decode_traces_bytes(buf)
    assert got.batch.spans.schema == expected.batch.spans.schema
    assert got.batch.spans.to_pylist() == expected.batch.spans.to_pylist()
    assert got.batch.spans.equals(expected.batch.spans)
    assert (got.rejected, got.errors) == (expected.rejected, expected.errors)


def same_outcome(buf: bytes) -> None:
    """Either both refuse the bytes with DecodeError or both decode them to the same result."""
    try:
        expected = reference(buf)
    except DecodeError:
        with pytest.raises(DecodeError):
            decode_traces_bytes(buf)
        return
    got = decode_traces_bytes(buf)
    assert got.batch.spans.equals(expected.batch.spans)
    assert (got.rejected, got.errors) == (expected.rejected, expected.errors)


def span(**fields: object) -> tpb.Span:
    base = {
        "trace_id": TRACE,
        "span_id": SPAN,
        "name": "s",
        "start_time_unix_nano": T0,
        "end_time_unix_nano": T0 + 5,
    }
    return tpb.Span(**{**base, **fields})


def request(*spans: tpb.Span, resource: Resource = RESOURCE, scope=SCOPE) -> bytes:
    scope_spans = tpb.ScopeSpans(scope=scope, spans=list(spans))
    rs = tpb.ResourceSpans(resource=resource, scope_spans=[scope_spans])
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def value(**member: object) -> AnyValue:
    return AnyValue(**member)


def varint(v: int) -> bytes:
    out = bytearray()
    while True:
        low, v = v & 0x7F, v >> 7
        out.append(low | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, serialized."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def wrap_span(span_bytes: bytes) -> bytes:
    """A request of one resource, one scope and this serialized span."""
    return field(1, field(2, field(2, span_bytes)))


def test_extension_scans_traces() -> None:
    assert decode_spans_fast.available()
    assert fastscan.scan_spans(request(span())) is not None


# ---------------------------------------------------------------- hand-written requests


def test_ids_names_times_kind_status_and_flags() -> None:
    assert_same(
        request(
            span(
                parent_span_id=PARENT,
                trace_state="vendor=x",
                kind=3,
                flags=0x301,
                status=tpb.Status(code=2, message='boom "quoted"\n'),
            ),
            span(parent_span_id=bytes(8), end_time_unix_nano=T0 - 7, name="négative durée ✓"),
        )
    )


def test_every_attribute_value_type() -> None:
    nested = KeyValueList(
        values=[kv("z", 1), kv("a", "x"), KeyValue(key="n", value=value(array_value=ArrayValue()))]
    )
    attributes = [
        kv("string", 'text with \x00\x1f\x7f\u2028 é \\ " \t\r\b\f'),
        kv("int", -(2**63)),
        kv("big", 2**63 - 1),
        kv("bool", True),
        kv("false", False),
        kv("double", 0.1),
        kv("exponent", 1e16),
        kv("small", 1e-5),
        kv("negative_zero", -0.0),
        kv("nan", math.nan),
        kv("inf", math.inf),
        kv("minus_inf", -math.inf),
        KeyValue(key="bytes", value=value(bytes_value=b"\x00\xffab")),
        KeyValue(key="bytes1", value=value(bytes_value=b"a")),
        KeyValue(key="empty_bytes", value=value(bytes_value=b"")),
        KeyValue(key="empty_string", value=value(string_value="")),
        KeyValue(
            key="array",
            value=value(
                array_value=ArrayValue(values=[value(int_value=1), value(), value(string_value="b")])
            ),
        ),
        KeyValue(key="kvlist", value=value(kvlist_value=nested)),
        KeyValue(key="strindex", value=value(string_value_strindex=3)),
        KeyValue(key="no_value"),
        KeyValue(key="empty_value", value=value()),
        KeyValue(key="", value=value(int_value=0)),
        kv("int", 5),  # a repeated key: the last value wins
        kv("ß", 1),
        kv("z", 1),
        kv("Z", 1),
        kv("\U0001f600", 1),
        kv("\uffff", 1),
    ]
    assert_same(request(span(attributes=attributes)))


def test_events_and_links() -> None:
    events = [
        tpb.Span.Event(time_unix_nano=T0 + 1, name="chunk", attributes=[kv("n", 1), kv("a", "b")]),
        tpb.Span.Event(),
        tpb.Span.Event(time_unix_nano=2**64 - 1, name="late\n", dropped_attributes_count=3),
    ]
    links = [
        tpb.Span.Link(trace_id=TRACE, span_id=PARENT, trace_state="k=v", attributes=[kv("x", 1.5)], flags=1),
        tpb.Span.Link(trace_id=b"\x01\x02\x03"),
        tpb.Span.Link(),
    ]
    assert_same(request(span(events=events, links=links), span(span_id=PARENT, events=events[:1])))


def test_invalid_spans_are_refused_with_the_reference_messages() -> None:
    assert_same(
        request(
            span(trace_id=b""),
            span(trace_id=TRACE[:15]),
            span(trace_id=bytes(16)),
            span(span_id=b"\x01" * 9),
            span(span_id=bytes(8)),
            span(parent_span_id=b"\x01" * 4),
            span(kind=6),
            span(kind=-1),
            span(status=tpb.Status(code=3)),
            span(status=tpb.Status(code=-2)),
            span(start_time_unix_nano=2**63),
            span(end_time_unix_nano=2**64 - 1),
            span(attributes=[kv("kept", 1)]),
        )
    )


def test_more_refusals_than_messages_kept() -> None:
    assert_same(request(*(span(trace_id=b"") for _ in range(40)), span()))


def test_several_resources_and_scopes() -> None:
    other = Resource(attributes=[kv("host.name", "h2")])  # no service.name: unknown_service
    req = ExportTraceServiceRequest(
        resource_spans=[
            tpb.ResourceSpans(
                resource=RESOURCE,
                scope_spans=[
                    tpb.ScopeSpans(scope=SCOPE, spans=[span(), span(trace_id=b"")]),
                    tpb.ScopeSpans(spans=[span(name="no scope")]),
                    tpb.ScopeSpans(scope=InstrumentationScope(name="x", attributes=[kv("a", 1)])),
                ],
            ),
            tpb.ResourceSpans(),
            tpb.ResourceSpans(
                resource=other,
                scope_spans=[
                    tpb.ScopeSpans(scope=InstrumentationScope(version="2"), spans=[span(span_id=b"")])
                ],
                schema_url="https://example.com",
            ),
            tpb.ResourceSpans(scope_spans=[tpb.ScopeSpans(spans=[span(name="last")])]),
        ]
    )
    assert_same(req.SerializeToString())


def test_requests_without_spans() -> None:
    assert_same(b"")
    assert_same(
        ExportTraceServiceRequest(resource_spans=[tpb.ResourceSpans(resource=RESOURCE)]).SerializeToString()
    )
    assert_same(request())
    assert_same(request(span(trace_id=b"")))


def test_fields_repeated_on_the_wire_keep_the_last_value_and_merge_messages() -> None:
    first = span(name="first", trace_id=bytes(16), status=tpb.Status(code=2, message="m")).SerializeToString()
    later = tpb.Span(name="second", trace_id=TRACE, status=tpb.Status(code=1), kind=2).SerializeToString()
    assert_same(wrap_span(first + later))
    # attributes, events and links interleaved with other fields are collected in order
    parts = [span(attributes=[kv("b", 1)]), tpb.Span(name="x"), tpb.Span(attributes=[kv("a", 2), kv("b", 3)])]
    parts += [
        tpb.Span(events=[tpb.Span.Event(name="e")]),
        tpb.Span(kind=1),
        tpb.Span(events=[tpb.Span.Event(name="f")]),
    ]
    assert_same(wrap_span(b"".join(p.SerializeToString() for p in parts)))


def test_enums_beyond_int32_are_truncated_as_protobuf_does() -> None:
    base = span().SerializeToString()
    assert_same(wrap_span(base + b"\x30" + varint(2**32 + 3)))  # kind 3
    assert_same(wrap_span(base + b"\x30" + varint(2**64 - 1)))  # kind -1: refused
    assert_same(wrap_span(base + field(15, b"\x18" + varint(2**32 + 2))))  # status.code 2


def test_unknown_fields_and_known_fields_of_another_wire_type_are_skipped() -> None:
    base = span().SerializeToString()
    extra = b"\x35\x01\x02\x03\x04"  # kind as fixed32: unknown
    extra += b"\xf8\x07\x05"  # field 127 varint
    extra += b"\xa3\x06\x08\x01\xa4\x06"  # group 100 holding a varint
    extra += field(9, b"\x1a\x00")  # a KeyValue with an unknown field
    extra += field(
        9, field(2, b"\x0d\x00\x00\x00\x00" + b"\x18\x05")
    )  # AnyValue: unknown fixed32, then int 5
    assert_same(wrap_span(base + extra))


def test_attribute_values_protobuf_merges_are_left_to_it() -> None:
    array = field(5, field(1, b"\x18\x01"))
    twice = field(9, field(1, b"k") + field(2, array + array))  # array_value sent twice: merged
    assert_same(wrap_span(span().SerializeToString() + twice), scanned=False)
    value_twice = field(9, field(1, b"k") + field(2, b"\x18\x01") + field(2, b"\x10\x01"))
    assert_same(wrap_span(span().SerializeToString() + value_twice), scanned=False)


def test_strings_that_are_not_utf8_raise_decode_error() -> None:
    bad = b"\xff\xfe"
    base = span().SerializeToString()
    for extra in (
        field(5, bad),  # name
        field(3, bad),  # trace_state
        field(15, field(2, bad)),  # status.message
        field(9, field(1, bad)),  # attribute key
        field(9, field(1, b"k") + field(2, field(1, b"\xed\xa0\x80"))),  # a surrogate in a string value
        field(11, field(2, bad)),  # event name
        field(13, field(3, bad)),  # link trace_state
    ):
        with pytest.raises(DecodeError):
            decode_traces_bytes(wrap_span(base + extra))
    refused = tpb.Span(attributes=[kv("k", "v")]).SerializeToString() + field(9, field(1, bad))
    with pytest.raises(DecodeError):
        decode_traces_bytes(wrap_span(refused))
    with pytest.raises(DecodeError):
        decode_traces_bytes(field(1, field(1, field(1, field(1, bad)))))  # a resource attribute key


def nested_array(levels: int) -> bytes:
    """A serialized AnyValue: an int inside ``levels`` arrays (built as bytes: protobuf objects this
    deep cannot be serialized)."""
    v = b"\x18\x01"
    for _ in range(levels):
        v = field(5, field(1, v))
    return v


def key_value(key: bytes, any_value: bytes) -> bytes:
    return field(1, key) + field(2, any_value)


def decodes(buf: bytes) -> bool:
    """Whether protobuf accepts the request (the fast decoder checked to agree)."""
    same_outcome(buf)
    try:
        reference(buf)
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize("levels", [46, 47, 48, 49])
def test_nesting_limit_of_span_attributes_is_protobufs(levels: int) -> None:
    # Messages deeper than 100 are refused (the request is 0, the span 3, its attribute's AnyValue 5).
    base = span().SerializeToString()
    assert decodes(wrap_span(base + field(9, key_value(b"a", nested_array(levels))))) is (
        5 + 2 * levels <= 100
    )
    kvlist = field(
        6, field(1, key_value(b"k", nested_array(levels - 1)))
    )  # AnyValue 6 .. 9, then 2 per level
    in_event = field(11, field(3, key_value(b"a", kvlist)))
    assert decodes(wrap_span(base + in_event)) is (7 + 2 * levels <= 100)


@pytest.mark.parametrize("levels", [46, 47, 48, 49])
def test_nesting_limit_of_resources_and_scopes_is_protobufs(levels: int) -> None:
    attribute = key_value(b"a", nested_array(levels))
    span_field = field(2, field(2, span().SerializeToString()))
    assert decodes(field(1, field(1, field(1, attribute)) + span_field)) is (4 + 2 * levels <= 100)
    assert decodes(
        field(1, field(2, field(1, field(3, attribute)) + field(2, span().SerializeToString())))
    ) is (5 + 2 * levels <= 100)


@pytest.mark.parametrize("levels", [96, 97, 98])
def test_nesting_limit_of_unknown_groups_is_protobufs(levels: int) -> None:
    group = b"\xa3\x06" * levels + b"\xa4\x06" * levels  # groups of field 100 inside the span (depth 3)
    assert decodes(wrap_span(span().SerializeToString() + group)) is (3 + levels <= 100)


def test_without_the_extension_the_reference_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = request(span(attributes=[kv("a", 1)]), span(trace_id=b""))
    monkeypatch.setattr(fastscan, "_otlp_scan", None)
    assert not decode_spans_fast.available()
    got, expected = decode_traces_bytes(buf), reference(buf)
    assert got.batch.spans.equals(expected.batch.spans) and got.errors == expected.errors
    with pytest.raises(DecodeError):
        decode_traces_bytes(buf[:-1])


# ---------------------------------------------------------------- malformed bytes


SAMPLE = request(
    span(
        attributes=[
            kv("a", 1),
            KeyValue(key="arr", value=value(array_value=ArrayValue(values=[value(double_value=2.0)]))),
        ]
    ),
    span(trace_id=b"", events=[tpb.Span.Event(name="e", attributes=[kv("b", "c")])]),
    span(links=[tpb.Span.Link(trace_id=TRACE, span_id=SPAN)], status=tpb.Status(message="m", code=2)),
)


def test_every_truncation_is_refused_or_decoded_like_protobuf() -> None:
    refused = 0
    for end in range(len(SAMPLE)):
        same_outcome(SAMPLE[:end])
        try:
            ExportTraceServiceRequest.FromString(SAMPLE[:end])
        except DecodeError:
            refused += 1
    assert refused > len(SAMPLE) // 2  # most cuts land inside a field


def test_truncated_request_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode_traces_bytes(SAMPLE[:-3])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=64))
def test_garbage_is_refused_or_decoded_like_protobuf(garbage: bytes) -> None:
    same_outcome(garbage)
    same_outcome(wrap_span(garbage))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_corrupted_bytes_are_refused_or_decoded_like_protobuf(edits: list[tuple[int, int]]) -> None:
    buf = bytearray(SAMPLE)
    for at, byte in edits:
        buf[at] = byte
    same_outcome(bytes(buf))


# ---------------------------------------------------------------- generated requests

keys = st.text(max_size=6)
scalars = st.one_of(
    st.builds(lambda v: value(string_value=v), st.text(max_size=12)),
    st.builds(lambda v: value(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: value(bool_value=v), st.booleans()),
    st.builds(lambda v: value(double_value=v), st.floats(allow_nan=True, allow_infinity=True)),
    st.builds(lambda v: value(bytes_value=v), st.binary(max_size=8)),
    st.just(AnyValue()),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.builds(lambda vs: value(array_value=ArrayValue(values=vs)), st.lists(inner, max_size=3)),
        st.builds(
            lambda kvs: value(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])),
            st.lists(st.tuples(keys, inner), max_size=3),
        ),
    ),
    max_leaves=6,
)
attribute_lists = st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), keys, values), max_size=4)
ids16 = st.one_of(st.binary(min_size=16, max_size=16), st.sampled_from([b"", bytes(16), b"\x01" * 15]))
ids8 = st.one_of(st.binary(min_size=8, max_size=8), st.sampled_from([b"", bytes(8), b"\x01" * 9]))
times = st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 2**64 - 1))
events = st.builds(tpb.Span.Event, time_unix_nano=times, name=st.text(max_size=5), attributes=attribute_lists)
links = st.builds(
    tpb.Span.Link, trace_id=ids16, span_id=ids8, trace_state=st.text(max_size=5), attributes=attribute_lists
)
spans = st.builds(
    tpb.Span,
    trace_id=ids16,
    span_id=ids8,
    parent_span_id=st.one_of(ids8, st.just(b"")),
    trace_state=st.text(max_size=5),
    name=st.text(max_size=8),
    kind=st.integers(-1, 6),
    start_time_unix_nano=times,
    end_time_unix_nano=times,
    attributes=attribute_lists,
    events=st.lists(events, max_size=2),
    links=st.lists(links, max_size=2),
    status=st.builds(tpb.Status, code=st.integers(-1, 3), message=st.text(max_size=5)),
    flags=st.integers(0, 2**32 - 1),
)
scopes = st.builds(
    InstrumentationScope, name=st.text(max_size=4), version=st.text(max_size=3), attributes=attribute_lists
)
resources = st.builds(Resource, attributes=attribute_lists)
requests = st.builds(
    ExportTraceServiceRequest,
    resource_spans=st.lists(
        st.builds(
            tpb.ResourceSpans,
            resource=resources,
            scope_spans=st.lists(
                st.builds(tpb.ScopeSpans, scope=scopes, spans=st.lists(spans, max_size=4)), max_size=3
            ),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_generated_requests_decode_as_the_reference(req: ExportTraceServiceRequest) -> None:
    assert_same(req.SerializeToString())


def test_sdk_spans_decode_as_the_reference() -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test", "1.0")
    with tracer.start_as_current_span("root", attributes={"a": [1, 2], "b": ("x", "y"), "c": 1.5}) as root:
        root.add_event("started", {"n": 3})
        with tracer.start_as_current_span("child", links=[]) as child:
            child.set_status(StatusCode.ERROR, "failed")
    provider.shutdown()
    assert_same(encode_spans(exporter.get_finished_spans()).SerializeToString())
