"""Unbiased sampling: consistent thresholds, and counts estimated from 1% of 100k requests."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import StatusCode, TraceState

from otel_audio.samplers import AdaptiveSampler, TailPromotionProcessor, consistent
from otel_audio.semconv import SAMPLING_PROBABILITY, SAMPLING_PROMOTED

# --- consistent probability sampling (OTEP 235) ------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "th"),
    [(1, "0"), (0.5, "8"), (0.25, "c"), (Fraction(1, 3), "aaaaaaaaaaaaab"), (0.001, "ffbe76c8b43958")],
)
def test_th_encoding_matches_specification_examples(probability, th):
    assert consistent.encode_th(consistent.probability_to_threshold(probability)) == th


def test_float_one_third_encodes_like_the_go_reference():
    # The float nearest 1/3 is just below it, so its threshold is one unit above the exact one.
    assert consistent.encode_th(consistent.probability_to_threshold(1 / 3)) == "aaaaaaaaaaaaac"


@pytest.mark.parametrize("probability", [1.0, 0.5, 0.1, 0.01, 1e-6, 2**-56])
def test_probability_threshold_round_trip(probability):
    threshold = consistent.probability_to_threshold(probability)
    assert consistent.threshold_to_probability(threshold) == pytest.approx(probability, rel=1e-12)


@pytest.mark.parametrize("threshold", [0, 1, 2**55, 0xAAAAAAAAAAAAAB, 2**56 - 1])
def test_th_encode_parse_round_trip(threshold):
    assert consistent.parse_th(consistent.encode_th(threshold)) == threshold


def test_zero_probability_clamps_to_largest_threshold():
    assert consistent.probability_to_threshold(0) == consistent.MAX_THRESHOLD - 1


@pytest.mark.parametrize("bad", ["", "g", "ABC", "123456789012345"])
def test_parse_th_rejects_malformed_values(bad):
    with pytest.raises(ValueError, match="1 to 14 lower-case hex digits"):
        consistent.parse_th(bad)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_probability_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        consistent.probability_to_threshold(bad)


def test_adjusted_count_is_inverse_probability():
    state = TraceState([("ot", "th:c")])
    assert consistent.adjusted_count_from_tracestate(state) == 4.0
    assert consistent.adjusted_count_from_tracestate(TraceState()) is None


def test_update_ot_keeps_other_subkeys_and_vendors():
    state = TraceState([("vendor", "x"), ("ot", "rv:0123456789abcd;p:8")])
    updated = consistent.update_ot(state, th="c")
    assert updated.to_header() == "ot=rv:0123456789abcd;p:8;th:c,vendor=x"
    assert consistent.update_ot(updated, th=None, rv=None, p=None).to_header() == "vendor=x"


def test_explicit_rv_overrides_trace_id_randomness():
    state = TraceState([("ot", "rv:00000000000001")])
    assert consistent.randomness(consistent.RANDOMNESS_MASK, state) == 1
    assert consistent.randomness(0xFF << 56 | 5) == 5


def test_decision_is_deterministic_and_nested_across_probabilities():
    rng = random.Random(1)
    ids = [rng.getrandbits(128) for _ in range(2000)]
    thresholds = [consistent.probability_to_threshold(p) for p in (0.5, 0.1, 0.01)]
    kept = [{i for i in ids if consistent.is_sampled(consistent.randomness(i), t)} for t in thresholds]
    again = {i for i in ids if consistent.is_sampled(consistent.randomness(i), thresholds[0])}
    assert kept[0] == again
    assert kept[0] >= kept[1] >= kept[2]  # sampled at p implies sampled at every p' > p


@pytest.mark.parametrize("probability", [0.5, 0.1, 0.01])
def test_sampled_fraction_matches_probability(probability):
    rng = random.Random(2)
    n = 200_000
    threshold = consistent.probability_to_threshold(probability)
    kept = sum(
        consistent.is_sampled(rng.getrandbits(128) & consistent.RANDOMNESS_MASK, threshold) for _ in range(n)
    )
    standard_error = math.sqrt(n * probability * (1 - probability))
    assert abs(kept - n * probability) < 4 * standard_error


# --- the property: estimates from sampled spans are unbiased ---------------------------

REQUESTS = 100_000
REQUESTS_PER_SECOND = 1000
TARGET_PER_SECOND = 10  # with 1000 req/s: ~1% effective sampling
ERROR_RATE = 0.05
SEED = 2024


class _SeededIds(IdGenerator):
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _simulate() -> tuple[list, int]:
    """Run the requests through the real SDK; return exported spans and the true error count.

    Errors are set at the end of the request, as status, so the head sampler cannot see them.
    Every tenth request has two child spans.
    """
    clock, rng = _Clock(), random.Random(SEED)
    sampler = AdaptiveSampler(
        TARGET_PER_SECOND, record_only_for_tail=True, clock=clock, load_provider=lambda: 0.0
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, id_generator=_SeededIds(SEED))
    provider.add_span_processor(TailPromotionProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer(__name__)
    errors = 0
    for i in range(REQUESTS):
        clock.now = i / REQUESTS_PER_SECOND
        start = i * 1_000_000
        root = tracer.start_span("enhance", start_time=start)
        if i % 10 == 0:
            context = trace.set_span_in_context(root)
            tracer.start_span("load_audio", context=context, start_time=start).end(end_time=start + 100)
            tracer.start_span("denoise", context=context, start_time=start).end(end_time=start + 200)
        if rng.random() < ERROR_RATE:
            errors += 1
            root.set_status(StatusCode.ERROR, "enhancement failed")
        root.end(end_time=start + 500)
    return list(exporter.get_finished_spans()), errors


@pytest.fixture(scope="module")
def simulation():
    return _simulate()


def _weighted(spans) -> tuple[float, float, float]:
    """Weighted request count, error count and sum of squared weights, over root spans."""
    count = errors = squares = 0.0
    for span in spans:
        weight = consistent.adjusted_count_from_tracestate(span.context.trace_state)
        count += weight
        squares += weight * weight
        errors += weight * (span.status.status_code is StatusCode.ERROR)
    return count, errors, squares


def _roots(spans, promoted: bool) -> list:
    return [s for s in spans if s.parent is None and bool(s.attributes.get(SAMPLING_PROMOTED)) is promoted]


def test_weighted_request_count_is_within_five_percent(simulation):
    spans, _ = simulation
    count, _, _ = _weighted(_roots(spans, promoted=False))
    # Standard error at these sizes is ~3.1% (sqrt((1-p)/(N p))); the seed is fixed.
    assert count == pytest.approx(REQUESTS, rel=0.05)


def test_weighted_error_ratio_is_unbiased_despite_promotion(simulation):
    spans, true_errors = simulation
    head = _roots(spans, promoted=False)
    count, errors, squares = _weighted(head)
    ratio, true_ratio = errors / count, true_errors / REQUESTS
    # ~1000 sampled requests hold ~50 errors, so the ratio's standard error is ~14% of itself:
    # "within 5%" is not a property any 1% sample of 100k has. Allow three standard errors.
    effective_n = count * count / squares
    standard_error = math.sqrt(true_ratio * (1 - true_ratio) / effective_n)
    assert abs(ratio - true_ratio) < 3 * standard_error

    # Promoted spans were exported, and counting them as the rule forbids would bias the ratio.
    promoted = _roots(spans, promoted=True)
    assert len(promoted) > len(head)
    biased_count, biased_errors, _ = _weighted(head + promoted)
    assert biased_errors / biased_count > 10 * true_ratio


def test_every_failed_request_is_exported(simulation):
    spans, true_errors = simulation
    failed = [s for s in spans if s.parent is None and s.status.status_code is StatusCode.ERROR]
    assert len(failed) == true_errors


def test_exported_spans_carry_probability_in_tracestate_and_attribute(simulation):
    spans, _ = simulation
    for span in spans:
        threshold = consistent.threshold_from_tracestate(span.context.trace_state)
        assert span.attributes[SAMPLING_PROBABILITY] == consistent.threshold_to_probability(threshold)


def test_promoted_spans_were_not_head_sampled(simulation):
    spans, _ = simulation
    for span in _roots(spans, promoted=True):
        threshold = consistent.threshold_from_tracestate(span.context.trace_state)
        assert consistent.randomness(span.context.trace_id) < threshold
