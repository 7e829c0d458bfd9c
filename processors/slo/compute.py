"""SLO maths over event counts: windowed ratios as Prometheus computes them, error budgets, burn rates.

Everything here is a pure function of numpy arrays; no store, no clock.

**Windowed increase** (:func:`extrapolated_increase`): the increase of one counter series over the
window ``[end - w, end]`` is Prometheus's ``increase(x[w])`` at ``end`` (``extrapolatedRate`` of
``promql/functions.go``, v2.42): the samples inside the window (both ends included, as in 2.x;
``left_open=True`` gives the 3.x ``(end - w, end]``), their last minus first value plus every value
before a drop (a counter reset), then extrapolated towards the window's edges: by the gap to an
edge when it is shorter than 1.1 times the average sample interval, else by half an interval, and
at the start never past the counter's extrapolated zero. A series with fewer than two samples in
the window has no increase (it drops out of the sum, as in PromQL).

**Windowed ratio** (:func:`window_ratio`): ``Σ increase(bad) / Σ increase(total)`` over the series,
which equals ``sum(rate(bad[w])) / sum(rate(total[w]))`` (the rates share the divisor ``w``). It is
a ratio of sums of events, never an average of per-series or per-slice ratios.

**Error budget** (:func:`calculate_error_budget`): with objective ``o``

- occurrences: allowed bad events ``(1 - o) * total``; consumed = bad events;
- timeslices: allowed bad slices ``(1 - o) * slices``; consumed = bad slices;

``consumed_ratio = consumed / allowed``, ``remaining_ratio = 1 - consumed_ratio`` (negative once
overspent), ``remaining = allowed - consumed`` (events or slices). **Burn rate** over a window is
its error ratio divided by ``1 - o``: at burn rate 1 the budget lasts exactly one SLO period.
**Time to exhaustion** at burn rate ``b``: ``remaining_ratio * period / b`` seconds (0 when the
budget is spent, infinite when ``b == 0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Series = tuple[np.ndarray, np.ndarray]  # (times in ns, int64; values, float64), sorted by time


def extrapolated_increase(
    times_ns: np.ndarray, values: np.ndarray, start_ns: int, end_ns: int, *, left_open: bool = False
) -> float:
    """Prometheus's ``increase(x[end - start])`` evaluated at ``end`` for one counter series.

    Args:
        times_ns: sample times (ns), ascending; samples outside the window are ignored.
        values: the counter's values at those times.
        start_ns: ``end - w``. Samples at exactly ``start_ns`` count unless ``left_open``.
        end_ns: the evaluation time; samples at exactly ``end_ns`` count.

    Returns:
        The extrapolated increase, or NaN with fewer than two samples in the window.
    """
    t = np.asarray(times_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    lo = np.searchsorted(t, start_ns, side="right" if left_open else "left")
    hi = np.searchsorted(t, end_ns, side="right")
    t, v = t[lo:hi], v[lo:hi]
    if len(t) < 2:
        return math.nan
    result = v[-1] - v[0]
    drops = v[1:] < v[:-1]
    result += float(v[:-1][drops].sum())  # a reset: the value before it was counted from 0 again
    # Seconds, as Prometheus (which holds milliseconds); the ratio does not depend on the unit.
    to_start = (t[0] - start_ns) / 1e9
    to_end = (end_ns - t[-1]) / 1e9
    sampled = (t[-1] - t[0]) / 1e9
    average = sampled / (len(t) - 1)
    if result > 0 and v[0] >= 0:
        to_zero = sampled * (v[0] / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return float(result * (interval / sampled))


def sum_increase(series: Sequence[Series], start_ns: int, end_ns: int, *, left_open: bool = False) -> float:
    """``sum(increase(x[w]))``: the series' extrapolated increases added; NaN when none has two samples."""
    parts = [extrapolated_increase(t, v, start_ns, end_ns, left_open=left_open) for t, v in series]
    parts = [p for p in parts if not math.isnan(p)]
    return float(sum(parts)) if parts else math.nan


def window_ratio(
    numerator: Sequence[Series], denominator: Sequence[Series], start_ns: int, end_ns: int,
    *, left_open: bool = False,
) -> float:  # fmt: skip
    """``sum(rate(num[w])) / sum(rate(den[w]))``; NaN without denominator data or when it is 0.

    A numerator without any series of two samples counts as 0 (nothing bad or good happened
    that PromQL could see: its ``sum`` is empty and Sloth's rules use ``or vector(0)``-free
    ratios, so the peer comparison skips those points).
    """
    den = sum_increase(denominator, start_ns, end_ns, left_open=left_open)
    if math.isnan(den) or den == 0:
        return math.nan
    num = sum_increase(numerator, start_ns, end_ns, left_open=left_open)
    return (0.0 if math.isnan(num) else num) / den


