"""Remote write: the wire format, delivery (batches, retries, drops), and a real Prometheus receiving it."""

from __future__ import annotations

import time

import cramjam
import pyarrow as pa
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    series_row,
)
from otel_audio.receiver.config import ConfigError, load_config
from otel_audio.receiver.remote_write import HEADERS, RemoteWrite, encode_write_request, parse_options
from otel_audio.receiver.service import Receiver
from tests.external import Prometheus
from tests.receiver_helpers import SECOND, gauge, grpc_export_metrics, metrics_request

_F = descriptor_pb2.FieldDescriptorProto


def _write_request_class():
    """prometheus.WriteRequest from its .proto definition, built at run time: an independent decoder."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="remote_test.proto", package="prometheus", syntax="proto3"
    )
    fields = {
        "Label": [("name", 1, _F.TYPE_STRING, None, False), ("value", 2, _F.TYPE_STRING, None, False)],
        "Sample": [("value", 1, _F.TYPE_DOUBLE, None, False), ("timestamp", 2, _F.TYPE_INT64, None, False)],
        "TimeSeries": [
            ("labels", 1, _F.TYPE_MESSAGE, ".prometheus.Label", True),
            ("samples", 2, _F.TYPE_MESSAGE, ".prometheus.Sample", True),
        ],
        "WriteRequest": [("timeseries", 1, _F.TYPE_MESSAGE, ".prometheus.TimeSeries", True)],
    }
    for message, specs in fields.items():
        added = proto.message_type.add(name=message)
        for name, number, kind, type_name, repeated in specs:
            field = added.field.add(name=name, number=number, type=kind)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name:
                field.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request_class()


def decode(body: bytes) -> dict[tuple, list[tuple[int, float]]]:
    request = WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
    return {
        tuple((label.name, label.value) for label in series.labels): [
            (s.timestamp, s.value) for s in series.samples
        ]
        for series in request.timeseries
    }


def emitted(metric: str, values: list[tuple[int, float]], scope: str = "otel_audio.processors.aggregation"):
    """A batch as a processor emits it: one gauge series of service enhancer."""
    row = series_row(metric, scope=scope, attributes={"aggregation.window": "1m"}, service="enhancer")
    points = [{"series_id": row["series_id"], "time_unix_nano": t, "value": v} for t, v in values]
    return MetricBatch(
        points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
        series=pa.Table.from_pylist([row], schema=SERIES_SCHEMA),
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )


class ScriptedPost:
    """Answers posts with scripted statuses (then 200) and keeps what was posted."""

    def __init__(self, *replies: int | tuple[int, dict[str, str]]) -> None:
        self.replies = list(replies)
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []

    def __call__(self, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, dict[str, str]]:
        self.bodies.append(body)
        self.headers.append(headers)
        reply = self.replies.pop(0) if self.replies else 200
        if reply == "refused":
            raise ConnectionRefusedError("connection refused")
        return reply if isinstance(reply, tuple) else (reply, {})


def writer(post: ScriptedPost, **options) -> RemoteWrite:
    settings = {"url": "http://127.0.0.1:1/api/v1/write", "min_backoff": "1ms", "max_backoff": "2ms"}
    return RemoteWrite(parse_options({**settings, **options}), post=post, start=False)


# -- the wire format ----------------------------------------------------------------------------------


def test_a_write_request_decodes_with_the_remote_write_proto_including_negative_timestamps():
    body = encode_write_request(
        [
            ((("__name__", "up"), ("job", "a")), [(-5, 1.5), (1_700_000_000_000, 2.0)]),
            ((("__name__", "x"),), []),
        ]
    )
    request = WriteRequest.FromString(body)
    first = request.timeseries[0]
    assert [(lb.name, lb.value) for lb in first.labels] == [("__name__", "up"), ("job", "a")]
    assert [(s.timestamp, s.value) for s in first.samples] == [(-5, 1.5), (1_700_000_000_000, 2.0)]
    assert [lb.name for lb in request.timeseries[1].labels] == ["__name__"]


def test_points_become_snappy_samples_with_prometheus_names_sorted_labels_and_the_protocol_headers():
    post = ScriptedPost()
    rw = writer(post)
    rw.process(emitted("audio.queue.depth.avg", [(2 * SECOND, 3.0), (1 * SECOND, 4.0)]))
    rw.flush()
    assert decode(post.bodies[0]) == {
        (("__name__", "audio_queue_depth_avg"), ("aggregation_window", "1m"), ("job", "enhancer")): [
            (1000, 4.0),  # milliseconds, in time order
            (2000, 3.0),
        ]
    }
    assert {k: post.headers[0][k] for k in HEADERS} == HEADERS
    assert HEADERS["Content-Encoding"] == "snappy" and HEADERS["X-Prometheus-Remote-Write-Version"] == "0.1.0"


def test_only_processor_series_matching_the_allow_list_are_sent():
    post = ScriptedPost()
    rw = writer(post, metrics=[r"slo\..*"])
    rw.process(emitted("audio.queue.depth.avg", [(SECOND, 1.0)]))
    rw.process(emitted("slo.sli", [(SECOND, 0.99)], scope="otel_audio.slo"))
    rw.process(emitted("slo.ingested", [(SECOND, 1.0)], scope="some.sdk.scope"))  # not a processor's
    rw.flush()
    assert [labels[0][1] for labels in decode(post.bodies[0])] == ["slo_sli"]  # no unit here


# -- delivery -------------------------------------------------------------------------------------------


def test_batches_hold_at_most_batch_size_samples_in_arrival_order():
    post = ScriptedPost()
    rw = writer(post, batch_size=2)
    rw.process(emitted("a.avg", [(k * SECOND, float(k)) for k in range(1, 6)]))
    rw.flush()
    sizes = [sum(len(v) for v in decode(body).values()) for body in post.bodies]
    assert sizes == [2, 2, 1]
    assert rw.stats() == {"sent": 5, "queued": 0}


@pytest.mark.parametrize("failure", [503, 500, (429, {"Retry-After": "0"}), "refused"])
def test_server_errors_throttling_and_refused_connections_are_retried(failure):
    post = ScriptedPost(failure, failure)
    rw = writer(post)
    rw.process(emitted("a.avg", [(SECOND, 1.0)]))
    rw.flush()
    assert len(post.bodies) == 3 and post.bodies[0] == post.bodies[2]
    assert rw.stats() == {"sent": 1, "queued": 0}


def test_a_client_error_drops_the_batch_at_once_and_counts_it():
    post = ScriptedPost(400)
    rw = writer(post)
    rw.process(emitted("a.avg", [(SECOND, 1.0), (2 * SECOND, 2.0)]))
    rw.flush()
    assert len(post.bodies) == 1
    assert rw.stats() == {"dropped_rejected": 2, "queued": 0}


def test_retries_end_after_max_retries_and_the_batch_is_counted_as_failed():
    post = ScriptedPost(503, 503, 503)
    rw = writer(post, max_retries=2)
    rw.process(emitted("a.avg", [(SECOND, 1.0)]))
    rw.flush()
    assert len(post.bodies) == 3
    assert rw.stats() == {"dropped_failed": 1, "queued": 0}


def test_a_full_queue_drops_new_samples_and_counts_them():
    rw = writer(ScriptedPost(), max_queue=3)
    rw.process(emitted("a.avg", [(k * SECOND, float(k)) for k in range(1, 6)]))
    assert rw.stats() == {"dropped_queue_full": 2, "queued": 3}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "url: expected an http:// or https:// URL"),
        ({"url": "http://x", "batch_size": 0}, "batch_size: expected an integer >= 1"),
        ({"url": "http://x", "interval": "soon"}, "interval: expected a duration"),
        ({"url": "http://x", "metrics": ["("]}, r"metrics\[0\]: not a regular expression"),
        ({"url": "http://x", "bearer_token": "env:OTEL_AUDIO_NO_SUCH_VAR"}, "OTEL_AUDIO_NO_SUCH_VAR"),
        ({"url": "http://x", "bogus": 1}, "bogus: unknown option"),
    ],
)
def test_bad_options_stop_the_receiver_naming_the_option(tmp_path, options, message):
    config = load_config(None, storage__data_dir=str(tmp_path / "d"), processors=[{"remote_write": options}])
    with pytest.raises(ConfigError, match=r"processors\.remote_write: .*" + message):
        Receiver(config).start()


def test_the_bearer_token_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("OTEL_AUDIO_TEST_RW_TOKEN", "s3cret")
    options = parse_options({"url": "http://x", "bearer_token": "env:OTEL_AUDIO_TEST_RW_TOKEN"})
    assert options.headers == {"Authorization": "Bearer s3cret"}


# -- a real Prometheus -------------------------------------------------------------------------------


def test_a_real_prometheus_receives_the_aggregates_and_answers_promql_with_them(start_receiver, tmp_path):
    prometheus = Prometheus(tmp_path / "prom").start()
    try:
        rule = {"metric": "audio.queue.depth", "window": "1m", "by": ["service"], "aggs": ["avg", "max"]}
        receiver = start_receiver(
            processors=[
                "selfmon",
                {"aggregation": {"rules": [rule]}},
                {"remote_write": {"url": prometheus.url("/api/v1/write"), "interval": "100ms"}},
                "store",
            ],
            tick_interval_s=3600,
        )
        minute = (time.time_ns() // (60 * SECOND) - 1) * 60 * SECOND
        points = [(minute + 10 * SECOND, 3.0, {}), (minute + 20 * SECOND, 5.0, {})]
        grpc_export_metrics(
            receiver.grpc_port, metrics_request("enhancer", [gauge("audio.queue.depth", points)])
        )
        receiver.chain.tick(minute + 61 * SECOND)  # the window [minute, minute + 1m) closes
        window_end = (minute + 60 * SECOND) / SECOND
        deadline = time.monotonic() + 20
        while not prometheus.query("audio_queue_depth_max", window_end) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (
            prometheus.value('audio_queue_depth_avg{job="enhancer",aggregation_window="1m"}', window_end)
            == 4.0
        )
        assert prometheus.value("audio_queue_depth_max", window_end) == 5.0
        stamps = prometheus.query("timestamp(audio_queue_depth_max)", window_end)
        assert float(stamps[0]["value"][1]) == window_end  # the sample's own time, not the arrival time
        sent = next(p for p in receiver.chain.processors if p.name == "remote_write").stats()
        assert sent["sent"] == 2
    finally:
        prometheus.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://x", "bearer_token": 123456789}, "bearer_token: expected a non-empty token"),
        ({"url": "http://x", "headers": {"X-Key": 123456789}}, "headers.X-Key: expected a string, got int"),
    ],
)
def test_a_malformed_secret_is_refused_without_echoing_it(options, message):
    with pytest.raises(ValueError, match=message) as refused:
        parse_options(options)
    assert "123456789" not in str(refused.value)
