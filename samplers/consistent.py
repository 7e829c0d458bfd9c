"""Consistent probability sampling: thresholds, randomness and the ``ot`` tracestate entry.

OpenTelemetry's "TraceState: Probability Sampling" specification (OTEP 235) makes sampling
decisions *consistent*: every participant in a trace compares the same 56 bits of randomness
``R`` with its own rejection threshold ``T`` and keeps the span iff ``R >= T``. Because all
participants look at the same ``R``, a trace sampled at a lower probability is also sampled
at every higher one, so traces stay complete across services and the sampling probability
can be recovered from the threshold alone.

The quantities, all integers in ``[0, 2**56)``:

- **Randomness** ``R``: the explicit ``rv`` sub-key of the ``ot`` tracestate entry
  (14 hex digits) when present, otherwise the lower 56 bits of the trace id. W3C Trace
  Context level 2 guarantees those bits are random when the ``random-trace-id`` flag is set,
  and the OpenTelemetry SDK's default id generator fills them at random.
- **Threshold** ``T = round((1 - p) * 2**56)``: the number of randomness values rejected.
  ``p = 1`` gives ``T = 0`` (keep everything). ``T`` is clamped to ``2**56 - 1`` so that even
  a tiny probability keeps one value in 2**56.
- **Encoding**: ``th`` carries ``T`` as 14 lower-case hex digits with trailing zeros removed
  (``"0"`` for ``T = 0``): ``p = 0.5`` is ``th:8``, ``p = 0.25`` is ``th:c``.
- **Adjusted count** ``2**56 / (2**56 - T)``: how many spans one sampled span stands for
  (``1/p``). Summing adjusted counts of sampled spans is an unbiased estimate of the number
  of spans before sampling.

The ``ot`` tracestate value is a list of ``key:value`` pairs joined by ``;`` (for example
``ot=th:c;rv:0123456789abcd``). Helpers here change only the sub-keys they are asked to and
keep other sub-keys and other vendors' entries.

Example:

.. code:: python

    from opentelemetry.trace import TraceState
    from otel_audio.samplers import consistent

    t = consistent.probability_to_threshold(0.25)        # 54043195528445952
    consistent.encode_th(t)                              # "c"
    ts = consistent.update_ot(TraceState(), th=consistent.encode_th(t))
    ts.to_header()                                       # "ot=th:c"
    consistent.adjusted_count_from_tracestate(ts)        # 4.0

Probabilities may be given as :class:`fractions.Fraction` for exact arithmetic: the float
nearest 1/3 is slightly below 1/3, so ``probability_to_threshold(1/3)`` encodes as
``aaaaaaaaaaaaac`` (as the Go reference implementation does), while ``Fraction(1, 3)`` gives the
specification's ``aaaaaaaaaaaaab``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from opentelemetry.trace import TraceState

MAX_THRESHOLD = 1 << 56
"""2**56: the size of the randomness space; a threshold of this value would reject everything."""
RANDOMNESS_MASK = MAX_THRESHOLD - 1
"""Mask selecting the lower 56 bits of a trace id."""
OT_KEY = "ot"
"""The tracestate key OpenTelemetry reserves for its own sub-keys (``th``, ``rv``)."""

_TH_PATTERN = re.compile(r"[0-9a-f]{1,14}")
_RV_PATTERN = re.compile(r"[0-9a-f]{14}")
_SUBKEY_PATTERN = re.compile(r"[a-z][a-z0-9]*")
_SUBVALUE_PATTERN = re.compile(r"[a-zA-Z0-9._\-]+")


def probability_to_threshold(probability: float | Fraction) -> int:
    """Return the rejection threshold ``T`` for a sampling probability.

    ``T = 2**56 - round(p * 2**56)``, clamped to ``[0, 2**56 - 1]``. Scaling a float by a power
    of two is exact, so the only rounding is the final one.

    Args:
        probability: In ``[0, 1]``; a :class:`~fractions.Fraction` is used exactly.

    Raises:
        ValueError: If the probability is not a number in ``[0, 1]``.
    """
    if not 0 <= probability <= 1:  # also rejects NaN, for which every comparison is false
        raise ValueError(f"sampling probability must be in [0, 1], got {probability!r}")
    threshold = MAX_THRESHOLD - round(probability * MAX_THRESHOLD)
    return min(max(threshold, 0), MAX_THRESHOLD - 1)


def threshold_to_probability(threshold: int) -> float:
    """Return the sampling probability ``(2**56 - T) / 2**56`` a threshold stands for."""
    _check_threshold(threshold)
    return (MAX_THRESHOLD - threshold) / MAX_THRESHOLD


def threshold_to_adjusted_count(threshold: int) -> float:
    """Return ``2**56 / (2**56 - T)``: how many spans one span sampled at ``T`` represents."""
    _check_threshold(threshold)
    return MAX_THRESHOLD / (MAX_THRESHOLD - threshold)


def encode_th(threshold: int) -> str:
    """Encode a threshold as the ``th`` value: 14 hex digits, trailing zeros removed."""
    _check_threshold(threshold)
    return f"{threshold:014x}".rstrip("0") or "0"


def parse_th(value: str) -> int:
    """Decode a ``th`` value (1 to 14 lower-case hex digits) into a threshold.

    Raises:
        ValueError: If the value is not 1 to 14 lower-case hex digits.
    """
    if not _TH_PATTERN.fullmatch(value):
        raise ValueError(f"th must be 1 to 14 lower-case hex digits, got {value!r}")
    return int(value.ljust(14, "0"), 16)


def randomness(trace_id: int, trace_state: TraceState | None = None) -> int:
    """Return the 56-bit randomness ``R`` of a trace.

    An explicit, well-formed ``rv`` in the ``ot`` entry wins (the spec lets a root assign one
    when its trace ids are not random); otherwise the lower 56 bits of the trace id are used.
    """
    if trace_state is not None:
        rv = parse_ot(trace_state).get("rv")
        if rv is not None and _RV_PATTERN.fullmatch(rv):
            return int(rv, 16)
    return trace_id & RANDOMNESS_MASK


def is_sampled(randomness_value: int, threshold: int) -> bool:
    """Return the consistent decision: keep iff ``R >= T``."""
    return randomness_value >= threshold


def parse_ot(trace_state: TraceState) -> dict[str, str]:
    """Return the sub-keys of the ``ot`` tracestate entry (empty if absent).

    Malformed members are skipped instead of failing: a tracestate comes from other
    processes, and a bad sub-key there must not break this process's tracing.
    """
    value = trace_state.get(OT_KEY)
    if not value:
        return {}
    fields: dict[str, str] = {}
    for member in value.split(";"):
        key, sep, sub = member.partition(":")
        if sep and key not in fields:
            fields[key] = sub
    return fields


def format_ot(fields: dict[str, str]) -> str:
    """Join ``ot`` sub-keys into a tracestate value (``th:c;rv:...``).

    Raises:
        ValueError: If a sub-key or sub-value contains characters the spec does not allow.
    """
    for key, value in fields.items():
        if not _SUBKEY_PATTERN.fullmatch(key) or not _SUBVALUE_PATTERN.fullmatch(value):
            raise ValueError(
                f"invalid ot sub-key {key!r}:{value!r}; keys are [a-z][a-z0-9]*, values [a-zA-Z0-9._-]+"
            )
    return ";".join(f"{key}:{value}" for key, value in fields.items())


def update_ot(trace_state: TraceState | None, **changes: str | None) -> TraceState:
    """Return a tracestate whose ``ot`` entry has ``changes`` applied.

    A value of ``None`` removes that sub-key; other sub-keys and other vendors' entries are
    kept. The ``ot`` entry moves to the front, as W3C Trace Context asks of modified entries,
    and is deleted when no sub-key is left.

    Args:
        trace_state: The tracestate to start from; ``None`` means empty.
        changes: Sub-keys to set (``th="c"``) or remove (``rv=None``).
    """
    base = trace_state if trace_state is not None else TraceState()
    fields = parse_ot(base)
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    if not fields:
        return base.delete(OT_KEY) if OT_KEY in base else base
    return base.update(OT_KEY, format_ot(fields))


def threshold_from_tracestate(trace_state: TraceState | None) -> int | None:
    """Return the threshold recorded in ``ot=th:...``, or ``None`` if absent or malformed."""
    if trace_state is None:
        return None
    th = parse_ot(trace_state).get("th")
    if th is None:
        return None
    try:
        return parse_th(th)
    except ValueError:
        return None


def adjusted_count_from_tracestate(trace_state: TraceState | None) -> float | None:
    """Return the adjusted count ``1/p`` recorded in a tracestate, or ``None`` if unknown.

    ``None`` means the span was not sampled by a consistent probability sampler, so its
    weight cannot be known from the tracestate (it might still carry the
    ``sampling.probability`` attribute).
    """
    threshold = threshold_from_tracestate(trace_state)
    return None if threshold is None else threshold_to_adjusted_count(threshold)


def _check_threshold(threshold: int) -> None:
    if not 0 <= threshold < MAX_THRESHOLD:
        raise ValueError(f"threshold must be in [0, 2**56), got {threshold!r}")