def step_increases(series: Sequence[Series], start_ns: int, end_ns: int, step_ns: int) -> np.ndarray:
    """Events per bucket ``[start + k*step, start + (k+1)*step)``: plain (not extrapolated) increments.

    A sample's increment is ``v[i] - v[i-1]``, or ``v[i]`` after a drop (a reset); it counts in
    the bucket holding its time. The first sample of a series adds nothing (its past is unknown),
    so the buckets add up exactly to the events between the first and last samples.
    """
    n = max(1, -(-(end_ns - start_ns) // step_ns))
    out = np.zeros(n)
    for t, v in series:
        t = np.asarray(t, dtype=np.int64)
        v = np.asarray(v, dtype=np.float64)
        if len(t) < 2:
            continue
        inc = np.diff(v)
        inc = np.where(inc < 0, v[1:], inc)
        k = (t[1:] - start_ns) // step_ns
        keep = (t[1:] >= start_ns) & (k < n)
        np.add.at(out, k[keep], inc[keep])
    return out


def burn_rate(error_ratio: float, objective: float) -> float:
    """Error ratio over a window divided by the allowed error ratio ``1 - objective``."""
    return error_ratio / (1.0 - objective)


@dataclass(frozen=True)
class ErrorBudget:
    """An SLO's budget over its window. ``total``/``consumed``/``remaining`` are in events
    (occurrences) or slices (timeslices); the ratios are shares of ``total``."""

    objective: float
    sli: float  # good / all, over the window
    total: float  # allowed bad: (1 - objective) * events (or slices)
    consumed: float  # bad events (or slices)
    remaining: float  # total - consumed; negative once overspent
    consumed_ratio: float
    remaining_ratio: float
    burn_rate: float  # at which time_to_exhaustion_s is computed
    time_to_exhaustion_s: float  # inf when not burning; 0 when spent


def calculate_error_budget(
    slo: Any, good: float, total: float, *, period_s: float | None = None,
    current_burn_rate: float | None = None,
) -> ErrorBudget:  # fmt: skip
    """The error budget of ``good`` out of ``total`` events (or slices) against the SLO's objective.

    Args:
        slo: the objective in (0, 1), e.g. 0.999, or an SLO spec (its ``objective``, and its
            window as the default ``period_s``).
        good: good events (or good slices) in the window.
        total: all events (or all slices with data) in the window.
        period_s: the SLO period in seconds (30 days: 2,592,000), for the time to exhaustion.
        current_burn_rate: the burn rate to project with; by default the window's own
            (``(bad / total) / (1 - objective)``).

    Example: objective 0.999, 1,000,000 requests, 400 bad: budget 1,000, consumed 400
    (0.4), remaining 600 (0.6); at burn rate 2 it lasts ``0.6 * 30 d / 2 = 9 d``.
    """
    objective = float(getattr(slo, "objective", slo))
    if period_s is None:
        window_ns = getattr(slo, "window_ns", None)
        if window_ns is None:
            raise ValueError("period_s is required with a bare objective")
        period_s = window_ns / 1e9
    bad = max(total - good, 0.0)
    allowed = (1.0 - objective) * total
    sli = good / total if total > 0 else math.nan
    if allowed > 0:
        consumed_ratio = bad / allowed
    else:
        consumed_ratio = 0.0
    remaining_ratio = 1.0 - consumed_ratio
    rate = current_burn_rate
    if rate is None:
        rate = burn_rate(bad / total, objective) if total > 0 else 0.0
    if remaining_ratio <= 0:
        ttl = 0.0
    elif not math.isfinite(rate) or rate <= 0:
        ttl = math.inf if not math.isnan(rate) else math.nan
    else:
        ttl = remaining_ratio * period_s / rate
    return ErrorBudget(objective=objective, sli=sli, total=allowed, consumed=bad, remaining=allowed - bad,
                       consumed_ratio=consumed_ratio, remaining_ratio=remaining_ratio, burn_rate=rate,
                       time_to_exhaustion_s=ttl)  # fmt: skip


def timeslice_verdicts(good: np.ndarray, total: np.ndarray, target: float) -> np.ndarray:
    """Per slice: 1 good, 0 bad, NaN without events, for a ratio SLI judged per timeslice."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.asarray(good, dtype=float) / np.asarray(total, dtype=float)
    return np.where(np.asarray(total) > 0, (ratio >= target).astype(float), np.nan)


def threshold_verdicts(values: np.ndarray, op: str, value: float) -> np.ndarray:
    """Per slice: 1 when ``values op value`` holds, 0 when not, NaN without data."""
    ops = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal}
    values = np.asarray(values, dtype=float)
    return np.where(np.isnan(values), np.nan, ops[op](values, value).astype(float))


def exponential_good_count(
    scale: int, zero_count: float, offset: int, counts: np.ndarray, le: float
) -> float:
    """Observations ``<= le`` in a base-2 exponential histogram's positive buckets and zero bucket.

    Bucket ``i`` is ``(base**i, base**(i+1)]`` with ``base = 2**(2**-scale)``. Buckets wholly below
    ``le`` count whole; the bucket holding ``le`` counts in proportion to where ``le`` lies in it,
    linearly (the interpolation assumes observations spread evenly inside a bucket). Negative
    observations are all ``<= le`` for ``le >= 0`` and are not represented here (latency is >= 0).
    """
    if le < 0:
        return 0.0
    counts = np.asarray(counts, dtype=float)
    good = float(zero_count)
    if le == 0 or len(counts) == 0:
        return good
    base = 2.0 ** (2.0**-scale)
    lower = base ** (offset + np.arange(len(counts), dtype=float))
    upper = lower * base
    whole = upper <= le
    good += float(counts[whole].sum())
    inside = (lower < le) & (le < upper)
    if inside.any():
        share = (le - lower[inside]) / (upper[inside] - lower[inside])
        good += float((counts[inside] * share).sum())
    return good


def explicit_good_count(bounds: Sequence[float], bucket_counts: Sequence[float], le: float) -> float:
    """Observations ``<= le`` of an explicit-bucket histogram; ``le`` must be one of its bounds."""
    bounds = list(bounds)
    if le not in bounds:
        raise ValueError(f"le {le} is not a bucket bound of the histogram; its bounds are {bounds}")
    k = bounds.index(le)
    return float(np.asarray(bucket_counts[: k + 1], dtype=float).sum())
