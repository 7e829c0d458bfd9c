"""Audio attributes from whatever a pipeline stage is handed: arrays, buffers, WAV bytes, paths.

Stages are written against many audio representations, so the decorators look at their
arguments and results and describe the audio they find (:class:`AudioInfo`). Three promises:

- **No copies.** Only shapes, dtypes and file headers are read; sample data is never touched.
- **Never raises.** A representation it does not understand yields ``None``; the user's code
  is never interrupted by telemetry.
- **Cheap.** Paths are opened only for their header (a bounded read), and only for audio suffixes.

WAV headers are parsed here rather than with the stdlib :mod:`wave` module because ``wave``
(before Python 3.12) rejects IEEE-float and WAVE_FORMAT_EXTENSIBLE files, which are the
common output of audio ML tools; the RIFF layout is simple and the parse reads only the header.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, fields
from typing import Any

from otel_audio import semconv

_log = logging.getLogger(__name__)

_WAV_SUFFIXES = (".wav", ".wave")
_OTHER_AUDIO_SUFFIXES = (".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64", ".mp3")
_HEADER_READ_LIMIT = 1 << 16  # enough for any RIFF header with metadata chunks before "data"
_MAX_CHANNELS_AXIS = 64  # a dimension this small next to a long one is the channel axis

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(slots=True)
class AudioInfo:
    """What is known about one piece of audio; unknown fields stay ``None``."""

    sample_rate: int | None = None
    channels: int | None = None
    frames: int | None = None
    format: str | None = None
    codec: str | None = None
    bit_depth: int | None = None

    @property
    def duration(self) -> float | None:
        """Seconds of audio, when both frame count and sample rate are known."""
        if self.frames is None or not self.sample_rate:
            return None
        return self.frames / self.sample_rate

    def merge(self, other: AudioInfo | None) -> AudioInfo:
        """Fill this info's unknown fields from ``other``; known fields are kept."""
        if other is not None:
            for name in _FIELDS:
                if getattr(self, name) is None:
                    setattr(self, name, getattr(other, name))
        return self

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in _FIELDS)

    def attributes(self) -> dict[str, Any]:
        """Span attributes (semconv names) for the known fields."""
        attrs: dict[str, Any] = {}
        pairs = (
            (semconv.AUDIO_SAMPLE_RATE, self.sample_rate),
            (semconv.AUDIO_CHANNELS, self.channels),
            (semconv.AUDIO_FRAMES, self.frames),
            (semconv.AUDIO_FORMAT, self.format),
            (semconv.AUDIO_CODEC, self.codec),
            (semconv.AUDIO_BIT_DEPTH, self.bit_depth),
            (semconv.AUDIO_DURATION, self.duration),
        )
        for key, value in pairs:
            if value is not None:
                attrs[key] = value
        return attrs


_FIELDS = tuple(f.name for f in fields(AudioInfo))


def describe(value: Any, sample_rate: int | None = None) -> AudioInfo | None:
    """Describe ``value`` as audio, or return ``None`` if it is not recognisably audio.

    Args:
        value: an array (numpy or anything with ``shape`` and ``dtype``), an object with a
            ``sample_rate`` attribute, a ``(array, sample_rate)`` tuple, WAV bytes, or a path.
        sample_rate: the rate to assume for bare arrays, typically from a ``sample_rate`` or
            ``sr`` argument of the same call.
    """
    try:
        return _describe(value, sample_rate)
    except Exception:  # telemetry must never break the pipeline
        _log.debug("could not describe %r as audio", type(value), exc_info=True)
        return None


def _describe(value: Any, sample_rate: int | None) -> AudioInfo | None:
    # Arrays first: they are by far the most common stage argument, and the checks below
    # (os.PathLike is an ABC) cost more than this attribute lookup.
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return describe_array(value, sample_rate)
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return parse_wav_header(value)
    if isinstance(value, (str, os.PathLike)):
        return describe_path(value)
    if isinstance(value, tuple) and len(value) == 2 and is_sample_rate(value[1]):
        return _describe(value[0], int(value[1]))
    return _describe_object(value, sample_rate)


def describe_array(array: Any, sample_rate: int | None = None) -> AudioInfo | None:
    """Frames and channels from an array's shape; codec from its dtype. Reads no samples.

    1-D arrays are mono. For 2-D arrays the short axis is the channel axis, which covers both
    the ``(frames, channels)`` layout of soundfile and the ``(channels, frames)`` layout of
    librosa and torchaudio.
    """
    shape = tuple(int(n) for n in array.shape)
    if len(shape) == 1:
        frames, channels = shape[0], 1
    elif len(shape) == 2:
        short, long_ = sorted(shape)
        if short > _MAX_CHANNELS_AXIS and short != long_:
            return None  # a matrix, not audio (e.g. a spectrogram)
        frames, channels = long_, short
    else:
        return None
    codec, bit_depth = _dtype_description(getattr(array, "dtype", None))
    return AudioInfo(
        sample_rate=int(sample_rate) if is_sample_rate(sample_rate) else None,
        channels=channels,
        frames=frames,
        format="pcm",
        codec=codec,
        bit_depth=bit_depth,
    )


_DTYPES: dict[Any, tuple[str | None, int | None]] = {}


