"""The root span of one file's journey through the pipeline: :class:`audio_pipeline`.

A pipeline run is the unit people reason about ("file call-0042 took 3 s and failed in
enhancement"), so it gets its own span, under which every :func:`~otel_audio.audio_stage`
call nests, and its own metrics: ``audio.pipeline.duration`` and ``audio.pipeline.files``.
The file's ``audio.id`` and the pipeline name travel as baggage, so stages in other threads
or processes (see :mod:`otel_audio.propagation`) still know which file they work on.
"""

from __future__ import annotations

import functools
import inspect
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Span, Status, StatusCode

from otel_audio import instruments, semconv
from otel_audio.audio_info import describe, is_sample_rate
from otel_audio.decorators import RECORDED, Signature, error_type, mark_recorded
from otel_audio.propagation import with_audio

F = TypeVar("F", bound=Callable[..., Any])


class audio_pipeline:
    """The root span of one file's journey; a decorator or a (sync or async) context manager.

    Stages called inside it are its children and carry its ``audio.id`` and pipeline name.
    On exit it records ``audio.pipeline.duration`` and counts the file in
    ``audio.pipeline.files`` (with ``error.type`` when it failed).

    Args:
        audio_id: the file's id: a string, a callable computing it from the decorated
            function's arguments, or ``None`` to take an ``audio_id`` argument of the
            decorated function, else a random id.
        name: the pipeline name (span name and ``audio.pipeline``).
        source: something describing the input audio (array, path, WAV bytes) for the
            root span's audio attributes; when decorating, the first audio argument is used.
        sample_rate: the rate of ``source`` when it is a bare array.
        attributes: further span attributes.
    """

    def __init__(
        self,
        audio_id: str | Callable[..., str] | None = None,
        *,
        name: str = "audio_pipeline",
        source: Any = None,
        sample_rate: int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self.audio_id_spec = audio_id
        self.sample_rate = sample_rate
        self.name = name
        self.source = source
        self.attributes = dict(attributes or {})
        self.audio_id: str | None = audio_id if isinstance(audio_id, str) else None
        self.span: Span = trace.INVALID_SPAN
        self._token: object | None = None
        self._start = 0.0
        self._metric_attrs = {semconv.AUDIO_PIPELINE: name}

    def __enter__(self) -> audio_pipeline:
        if self.audio_id is None:
            self.audio_id = uuid.uuid4().hex
        attrs: dict[str, Any] = {
            semconv.AUDIO_ID: self.audio_id,
            semconv.AUDIO_PIPELINE: self.name,
            **self.attributes,
        }
        found = describe(self.source, self.sample_rate) if self.source is not None else None
        if found is not None:
            attrs.update(found.attributes())
        self.span = instruments.current().tracer.start_span(self.name, attributes=attrs)
        ctx = with_audio(trace.set_span_in_context(self.span), self.audio_id, self.name)
        self._token = context.attach(ctx)
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        elapsed = time.perf_counter() - self._start
        inst = instruments.current()
        attrs = self._metric_attrs
        if isinstance(exc, Exception):
            kind = error_type(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))
            self.span.record_exception(exc, escaped=True)
            self.span.set_attribute(semconv.ERROR_TYPE, kind)
            attrs = {**attrs, semconv.ERROR_TYPE: kind}
            if not getattr(exc, RECORDED, False):
                inst.errors.add(1, {**attrs, semconv.AUDIO_STAGE: self.name})
                mark_recorded(exc)
        inst.pipeline_duration.record(elapsed, attrs)
        inst.files_processed.add(1, attrs)
        if self._token is not None:
            context.detach(self._token)
            self._token = None
        self.span.end()

    async def __aenter__(self) -> audio_pipeline:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _for_call(
        self, fn: Callable[..., Any], signature: Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> audio_pipeline:
        """A fresh instance per call, so one decorated function can run concurrently."""
        spec = self.audio_id_spec
        if callable(spec):
            audio_id: str | None = str(spec(*args, **kwargs))
        elif isinstance(spec, str):
            audio_id = spec
        else:
            audio_id = _bound_argument(fn, args, kwargs, "audio_id")
        source, rate = self.source, self.sample_rate
        if source is None:
            rate = signature.sample_rate(args, kwargs) if rate is None else rate
            source, _ = signature.find_audio(args, kwargs, rate)
        return audio_pipeline(
            None if audio_id is None else str(audio_id),
            name=self.name,
            source=source,
            sample_rate=rate if is_sample_rate(rate) else None,
            attributes=self.attributes,
        )

    def __call__(self, fn: F) -> F:
        signature = Signature(fn)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with self._for_call(fn, signature, args, kwargs):
                    return await fn(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._for_call(fn, signature, args, kwargs):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]


def _bound_argument(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    return bound.arguments.get(name)
