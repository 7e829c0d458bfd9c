"""WAV in and out for the example: soundfile when installed (the ``[quality]`` extra), else the
stdlib :mod:`wave` module, which reads and writes 16-bit PCM, so the example runs on the base install.
"""

from __future__ import annotations

import importlib.util
import io
import os
import wave

import numpy as np

HAVE_SOUNDFILE = importlib.util.find_spec("soundfile") is not None


class AudioDecodeError(Exception):
    """The input could not be decoded as audio."""


def read_wav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Float32 samples in [-1, 1] and the sample rate; soundfile when installed, else ``wave``."""
    try:
        if HAVE_SOUNDFILE:
            import soundfile

            data, rate = soundfile.read(os.fspath(path), dtype="float32", always_2d=False)
            return data, int(rate)
        with wave.open(os.fspath(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise AudioDecodeError(
                    f"{os.fspath(path)}: {8 * wav.getsampwidth()}-bit WAV needs soundfile "
                    "(pip install 'otel-audio[quality]'); without it only 16-bit PCM is read"
                )
            raw = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
            data = raw.reshape(-1, wav.getnchannels()).squeeze().astype(np.float32) / 32768.0
            return data, wav.getframerate()
    except (RuntimeError, wave.Error, EOFError) as exc:  # soundfile raises LibsndfileError(RuntimeError)
        raise AudioDecodeError(f"{os.fspath(path)}: not a readable WAV file ({exc})") from exc


def write_wav(target: str | os.PathLike[str] | io.BytesIO, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV of mono ``audio``; soundfile when installed, else ``wave``."""
    if HAVE_SOUNDFILE:
        import soundfile

        soundfile.write(target, audio, sample_rate, subtype="PCM_16", format="WAV")
        return
    pcm = (np.clip(audio, -1.0, 1.0 - 1.0 / 32768) * 32768.0).astype("<i2")
    with wave.open(target if isinstance(target, io.BytesIO) else os.fspath(target), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
