"""TailPromotionProcessor: failing and slow record-only traces are exported whole, others never."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, StaticSampler
from opentelemetry.trace import StatusCode

from otel_audio.samplers import TailPromotionProcessor
from otel_audio.semconv import SAMPLING_PROMOTED

SECOND = 1_000_000_000
RECORD_ONLY = StaticSampler(Decision.RECORD_ONLY)  # the head sampler said no, but keep recording


def _setup(sampler=RECORD_ONLY, **kwargs):
    exporter = InMemorySpanExporter()
    tail = TailPromotionProcessor(SimpleSpanProcessor(exporter), **kwargs)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(tail)
    return provider.get_tracer(__name__), tail, exporter


def _start(tracer, name, parent=None, at=0):
    context = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=context, start_time=at * SECOND)


def _end(span, at=1, error=False):
    if error:
        span.set_status(StatusCode.ERROR, "enhancement failed")
    span.end(end_time=at * SECOND)


def _names(exporter):
    return sorted(span.name for span in exporter.get_finished_spans())


def test_sampled_spans_pass_through_untouched():
    tracer, tail, exporter = _setup(sampler=ALWAYS_ON)
    root = _start(tracer, "root")
    _end(_start(tracer, "child", root), error=True)
    _end(root)
    spans = exporter.get_finished_spans()
    assert _names(exporter) == ["child", "root"]
    assert all(SAMPLING_PROMOTED not in span.attributes for span in spans)
    assert tail.promoted_traces == 0
    assert tail.buffered_spans == 0


def test_error_promotes_buffered_spans_of_the_trace():
    tracer, tail, exporter = _setup()
    root = _start(tracer, "root")
    _end(_start(tracer, "load", root))
    assert exporter.get_finished_spans() == ()  # undecided: buffered, not exported
    _end(_start(tracer, "enhance", root), error=True)
    _end(root)
    assert _names(exporter) == ["enhance", "load", "root"]
    assert tail.promoted_traces == 1


def test_promoted_spans_are_marked_and_flagged_sampled():
    tracer, _, exporter = _setup()
    root = tracer.start_span("root", attributes={"audio.id": "a1"})
    _end(root, error=True)
    (span,) = exporter.get_finished_spans()
    assert span.attributes[SAMPLING_PROMOTED] is True
    assert span.attributes["audio.id"] == "a1"
    assert span.context.trace_flags.sampled  # the SDK's processors skip unsampled spans
    assert span.context.span_id == root.get_span_context().span_id


def test_slow_span_promotes_trace():
    tracer, tail, exporter = _setup(latency_threshold_s=1.0)
    root = _start(tracer, "root", at=0)
    _end(_start(tracer, "enhance", root, at=0), at=2)
    _end(root, at=3)
    assert _names(exporter) == ["enhance", "root"]
    assert tail.promoted_traces == 1


def test_fast_trace_without_error_is_dropped_whole():
    tracer, tail, exporter = _setup(latency_threshold_s=1.0)
    root = _start(tracer, "root", at=0)
    _end(_start(tracer, "enhance", root, at=0), at=0.5)
    _end(root, at=0.9)
    assert exporter.get_finished_spans() == ()
    assert tail.dropped_traces == 1
    assert tail.buffered_traces == 0
    assert tail.buffered_spans == 0


def test_late_span_of_promoted_trace_is_exported():
    tracer, _, exporter = _setup()
    root = _start(tracer, "root")
    late = _start(tracer, "upload", root)
    _end(root, error=True)
    _end(late, at=5)
    assert _names(exporter) == ["root", "upload"]
    assert all(span.attributes[SAMPLING_PROMOTED] for span in exporter.get_finished_spans())


def test_late_spans_of_dropped_trace_are_never_exported():
    tracer, tail, exporter = _setup()
    root = _start(tracer, "root")
    late_ok = _start(tracer, "upload", root)
    late_failing = _start(tracer, "notify", root)
    _end(root)
    _end(late_ok, at=5)
    _end(late_failing, at=6, error=True)  # too late: the trace was decided when its root ended
    assert exporter.get_finished_spans() == ()
    assert tail.dropped_spans == 3


def test_remote_parent_span_counts_as_local_root():
    tracer, tail, exporter = _setup()
    remote = trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(0))
    server = tracer.start_span("server", context=trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    _end(_start(tracer, "enhance", server))
    _end(server)
    assert exporter.get_finished_spans() == ()
    assert tail.dropped_traces == 1
    assert tail.buffered_traces == 0


def test_trace_bound_evicts_oldest_trace_and_counts_it():
    tracer, tail, exporter = _setup(max_traces=3)
    roots = [_start(tracer, f"root{i}") for i in range(5)]
    for root in roots:
        _end(_start(tracer, "child", root))
    assert tail.buffered_traces == 3
    assert tail.evicted_traces == 2
    _end(roots[0], error=True)  # evicted traces are treated as dropped: no fragments later
    assert exporter.get_finished_spans() == ()


def test_span_bound_evicts_oldest_trace_and_counts_it():
    tracer, tail, _ = _setup(max_spans=5)
    roots = [_start(tracer, f"root{i}") for i in range(3)]
    for root in roots:
        _end(_start(tracer, "a", root))
        _end(_start(tracer, "b", root))
    assert tail.buffered_spans == 4
    assert tail.evicted_traces == 1


def test_decision_cache_is_bounded():
    tracer, tail, _ = _setup(decision_cache_size=2)
    for i in range(5):
        _end(_start(tracer, f"root{i}"))
    assert tail.dropped_traces == 5
    assert tail.remembered_decisions == 2


def test_force_flush_flushes_downstream():
    exporter = InMemorySpanExporter()
    tail = TailPromotionProcessor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(tail)
    provider.get_tracer(__name__).start_span("root").end()
    assert tail.force_flush()
    assert len(exporter.get_finished_spans()) == 1
    provider.shutdown()


@pytest.mark.parametrize("kwargs", [{"latency_threshold_s": 0}, {"max_traces": 0}, {"max_spans": 0}])
def test_rejects_nonsensical_limits(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TailPromotionProcessor(SimpleSpanProcessor(InMemorySpanExporter()), **kwargs)
