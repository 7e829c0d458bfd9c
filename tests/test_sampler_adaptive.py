"""AdaptiveSampler and its entry-point factory: budgets per operation, forcing, parents, load."""

from __future__ import annotations

import importlib.metadata
import os
import random
import subprocess
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk._configuration import _import_sampler
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

from otel_audio.samplers import AdaptiveSampler, adaptive_sampler_factory, consistent
from otel_audio.semconv import ERROR_TYPE, SAMPLING_PRIORITY, SAMPLING_PROBABILITY

TARGET = 10.0


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SeededIds(IdGenerator):
    """Reproducible random ids (the SDK's default generator draws from the global `random`)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def _sampler(clock: FakeClock, **kwargs) -> AdaptiveSampler:
    kwargs.setdefault("load_provider", lambda: 0.0)
    return AdaptiveSampler(TARGET, clock=clock, **kwargs)


def _drive(sampler, clock, rng, rates, start, seconds) -> dict[str, list[int]]:
    """Send ``rates[name]`` evenly spaced root arrivals per second; sampled count per second."""
    counts = {name: [0] * seconds for name in rates}
    arrivals = sorted(
        (start + second + i / rate, name)
        for name, rate in rates.items()
        for second in range(seconds)
        for i in range(rate)
    )
    for when, name in arrivals:
        clock.now = when
        result = sampler.should_sample(None, rng.getrandbits(128), name)
        if result.decision.is_sampled():
            counts[name][int(when - start)] += 1
    return counts


def _per_second(counts: list[int], last: int) -> float:
    return sum(counts[-last:]) / last


def _provider(sampler, seed: int = 1) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, id_generator=SeededIds(seed))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer(__name__), exporter


def _warm(sampler, clock, name="op", rate=1000, seconds=5) -> None:
    _drive(sampler, clock, random.Random(99), {name: rate}, clock.now, seconds)


def _remote_parent(trace_id: int, sampled: bool, trace_state: TraceState) -> trace.Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(trace_id, 0x1234, is_remote=True, trace_flags=flags, trace_state=trace_state)
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


# --- rate adaptation -------------------------------------------------------------------------


def test_sampled_rate_tracks_target_as_traffic_changes():
    clock, rng = FakeClock(), random.Random(7)
    sampler = _sampler(clock)
    measured = []
    start = 0.0
    for rate in (1000, 100, 5000):
        counts = _drive(sampler, clock, rng, {"enhance": rate}, start, 30)["enhance"]
        measured.append(_per_second(counts, last=20))
        start += 30
    for rate_per_s in measured:
        assert rate_per_s == pytest.approx(TARGET, rel=0.25), measured


def test_surge_is_contained_within_the_first_second():
    clock, rng = FakeClock(), random.Random(8)
    sampler = _sampler(clock)
    _drive(sampler, clock, rng, {"enhance": 100}, 0.0, 10)
    counts = _drive(sampler, clock, rng, {"enhance": 5000}, 10.0, 1)["enhance"]
    # Without surge detection the old p (~0.1) would keep ~500 traces in this second; with it
    # the overshoot is a few multiples of the target, for that second only.
    assert counts[0] < 10 * TARGET


def test_operations_get_separate_budgets():
    clock, rng = FakeClock(), random.Random(9)
    sampler = _sampler(clock)
    counts = _drive(sampler, clock, rng, {"enhance": 1000, "denoise": 50}, 0.0, 20)
    assert _per_second(counts["enhance"], last=10) == pytest.approx(TARGET, rel=0.25)
    assert _per_second(counts["denoise"], last=10) == pytest.approx(TARGET, rel=0.25)
    assert sampler.probability("enhance") < sampler.probability("denoise")


def test_operations_beyond_the_cap_share_one_budget():
    clock, rng = FakeClock(), random.Random(10)
    sampler = _sampler(clock, max_operations=2)
    _drive(sampler, clock, rng, {"a": 10, "b": 10, "c": 1000, "d": 1000}, 0.0, 10)
    assert sampler.tracked_operations == 2
    assert sampler.probability("c") == sampler.probability("d")
    assert sampler.probability("c") == pytest.approx(TARGET / 2000, rel=0.1)


def test_probability_is_floored_at_min_probability():
    clock, rng = FakeClock(), random.Random(11)
    sampler = _sampler(clock, min_probability=0.05)
    _drive(sampler, clock, rng, {"op": 5000}, 0.0, 5)
    assert sampler.probability("op") == pytest.approx(0.05)


# --- forced sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [{ERROR_TYPE: "TimeoutError"}, {SAMPLING_PRIORITY: 1}],
    ids=["error.type", "sampling.priority"],
)
def test_error_and_priority_attributes_force_sampling(attributes):
    clock = FakeClock()
    sampler = _sampler(clock)
    _warm(sampler, clock)
    tracer, _ = _provider(sampler)
    spans = [tracer.start_span("op", attributes=attributes) for _ in range(200)]
    assert all(span.get_span_context().trace_flags.sampled for span in spans)
    assert {span.attributes[SAMPLING_PROBABILITY] for span in spans} == {1.0}


def test_zero_priority_does_not_force_sampling():
    clock = FakeClock()
    sampler = _sampler(clock)
    _warm(sampler, clock)
    tracer, _ = _provider(sampler)
    spans = [tracer.start_span("op", attributes={SAMPLING_PRIORITY: 0}) for _ in range(200)]
    assert sum(span.get_span_context().trace_flags.sampled for span in spans) < 20


# --- parents -----------------------------------------------------------------------------------


def test_child_of_local_sampled_parent_is_sampled_with_parent_tracestate():
    clock = FakeClock()
    sampler = _sampler(clock)
    tracer, _ = _provider(sampler)
    root = tracer.start_span("op")  # a fresh operation samples at p=1
    _warm(sampler, clock)  # now p ~ 0.01: a new root decision would mostly say no
    children = [tracer.start_span("op", context=trace.set_span_in_context(root)) for _ in range(50)]
    assert all(child.get_span_context().trace_flags.sampled for child in children)
    assert {child.get_span_context().trace_state.to_header() for child in children} == {"ot=th:0"}


def test_child_of_local_unsampled_parent_is_not_sampled():
    clock = FakeClock()
    sampler = _sampler(clock)
    _warm(sampler, clock)
    tracer, _ = _provider(sampler)
    root = next(s for s in (tracer.start_span("op") for _ in range(1000)) if not s.is_recording())
    # "fresh-op" has never been seen, so as a root it would be sampled at p=1.
    child = tracer.start_span("fresh-op", context=trace.set_span_in_context(root))
    assert not child.get_span_context().trace_flags.sampled
    assert not child.is_recording()


def test_child_of_remote_sampled_parent_is_sampled_and_keeps_tracestate():
    clock = FakeClock()
    tracer, _ = _provider(_sampler(clock))
    state = TraceState([("ot", "th:8"), ("vendor", "abc")])
    # Randomness 0 is below th:8, so only following the parent can sample this trace.
    parent = _remote_parent(0xABC << 64, sampled=True, trace_state=state)
    child = tracer.start_span("op", context=parent)
    assert child.get_span_context().trace_flags.sampled
    assert child.get_span_context().trace_state.to_header() == "ot=th:8,vendor=abc"
    assert child.attributes[SAMPLING_PROBABILITY] == 0.5


def test_child_of_remote_unsampled_parent_is_not_sampled():
    clock = FakeClock()
    tracer, _ = _provider(_sampler(clock))
    # Maximal randomness passes every threshold, so only following the parent can drop it.
    parent = _remote_parent(
        (0xABC << 64) | consistent.RANDOMNESS_MASK, sampled=False, trace_state=TraceState()
    )
    child = tracer.start_span("op", context=parent)
    assert not child.get_span_context().trace_flags.sampled


# --- what is recorded --------------------------------------------------------------------------


def test_sampled_root_records_consistent_threshold_and_probability():
    clock = FakeClock()
    sampler = _sampler(clock)
    _warm(sampler, clock)
    tracer, exporter = _provider(sampler)
    for _ in range(3000):
        clock.now += 0.001  # keep the 1000/s the sampler was warmed with
        tracer.start_span("op").end()
    spans = exporter.get_finished_spans()
    assert len(spans) > 10
    for span in spans:
        threshold = consistent.threshold_from_tracestate(span.context.trace_state)
        probability = span.attributes[SAMPLING_PROBABILITY]
        assert probability < 0.05
        assert consistent.probability_to_threshold(probability) == threshold
        assert consistent.threshold_to_probability(threshold) == probability
        assert consistent.randomness(span.context.trace_id) >= threshold


def test_same_trace_id_gets_same_decision_at_same_probability():
    clock = FakeClock()
    sampler = _sampler(clock, min_probability=0.05)
    _warm(sampler, clock)  # 1000/s wants p=0.01, so p is pinned at the 0.05 floor
    rng = random.Random(3)
    ids = [rng.getrandbits(128) for _ in range(1000)]
    first = [sampler.should_sample(None, i, "op").decision.is_sampled() for i in ids]
    second = [sampler.should_sample(None, i, "op").decision.is_sampled() for i in ids]
    threshold = consistent.probability_to_threshold(0.05)
    assert first == second == [consistent.randomness(i) >= threshold for i in ids]
    assert 0 < sum(first) < len(ids)


def test_unsampled_root_is_record_only_with_would_be_threshold_when_tail_enabled():
    clock = FakeClock()
    sampler = _sampler(clock, record_only_for_tail=True)
    _warm(sampler, clock)
    rng = random.Random(4)
    results = [(i, sampler.should_sample(None, i, "op")) for i in (rng.getrandbits(128) for _ in range(100))]
    trace_id, result = next((i, r) for i, r in results if not r.decision.is_sampled())
    assert result.decision is Decision.RECORD_ONLY
    threshold = consistent.threshold_from_tracestate(result.trace_state)
    assert threshold == consistent.probability_to_threshold(result.attributes[SAMPLING_PROBABILITY])
    assert threshold > 0
    assert consistent.randomness(trace_id) < threshold


def test_unsampled_root_is_dropped_without_tail():
    clock = FakeClock()
    sampler = _sampler(clock)
    _warm(sampler, clock)
    rng = random.Random(5)
    decisions = {sampler.should_sample(None, rng.getrandbits(128), "op").decision for _ in range(100)}
    assert Decision.DROP in decisions
    assert Decision.RECORD_ONLY not in decisions


def test_description_names_the_target():
    assert AdaptiveSampler(7).get_description().startswith("AudioAdaptiveSampler{target=7/s")


# --- load --------------------------------------------------------------------------------------


def test_high_load_lowers_probability():
    sampled, probabilities = {}, {}
    for load in (0.1, 0.95):
        clock = FakeClock()
        sampler = _sampler(clock, load_provider=lambda load=load: load, load_threshold=0.8, load_factor=0.5)
        _warm(sampler, clock)
        sampled[load] = sum(_drive(sampler, clock, random.Random(12), {"op": 1000}, clock.now, 20)["op"])
        probabilities[load] = sampler.probability("op")
    assert probabilities[0.95] == pytest.approx(probabilities[0.1] * 0.5)
    assert sampled[0.95] == pytest.approx(sampled[0.1] * 0.5, rel=0.3)


def test_load_provider_is_polled_at_most_once_per_check_interval():
    calls = []
    clock = FakeClock()
    sampler = _sampler(clock, load_provider=lambda: calls.append(1) or 0.0, load_check_interval_s=1.0)
    for i in range(1000):
        clock.now = i / 1000  # 1000 decisions within one second
        sampler.should_sample(None, i + 1, "op")
    assert len(calls) == 1


# --- factory and entry point -------------------------------------------------------------------


@pytest.mark.parametrize("arg", [None, "", "  "])
def test_factory_uses_defaults_for_unset_or_empty_arg(arg):
    sampler = adaptive_sampler_factory(arg)
    assert sampler.target_per_second == 10.0


def test_factory_accepts_bare_number_as_target():
    assert adaptive_sampler_factory("7").target_per_second == 7.0


def test_factory_accepts_key_value_pairs():
    sampler = adaptive_sampler_factory("target=5, min_p=0.001,load_threshold=0.9,record_only=true")
    assert sampler.target_per_second == 5.0
    assert sampler.record_only_for_tail
    assert sampler.get_description() == (
        "AudioAdaptiveSampler{target=5/s,min_p=0.001,load_threshold=0.9,load_factor=0.5}"
    )


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("fast", "target must be a number > 0"),
        ("-1", "target must be a number > 0"),
        ("target=5,min_p=2", "min_p must be a number in \\(0, 1\\]"),
        ("target=nan", "target must be a number > 0"),
        ("max_operations=1.5", "max_operations must be an integer"),
        ("record_only=maybe", "record_only must be true or false"),
        ("speed=3", "unknown key 'speed'; accepted: .*target, min_p"),
        ("target=5,min_p", "'min_p' is not key=value"),
    ],
)
def test_factory_rejects_bad_values_naming_the_key(arg, message):
    with pytest.raises(ValueError, match=message):
        adaptive_sampler_factory(arg)


def test_entry_point_loads_the_factory_by_name():
    (entry_point,) = importlib.metadata.entry_points(
        group="opentelemetry_traces_sampler", name="audio_adaptive"
    )
    assert entry_point.load() is adaptive_sampler_factory


def test_sdk_configurator_builds_sampler_from_environment(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "target=3")
    sampler = _import_sampler("audio_adaptive")
    assert isinstance(sampler, AdaptiveSampler)
    assert sampler.target_per_second == 3.0


def test_environment_selects_sampler_in_a_fresh_process():
    # A bare TracerProvider() knows only built-in sampler names; entry points are resolved by
    # the SDK configurator, which is what opentelemetry-instrument and distros run.
    code = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk._configuration import _OTelSDKConfigurator\n"
        "_OTelSDKConfigurator().configure()\n"
        "print(trace.get_tracer_provider().sampler.get_description())\n"
    )
    env = {
        **os.environ,
        "OTEL_TRACES_SAMPLER": "audio_adaptive",
        "OTEL_TRACES_SAMPLER_ARG": "7",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("AudioAdaptiveSampler{target=7/s")
