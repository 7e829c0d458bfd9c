"""In-process tail promotion: keep the slow and failing traces the head sampler passed over.

A head sampler decides when a trace starts, before anyone knows whether it will fail. Tail
sampling decides when the trace is over. :class:`TailPromotionProcessor` does the part of that
which fits inside one process, cheaply:

1. The head sampler (``AdaptiveSampler(record_only_for_tail=True)``) *records* the traces it
   does not sample (``Decision.RECORD_ONLY``): spans are built but their sampled flag is off.
2. Sampled spans pass straight through to the downstream processor (usually a
   ``BatchSpanProcessor``), untouched.
3. Record-only spans are buffered per trace id. When one of them ends with status ``ERROR``,
   or lasted longer than ``latency_threshold_s``, the trace is *promoted*: its buffered spans
   are exported, and later spans of the trace follow as they end.
4. When the local root of a trace that was not promoted ends, its buffer is dropped. Its trace
   id goes into a bounded cache of "dropped" decisions, and spans that end after the root are
   dropped too, never exported one by one.

Promoted spans are marked with ``sampling.promoted=True`` and exported with the sampled flag
set (the SDK's span processors silently skip unsampled spans). They keep the head sampler's
``sampling.probability`` attribute and ``ot=th`` tracestate: the probability at which the
trace was *not* sampled, so the trace's randomness ``R`` is below that threshold ``T``.

The unbiasedness rule (receivers and the spanmetrics processor follow it):

    **Estimators count only spans with ``sampling.promoted`` absent or false, weighted by 1/p.
    Promoted spans are for inspection.**

Head-sampled spans are a probability sample, so the sum of their 1/p weights estimates the
true count. Promoted spans are an extra, non-random selection (all errors, all slow traces);
weighting them would count every error about 1/p times over.

Memory is bounded: at most ``max_traces`` traces and ``max_spans`` spans are buffered. When
either is exceeded the oldest trace is evicted (``evicted_traces`` counts them) and treated as
dropped, so a fragment of it is never exported later. Decisions are remembered for the last
``decision_cache_size`` traces of each kind.

Usage:

.. code:: python

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from otel_audio.samplers import AdaptiveSampler, TailPromotionProcessor

    provider = TracerProvider(sampler=AdaptiveSampler(10, record_only_for_tail=True))
    provider.add_span_processor(
        TailPromotionProcessor(BatchSpanProcessor(exporter), latency_threshold_s=2.0)
    )

Limits: decisions are per process. A trace that fails in another service is promoted only
there; a trace with several local roots (several requests of one remote trace) is dropped when
the first of them ends unpromoted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, StatusCode, TraceFlags

from otel_audio.semconv import SAMPLING_PROMOTED


class TailPromotionProcessor(SpanProcessor):
    """Export record-only traces that fail or run slow; drop the rest whole.

    Args:
        downstream: Processor that receives sampled and promoted spans, e.g.
            ``BatchSpanProcessor(exporter)``. Shut down and flushed with this one.
        latency_threshold_s: Promote a trace when one of its spans lasts longer than this;
            ``None`` promotes on errors only.
        max_traces: Most traces buffered at once.
        max_spans: Most spans buffered at once, over all traces.
        decision_cache_size: Trace ids remembered per decision (promoted, dropped) so that
            spans ending after the decision are handled the same way.
    """

    def __init__(
        self,
        downstream: SpanProcessor,
        *,
        latency_threshold_s: float | None = None,
        max_traces: int = 10_000,
        max_spans: int = 100_000,
        decision_cache_size: int = 100_000,
    ) -> None:
        if latency_threshold_s is not None and latency_threshold_s <= 0:
            raise ValueError(f"latency_threshold_s must be > 0 or None, got {latency_threshold_s!r}")
        for name, value in (
            ("max_traces", max_traces),
            ("max_spans", max_spans),
            ("decision_cache_size", decision_cache_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self._downstream = downstream
        self._latency_ns = None if latency_threshold_s is None else int(latency_threshold_s * 1e9)
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._cache_size = decision_cache_size

        self._lock = threading.Lock()
        # Insertion order is age: the first trace is the oldest, evicted first.
        self._buffers: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._buffered_spans = 0
        self._promoted: OrderedDict[int, None] = OrderedDict()
        self._dropped: OrderedDict[int, None] = OrderedDict()

        self.promoted_traces = 0
        """Traces exported because a span failed or ran slow."""
        self.promoted_spans = 0
        """Spans exported as part of promoted traces."""
        self.dropped_traces = 0
        """Traces whose local root ended without promotion."""
        self.dropped_spans = 0
        """Record-only spans discarded (buffered, late or evicted)."""
        self.evicted_traces = 0
        """Traces pushed out of the buffer by the memory bound before a decision."""

    # --- SpanProcessor interface ------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.context.trace_flags.sampled:
            self._downstream.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        if span.context.trace_flags.sampled:
            self._downstream._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or context.trace_flags.sampled:
            self._downstream.on_end(span)
            return

        trace_id = context.trace_id
        to_export: list[ReadableSpan] = []
        with self._lock:
            if trace_id in self._promoted:
                to_export.append(span)
            elif trace_id in self._dropped:
                self.dropped_spans += 1
            elif self._is_interesting(span):
                to_export = self._pop_buffer(trace_id)
                to_export.append(span)
                self._remember(self._promoted, trace_id)
                self.promoted_traces += 1
            elif _is_local_root(span):
                self.dropped_spans += len(self._pop_buffer(trace_id)) + 1
                self._remember(self._dropped, trace_id)
                self.dropped_traces += 1
            else:
                self._buffer(trace_id, span)
            self.promoted_spans += len(to_export)
        # Export outside the lock: the downstream processor may block (SimpleSpanProcessor).
        for promoted in to_export:
            self._downstream.on_end(_mark_promoted(promoted))

    def shutdown(self) -> None:
        with self._lock:
            self._buffers.clear()
            self._buffered_spans = 0
        self._downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the downstream processor. Undecided traces stay buffered: not yet known."""
        return self._downstream.force_flush(timeout_millis)

    # --- Inspection -------------------------------------------------------------------------

    @property
    def buffered_traces(self) -> int:
        """Traces waiting for a decision."""
        return len(self._buffers)

    @property
    def buffered_spans(self) -> int:
        """Spans waiting for a decision, over all traces."""
        return self._buffered_spans

    @property
    def remembered_decisions(self) -> int:
        """Trace ids in the decision caches (promoted and dropped)."""
        return len(self._promoted) + len(self._dropped)

    # --- Internals (called with the lock held) ----------------------------------------------

    def _is_interesting(self, span: ReadableSpan) -> bool:
        if span.status.status_code is StatusCode.ERROR:
            return True
        if self._latency_ns is None or span.start_time is None or span.end_time is None:
            return False
        return span.end_time - span.start_time > self._latency_ns

    def _buffer(self, trace_id: int, span: ReadableSpan) -> None:
        spans = self._buffers.get(trace_id)
        if spans is None:
            spans = self._buffers[trace_id] = []
        spans.append(span)
        self._buffered_spans += 1
        while len(self._buffers) > self._max_traces or self._buffered_spans > self._max_spans:
            evicted_id, evicted = self._buffers.popitem(last=False)
            self._buffered_spans -= len(evicted)
            self.dropped_spans += len(evicted)
            self.evicted_traces += 1
            self._remember(self._dropped, evicted_id)

    def _pop_buffer(self, trace_id: int) -> list[ReadableSpan]:
        spans = self._buffers.pop(trace_id, None)
        if spans is None:
            return []
        self._buffered_spans -= len(spans)
        return spans

    def _remember(self, cache: OrderedDict[int, None], trace_id: int) -> None:
        cache[trace_id] = None
        if len(cache) > self._cache_size:
            cache.popitem(last=False)


def _is_local_root(span: ReadableSpan) -> bool:
    """A span is this process's root of its trace if it has no parent or a remote one."""
    parent = span.parent
    return parent is None or parent.is_remote


def _mark_promoted(span: ReadableSpan) -> ReadableSpan:
    """Copy a finished span with ``sampling.promoted=True`` and the sampled flag set.

    Finished spans are immutable, hence the copy. The sampled flag is set because the SDK's
    span processors skip unsampled spans; the attribute (and ``R < T`` in the tracestate) keeps
    the span recognisable as promoted.
    """
    context = span.context
    flags = TraceFlags(context.trace_flags | TraceFlags.SAMPLED)
    return ReadableSpan(
        name=span.name,
        context=SpanContext(
            context.trace_id,
            context.span_id,
            is_remote=context.is_remote,
            trace_flags=flags,
            trace_state=context.trace_state,
        ),
        parent=span.parent,
        resource=span.resource,
        attributes={**(span.attributes or {}), SAMPLING_PROMOTED: True},
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
