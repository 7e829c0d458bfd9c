"""Span decorators for audio pipelines: one span and a set of metrics per stage and per file.

A pipeline stage is a function (or method, ``async def`` function, generator or async
generator) decorated with :func:`audio_stage`; the journey of one file is an
:class:`audio_pipeline`, used as a decorator or a ``with`` block::

    from otel_audio import audio_pipeline, audio_stage

    @audio_stage("enhancement")
    def enhance(audio: np.ndarray, sample_rate: int) -> np.ndarray: ...

    with audio_pipeline(audio_id="call-0042"):
        clean = enhance(noisy, sample_rate=16_000)

Each stage call records:

- a span named for the stage, a child of the current span, with ``audio.stage``, the file's
  ``audio.id`` and ``audio.pipeline`` (from baggage set by :class:`audio_pipeline`) and the
  audio attributes found in its arguments or result (:mod:`otel_audio.audio_info`);
- ``audio.stage.duration`` (s), ``audio.processed.duration`` (s of audio) and
  ``audio.stage.realtime_factor``, with only ``audio.stage`` and ``audio.pipeline`` as metric
  attributes, so the file id never multiplies series;
- on an exception: span status ERROR, the exception as a span event, ``error.type``, and
  ``audio.errors`` incremented. The exception is re-raised unchanged.

Metrics are recorded for every call, sampled or not: sampling thins traces, never metrics.
"""

from __future__ import annotations

import functools
import inspect
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Span, Status, StatusCode

from otel_audio import instruments, semconv
from otel_audio.audio_info import AudioInfo, describe, is_sample_rate
from otel_audio.propagation import current_audio
from otel_audio.settings import settings
from otel_audio.signal import signal_stats

F = TypeVar("F", bound=Callable[..., Any])

_INFO_FIELDS = ("sample_rate", "channels", "frames", "format", "codec", "bit_depth")
_RATE_PARAMS = ("sample_rate", "sr", "samplerate", "fs", "rate")
_SELF_PARAMS = ("self", "cls")
RECORDED = "_otel_audio_recorded"  # set on an exception once a stage or pipeline has counted it


def error_type(exc: BaseException) -> str:
    """``error.type`` for an exception: its class name, module-qualified unless a builtin."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class Signature:
    """Where a function's sample rate and audio arguments sit, worked out once per function."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        names = [p.name for p in params]
        self.has_self = bool(names) and names[0] in _SELF_PARAMS
        self.rate_name = next((n for n in names if n in _RATE_PARAMS), None)
        self.rate_index = names.index(self.rate_name) if self.rate_name else None
        self.defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    def sample_rate(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        """The call's sample-rate argument, else the bound object's ``sample_rate``."""
        if self.rate_name is not None:
            if self.rate_name in kwargs:
                return kwargs[self.rate_name]
            if self.rate_index is not None and self.rate_index < len(args):
                return args[self.rate_index]
            if self.rate_name in self.defaults:
                return self.defaults[self.rate_name]
        if self.has_self and args:
            return getattr(args[0], "sample_rate", None) or getattr(args[0], "sr", None)
        return None

    def find_audio(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], rate: Any
    ) -> tuple[Any, AudioInfo | None]:
        """The first argument that describes as audio, and its description."""
        start = 1 if self.has_self else 0
        for i, value in enumerate(args[start:], start):
            if i != self.rate_index:
                info = describe(value, rate)
                if info is not None:
                    return value, info
        for name, value in kwargs.items():
            if name != self.rate_name:
                info = describe(value, rate)
                if info is not None:
                    return value, info
        return None, None


