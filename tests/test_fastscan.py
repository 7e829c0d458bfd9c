"""fastscan: the native scan of gauge and sum points agrees with protobuf's own parse of the request."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mpb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.sdk.metrics import Counter, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider

from otel_audio.receiver import fastscan
from otel_audio.receiver.fastscan import MetricKind, ValueKind


# The extension is built on every supported machine (CI compiles it): its tests fail, never skip, without it.
def needs_extension(test):  # kept as a marker of which tests exercise the extension
    return test


T0 = 1_700_000_000_000_000_000
KINDS = {
    "gauge": MetricKind.GAUGE,
    "sum": MetricKind.SUM,
    "histogram": MetricKind.HISTOGRAM,
    "exponential_histogram": MetricKind.EXPONENTIAL_HISTOGRAM,
    "summary": MetricKind.SUMMARY,
    None: MetricKind.NONE,
}


def test_extension_is_built() -> None:
    assert fastscan.available(), "the C extension is missing: reinstall with pip install -e '.[receiver]'"


# ---------------------------------------------------------------- the reference: protobuf's parse


def reference(buf: bytes) -> dict:
    """What scan_numbers must return, read from the request as protobuf parses it."""
    request = ExportMetricsServiceRequest.FromString(buf)
    out: dict = {"resources": [], "scopes": [], "scope_resource": [], "metrics": [], "points": []}
    for ri, rm in enumerate(request.resource_metrics):
        out["resources"].append(rm.resource)
        for sm in rm.scope_metrics:
            out["scope_resource"].append(ri)
            out["scopes"].append(sm.scope)
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                mi = len(out["metrics"])
                out["metrics"].append((len(out["scopes"]) - 1, metric, KINDS[kind]))
                if kind in ("gauge", "sum"):
                    out["points"].extend((mi, p) for p in getattr(metric, kind).data_points)
    return out


def assert_matches_reference(buf: bytes, scan: fastscan.NumberScan) -> None:
    ref = reference(buf)
    assert [Resource.FromString(r) for r in scan.resources] == ref["resources"]
    assert [InstrumentationScope.FromString(s) for s in scan.scopes] == ref["scopes"]
    assert scan.scope_resource.tolist() == ref["scope_resource"]
    assert scan.metric_scope.tolist() == [scope for scope, _, _ in ref["metrics"]]
    assert scan.metric_kind.tolist() == [kind for _, _, kind in ref["metrics"]]
    for i, (_, metric, kind) in enumerate(ref["metrics"]):
        assert (scan.metric_name[i], scan.metric_description[i], scan.metric_unit[i]) == (
            metric.name,
            metric.description,
            metric.unit,
        )
        start, end = scan.metric_offset[i], scan.metric_offset[i] + scan.metric_length[i]
        assert mpb.Metric.FromString(buf[start:end]) == metric
        data = metric.sum if kind == MetricKind.SUM else None
        assert scan.metric_temporality[i] == (data.aggregation_temporality if data else 0)
        assert scan.metric_monotonic[i] == (data.is_monotonic if data else False)
        if kind in (MetricKind.GAUGE, MetricKind.SUM):
            points = getattr(metric, "gauge" if kind == MetricKind.GAUGE else "sum").data_points
            assert scan.metric_points[i] == len(points)
    assert len(scan) == len(ref["points"])
    assert scan.metric.tolist() == [mi for mi, _ in ref["points"]]
    assert np.all(scan.metric_first_point[scan.metric] <= np.arange(len(scan)))
    for i, (_, p) in enumerate(ref["points"]):
        kind = p.WhichOneof("value")
        expected = p.as_double if kind == "as_double" else float(p.as_int) if kind == "as_int" else 0.0
        assert struct.pack("<d", scan.value[i]) == struct.pack("<d", expected)
        assert scan.value_kind[i] == {"as_double": 1, "as_int": 2, None: 0}[kind]
        assert (scan.start_time_unix_nano[i], scan.time_unix_nano[i]) == (
            p.start_time_unix_nano,
            p.time_unix_nano,
        )
        assert scan.flags[i] == p.flags
        assert scan.exemplar_count[i] == len(p.exemplars)
        assert scan.attr_count[i] == len(p.attributes)
        attrs = buf[scan.attr_offset[i] : scan.attr_offset[i] + scan.attr_length[i]]
        assert list(mpb.NumberDataPoint.FromString(attrs).attributes) == list(p.attributes)
        whole = buf[scan.point_offset[i] : scan.point_offset[i] + scan.point_length[i]]
        assert mpb.NumberDataPoint.FromString(whole) == p


def series_identity(buf: bytes, scan: fastscan.NumberScan, i: int) -> tuple:
    """What a series key stands for: resource, scope and metric name bytes, and the attribute bytes."""
    metric = scan.metric[i]
    scope = scan.metric_scope[metric]
    attrs = mpb.NumberDataPoint.FromString(
        buf[scan.attr_offset[i] : scan.attr_offset[i] + scan.attr_length[i]]
    ).attributes
    return (
        scan.resources[scan.scope_resource[scope]],
        scan.scopes[scope],
        scan.metric_name[metric],
        tuple(kv.SerializeToString() for kv in attrs),
    )


# ---------------------------------------------------------------- requests from the SDK


def sdk_request() -> bytes:
    """Two resources (one cumulative, one delta), two scopes, gauges, int and double sums, a histogram."""
    resource_metrics = []
    tracer = TracerProvider().get_tracer("t")
    for service, temporality in (
        ("enhancer", AggregationTemporality.CUMULATIVE),
        ("denoiser", AggregationTemporality.DELTA),
    ):
        reader = InMemoryMetricReader(
            preferred_temporality={Counter: temporality, UpDownCounter: temporality}
        )
        provider = MeterProvider(
            metric_readers=[reader], resource=SdkResource.create({"service.name": service})
        )
        for scope in ("otel_audio", "otel_audio.io"):
            meter = provider.get_meter(scope, "0.1.0")
            files = meter.create_counter("audio.files", unit="{file}", description="files processed")
            seconds = meter.create_counter("audio.seconds", unit="s")
            queue = meter.create_up_down_counter("audio.queue")
            rtf = meter.create_gauge("audio.rtf")
            for stage in ("denoise", "dereverb", "loudness"):
                for model in ("v2", "v3"):
                    attrs = {"stage": stage, "model": model, "gpu": stage == "denoise", "shard": 7}
                    files.add(3, attrs)
                    seconds.add(1.5, attrs)
                    rtf.set(0.25, attrs)
            with tracer.start_as_current_span("s"):  # a sampled span: exemplars on the counter
                files.add(1, {"stage": "exemplar"})
            queue.add(-(2**62) - 1)  # not exact in float64
            meter.create_histogram("audio.latency", unit="ms").record(5.0, {"stage": "denoise"})
        request = encode_metrics(reader.get_metrics_data())
        resource_metrics.extend(request.resource_metrics)
        provider.shutdown()
    return ExportMetricsServiceRequest(resource_metrics=resource_metrics).SerializeToString()


SDK_REQUEST = sdk_request()


@needs_extension
def test_sdk_request_scans_as_protobuf_parses_it() -> None:
    assert_matches_reference(SDK_REQUEST, fastscan.scan_numbers(SDK_REQUEST))


@needs_extension
def test_sdk_request_has_what_the_test_means_to_cover() -> None:
    scan = fastscan.scan_numbers(SDK_REQUEST)
    assert set(scan.metric_kind.tolist()) == {MetricKind.GAUGE, MetricKind.SUM, MetricKind.HISTOGRAM}
    assert set(scan.metric_temporality.tolist()) == {0, 1, 2}
    assert set(scan.value_kind.tolist()) == {ValueKind.DOUBLE, ValueKind.INT}
    assert scan.exemplar_count.max() > 0 and len(scan.resources) == 2 and len(scan.scopes) == 4


@needs_extension
def test_series_keys_are_equal_exactly_for_equal_series() -> None:
    buf = SDK_REQUEST + SDK_REQUEST  # every series twice: the request concatenated to itself
    scan = fastscan.scan_numbers(buf)
    identities = [series_identity(buf, scan, i) for i in range(len(scan))]
    by_key: dict[int, set] = {}
    for key, identity in zip(scan.series_key.tolist(), identities, strict=True):
        by_key.setdefault(key, set()).add(identity)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert len(by_key) == len(set(identities)) == len(scan) // 2


@needs_extension
def test_attr_hash_depends_on_the_attributes_only() -> None:
    scan = fastscan.scan_numbers(SDK_REQUEST)
    by_hash: dict[int, set] = {}
    for i, key in enumerate(scan.attr_hash.tolist()):
        by_hash.setdefault(key, set()).add(series_identity(SDK_REQUEST, scan, i)[3])
    assert all(len(attrs) == 1 for attrs in by_hash.values())
    assert len(by_hash) == len({series_identity(SDK_REQUEST, scan, i)[3] for i in range(len(scan))})


@needs_extension
def test_where_names_a_metric_as_decode_does() -> None:
    request = ExportMetricsServiceRequest.FromString(SDK_REQUEST)
    paths = [
        f"resource_metrics[{ri}].scope_metrics[{si}].metrics[{mi}]"
        for ri, rm in enumerate(request.resource_metrics)
        for si, sm in enumerate(rm.scope_metrics)
        for mi in range(len(sm.metrics))
    ]
    scan = fastscan.scan_numbers(SDK_REQUEST)
    assert [scan.where(i) for i in range(len(paths))] == paths


@needs_extension
def test_scan_runs_in_several_threads_at_once() -> None:
    expected = fastscan.scan_numbers(SDK_REQUEST).series_key
    results: list[bool] = []

    def work() -> None:
        results.extend(
            np.array_equal(fastscan.scan_numbers(SDK_REQUEST).series_key, expected) for _ in range(50)
        )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 200


# ---------------------------------------------------------------- field numbers


def test_field_numbers_are_those_of_the_installed_descriptors() -> None:
    source = (Path(fastscan.__file__).parent / "_otlp_scan.c").read_text()
    declared = dict(
        re.findall(r"^\s+([A-Z_]+) = (\d+),$", source.split("enum {", 1)[1].split("};", 1)[0], re.M)
    )
    messages = {
        "REQUEST": ExportMetricsServiceRequest,
        "RESOURCE_METRICS": mpb.ResourceMetrics,
        "SCOPE_METRICS": mpb.ScopeMetrics,
        "METRIC": mpb.Metric,
        "GAUGE": mpb.Gauge,
        "SUM": mpb.Sum,
        "POINT": mpb.NumberDataPoint,
    }
    renamed = {"START_TIME": "start_time_unix_nano", "TIME": "time_unix_nano"}
    assert len(declared) == 26
    for constant, number in declared.items():
        message = next(m for prefix, m in messages.items() if constant.startswith(prefix + "_"))
        prefix = next(p for p, m in messages.items() if m is message and constant.startswith(p + "_"))
        field = constant[len(prefix) + 1 :]
        name = renamed.get(field, field.lower()) if message is mpb.NumberDataPoint else field.lower()
        assert message.DESCRIPTOR.fields_by_name[name].number == int(number), constant


def test_the_scanned_fields_have_the_wire_types_it_reads() -> None:
    point = mpb.NumberDataPoint.DESCRIPTOR.fields_by_name
    fd = point["time_unix_nano"]
    assert {point[n].type for n in ("start_time_unix_nano", "time_unix_nano")} == {fd.TYPE_FIXED64}
    assert (point["as_double"].type, point["as_int"].type, point["flags"].type) == (
        fd.TYPE_DOUBLE,
        fd.TYPE_SFIXED64,
        fd.TYPE_UINT32,
    )
    total = mpb.Sum.DESCRIPTOR.fields_by_name
    assert (total["aggregation_temporality"].type, total["is_monotonic"].type) == (fd.TYPE_ENUM, fd.TYPE_BOOL)


@needs_extension
def test_xxh64_matches_the_published_test_vectors() -> None:
    from otel_audio.receiver import _otlp_scan

    assert _otlp_scan.xxh64(b"") == 0xEF46DB3751D8E999
    assert _otlp_scan.xxh64(b"abc") == 0x44BC2CF5AD770999


# ---------------------------------------------------------------- requests protobuf reads in its own way


def number(value: float | int, **attrs: str) -> mpb.NumberDataPoint:
    kvs = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()]
    if isinstance(value, int):
        return mpb.NumberDataPoint(attributes=kvs, time_unix_nano=T0, as_int=value)
    return mpb.NumberDataPoint(attributes=kvs, time_unix_nano=T0, as_double=value)


def request_of(*metrics: mpb.Metric) -> bytes:
    scope = mpb.ScopeMetrics(scope=InstrumentationScope(name="s"), metrics=list(metrics))
    return ExportMetricsServiceRequest(
        resource_metrics=[mpb.ResourceMetrics(scope_metrics=[scope])]
    ).SerializeToString()


def wrap_metric(metric_bytes: bytes) -> bytes:
    """A request around one serialized Metric, which may be non-canonical."""

    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2]) + encode_varint(len(payload)) + payload

    return field(1, field(2, field(2, metric_bytes)))


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@needs_extension
def test_empty_request_has_no_points() -> None:
    scan = fastscan.scan_numbers(b"")
    assert (len(scan), scan.resources, scan.metric_name) == (0, [], [])


@needs_extension
def test_a_later_oneof_member_replaces_the_earlier_one_with_its_points() -> None:
    gauge = mpb.Metric(name="m", gauge=mpb.Gauge(data_points=[number(1.0), number(2.0)]))
    total = mpb.Metric(sum=mpb.Sum(data_points=[number(3)], aggregation_temporality=1))
    buf = wrap_metric(gauge.SerializeToString() + total.SerializeToString())
    scan = fastscan.scan_numbers(buf)
    assert (scan.metric_kind.tolist(), scan.value.tolist()) == ([MetricKind.SUM], [3.0])
    assert_matches_reference(buf, scan)


@needs_extension
def test_a_repeated_oneof_member_is_merged() -> None:
    first = mpb.Metric(name="m", sum=mpb.Sum(data_points=[number(1)], aggregation_temporality=2))
    second = mpb.Metric(sum=mpb.Sum(data_points=[number(2)], is_monotonic=True))
    buf = wrap_metric(first.SerializeToString() + second.SerializeToString())
    scan = fastscan.scan_numbers(buf)
    assert (scan.value.tolist(), scan.metric_temporality[0], scan.metric_monotonic[0]) == (
        [1.0, 2.0],
        2,
        True,
    )
    assert_matches_reference(buf, scan)


@needs_extension
def test_repeated_resource_and_scope_fields_are_joined_so_that_parsing_merges_them() -> None:
    one = mpb.ResourceMetrics(
        resource=Resource(attributes=[KeyValue(key="a", value=AnyValue(string_value="1"))]),
        scope_metrics=[mpb.ScopeMetrics(scope=InstrumentationScope(name="s"))],
    )
    two = mpb.ResourceMetrics(resource=Resource(dropped_attributes_count=3))
    buf = ExportMetricsServiceRequest(resource_metrics=[one]).SerializeToString()
    buf = buf[:1] + encode_varint(len(one.SerializeToString() + two.SerializeToString()))
    buf += one.SerializeToString() + two.SerializeToString()
    scan = fastscan.scan_numbers(buf)
    merged = Resource.FromString(scan.resources[0])
    assert (len(merged.attributes), merged.dropped_attributes_count) == (1, 3)
    assert_matches_reference(buf, scan)


@needs_extension
def test_unknown_fields_groups_and_known_numbers_of_another_wire_type_are_skipped() -> None:
    point = number(1.5, k="v").SerializeToString()
    point += b"\x18\x05"  # time_unix_nano as a varint: an unknown field to protobuf
    point += b"\x7b\x08\x01\x7c"  # a group (field 15) holding a varint
    point += b"\xf8\xff\xff\xff\x0f\x01"  # the largest field number
    buf = wrap_metric(
        mpb.Metric(name="m").SerializeToString()
        + b"\x2a"
        + encode_varint(len(point) + 2)
        + b"\x0a"
        + encode_varint(len(point))
        + point
    )
    scan = fastscan.scan_numbers(buf)
    assert (scan.time_unix_nano.tolist(), scan.value.tolist()) == ([T0], [1.5])
    assert_matches_reference(buf, scan)


@needs_extension
def test_field_number_0_inside_an_unknown_group_is_accepted_as_protobuf_does() -> None:
    buf = b"\x7b\x03\x08\x01\x04\x7c"  # group 15 { group 0 { field 1: 1 } }
    ExportMetricsServiceRequest.FromString(buf)
    assert len(fastscan.scan_numbers(buf)) == 0


@needs_extension
def test_int_values_convert_to_float_as_python_does() -> None:
    values = [2**62 + 1, -(2**63), 2**53 + 1, -7]
    buf = request_of(mpb.Metric(name="m", gauge=mpb.Gauge(data_points=[number(v) for v in values])))
    assert fastscan.scan_numbers(buf).value.tolist() == [float(v) for v in values]


@needs_extension
def test_times_beyond_int64_are_kept_as_sent() -> None:
    p = mpb.NumberDataPoint(time_unix_nano=2**64 - 1, start_time_unix_nano=2**63, as_double=1.0)
    scan = fastscan.scan_numbers(request_of(mpb.Metric(name="m", gauge=mpb.Gauge(data_points=[p]))))
    assert (scan.time_unix_nano[0], scan.start_time_unix_nano[0]) == (2**64 - 1, 2**63)


@needs_extension
def test_a_point_without_value_or_attributes_is_scanned_empty() -> None:
    scan = fastscan.scan_numbers(
        request_of(mpb.Metric(name="m", gauge=mpb.Gauge(data_points=[mpb.NumberDataPoint(flags=1)])))
    )
    assert (scan.value_kind[0], scan.flags[0], scan.attr_count[0], scan.attr_length[0]) == (
        ValueKind.NONE,
        1,
        0,
        0,
    )


@pytest.mark.parametrize(
    ("buf", "offset", "problem"),
    [
        (b"\x0a\x05\x12\x03", 1, "length beyond the end of the enclosing message"),
        (b"\x0a", 1, "truncated length"),
        (b"\x09\x00\x00", 1, "truncated fixed64"),
        (b"\x00", 0, "field number 0"),
        (b"\x0e", 1, "invalid wire type"),
        (b"\x0c", 1, "end-group tag outside a group"),
        (b"\x0b\x14", 1, "end-group tag of another group"),
        (b"\x08" + b"\xff" * 10 + b"\x01", 1, "varint longer than 10 bytes"),
        (b"\x0a\x80\x80\x80\x80\x08", 1, "length beyond 2^31"),
    ],
)
@needs_extension
def test_malformed_requests_raise_value_error_with_the_byte_offset(
    buf: bytes, offset: int, problem: str
) -> None:
    with pytest.raises(DecodeError):
        ExportMetricsServiceRequest.FromString(buf)
    with pytest.raises(ValueError, match=rf"at byte {offset}: {re.escape(problem)}"):
        fastscan.scan_numbers(buf)


@needs_extension
def test_a_metric_name_that_is_not_utf8_raises_value_error() -> None:
    buf = wrap_metric(b"\x0a\x02\xc3\x28")
    with pytest.raises(ValueError, match="at byte 8: metric name is not UTF-8"):
        fastscan.scan_numbers(buf)


@needs_extension
def test_a_bytearray_cannot_be_resized_while_scanned_and_is_read_as_bytes() -> None:
    assert np.array_equal(
        fastscan.scan_numbers(bytearray(SDK_REQUEST)).series_key,
        fastscan.scan_numbers(SDK_REQUEST).series_key,
    )


# ---------------------------------------------------------------- fuzz


def mutated(buf: bytes, data: st.DataObject) -> bytes:
    raw = bytearray(buf)
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if action == "truncate":
            del raw[where:]
        elif action == "insert":
            raw[where:where] = data.draw(st.binary(min_size=1, max_size=12))
        elif where < len(raw):
            if action == "flip":
                raw[where] ^= 1 << data.draw(st.integers(0, 7))
            elif action == "set":
                raw[where] = data.draw(st.integers(0, 255))
            else:
                del raw[where : where + data.draw(st.integers(1, 8))]
    return bytes(raw)


SMALL_REQUEST = request_of(
    mpb.Metric(name="m", unit="ms", gauge=mpb.Gauge(data_points=[number(1.0, a="x"), number(2, b="y")])),
    mpb.Metric(
        name="n", sum=mpb.Sum(data_points=[number(3.5)], aggregation_temporality=2, is_monotonic=True)
    ),
    mpb.Metric(name="h", histogram=mpb.Histogram(data_points=[mpb.HistogramDataPoint(count=1)])),
)


def check_against_protobuf(buf: bytes) -> None:
    """Every input protobuf parses scans equal to its parse; any other input may also raise ValueError."""
    try:
        scan = fastscan.scan_numbers(buf)
    except ValueError:
        scan = None
    try:
        reference(buf)
    except DecodeError:
        return
    assert scan is not None, "protobuf parses a request the scan refuses"
    assert_matches_reference(buf, scan)


@needs_extension
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_requests_scan_as_protobuf_parses_them_or_raise_value_error(data: st.DataObject) -> None:
    check_against_protobuf(mutated(data.draw(st.sampled_from([SMALL_REQUEST, SDK_REQUEST])), data))


@needs_extension
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_scan_or_raise_value_error(buf: bytes) -> None:
    check_against_protobuf(buf)


# ---------------------------------------------------------------- benchmark shape


def test_decode_benchmark_prints_one_json_line_of_points_per_second() -> None:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "decode.py"
    done = subprocess.run(
        [sys.executable, str(script), "--repeats", "1", "--min-seconds", "0", "--sizes", "200"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    [line] = done.stdout.splitlines()
    figures = json.loads(line)["points_per_request"]["200"]
    expected = {"parse", "decode", "parse_decode"} | (
        {"scan", "scan_columns"} if fastscan.available() else set()
    )
    assert {k.removesuffix("_points_per_s") for k in figures if k.endswith("_points_per_s")} == expected
    assert all(v > 0 for v in figures.values())


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (payloads under 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_strings_it_skips_or_repeats_are_still_checked_for_utf8() -> None:
    # Found by benchmarks/fuzz/otlp_scan.py: protobuf refuses these requests and the scan took them.
    bad = b"\xff\xfe"
    metric = _field(1, b"m") + _field(5, _field(1, b"\x11" + bytes(8)))  # name, gauge with one point
    requests = {
        "ResourceMetrics.schema_url": _field(1, _field(2, _field(2, metric)) + _field(3, bad)),
        "ScopeMetrics.schema_url": _field(1, _field(2, _field(2, metric) + _field(3, bad))),
        "a name given twice": _field(1, _field(2, _field(2, _field(1, bad) + metric))),
    }
    for what, buf in requests.items():
        with pytest.raises(DecodeError):
            ExportMetricsServiceRequest.FromString(buf)
        with pytest.raises(ValueError, match="not UTF-8"):
            fastscan.scan_numbers(buf)
        assert fastscan.scan_numbers(buf.replace(bad, b"ok")).metric_name == ["m"], what


def test_a_scope_given_twice_is_checked_part_by_part_as_protobuf_does() -> None:
    # Found by benchmarks/fuzz/otlp_scan.py: the first part's length runs into the second part,
    # so the two joined read well while protobuf refuses the first on its own.
    first = b"\x12\x05ab"  # version: 5 bytes announced, 2 given
    second = b"cde"
    metric = _field(1, b"m") + _field(5, _field(1, b"\x11" + bytes(8)))
    scope_metrics = _field(1, first) + _field(1, second) + _field(2, metric)
    buf = _field(1, _field(2, scope_metrics))
    with pytest.raises(DecodeError):
        ExportMetricsServiceRequest.FromString(buf)
    with pytest.raises(ValueError, match="length beyond the end"):
        fastscan.scan_numbers(buf)
