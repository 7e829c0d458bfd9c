"""Derived audio metrics: throughput, error ratio and trend, RTF, quality index, cost per audio hour."""

from __future__ import annotations

import json
import random
import time

import pyarrow as pa
import pytest

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    MetricBatch,
    SpanBatch,
    canonical_json,
    series_id,
)
from otel_audio.processors.derived import DerivedMetrics, from_options
from otel_audio.semconv import quality_index

S = 10**9
MIN = 60 * S
T0 = 1_700_000_040 * S - (1_700_000_040 * S) % MIN  # a window boundary


def _series(metric: str, kind: str, attrs: dict, service: str = "enh", temporality: str = "cumulative"):
    resource = canonical_json({"service.name": service})
    attributes = canonical_json(attrs)
    return {
        "series_id": series_id(metric, resource, "", attributes),
        "metric": metric,
        "type": kind,
        "unit": "",
        "description": "",
        "temporality": temporality if kind != "gauge" else "unspecified",
        "monotonic": kind == "sum" and metric != "process.memory.usage",
        "service": service,
        "resource": resource,
        "scope": "",
        "scope_version": "",
        "attributes": attributes,
    }


def _batch(series_rows: list[dict], points: list[dict]) -> MetricBatch:
    return MetricBatch(
        points=pa.Table.from_pylist([{"flags": 0, **p} for p in points], POINTS_SCHEMA),
        series=pa.Table.from_pylist(series_rows, schema=SERIES_SCHEMA),
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )


def _collect(derived: DerivedMetrics) -> list[MetricBatch]:
    out: list[MetricBatch] = []
    derived.bind_emit(out.append)
    return out


def _results(batches: list[MetricBatch]) -> dict[tuple, float]:
    """(metric, sorted attribute items without the window, window end) -> value."""
    out = {}
    for batch in batches:
        rows = {r["series_id"]: r for r in batch.series.to_pylist()}
        for point in batch.points.to_pylist():
            row = rows[point["series_id"]]
            attrs = {k: v for k, v in json.loads(row["attributes"]).items() if k != "aggregation.window"}
            key = (row["metric"].removeprefix("audio.derived."), row["service"], tuple(sorted(attrs.items())))
            out[(*key, point["time_unix_nano"])] = point["value"]
    return out


def _counter_points(sid: int, starts_values: list[tuple[int, int, float]]) -> list[dict]:
    return [
        {"series_id": sid, "start_time_unix_nano": st, "time_unix_nano": t, "value": v}
        for st, t, v in starts_values
    ]


def _brute_increase(points: list[tuple[int, int, float]], window_start: int) -> float:
    """Increase inside [window_start, +1m) under the reset rule; a first point counts only if its
    series began inside its window."""
    total, prev = 0.0, None
    for st, t, v in sorted(points, key=lambda p: p[1]):
        if prev is None:
            inc = v if st >= t - t % MIN else 0.0
        elif st == prev[0] and v >= prev[2]:
            inc = v - prev[2]
        else:
            inc = v
        if window_start <= t < window_start + MIN:
            total += inc
        prev = (st, t, v)
    return total


# --- throughput and errors ----------------------------------------------------------------------