class _Stage:
    """A decorated stage: its name, static attributes and cached metric attribute sets."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        overrides: AudioInfo,
        extra: Mapping[str, Any],
        signal: bool | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.signature = Signature(fn)
        self.overrides = overrides
        self.extra = dict(extra)
        self.signal = signal
        self.has_overrides = not overrides.is_empty()
        self._metric_attrs: dict[str | None, dict[str, str]] = {}

    def metric_attributes(self, pipeline: str | None) -> dict[str, str]:
        """One dict per pipeline name, reused on every call (metric attributes must stay bounded)."""
        attrs = self._metric_attrs.get(pipeline)
        if attrs is None:
            attrs = {semconv.AUDIO_STAGE: self.name}
            if pipeline is not None:
                attrs[semconv.AUDIO_PIPELINE] = pipeline
            self._metric_attrs[pipeline] = attrs
        return attrs

    def begin(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _Call:
        """Describe the input, start the stage span (not yet current) and the clock."""
        audio_id, pipeline = current_audio()
        rate = self.signature.sample_rate(args, kwargs)
        if rate is None:
            rate = self.overrides.sample_rate
        value, found = self.signature.find_audio(args, kwargs, rate)
        if self.has_overrides:
            info = AudioInfo(**{name: getattr(self.overrides, name) for name in _INFO_FIELDS}).merge(found)
        else:
            info = found if found is not None else AudioInfo()
        if info.sample_rate is None and is_sample_rate(rate):
            info.sample_rate = int(rate)  # streaming stages: chunks arrive later, at this rate
        attrs: dict[str, Any] = {semconv.AUDIO_STAGE: self.name, **self.extra, **info.attributes()}
        if audio_id is not None:
            attrs[semconv.AUDIO_ID] = audio_id
        if pipeline is not None:
            attrs[semconv.AUDIO_PIPELINE] = pipeline
        inst = instruments.current()
        span = inst.tracer.start_span(self.name, attributes=attrs)
        return _Call(self, inst, span, info, value, pipeline)


class _Call:
    """One in-flight stage call: ends its span and records metrics exactly once."""

    __slots__ = ("audio_seconds", "ctx", "info", "input", "inst", "pipeline", "span", "stage", "start")

    def __init__(
        self,
        stage: _Stage,
        inst: instruments.Instruments,
        span: Span,
        info: AudioInfo,
        value: Any,
        pipeline: str | None,
    ) -> None:
        self.stage = stage
        self.inst = inst
        self.span = span
        self.info = info
        self.input = value
        self.pipeline = pipeline
        self.ctx = trace.set_span_in_context(span)
        self.audio_seconds = 0.0
        self.start = time.perf_counter()

    def add_chunk(self, chunk: Any) -> None:
        """Count a yielded chunk's audio toward the processed seconds (streaming stages)."""
        found = describe(chunk, self.info.sample_rate)
        if found is not None and found.duration is not None:
            self.audio_seconds += found.duration

    def succeed(self, result: Any = None) -> None:
        elapsed = time.perf_counter() - self.start
        output = describe(result, self.info.sample_rate) if result is not None else None
        if output is not None and output != self.info and self.span.is_recording():
            known = self.info.attributes()
            missing = {k: v for k, v in output.attributes().items() if k not in known}
            if missing:
                self.span.set_attributes(missing)
        self._record(elapsed, output, result)
        self.span.end()

    def fail(self, exc: BaseException) -> None:
        elapsed = time.perf_counter() - self.start
        if isinstance(exc, Exception):
            kind = error_type(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))
            self.span.record_exception(exc, escaped=True)
            self.span.set_attribute(semconv.ERROR_TYPE, kind)
            if not getattr(exc, RECORDED, False):
                attrs = {**self.stage.metric_attributes(self.pipeline), semconv.ERROR_TYPE: kind}
                self.inst.errors.add(1, attrs)
                mark_recorded(exc)
        self._record(elapsed, None, None)
        self.span.end()

    def _record(self, elapsed: float, output: AudioInfo | None, result: Any) -> None:
        inst = self.inst
        attrs = self.stage.metric_attributes(self.pipeline)
        inst.stage_duration.record(elapsed, attrs)
        seconds = self.audio_seconds or self.info.duration or (output.duration if output else None)
        if seconds:
            inst.processed_duration.add(seconds, attrs)
            rtf = elapsed / seconds
            inst.realtime_factor.record(rtf, attrs)
            if self.span.is_recording():
                self.span.set_attribute(semconv.AUDIO_REALTIME_FACTOR, rtf)
        if self._signal_enabled():
            self._record_signal("input", self.input, attrs)
            self._record_signal("output", result, attrs)

    def _signal_enabled(self) -> bool:
        enabled = settings.signal_metrics if self.stage.signal is None else self.stage.signal
        return enabled and random.random() < settings.signal_sample_ratio

    def _record_signal(self, direction: str, value: Any, attrs: Mapping[str, str]) -> None:
        if isinstance(value, tuple) and len(value) == 2:
            value = value[0]  # (audio, sample_rate)
        if value is None or not hasattr(value, "shape"):
            return
        stats = signal_stats(value, self.info.sample_rate)
        if stats is None:
            return
        signal_attrs = {**attrs, semconv.AUDIO_DIRECTION: direction}
        signal_instruments = self.inst.signal
        for name, number in stats.metric_values().items():
            signal_instruments[name].record(number, signal_attrs)
        if self.span.is_recording():
            self.span.add_event("audio.signal", {semconv.AUDIO_DIRECTION: direction, **stats.attributes()})


