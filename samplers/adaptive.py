"""Adaptive head sampling: a steady budget of traces per operation, whatever the traffic.

A fixed sampling probability is wrong twice over for a service whose traffic swings: at
peak it exports too much, and in a quiet hour it keeps almost nothing. The
:class:`AdaptiveSampler` instead takes a *target* number of sampled traces per second for each
operation (root span name) and chooses the probability that meets it:

- **Rate estimate.** Arrivals of each operation are counted over a short adaptation interval
  (1 s by default) and folded into an exponentially weighted moving average of the arrival
  rate. The probability is ``p = min(1, target / rate)``, floored at ``min_probability``. A
  surge (more than twice the expected arrivals before the interval is over) re-estimates at
  once, so a sudden flood does not blow the budget for a whole interval.
- **Load shedding.** When the host is busy (``load_provider()`` above ``load_threshold``,
  default: 1-minute load average per CPU), ``p`` is multiplied by ``load_factor``: telemetry
  gives way to the audio work it observes.
- **Forced sampling.** A root span whose start attributes carry ``error.type`` or a
  ``sampling.priority`` above 0 is always sampled (``p = 1``).
- **Children follow their parent.** A span with a valid parent, local or remote, copies the
  parent's sampled flag and tracestate unchanged (like ``ParentBased``), so traces are whole.

Decisions are *consistent* (:mod:`otel_audio.samplers.consistent`): the trace's 56 random bits
are compared with the threshold for ``p``, so one trace id gives the same answer at the same
``p`` in every process. The sampler records what it used, which keeps downstream counts
unbiased: a sampled root gets ``ot=th:<threshold>`` in its tracestate (inherited by every
descendant) and the attribute ``sampling.probability`` (also set on descendants whose parent
carries ``th``). A receiver weights each span by ``1/p``.

With ``record_only_for_tail=True`` a trace the head did not sample is still *recorded*
(``Decision.RECORD_ONLY``) so that :class:`~otel_audio.samplers.tail.TailPromotionProcessor` can
promote it when it turns out to be slow or failing. Such spans carry the threshold they were
*not* sampled at (``R < T`` tells them apart) and, once promoted, ``sampling.promoted=True``.

Usage:

.. code:: python

    from opentelemetry.sdk.trace import TracerProvider
    from otel_audio.samplers import AdaptiveSampler

    provider = TracerProvider(sampler=AdaptiveSampler(target_per_second=10))

or by environment, through the ``opentelemetry_traces_sampler`` entry point (see
:mod:`otel_audio.samplers.factory`): ``OTEL_TRACES_SAMPLER=audio_adaptive`` and
``OTEL_TRACES_SAMPLER_ARG=target=10,min_p=0.001``.

Cost: one dictionary lookup, a few arithmetic operations and a comparison per decision. The
only lock is taken when a new operation is first seen; re-estimation uses a non-blocking
try-lock, so no thread ever waits on another's sampling decision.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

from otel_audio.samplers import consistent
from otel_audio.semconv import ERROR_TYPE, SAMPLING_PRIORITY, SAMPLING_PROBABILITY

_logger = logging.getLogger(__name__)

OTHER_OPERATION = "__other__"
"""Bucket shared by operations seen after ``max_operations`` distinct names."""

# A burst in (almost) zero clock time is still a high rate; this bounds the division.
_MIN_ELAPSED_S = 1e-3


def system_load() -> float:
    """Return the 1-minute load average per CPU, capped at 1 (0 where unsupported)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has no load average
        return 0.0
    return min(1.0, load / (os.cpu_count() or 1))


class _Choice:
    """A probability with everything derived from it, computed once per re-estimation."""

    __slots__ = ("probability", "threshold", "trace_state")

    def __init__(self, probability: float) -> None:
        self.threshold = consistent.probability_to_threshold(probability)
        # Report the probability the threshold actually encodes, so 1/attribute equals the
        # adjusted count a receiver derives from th.
        self.probability = consistent.threshold_to_probability(self.threshold)
        self.trace_state = TraceState([(consistent.OT_KEY, f"th:{consistent.encode_th(self.threshold)}")])


_ALWAYS = _Choice(1.0)


class _Operation:
    """Arrival-rate estimate and current probabilities of one operation."""

    __slots__ = ("count", "loaded", "normal", "rate", "surge_limit", "window_start")

    def __init__(self, now: float, surge_limit: float) -> None:
        self.window_start = now
        self.count = 0
        self.rate: float | None = None  # arrivals per second; None until first estimate
        self.surge_limit = surge_limit
        self.normal = _ALWAYS
        self.loaded = _ALWAYS


