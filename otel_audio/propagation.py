"""Carry the trace and the file being processed across threads, tasks, processes and job queues.

OpenTelemetry keeps the active span in a :mod:`contextvars` context. ``asyncio`` tasks copy
that context when they are created, so spans started in a task nest under the caller without
help. Threads do not: ``concurrent.futures`` runs work in whatever context the worker thread
has, which is empty, so the work would start new, unrelated traces. :class:`ContextExecutor`
and :func:`wrap` run the work inside a copy of the submitter's context.

Across processes and queues the context travels as text: :func:`inject` writes W3C
``traceparent``/``tracestate`` and ``baggage`` entries (the propagators configured by
``OTEL_PROPAGATORS``, by default exactly these) into a dict that goes with the job, and
:func:`attached` (or :func:`extract`) continues the trace on the other side. The file's
``audio.id`` and pipeline name travel as baggage, so stages in a worker process still tag
their spans with the right file.

Example::

    carrier = inject()                    # in the producer, inside an audio_pipeline
    queue.put({"path": path, "otel": carrier})

    job = queue.get()                     # in the consumer process
    with attached(job["otel"]):
        enhance(job["path"])              # a child of the producer's pipeline span
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from opentelemetry import baggage, context, propagate

from otel_audio import semconv

T = TypeVar("T")


def wrap(fn: Callable[..., T]) -> Callable[..., T]:
    """Bind ``fn`` to a copy of the current context, to run later in any thread."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run_in_context(*args: Any, **kwargs: Any) -> T:
        return ctx.copy().run(fn, *args, **kwargs)

    return run_in_context


class ContextExecutor(concurrent.futures.ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose tasks run in the submitter's context.

    Drop-in replacement: stage spans created by submitted work are children of the span that
    was current at ``submit`` (or ``map``) time, and carry the same ``audio.id``.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def inject(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """Write the current trace context and audio baggage into ``carrier`` (a new dict by default)."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, str]) -> context.Context:
    """The context described by a carrier from :func:`inject`, for ``tracer.start_span(context=...)``."""
    return propagate.extract(carrier)


@contextlib.contextmanager
def attached(carrier: Mapping[str, str]) -> Iterator[context.Context]:
    """Make the carrier's context current for the ``with`` block (the consumer side of a queue)."""
    ctx = extract(carrier)
    token = context.attach(ctx)
    try:
        yield ctx
    finally:
        context.detach(token)


def with_audio(ctx: context.Context | None, audio_id: str | None, pipeline: str | None) -> context.Context:
    """``ctx`` with the file's id and pipeline name set as baggage (what stages read)."""
    if audio_id is not None:
        ctx = baggage.set_baggage(semconv.AUDIO_ID, audio_id, ctx)
    if pipeline is not None:
        ctx = baggage.set_baggage(semconv.AUDIO_PIPELINE, pipeline, ctx)
    return ctx if ctx is not None else context.get_current()


def current_audio() -> tuple[str | None, str | None]:
    """``(audio_id, pipeline)`` of the file being processed in this context, if any."""
    values = baggage.get_all()
    if not values:
        return None, None
    audio_id = values.get(semconv.AUDIO_ID)
    pipeline = values.get(semconv.AUDIO_PIPELINE)
    return (
        str(audio_id) if audio_id is not None else None,
        str(pipeline) if pipeline is not None else None,
    )