def test_throughput_and_error_ratio_equal_counter_increases_across_batches_and_resets():
    ok = _series("audio.pipeline.files", "sum", {"audio.pipeline": "speech"})
    bad = _series("audio.pipeline.files", "sum", {"audio.pipeline": "speech", "error.type": "ValueError"})
    began, restarted = T0 - 600 * S, T0 + 95 * S  # the sender restarts in the second window
    ok_pts, bad_pts = [], []
    ok_v = bad_v = 100.0
    for i in range(19):  # every 10 s for three minutes
        t = T0 + i * 10 * S
        st = began if t < restarted else restarted
        if t >= restarted and ok_pts and ok_pts[-1][0] == began:
            ok_v = bad_v = 0.0
        ok_v += 3
        bad_v += i % 4
        ok_pts.append((st, t, ok_v))
        bad_pts.append((st, t, bad_v))
    rows = _counter_points(ok["series_id"], ok_pts) + _counter_points(bad["series_id"], bad_pts)
    rows.sort(key=lambda p: p["time_unix_nano"])
    derived = DerivedMetrics()
    out = _collect(derived)
    rng = random.Random(7)
    i = 0
    while i < len(rows):  # batches of random sizes, in time order
        n = rng.randint(1, 6)
        derived.process(_batch([ok, bad], rows[i : i + n]))
        i += n
    derived.tick(T0 + 10 * MIN)
    got = _results(out)
    labels = (("audio.pipeline", "speech"),)
    for w in range(3):
        start = T0 + w * MIN
        done = _brute_increase(ok_pts, start) + _brute_increase(bad_pts, start)
        failed = _brute_increase(bad_pts, start)
        assert got[("throughput", "enh", labels, start + MIN)] == pytest.approx(done)
        assert got[("error_ratio", "enh", labels, start + MIN)] == pytest.approx(failed / done)
    # the first points only set the baseline: no burst of the 100 files counted before the start
    assert got[("throughput", "enh", labels, T0 + MIN)] == pytest.approx(5 * 3 + (1 + 2 + 3 + 0 + 1))


def test_a_counter_that_began_inside_the_window_counts_in_full():
    files = _series("audio.pipeline.files", "sum", {"audio.pipeline": "p"})
    derived = DerivedMetrics()
    out = _collect(derived)
    began = T0 + 5 * S
    derived.process(_batch([files], _counter_points(files["series_id"], [(began, T0 + 20 * S, 4.0)])))
    derived.tick(T0 + 2 * MIN)
    assert _results(out)[("throughput", "enh", (("audio.pipeline", "p"),), T0 + MIN)] == 4.0


def test_error_ratio_trend_is_the_slope_per_hour_of_recent_windows():
    ok = _series("audio.pipeline.files", "sum", {"audio.pipeline": "p"})
    bad = _series("audio.pipeline.files", "sum", {"audio.pipeline": "p", "error.type": "E"})
    derived = DerivedMetrics(trend_windows=5)
    out = _collect(derived)
    points, ok_v, bad_v = [], 0.0, 0.0
    for w in range(8):  # 100 files a minute; errors rise by one per window: +0.01 per minute
        points += _counter_points(ok["series_id"], [(T0 - S, T0 + w * MIN + 30 * S, ok_v + 100 - w)])
        points += _counter_points(bad["series_id"], [(T0 - S, T0 + w * MIN + 30 * S, bad_v + w)])
        ok_v, bad_v = ok_v + 100 - w, bad_v + w
    derived.process(_batch([ok, bad], points))
    derived.tick(T0 + 20 * MIN)
    got = _results(out)
    trends = {k[3]: v for k, v in got.items() if k[0] == "error_ratio.trend"}
    ratios = {k[3]: v for k, v in got.items() if k[0] == "error_ratio"}
    assert ratios[T0 + 2 * MIN] == pytest.approx(0.01)
    assert min(trends) == T0 + 4 * MIN  # three ratios are needed; the first window set the baseline
    assert all(v == pytest.approx(0.6) for v in trends.values())  # 0.01 per minute = 0.6 per hour


# --- real-time factor ---------------------------------------------------------------------------


def _hist_point(sid: int, st: int, t: int, count: int, total: float) -> dict:
    return {
        "series_id": sid,
        "start_time_unix_nano": st,
        "time_unix_nano": t,
        "value": total,
        "count": count,
        "bounds": [1.0, 10.0, 100.0],
        "bucket_counts": [0, count, 0, 0],
    }


