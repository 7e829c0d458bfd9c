"""record_quality, record_feedback, record_queue_size and the composite quality index."""

from __future__ import annotations

import pytest

import otel_audio
from otel_audio import audio_pipeline, semconv


def test_quality_index_follows_the_published_formula():
    assert semconv.quality_index(4.5, 1.0, 30.0) == pytest.approx(1.0)
    assert semconv.quality_index(3.6, 0.9, 15.0) == pytest.approx(0.4 * 3.6 / 4.5 + 0.3 * 0.9 + 0.3 * 0.5)
    # SNR saturates at 30 dB and floors at 0 dB.
    assert semconv.quality_index(0.0, 0.0, 90.0) == pytest.approx(0.3)
    assert semconv.quality_index(0.0, 0.0, -10.0) == pytest.approx(0.0)


def test_record_quality_records_scores_index_and_span_attributes(recorded):
    with audio_pipeline(audio_id="q1", name="enh"):
        index = otel_audio.record_quality(pesq=3.6, stoi=0.9, snr=15.0)

    assert index == pytest.approx(semconv.quality_index(3.6, 0.9, 15.0))
    root = recorded.span("enh")
    assert root.attributes[semconv.QUALITY_PESQ] == 3.6
    assert root.attributes[semconv.QUALITY_INDEX] == pytest.approx(index)
    (pesq,) = recorded.points(semconv.PESQ.name)
    assert (pesq.count, pesq.sum) == (1, 3.6)
    assert dict(pesq.attributes) == {semconv.AUDIO_PIPELINE: "enh"}
    (quality,) = recorded.points(semconv.QUALITY_INDEX_METRIC.name)
    assert quality.sum == pytest.approx(index)


def test_record_quality_without_all_scores_has_no_index(recorded):
    assert otel_audio.record_quality(pesq=3.0, stoi=0.8) is None
    assert recorded.points(semconv.QUALITY_INDEX_METRIC.name) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pesq": 5.0}, "pesq must be"),
        ({"stoi": 1.5}, "stoi must be"),
        ({"snr": float("nan")}, "snr must be"),
    ],
)
def test_record_quality_rejects_out_of_range_scores_and_records_nothing(recorded, kwargs, message):
    with pytest.raises(ValueError, match=message):
        otel_audio.record_quality(**kwargs)
    assert recorded.metrics() == {}


def test_record_feedback_records_rating_and_a_span_joined_by_audio_id(recorded):
    otel_audio.record_feedback("call-9", 4, pipeline="enh")
    span = recorded.span("audio.feedback")
    assert span.attributes[semconv.AUDIO_ID] == "call-9"
    assert span.attributes[semconv.FEEDBACK_RATING] == 4.0
    (rating,) = recorded.points(semconv.FEEDBACK.name)
    assert (rating.count, rating.sum) == (1, 4.0)
    assert semconv.AUDIO_ID not in rating.attributes


def test_record_feedback_rejects_rating_outside_one_to_five(recorded):
    with pytest.raises(ValueError, match=r"rating must be .* \[1, 5\]"):
        otel_audio.record_feedback("call-9", 6)


def test_record_queue_size_is_a_gauge(recorded):
    otel_audio.record_queue_size(12, pipeline="enh")
    otel_audio.record_queue_size(3, pipeline="enh")
    (point,) = recorded.points(semconv.QUEUE_SIZE.name)
    assert point.value == 3


def test_set_audio_attributes_on_current_span(recorded):
    @otel_audio.audio_stage("decode")
    def decode(raw):
        otel_audio.set_audio_attributes(sample_rate=48_000, codec="opus")
        return raw

    decode(b"\x00\x01")
    span = recorded.span("decode")
    assert span.attributes[semconv.AUDIO_SAMPLE_RATE] == 48_000
    assert span.attributes[semconv.AUDIO_CODEC] == "opus"
