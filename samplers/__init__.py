"""Sampling for otel-audio: keep trace volume bounded without losing the traces that matter.

Sampling decides which traces are exported. otel-audio does it in two places:

- **Head sampling** (:class:`AdaptiveSampler`) decides when a trace's root span starts. It keeps
  a steady target of traces per second for each operation, whatever the traffic, lowers the
  probability when the host is overloaded, always keeps spans started with ``error.type`` or
  ``sampling.priority > 0``, and lets children follow their parent so traces stay whole.
  Decisions are consistent (:mod:`otel_audio.samplers.consistent`, the OpenTelemetry
  "TraceState: Probability Sampling" scheme): the probability is recorded as ``ot=th:...`` in
  the tracestate and as the ``sampling.probability`` attribute.
- **Tail promotion** (:class:`TailPromotionProcessor`) decides when spans end. With the head
  sampler recording the traces it did not sample, the processor exports those that end in an
  error or run slower than a threshold, marked ``sampling.promoted=True``, and drops the rest
  whole.

**The unbiasedness rule.** Estimators count only spans with ``sampling.promoted`` absent or
false, weighted by 1/p (from ``th`` or ``sampling.probability``). Promoted spans are for
inspection. Head-sampled spans are a probability sample, so their weighted sums estimate true
request counts and error ratios at any sampling rate; promoted spans are a selection of errors
and slow traces, and counting them would inflate exactly the numbers alerts watch.

Configuration in code:

.. code:: python

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from otel_audio.samplers import AdaptiveSampler, TailPromotionProcessor

    provider = TracerProvider(sampler=AdaptiveSampler(10, record_only_for_tail=True))
    provider.add_span_processor(TailPromotionProcessor(BatchSpanProcessor(exporter), latency_threshold_s=2.0))

Configuration by environment, through the ``opentelemetry_traces_sampler`` entry point
``audio_adaptive`` (honoured by the SDK configurator, e.g. ``opentelemetry-instrument``):

- ``OTEL_TRACES_SAMPLER=audio_adaptive``
- ``OTEL_TRACES_SAMPLER_ARG=10`` (target traces per second per operation) or key=value pairs
  such as ``target=5,min_p=0.001,load_threshold=0.8``; see
  :mod:`otel_audio.samplers.factory` for every key.
"""

from otel_audio.samplers.adaptive import AdaptiveSampler
from otel_audio.samplers.factory import adaptive_sampler_factory
from otel_audio.samplers.tail import TailPromotionProcessor

__all__ = ["AdaptiveSampler", "TailPromotionProcessor", "adaptive_sampler_factory"]