def test_realtime_factor_is_total_processing_time_over_total_audio_not_a_mean_of_ratios():
    attrs = {"audio.pipeline": "p", "audio.stage": "enhancement"}
    busy = _series("audio.stage.duration", "histogram", attrs)
    audio = _series("audio.processed.duration", "sum", attrs)
    derived = DerivedMetrics()
    out = _collect(derived)
    st = T0 - MIN
    derived.process(
        _batch(
            [busy, audio],
            [
                _hist_point(busy["series_id"], st, T0 + S, 10, 50.0),  # baseline
                *_counter_points(audio["series_id"], [(st, T0 + S, 7.0)]),
                # a 1 s clip processed in 2 s, then a one-hour file in 360 s
                _hist_point(busy["series_id"], st, T0 + 30 * S, 12, 50.0 + 2.0 + 360.0),
                *_counter_points(audio["series_id"], [(st, T0 + 30 * S, 7.0 + 1.0 + 3600.0)]),
            ],
        )
    )  # fmt: skip
    derived.tick(T0 + 2 * MIN)
    rtf = _results(out)[("realtime_factor", "enh", tuple(sorted(attrs.items())), T0 + MIN)]
    assert rtf == pytest.approx(362.0 / 3601.0)  # about 0.1; the mean of the two ratios is 1.05


# --- quality index ------------------------------------------------------------------------------


def _span(end: int, attrs: dict, trace: int, service: str = "enh") -> dict:
    return {
        "trace_id": f"{trace:032x}",
        "span_id": f"{trace:016x}",
        "parent_span_id": "",
        "trace_state": "",
        "name": "validation",
        "kind": 1,
        "start_time_unix_nano": end - S,
        "end_time_unix_nano": end,
        "duration_ns": S,
        "status_code": 0,
        "status_message": "",
        "service": service,
        "resource": canonical_json({"service.name": service}),
        "scope": "",
        "scope_version": "",
        "attributes": canonical_json(attrs),
        "events": "[]",
        "links": "[]",
        "flags": 0,
    }


def _scores(pesq: float, stoi: float, snr: float) -> dict:
    return {"audio.quality.pesq": pesq, "audio.quality.stoi": stoi, "audio.quality.snr": snr}


def test_quality_index_is_the_mean_of_per_file_indexes_weighted_by_adjusted_count():
    perfect = {
        "audio.pipeline": "p",
        "audio.quality.pesq": 4.5,
        "audio.quality.stoi": 1.0,
        "audio.quality.snr": 45.0,
    }
    poor = {
        "audio.pipeline": "p",
        "audio.quality.pesq": 1.2,
        "audio.quality.stoi": 0.6,
        "audio.quality.snr": 6.0,
    }
    spans = [
        _span(T0 + 5 * S, {**perfect, "sampling.probability": 0.25}, 1),  # stands for 4 files
        _span(T0 + 6 * S, poor, 2),  # stands for 1
        _span(T0 + 7 * S, {**poor, "sampling.promoted": True}, 3),  # tail-promoted: counts 0
        _span(T0 + 8 * S, {"audio.pipeline": "p", "audio.quality.pesq": 1.0}, 4),  # not scored fully
        _span(T0 + 9 * S, {"audio.pipeline": "p"}, 5),
    ]  # fmt: skip
    derived = DerivedMetrics()
    out = _collect(derived)
    derived.process(SpanBatch(pa.Table.from_pylist(spans, schema=SPANS_SCHEMA)))
    derived.tick(T0 + 2 * MIN)
    expected = (4 * quality_index(4.5, 1.0, 45.0) + quality_index(1.2, 0.6, 6.0)) / 5
    got = _results(out)[("quality_index", "enh", (("audio.pipeline", "p"),), T0 + MIN)]
    assert got == pytest.approx(expected)
    assert quality_index(4.5, 1.0, 45.0) == pytest.approx(1.0)  # SNR saturates at 30 dB


# --- cost ---------------------------------------------------------------------------------------


