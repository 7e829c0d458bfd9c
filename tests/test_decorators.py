"""audio_stage and audio_pipeline: every decorator form records the right span and metrics."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from opentelemetry.sdk.metrics.export import ExponentialHistogramDataPoint, HistogramDataPoint
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

import otel_audio
from otel_audio import audio_pipeline, audio_stage, semconv
from tests.conftest import make_recorded

RATE = 16_000


def one_second(channels: int = 1) -> np.ndarray:
    return np.zeros((RATE, channels) if channels > 1 else RATE, dtype=np.float32)


def test_sync_stage_records_span_with_audio_attributes(recorded):
    @audio_stage("enhancement")
    def enhance(audio, sample_rate):
        return audio * 0.5

    enhance(one_second(2), sample_rate=RATE)

    span = recorded.span("enhancement")
    assert span.attributes[semconv.AUDIO_STAGE] == "enhancement"
    assert span.attributes[semconv.AUDIO_SAMPLE_RATE] == RATE
    assert span.attributes[semconv.AUDIO_CHANNELS] == 2
    assert span.attributes[semconv.AUDIO_DURATION] == pytest.approx(1.0)
    assert span.attributes[semconv.AUDIO_REALTIME_FACTOR] > 0
    assert span.status.status_code is StatusCode.UNSET


def test_sync_stage_records_duration_processed_seconds_and_rtf(recorded):
    @audio_stage("enhancement")
    def enhance(audio, sample_rate):
        return audio

    enhance(one_second(), RATE)
    enhance(one_second(), RATE)

    (duration,) = recorded.points(semconv.STAGE_DURATION.name)
    assert duration.count == 2
    assert dict(duration.attributes) == {semconv.AUDIO_STAGE: "enhancement"}
    (processed,) = recorded.points(semconv.PROCESSED_DURATION.name)
    assert processed.value == pytest.approx(2.0)
    (rtf,) = recorded.points(semconv.REALTIME_FACTOR.name)
    assert rtf.count == 2
    assert rtf.sum == pytest.approx(duration.sum / 1.0)


def test_bare_decorator_names_stage_after_function(recorded):
    @audio_stage
    def load_audio(audio, sr):
        return audio

    load_audio(one_second(), sr=RATE)
    assert recorded.span("load_audio").attributes[semconv.AUDIO_SAMPLE_RATE] == RATE


def test_async_stage_is_child_of_pipeline(recorded):
    @audio_stage("enhancement")
    async def enhance(audio, sample_rate):
        await asyncio.sleep(0)
        return audio

    async def main():
        async with audio_pipeline(audio_id="file-1"):
            await enhance(one_second(), RATE)

    asyncio.run(main())
    stage, root = recorded.span("enhancement"), recorded.span("audio_pipeline")
    assert stage.parent.span_id == root.context.span_id
    assert stage.attributes[semconv.AUDIO_ID] == "file-1"
    assert stage.attributes[semconv.AUDIO_DURATION] == pytest.approx(1.0)


def test_method_stage_takes_sample_rate_from_the_object(recorded):
    class Denoiser:
        sample_rate = 8_000

        @audio_stage("enhancement")
        def __call__(self, audio):
            return audio

    Denoiser()(np.zeros(8_000 * 3, dtype=np.int16))
    span = recorded.span("enhancement")
    assert span.attributes[semconv.AUDIO_SAMPLE_RATE] == 8_000
    assert span.attributes[semconv.AUDIO_DURATION] == pytest.approx(3.0)
    assert span.attributes[semconv.AUDIO_BIT_DEPTH] == 16


def test_generator_stage_spans_whole_iteration_and_counts_chunks(recorded):
    @audio_stage("streaming_enhancement")
    def stream(chunks, sample_rate):
        yield from chunks

    chunks = [np.zeros(RATE // 2, dtype=np.float32) for _ in range(4)]
    tracer = otel_audio.instruments.current().tracer
    received = []
    for item in stream(chunks, RATE):
        with tracer.start_as_current_span("consumer"):
            received.append(item)

    assert len(received) == 4
    stage = recorded.span("streaming_enhancement")
    # The consumer's spans between items are not children of the stage.
    assert all(c.parent is None for c in recorded.spans("consumer"))
    assert stage.end_time >= max(c.end_time for c in recorded.spans("consumer")[:-1])
    (processed,) = recorded.points(semconv.PROCESSED_DURATION.name)
    assert processed.value == pytest.approx(2.0)


def test_generator_stage_code_runs_inside_stage_span(recorded):
    tracer = otel_audio.instruments.current().tracer

    @audio_stage("chunker")
    def chunker():
        for i in range(2):
            with tracer.start_as_current_span(f"inner-{i}"):
                pass
            yield i

    assert list(chunker()) == [0, 1]
    stage = recorded.span("chunker")
    assert recorded.span("inner-0").parent.span_id == stage.context.span_id
    assert recorded.span("inner-1").parent.span_id == stage.context.span_id


def test_generator_closed_early_ends_span_without_error(recorded):
    @audio_stage("chunker")
    def chunker():
        yield from range(100)

    gen = chunker()
    next(gen)
    gen.close()
    assert recorded.span("chunker").status.status_code is StatusCode.UNSET


def test_generator_forwards_send_and_throw(recorded):
    @audio_stage("accumulator")
    def accumulator():
        total = 0
        while True:
            try:
                value = yield total
            except KeyError:
                value = 100
            total += value

    gen = accumulator()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert gen.throw(KeyError("x")) == 105
    gen.close()
    assert recorded.span("accumulator").status.status_code is StatusCode.UNSET


def test_async_generator_stage(recorded):
    @audio_stage("async_chunks")
    async def chunks(sample_rate):
        for _ in range(3):
            yield np.zeros(RATE, dtype=np.float32)

    async def consume():
        return [c async for c in chunks(RATE)]

    assert len(asyncio.run(consume())) == 3
    recorded.span("async_chunks")
    (processed,) = recorded.points(semconv.PROCESSED_DURATION.name)
    assert processed.value == pytest.approx(3.0)


def test_exception_sets_error_status_and_is_reraised_unchanged(recorded):
    class DecodeError(Exception):
        pass

    original = DecodeError("truncated header")

    @audio_stage("load_audio")
    def load(path):
        raise original

    with pytest.raises(DecodeError) as caught:
        load("missing.raw")
    assert caught.value is original

    span = recorded.span("load_audio")
    assert span.status.status_code is StatusCode.ERROR
    expected_type = (
        f"{__name__}.test_exception_sets_error_status_and_is_reraised_unchanged.<locals>.DecodeError"
    )
    assert span.attributes[semconv.ERROR_TYPE] == expected_type
    assert [e.name for e in span.events] == ["exception"]
    (errors,) = recorded.points(semconv.ERRORS.name)
    assert errors.value == 1
    assert dict(errors.attributes) == {semconv.AUDIO_STAGE: "load_audio", semconv.ERROR_TYPE: expected_type}


def test_pipeline_context_manager_tags_stages_and_counts_file(recorded):
    @audio_stage("load_audio")
    def load(audio, sample_rate):
        return audio

    with audio_pipeline(audio_id="call-42", name="speech_enhancement") as run:
        load(one_second(), RATE)
    assert run.audio_id == "call-42"

    root, stage = recorded.span("speech_enhancement"), recorded.span("load_audio")
    assert root.attributes[semconv.AUDIO_ID] == "call-42"
    assert stage.attributes[semconv.AUDIO_ID] == "call-42"
    assert stage.attributes[semconv.AUDIO_PIPELINE] == "speech_enhancement"
    assert stage.parent.span_id == root.context.span_id
    (files,) = recorded.points(semconv.FILES_PROCESSED.name)
    assert files.value == 1
    assert dict(files.attributes) == {semconv.AUDIO_PIPELINE: "speech_enhancement"}
    (duration,) = recorded.points(semconv.STAGE_DURATION.name)
    assert dict(duration.attributes) == {
        semconv.AUDIO_STAGE: "load_audio",
        semconv.AUDIO_PIPELINE: "speech_enhancement",
    }


def test_pipeline_decorator_takes_audio_id_argument_and_audio(recorded):
    @audio_pipeline(name="batch")
    def process(audio, audio_id, sample_rate=RATE):
        return audio

    process(one_second(), "f-7")
    root = recorded.span("batch")
    assert root.attributes[semconv.AUDIO_ID] == "f-7"
    assert root.attributes[semconv.AUDIO_DURATION] == pytest.approx(1.0)


def test_pipeline_decorator_computes_audio_id_with_callable(recorded):
    @audio_pipeline(audio_id=lambda path: path.rsplit("/", 1)[-1], name="files")
    def process(path):
        return path

    process("/data/in/a.raw")
    assert recorded.span("files").attributes[semconv.AUDIO_ID] == "a.raw"


def test_pipeline_error_is_counted_once_and_fails_the_file(recorded):
    @audio_stage("enhancement")
    def enhance(audio, sample_rate):
        raise ValueError("nan in output")

    with pytest.raises(ValueError), audio_pipeline(audio_id="bad", name="p"):
        enhance(one_second(), RATE)

    (errors,) = recorded.points(semconv.ERRORS.name)
    assert errors.value == 1
    assert errors.attributes[semconv.AUDIO_STAGE] == "enhancement"
    (files,) = recorded.points(semconv.FILES_PROCESSED.name)
    assert dict(files.attributes) == {semconv.AUDIO_PIPELINE: "p", semconv.ERROR_TYPE: "ValueError"}
    assert recorded.span("p").status.status_code is StatusCode.ERROR


def test_unsampled_calls_still_record_metrics():
    rec = make_recorded(sampler=ALWAYS_OFF)
    try:

        @audio_stage("enhancement")
        def enhance(audio, sample_rate):
            return audio

        for _ in range(3):
            enhance(one_second(), RATE)
        assert rec.spans() == []
        (duration,) = rec.points(semconv.STAGE_DURATION.name)
        assert duration.count == 3
    finally:
        otel_audio.bind(None, None)


def test_views_use_exponential_histograms_for_durations_and_explicit_for_quality(recorded):
    @audio_stage("enhancement")
    def enhance(audio, sample_rate):
        return audio

    with audio_pipeline(audio_id="x"):
        enhance(one_second(), RATE)
        otel_audio.record_quality(pesq=3.6, stoi=0.9, snr=18.0)

    for name in (semconv.STAGE_DURATION.name, semconv.REALTIME_FACTOR.name, semconv.PIPELINE_DURATION.name):
        (point,) = recorded.points(name)
        assert isinstance(point, ExponentialHistogramDataPoint), name
    (pesq,) = recorded.points(semconv.PESQ.name)
    assert isinstance(pesq, HistogramDataPoint)
    assert tuple(pesq.explicit_bounds) == semconv.PESQ.boundaries


def test_views_drop_audio_id_from_metric_attributes(recorded):
    inst = otel_audio.instruments.current()
    inst.stage_duration.record(
        0.1, {semconv.AUDIO_STAGE: "s", semconv.AUDIO_ID: "per-file", "path": "/x.wav"}
    )
    with audio_pipeline(audio_id="abc"):
        otel_audio.record_quality(pesq=3.0)

    for metric in recorded.metrics().values():
        for point in metric.data.data_points:
            assert semconv.AUDIO_ID not in point.attributes
            assert set(point.attributes) <= semconv.METRIC_ATTRIBUTES
    (point,) = recorded.points(semconv.STAGE_DURATION.name)
    assert dict(point.attributes) == {semconv.AUDIO_STAGE: "s"}


def test_signal_metrics_recorded_for_input_and_output_when_enabled(recorded):
    @audio_stage("enhancement", signal=True)
    def enhance(audio, sample_rate):
        return audio * 0.1

    t = np.arange(RATE) / RATE
    otel_audio.settings.settings.signal_sample_ratio = 1.0
    try:
        enhance((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    finally:
        otel_audio.settings.settings.signal_sample_ratio = 0.1

    headroom = recorded.points(semconv.SIGNAL_RMS_METRIC.name)
    points = {p.attributes[semconv.AUDIO_DIRECTION]: p for p in headroom}
    assert set(points) == {"input", "output"}
    assert points["input"].sum == pytest.approx(9.03, abs=0.05)
    assert points["output"].sum == pytest.approx(29.03, abs=0.05)
    events = [e for e in recorded.span("enhancement").events if e.name == "audio.signal"]
    assert [e.attributes[semconv.AUDIO_DIRECTION] for e in events] == ["input", "output"]
    assert events[0].attributes[semconv.SIGNAL_RMS] == pytest.approx(-9.03, abs=0.05)


def test_signal_metrics_off_by_default(recorded):
    @audio_stage("enhancement")
    def enhance(audio, sample_rate):
        return audio

    enhance(one_second(), RATE)
    assert recorded.points(semconv.SIGNAL_RMS_METRIC.name) == []