def mark_recorded(exc: BaseException) -> None:
    """Flag an exception as counted, so an enclosing stage or pipeline does not count it again."""
    try:
        setattr(exc, RECORDED, True)
    except AttributeError:  # exceptions with __slots__; they may be counted again upstream
        pass


def _wrap_function(stage: _Stage) -> Callable[..., Any]:
    fn = stage.fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        state = stage.begin(args, kwargs)
        token = context.attach(state.ctx)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            state.fail(exc)
            raise
        finally:
            context.detach(token)
        state.succeed(result)
        return result

    return call


def _wrap_coroutine(stage: _Stage) -> Callable[..., Any]:
    fn = stage.fn

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        state = stage.begin(args, kwargs)
        token = context.attach(state.ctx)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            state.fail(exc)
            raise
        finally:
            context.detach(token)
        state.succeed(result)
        return result

    return call


def _wrap_generator(stage: _Stage) -> Callable[..., Any]:
    """The span covers the whole iteration; the stage context is current only while it runs.

    Between items the consumer's context is restored, so spans the consumer starts while
    iterating are not wrongly parented under the stage.
    """
    fn = stage.fn

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        state = stage.begin(args, kwargs)
        gen = fn(*args, **kwargs)
        resume, value = gen.send, None
        try:
            while True:
                token = context.attach(state.ctx)
                try:
                    item = resume(value)
                finally:
                    context.detach(token)
                state.add_chunk(item)
                try:
                    value = yield item
                    resume = gen.send
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as thrown:  # consumer's gen.throw(): deliver it inside
                    resume, value = gen.throw, thrown
        except StopIteration as stop:
            state.succeed(None)
            return stop.value
        except GeneratorExit:
            state.succeed(None)  # the consumer stopped early; that is not a failure
            raise
        except BaseException as exc:
            state.fail(exc)
            raise

    return call


def _wrap_async_generator(stage: _Stage) -> Callable[..., Any]:
    fn = stage.fn

    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> Any:
        state = stage.begin(args, kwargs)
        agen = fn(*args, **kwargs)
        try:
            while True:
                token = context.attach(state.ctx)
                try:
                    item = await agen.__anext__()
                finally:
                    context.detach(token)
                state.add_chunk(item)
                yield item
        except StopAsyncIteration:
            state.succeed(None)
        except GeneratorExit:
            await agen.aclose()
            state.succeed(None)
            raise
        except BaseException as exc:
            state.fail(exc)
            raise

    return call


def audio_stage(
    name: str | Callable[..., Any] | None = None,
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    format: str | None = None,
    codec: str | None = None,
    bit_depth: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    signal: bool | None = None,
) -> Any:
    """Decorate a pipeline stage; usable bare (``@audio_stage``) or with a name.

    Args:
        name: the stage name (span name and ``audio.stage``); defaults to the function name.
        sample_rate, channels, format, codec, bit_depth: explicit audio attributes, taking
            precedence over what is found in the arguments (e.g. for raw PCM bytes).
        attributes: further static span attributes (not put on metrics).
        signal: compute signal metrics for this stage regardless of the global setting
            (``True``/``False``); ``None`` follows :func:`otel_audio.configure`.
    """
    overrides = AudioInfo(
        sample_rate=sample_rate, channels=channels, format=format, codec=codec, bit_depth=bit_depth
    )

    def decorate(fn: F) -> F:
        stage = _Stage(
            fn, name if isinstance(name, str) else fn.__name__, overrides, attributes or {}, signal
        )
        if inspect.isasyncgenfunction(fn):
            return _wrap_async_generator(stage)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):
            return _wrap_coroutine(stage)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(stage)  # type: ignore[return-value]
        return _wrap_function(stage)  # type: ignore[return-value]

    if callable(name):
        fn, name = name, None
        return decorate(fn)
    return decorate