def test_cost_per_audio_hour_from_cpu_gpu_memory_and_the_price_table():
    cpu_user = _series("process.cpu.time", "sum", {"cpu.mode": "user"})
    cpu_sys = _series("process.cpu.time", "sum", {"cpu.mode": "system"})
    memory = _series("process.memory.usage", "sum", {})
    gpu = _series("hw.gpu.utilization", "gauge", {"hw.id": "gpu0", "hw.gpu.task": "general"})
    gpu_decoder = _series("hw.gpu.utilization", "gauge", {"hw.id": "gpu0", "hw.gpu.task": "decoder"})
    load = _series("audio.processed.duration", "sum", {"audio.pipeline": "p", "audio.stage": "load_audio"})
    enh = _series("audio.processed.duration", "sum", {"audio.pipeline": "p", "audio.stage": "enhancement"})
    st = T0 - 10 * MIN
    points = []
    for sid, base, per_window in (
        (cpu_user["series_id"], 500.0, 30.0),
        (cpu_sys["series_id"], 100.0, 10.0),
        (load["series_id"], 0.0, 1800.0),
        (enh["series_id"], 0.0, 1800.0),
    ):
        points += _counter_points(sid, [(st, T0 - S, base), (st, T0 + 50 * S, base + per_window)])
    for k in range(6):  # sampled every 10 s through the window
        t = T0 + k * 10 * S
        points += [
            *_counter_points(memory["series_id"], [(st, t, 2.0 * 2**30)]),
            {"series_id": gpu["series_id"], "time_unix_nano": t, "value": 0.5},
            {"series_id": gpu_decoder["series_id"], "time_unix_nano": t, "value": 0.9},
        ]  # fmt: skip
    derived = from_options(
        {"prices": {"cpu_second": 0.01, "gpu_second": 0.1, "gb_hour": 1.0, "currency": "EUR"}}
    )
    out = _collect(derived)
    derived.process(_batch([cpu_user, cpu_sys, memory, gpu, gpu_decoder, load, enh], points))
    derived.tick(T0 + 2 * MIN)
    got = {k[0]: v for k, v in _results(out).items() if k[3] == T0 + MIN and k[2] == ()}
    assert got["cpu_seconds"] == pytest.approx(40.0)
    assert got["gpu_seconds"] == pytest.approx(30.0)  # the decoder engine is not a second GPU
    assert got["memory_gb_hours"] == pytest.approx(2.0 / 60)
    cost = 40 * 0.01 + 30 * 0.1 + 2.0 / 60 * 1.0
    assert got["cost"] == pytest.approx(cost)
    # half an hour of audio passed both stages: 0.5 h, not 1 h
    assert got["cost_per_audio_hour"] == pytest.approx(cost / 0.5)
    units = {r["metric"]: r["unit"] for b in out for r in b.series.to_pylist()}
    assert units["audio.derived.cost_per_audio_hour"] == "{EUR}/h"


def test_without_prices_resources_are_reported_but_not_priced():
    cpu = _series("process.cpu.time", "sum", {"cpu.mode": "user"})
    derived = DerivedMetrics()
    out = _collect(derived)
    derived.process(_batch([cpu], _counter_points(cpu["series_id"], [(1, T0, 5.0), (1, T0 + 9 * S, 8.0)])))
    derived.tick(T0 + 2 * MIN)
    assert {k[0] for k in _results(out)} == {"cpu_seconds"}


# --- time -----------------------------------------------------------------------------------------


