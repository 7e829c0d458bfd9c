"""Audio attributes are found in every input kind, without copying audio and without raising."""

from __future__ import annotations

import io
import struct
import wave
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio import semconv
from otel_audio.audio_info import AudioInfo, describe, parse_wav_header


def wav_bytes(rate: int = 16_000, channels: int = 2, frames: int = 8_000, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x00" * frames * channels * width)
    return buf.getvalue()


def test_mono_array_with_rate():
    info = describe(np.zeros(48_000, dtype=np.float32), 48_000)
    assert (info.sample_rate, info.channels, info.frames, info.duration) == (48_000, 1, 48_000, 1.0)
    assert (info.codec, info.bit_depth, info.format) == ("float32", 32, "pcm")


@pytest.mark.parametrize("shape", [(32_000, 2), (2, 32_000)])
def test_stereo_array_in_either_layout(shape):
    info = describe(np.zeros(shape, dtype=np.int16), 16_000)
    assert (info.channels, info.frames, info.duration, info.bit_depth) == (2, 32_000, 2.0, 16)


def test_array_without_rate_has_no_duration():
    info = describe(np.zeros(1000))
    assert info.frames == 1000
    assert info.duration is None


def test_array_is_never_copied_or_read():
    # A terabyte-long virtual array: any copy or read of samples would exhaust memory.
    huge = np.broadcast_to(np.zeros(1, dtype=np.float32), (10**12,))
    info = describe(huge, 16_000)
    assert info.frames == 10**12


def test_spectrogram_like_matrix_is_not_audio():
    assert describe(np.zeros((513, 400), dtype=np.float32), 16_000) is None


def test_array_and_rate_tuple():
    info = describe((np.zeros(22_050), 22_050))
    assert (info.sample_rate, info.duration) == (22_050, 1.0)


def test_object_with_sample_rate_and_data():
    @dataclass
    class Clip:
        data: np.ndarray
        sample_rate: int

    info = describe(Clip(np.zeros((8_000, 2), dtype=np.float32), 8_000))
    assert (info.sample_rate, info.channels, info.duration) == (8_000, 2, 1.0)


def test_object_with_sample_rate_and_duration_only():
    @dataclass
    class Meta:
        sample_rate: int
        duration: float
        channels: int

    info = describe(Meta(44_100, 2.5, 2))
    assert (info.frames, info.channels, info.duration) == (110_250, 2, 2.5)


def test_pcm_wav_bytes():
    info = describe(wav_bytes(rate=16_000, channels=2, frames=8_000))
    assert (info.format, info.codec, info.bit_depth) == ("wav", "pcm_s16le", 16)
    assert (info.sample_rate, info.channels, info.frames, info.duration) == (16_000, 2, 8_000, 0.5)


@pytest.mark.parametrize(
    ("fmt", "subtype", "codec", "bits"),
    [("WAV", "FLOAT", "pcm_f32le", 32), ("WAVEX", "PCM_24", "pcm_s24le", 24), ("WAV", "PCM_U8", "pcm_u8", 8)],
)
def test_float_extensible_and_8bit_wav_files(tmp_path, fmt, subtype, codec, bits):
    path = tmp_path / "x.wav"
    soundfile.write(path, np.zeros((4_410, 2)), 44_100, subtype=subtype, format=fmt)
    info = describe(path)
    assert (info.codec, info.bit_depth, info.channels, info.frames, info.sample_rate) == (
        codec,
        bits,
        2,
        4_410,
        44_100,
    )


def test_wav_path_as_string_reads_only_the_header(tmp_path):
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(frames=160_000, channels=1))
    info = describe(str(path))
    assert info.duration == 10.0
    assert info.attributes()[semconv.AUDIO_DURATION] == 10.0


def test_streaming_wav_with_unset_data_size_uses_file_size(tmp_path):
    data = bytearray(wav_bytes(frames=1_600, channels=1))
    data_chunk = data.index(b"data")
    struct.pack_into("<I", data, data_chunk + 4, 0xFFFFFFFF)
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(data))
    assert describe(path).frames == 1_600


def test_flac_path_through_soundfile(tmp_path):
    path = tmp_path / "x.flac"
    soundfile.write(path, np.zeros(24_000), 48_000, format="FLAC")
    info = describe(path)
    assert (info.format, info.sample_rate, info.duration) == ("flac", 48_000, 0.5)


@pytest.mark.parametrize("value", [None, 3, "hello", "/no/such/file.wav", b"not audio", {"a": 1}, [1, 2, 3]])
def test_unrecognised_values_yield_none_and_never_raise(value):
    assert describe(value) is None


def test_merge_fills_only_unknown_fields():
    info = AudioInfo(sample_rate=8_000).merge(AudioInfo(sample_rate=16_000, channels=2))
    assert (info.sample_rate, info.channels) == (8_000, 2)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_wav_parser_never_raises_on_garbage_after_a_valid_prefix(tail):
    result = parse_wav_header(b"RIFF\x00\x00\x00\x00WAVE" + tail)
    assert result is None or isinstance(result, AudioInfo)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_describe_never_raises_on_arbitrary_bytes(data):
    describe(data)