class AdaptiveSampler(Sampler):
    """Head sampler that keeps about ``target_per_second`` traces per operation per second.

    Args:
        target_per_second: Sampled root spans per second wanted for each operation (span name).
        min_probability: Floor for the probability, so very busy operations stay visible.
        adaptation_interval_s: How often each operation's rate estimate is refreshed.
        smoothing: EWMA weight of the newest interval's rate, in (0, 1]; higher reacts faster.
        load_provider: Returns system load in [0, 1]; called at most once per
            ``load_check_interval_s``. Default :func:`system_load`.
        load_threshold: Load above which probabilities are multiplied by ``load_factor``.
        load_factor: Multiplier in (0, 1] applied to probabilities under high load.
        load_check_interval_s: How long a load reading is reused.
        max_operations: Distinct span names tracked; later names share one bucket.
        record_only_for_tail: Record (not drop) unsampled spans for tail promotion.
        clock: Monotonic seconds; injectable so tests drive time without sleeping.
    """

    def __init__(
        self,
        target_per_second: float = 10.0,
        *,
        min_probability: float = 1e-4,
        adaptation_interval_s: float = 1.0,
        smoothing: float = 0.5,
        load_provider: Callable[[], float] = system_load,
        load_threshold: float = 0.8,
        load_factor: float = 0.5,
        load_check_interval_s: float = 1.0,
        max_operations: int = 1000,
        record_only_for_tail: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _require(target_per_second > 0, "target_per_second", target_per_second, "a number > 0")
        _require(0 < min_probability <= 1, "min_probability", min_probability, "a number in (0, 1]")
        _require(adaptation_interval_s > 0, "adaptation_interval_s", adaptation_interval_s, "a number > 0")
        _require(0 < smoothing <= 1, "smoothing", smoothing, "a number in (0, 1]")
        _require(0 <= load_threshold <= 1, "load_threshold", load_threshold, "a number in [0, 1]")
        _require(0 < load_factor <= 1, "load_factor", load_factor, "a number in (0, 1]")
        _require(max_operations >= 1, "max_operations", max_operations, "an integer >= 1")
        self._target = float(target_per_second)
        self._min_p = float(min_probability)
        self._interval = float(adaptation_interval_s)
        self._smoothing = float(smoothing)
        self._load_provider = load_provider
        self._load_threshold = float(load_threshold)
        self._load_factor = float(load_factor)
        self._load_check_interval = float(load_check_interval_s)
        self._max_operations = int(max_operations)
        self._record_only = bool(record_only_for_tail)
        self._clock = clock

        self._lock = threading.Lock()
        self._operations: dict[str, _Operation] = {}
        self._other: _Operation | None = None
        self._high_load = False
        self._load_checked_at: float | None = None

    # --- Sampler interface ------------------------------------------------------------------

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        if parent is not None and parent.is_valid:
            return self._follow_parent(parent.trace_flags.sampled, parent.trace_state, attributes)

        now = self._clock()
        choice = self._root_choice(name, attributes, now)
        sampled = consistent.is_sampled(consistent.randomness(trace_id, trace_state), choice.threshold)
        if sampled:
            decision = Decision.RECORD_AND_SAMPLE
        elif self._record_only:
            decision = Decision.RECORD_ONLY
        else:
            return SamplingResult(Decision.DROP, None, trace_state)
        new_attributes = dict(attributes) if attributes else {}
        new_attributes[SAMPLING_PROBABILITY] = choice.probability
        if trace_state is None or not len(trace_state):
            new_state = choice.trace_state
        else:
            new_state = consistent.update_ot(trace_state, th=consistent.encode_th(choice.threshold))
        return SamplingResult(decision, new_attributes, new_state)

    def get_description(self) -> str:
        return (
            f"AudioAdaptiveSampler{{target={self._target:g}/s,min_p={self._min_p:g},"
            f"load_threshold={self._load_threshold:g},load_factor={self._load_factor:g}}}"
        )

    # --- Inspection -------------------------------------------------------------------------

    @property
    def target_per_second(self) -> float:
        """Sampled traces per second wanted for each operation."""
        return self._target

    @property
    def record_only_for_tail(self) -> bool:
        """Whether unsampled spans are recorded for tail promotion instead of dropped."""
        return self._record_only

    @property
    def tracked_operations(self) -> int:
        """Number of operations with their own budget (the shared bucket not included)."""
        return len(self._operations)

    def probability(self, name: str) -> float:
        """Return the probability a new root span called ``name`` would get now.

        Reads state only: it neither counts an arrival nor re-estimates rates.
        """
        operation = self._operations.get(name, self._other)
        if operation is None:
            return 1.0
        choice = operation.loaded if self._is_high_load(self._clock()) else operation.normal
        return choice.probability

    # --- Internals --------------------------------------------------------------------------

    def _follow_parent(
        self, sampled: bool, parent_state: TraceState, attributes: Attributes
    ) -> SamplingResult:
        if sampled:
            decision = Decision.RECORD_AND_SAMPLE
        elif self._record_only:
            decision = Decision.RECORD_ONLY
        else:
            return SamplingResult(Decision.DROP, None, parent_state)
        probability = _probability_for_th(parent_state.get(consistent.OT_KEY)) if parent_state else None
        if probability is not None:
            attributes = {**(attributes or {}), SAMPLING_PROBABILITY: probability}
        return SamplingResult(decision, attributes, parent_state)

    def _root_choice(self, name: str, attributes: Attributes, now: float) -> _Choice:
        operation = self._operation(name, now)
        operation.count += 1
        if now - operation.window_start >= self._interval or operation.count > operation.surge_limit:
            # Non-blocking: if another thread is re-estimating, this decision uses the old p.
            if self._lock.acquire(blocking=False):
                try:
                    self._reestimate(operation, now)
                finally:
                    self._lock.release()
        if attributes and _forces_sampling(attributes):
            return _ALWAYS
        return operation.loaded if self._is_high_load(now) else operation.normal

    def _operation(self, name: str, now: float) -> _Operation:
        operation = self._operations.get(name)
        if operation is not None:
            return operation
        if self._other is not None:  # set only once the table is full
            return self._other
        with self._lock:
            operation = self._operations.get(name)
            if operation is None:
                operation = _Operation(now, self._target * self._interval)
                if len(self._operations) < self._max_operations:
                    self._operations[name] = operation
                else:
                    self._other = operation
                    _logger.info(
                        "AdaptiveSampler tracks %d operations; further span names share one budget (%s)",
                        self._max_operations,
                        OTHER_OPERATION,
                    )
            return operation

    def _reestimate(self, operation: _Operation, now: float) -> None:
        elapsed = now - operation.window_start
        observed = operation.count / max(elapsed, _MIN_ELAPSED_S)
        if operation.rate is None:
            operation.rate = observed
        elif elapsed < self._interval:
            # A surge cut the interval short: trust the higher rate at once to protect the budget.
            operation.rate = max(operation.rate, observed)
        else:
            # An EWMA per interval; an idle gap of k intervals weighs like k intervals of it.
            weight = 1.0 - (1.0 - self._smoothing) ** min(elapsed / self._interval, 50.0)
            operation.rate += weight * (observed - operation.rate)
        operation.window_start = now
        operation.count = 0
        expected = operation.rate * self._interval
        operation.surge_limit = max(2.0 * expected, self._target * self._interval, 4.0)

        probability = self._target / operation.rate if operation.rate > 0 else 1.0
        probability = min(1.0, max(self._min_p, probability))
        if probability != operation.normal.probability:
            operation.normal = _Choice(probability)
            operation.loaded = _Choice(max(self._min_p, probability * self._load_factor))

    def _is_high_load(self, now: float) -> bool:
        checked = self._load_checked_at
        if checked is None or now - checked >= self._load_check_interval:
            self._load_checked_at = now
            try:
                load = float(self._load_provider())
            except Exception:  # a broken provider must never break tracing
                _logger.debug("load_provider failed; assuming normal load", exc_info=True)
                load = 0.0
            self._high_load = load > self._load_threshold
        return self._high_load


def _forces_sampling(attributes: Attributes) -> bool:
    if attributes.get(ERROR_TYPE):
        return True
    priority = attributes.get(SAMPLING_PRIORITY)
    return isinstance(priority, (int, float)) and priority > 0


@functools.lru_cache(maxsize=256)
def _probability_for_th(ot_value: str | None) -> float | None:
    """Probability recorded in an ``ot`` tracestate value; cached, as children repeat it."""
    if not ot_value:
        return None
    threshold = consistent.threshold_from_tracestate(TraceState([(consistent.OT_KEY, ot_value)]))
    return None if threshold is None else consistent.threshold_to_probability(threshold)


def _require(ok: bool, name: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"AdaptiveSampler: {name} must be {accepted}, got {value!r}")