def test_inputs_within_lateness_count_and_later_ones_are_counted_as_late():
    files = _series("audio.pipeline.files", "sum", {"audio.pipeline": "p"}, temporality="delta")
    sid = files["series_id"]
    derived = DerivedMetrics(lateness_ns=30 * S)
    out = _collect(derived)
    derived.process(_batch([files], [{"series_id": sid, "time_unix_nano": T0 + 10 * S, "value": 2.0}]))
    derived.process(_batch([files], [{"series_id": sid, "time_unix_nano": T0 + MIN + 20 * S, "value": 1.0}]))
    # watermark T0+50s: the first window is still open
    derived.process(_batch([files], [{"series_id": sid, "time_unix_nano": T0 + 40 * S, "value": 3.0}]))
    derived.process(_batch([files], [{"series_id": sid, "time_unix_nano": T0 + 2 * MIN, "value": 1.0}]))
    assert _results(out)[("throughput", "enh", (("audio.pipeline", "p"),), T0 + MIN)] == 5.0
    # beyond lateness: the first window was emitted, this point cannot change it
    derived.process(_batch([files], [{"series_id": sid, "time_unix_nano": T0 + 50 * S, "value": 9.0}]))
    assert derived.late_points == 1
    derived.close()
    got = _results(out)
    assert got[("throughput", "enh", (("audio.pipeline", "p"),), T0 + MIN)] == 5.0
    assert got[("throughput", "enh", (("audio.pipeline", "p"),), T0 + 2 * MIN)] == 1.0


def test_other_metrics_and_spans_pass_by_without_output():
    other = _series("audio.queue.size", "gauge", {})
    derived = DerivedMetrics()
    out = _collect(derived)
    derived.process(_batch([other], [{"series_id": other["series_id"], "time_unix_nano": T0, "value": 3.0}]))
    derived.process(SpanBatch(pa.Table.from_pylist([_span(T0, {"a": 1}, 1)], schema=SPANS_SCHEMA)))
    derived.tick(T0 + 5 * MIN)
    assert out == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": "soon"}, "derived option window: expected a duration"),
        ({"window": "0s"}, "derived option window: expected a positive duration"),
        ({"trend_windows": 2}, "derived option trend_windows: expected an integer of at least 3"),
        ({"prices": {"cpu_second": -1}}, r"derived option prices.cpu_second: expected a price"),
        ({"prices": {"tpu_second": 1}}, r"derived option prices.tpu_second: expected only the keys"),
        ({"sources": {"files": ""}}, r"derived option sources.files: expected a metric name"),
        ({"sources": {"disk": "x"}}, r"derived option sources.disk: expected one of files"),
        ({"sources": {"files": "process.cpu.time"}}, "a different metric for every role"),
        ({"color": "red"}, "derived option color: expected only the keys"),
    ],
)
def test_bad_options_name_the_option_and_what_it_accepts(options, message):
    with pytest.raises(ValueError, match=message):
        from_options(options)


# --- end to end ---------------------------------------------------------------------------------


def _wait_for_a_quiet_day_boundary() -> None:
    """The run must fall inside one UTC day (one 1-day window): wait out the last minute of a day."""
    left = 86400 - time.time() % 86400
    if left < 60:
        time.sleep(left + 1)