def _dtype_description(dtype: Any) -> tuple[str | None, int | None]:
    """(codec, bit depth) of a dtype, cached: ``str(dtype)`` is slow in numpy."""
    try:
        return _DTYPES[dtype]
    except (KeyError, TypeError):
        pass
    kind = getattr(dtype, "kind", None)
    itemsize = getattr(dtype, "itemsize", None)
    found = (
        str(dtype) if dtype is not None else None,
        itemsize * 8 if kind in ("i", "u", "f") and itemsize else None,
    )
    if len(_DTYPES) < 256:
        try:
            _DTYPES[dtype] = found
        except TypeError:  # unhashable dtype-like objects
            pass
    return found


def _describe_object(value: Any, sample_rate: int | None) -> AudioInfo | None:
    """Audio container objects: anything exposing ``sample_rate`` (or ``sr``/``samplerate``)."""
    rate = _first_attr(value, ("sample_rate", "sr", "samplerate", "frame_rate"))
    if not is_sample_rate(rate):
        return None
    info = AudioInfo(sample_rate=int(rate))
    data = _first_attr(value, ("data", "samples", "audio", "waveform", "array"))
    if data is not None and hasattr(data, "shape"):
        info.merge(describe_array(data, int(rate)))
    channels = _first_attr(value, ("channels", "num_channels", "n_channels"))
    if isinstance(channels, int) and not isinstance(channels, bool):
        info.channels = channels
    frames = _first_attr(value, ("frames", "num_frames", "n_frames"))
    if isinstance(frames, int) and not isinstance(frames, bool):
        info.frames = frames
    duration = _first_attr(value, ("duration", "duration_s", "seconds"))
    if info.frames is None and isinstance(duration, (int, float)) and not isinstance(duration, bool):
        info.frames = round(duration * int(rate))
    for name, attr in (("format", "format"), ("codec", "subtype")):
        text = getattr(value, attr, None)
        if isinstance(text, str):
            setattr(info, name, text.lower())
    return info


def describe_path(path: str | os.PathLike[str]) -> AudioInfo | None:
    """Header of an audio file on disk: WAV parsed here, other formats through soundfile if present."""
    name = os.fspath(path)
    lower = name.lower()
    if lower.endswith(_WAV_SUFFIXES):
        with open(name, "rb") as f:
            return parse_wav_header(f.read(_HEADER_READ_LIMIT), file_size=os.fstat(f.fileno()).st_size)
    if lower.endswith(_OTHER_AUDIO_SUFFIXES):
        try:
            import soundfile  # optional: the [quality] extra
        except ImportError:
            return AudioInfo(format=lower.rsplit(".", 1)[-1])
        info = soundfile.info(name)
        return AudioInfo(
            sample_rate=int(info.samplerate),
            channels=int(info.channels),
            frames=int(info.frames),
            format=str(info.format).lower(),
            codec=str(info.subtype).lower(),
        )
    return None


def parse_wav_header(data: bytes | bytearray | memoryview, file_size: int | None = None) -> AudioInfo | None:
    """Parse a RIFF/WAVE header. ``data`` may be a prefix of the file; only chunk headers are read.

    Args:
        data: the file's bytes, or at least its first chunks up to the ``data`` chunk header.
        file_size: the whole file's size, to bound a ``data`` chunk whose size field is a
            streaming placeholder (0 or 0xFFFFFFFF).
    """
    view = memoryview(data)
    if len(view) < 12 or bytes(view[0:4]) not in (b"RIFF", b"RF64") or bytes(view[8:12]) != b"WAVE":
        return None
    offset = 12
    info = AudioInfo(format="wav")
    block_align = None
    while offset + 8 <= len(view):
        chunk_id = bytes(view[offset : offset + 4])
        (size,) = struct.unpack_from("<I", view, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and body + 16 <= len(view):
            tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", view, body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40 and body + 26 <= len(view):
                (tag,) = struct.unpack_from("<H", view, body + 24)  # first 2 bytes of the sub-format GUID
            info.channels, info.sample_rate, info.bit_depth = channels, rate, bits
            info.codec = _wav_codec(tag, bits)
        elif chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) and file_size is not None:
                size = max(file_size - body, 0)  # streaming writers leave the size unset
            if block_align:
                info.frames = size // block_align
            break
        offset = body + size + (size & 1)  # chunks are word-aligned
    return info if info.sample_rate else None


def _wav_codec(tag: int, bits: int) -> str:
    if tag == _WAVE_FORMAT_PCM:
        return "pcm_u8" if bits == 8 else f"pcm_s{bits}le"
    if tag == _WAVE_FORMAT_IEEE_FLOAT:
        return f"pcm_f{bits}le"
    if tag == _WAVE_FORMAT_ALAW:
        return "pcm_alaw"
    if tag == _WAVE_FORMAT_MULAW:
        return "pcm_mulaw"
    return f"wav_0x{tag:04x}"


def _first_attr(value: Any, names: tuple[str, ...]) -> Any:
    for name in names:
        found = getattr(value, name, None)
        if found is not None and not callable(found):
            return found
    return None


def is_sample_rate(value: Any) -> bool:
    """A plausible audio sample rate: an integer-valued number of at least 1 kHz.

    The floor keeps small integers in tuples (counts, flags) from being read as rates.
    """
    if isinstance(value, bool) or value is None:
        return False
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return False
    return 1_000 <= rate <= 10_000_000 and rate == int(rate)
