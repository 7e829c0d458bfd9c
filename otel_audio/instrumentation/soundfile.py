"""Trace ``soundfile`` reads and writes with audio attributes.

Loading and saving audio is where pipelines spend surprising time (network file systems,
large FLACs) and where malformed input first fails. With this instrumentor active,
``soundfile.read``, ``soundfile.write`` and ``soundfile.info`` each produce a span
(``soundfile.read`` ...) carrying ``file.path`` and the audio attributes of the file or buffer:
sample rate, channels, frames, duration, format and codec. Errors mark the span and re-raise.

It loads automatically under ``opentelemetry-instrument`` (entry point ``soundfile`` in the
``opentelemetry_instrumentor`` group) or by hand::

    from otel_audio.instrumentation.soundfile import SoundfileInstrumentor
    SoundfileInstrumentor().instrument()

Reading through a ``soundfile.SoundFile`` object block by block is not traced: it has no
single call boundary that means "one file".
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import Status, StatusCode

from otel_audio import semconv
from otel_audio.audio_info import AudioInfo, describe
from otel_audio.decorators import error_type
from otel_audio.version import __version__

_FILE_PATH = "file.path"


def _path_attributes(file: Any) -> dict[str, Any]:
    if isinstance(file, (str, os.PathLike)):
        return {_FILE_PATH: os.fspath(file)}
    return {}


def _read_attributes(result: Any) -> dict[str, Any]:
    """``soundfile.read`` returns ``(data, samplerate)``."""
    if isinstance(result, tuple) and len(result) == 2:
        info = describe(result[0], result[1])
        if info is not None:
            info.format = None  # the container is the file's, set from its header
            return info.attributes()
    return {}


def _write_attributes(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``soundfile.write(file, data, samplerate, subtype=None, endian=None, format=None, ...)``."""
    data = kwargs.get("data", args[1] if len(args) > 1 else None)
    rate = kwargs.get("samplerate", args[2] if len(args) > 2 else None)
    info = describe(data, rate) if data is not None else None
    info = info or AudioInfo()
    file = kwargs.get("file", args[0] if args else None)
    fmt = kwargs.get("format") or (
        os.fspath(file).rsplit(".", 1)[-1] if isinstance(file, (str, os.PathLike)) else None
    )
    info.format = str(fmt).lower() if fmt else None
    subtype = kwargs.get("subtype")
    info.codec = str(subtype).lower() if subtype else None
    return info.attributes()


class SoundfileInstrumentor(BaseInstrumentor):
    """Wraps ``soundfile.read``, ``soundfile.write`` and ``soundfile.info`` in spans."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("soundfile >= 0.10",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(__name__, __version__, tracer_provider=kwargs.get("tracer_provider"))

        def traced(operation: str) -> Any:
            def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
                file = kw.get("file", args[0] if args else None)
                attrs = _path_attributes(file)
                if operation == "write":
                    attrs.update(_write_attributes(args, kw))
                elif isinstance(file, (str, os.PathLike)):
                    header = describe(file)
                    if header is not None:
                        attrs.update(header.attributes())
                with tracer.start_as_current_span(
                    f"soundfile.{operation}",
                    attributes=attrs,
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span:
                    try:
                        result = wrapped(*args, **kw)
                    except Exception as exc:
                        span.set_status(Status(StatusCode.ERROR, f"{error_type(exc)}: {exc}"))
                        span.set_attribute(semconv.ERROR_TYPE, error_type(exc))
                        span.record_exception(exc)
                        raise
                    if operation == "read" and span.is_recording():
                        missing = {k: v for k, v in _read_attributes(result).items() if k not in attrs}
                        span.set_attributes(missing)
                    return result

            return wrapper

        for operation in ("read", "write", "info"):
            wrapt.wrap_function_wrapper("soundfile", operation, traced(operation))

    def _uninstrument(self, **kwargs: Any) -> None:
        import soundfile

        for operation in ("read", "write", "info"):
            unwrap(soundfile, operation)