def test_the_example_pipeline_through_a_real_receiver_yields_its_derived_metrics(start_receiver):
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    import otel_audio
    from examples.enhance_pipeline import Faults, run
    from otel_audio.views import audio_views
    from tests.receiver_helpers import api

    prices = {"cpu_second": 0.002, "gb_hour": 0.5}
    receiver = start_receiver(
        processors=["selfmon", {"derived": {"window": "1d", "prices": prices}}, "store"]
    )
    endpoint = f"http://127.0.0.1:{receiver.grpc_port}"
    resource = Resource.create({"service.name": "enhancer"})
    truth = InMemoryMetricReader()
    exporter = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint, insecure=True), 3_600_000)
    meters = MeterProvider(resource=resource, metric_readers=[truth, exporter], views=audio_views())
    tracer = TracerProvider(resource=resource)
    tracer.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    system = SystemMetricsInstrumentor(
        config={"process.cpu.time": ["user", "system"], "process.memory.usage": None}
    )
    _wait_for_a_quiet_day_boundary()
    system.instrument(meter_provider=meters)
    otel_audio.bind(tracer, meters)
    try:
        results = run(
            6, seconds=1.0, seed=3, faults=Faults(error_probability=0.5, error_stages=("load_audio",))
        )
        meters.force_flush()
        tracer.force_flush()
        sums = _final_sums(truth)
    finally:
        otel_audio.bind(None, None)
        system.uninstrument()
        meters.shutdown()
        tracer.shutdown()
    receiver.chain.tick(time.time_ns() + 2 * 86400 * S)  # past the day's end: the window closes

    def derived(name: str) -> dict[tuple, float]:
        reply = api(receiver, "/api/v1/query_range", metric=f"audio.derived.{name}", agg="last", step="1d",
                    start="now-2d", end="now+2d", group_by="service,audio.pipeline,audio.stage")  # fmt: skip
        assert reply.status_code == 200, reply.text
        out = {}
        for s in reply.json()["series"]:
            values = [v for _, v in s["points"] if v is not None]
            assert len(values) == 1, s  # one window
            out[(s["labels"]["service"], s["labels"]["audio.pipeline"], s["labels"]["audio.stage"])] = values[
                0
            ]
        return out

    failed = sum(r.error_type is not None for r in results)
    assert 0 < failed < 6
    pipeline = ("enhancer", "speech_enhancement", "")
    assert derived("throughput") == {pipeline: pytest.approx(6 / 1440)}  # six files in one day, per minute
    assert derived("error_ratio") == {pipeline: pytest.approx(failed / 6)}
    rtf = derived("realtime_factor")
    for stage in ("load_audio", "enhancement"):
        busy, audio = sums[("audio.stage.duration", stage)], sums[("audio.processed.duration", stage)]
        assert rtf[("enhancer", "speech_enhancement", stage)] == pytest.approx(busy / audio)
    scored = [r.validation.quality_index for r in results if r.validation and r.validation.quality_index]
    assert scored  # the validation stage scored the files that got that far
    assert derived("quality_index") == {pipeline: pytest.approx(sum(scored) / len(scored))}
    cpu = derived("cpu_seconds")[("enhancer", "", "")]
    gb_hours = derived("memory_gb_hours")[("enhancer", "", "")]
    assert cpu > 0 and gb_hours > 0
    cost = derived("cost")[("enhancer", "", "")]
    assert cost == pytest.approx(cpu * 0.002 + gb_hours * 0.5)
    audio_hours = max(v for (name, _), v in sums.items() if name == "audio.processed.duration") / 3600
    assert derived("cost_per_audio_hour")[("enhancer", "", "")] == pytest.approx(cost / audio_hours)


def _final_sums(reader) -> dict[tuple[str, str], float]:
    """(metric, stage) -> the SDK's own cumulative total (histograms: their sum)."""
    out: dict[tuple[str, str], float] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    stage = point.attributes.get("audio.stage", "")
                    value = getattr(point, "sum", None)
                    value = point.value if value is None else value
                    out[(metric.name, stage)] = out.get((metric.name, stage), 0.0) + float(value)
    return out


def test_bad_options_stop_the_receiver_naming_the_processor(tmp_path):
    from otel_audio.receiver.config import ConfigError, load_config
    from otel_audio.receiver.service import Receiver

    config = load_config(
        None, storage__data_dir=str(tmp_path / "d"), processors=[{"derived": {"window": "-1m"}}, "store"]
    )
    with pytest.raises(ConfigError, match=r"processors\.derived: derived option window"):
        Receiver(config).start()


def test_the_benchmark_runs_and_prints_one_json_line():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "derived.py"
    args = ["--series", "200", "--points-per-batch", "1000", "--batches", "30", "--span-batches", "2"]
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert result["points"] == 30_000 and result["spans"] == 1000
    assert result["points_per_s"] > 0 and result["windows_emitted_points"] > 0  # windows closed with data
