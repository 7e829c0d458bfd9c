"""The statistics behind suggested alert rules: a history's shape and trend, and thresholds fitted to labels.

:func:`describe` gives a sample's robust centre and spread and whether it is near normal (which
decides sigma or quantile thresholds); :func:`trend_test` says whether a history has a
significant monotonic trend; :func:`optimise_threshold` finds the threshold that best separates
labelled incidents (``fp_weight x false positives + fn_weight x false negatives``, smoothed and
minimised with ``scipy.optimize.minimize_scalar``), with :func:`labels_from_intervals` and
:func:`labels_from_points` to turn incident records into per-point labels.

Kept apart from :mod:`otel_audio.processors.rulegen`, which turns these numbers into rules: here
numbers go in and numbers come out, with no rule text, so each statistic can be tested against
scipy and numpy directly. Every name is re-exported from ``rulegen``.

Example::

    fit = optimise_threshold(values, labels, fp_weight=1, fn_weight=5)
    fit.threshold, fit.false_positives, fit.false_negatives
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special, stats

DIRECTIONS = ("above", "below")  # above: high values are bad (latency); below: low values are (quality)
NEAR_NORMAL_SKEW = 0.5  # |sample skewness| at most this ...
NEAR_NORMAL_KURTOSIS = 1.0  # ... and |excess kurtosis| at most this: "near normal"
TREND_ALPHA = 1e-3  # Mann-Kendall p-value below which a trend is significant


@dataclass(frozen=True)
class Distribution:
    """Location, spread and shape of a sample, and whether it is near normal."""

    n: int
    median: float
    robust_sigma: float  # 1.4826 x MAD (equals sigma for normal data), std when the MAD is 0
    skewness: float
    excess_kurtosis: float
    near_normal: bool


def describe(values: np.ndarray) -> Distribution:
    """Robust centre and spread, and a normality decision from skewness and excess kurtosis.

    Near normal means ``|skewness| <= 0.5`` and ``|excess kurtosis| <= 1`` (``scipy.stats.skew``,
    ``scipy.stats.kurtosis``, bias-corrected). These are effect sizes, not a test: D'Agostino's
    ``normaltest`` combines the same two moments into a p-value, and with a week of 1-minute
    points (10,080) it rejects normality for departures far too small to move a 3-sigma threshold,
    while on short histories it accepts clearly skewed data. What matters for choosing between
    sigma and quantile thresholds is how far the shape is from normal, which the moments say
    directly.
    """
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    sigma = float(stats.median_abs_deviation(values, scale="normal"))
    if sigma == 0.0:
        sigma = float(np.std(values))
    if float(np.ptp(values)) == 0.0:
        skewness = kurtosis = 0.0
    else:
        skewness = float(stats.skew(values, bias=False))
        kurtosis = float(stats.kurtosis(values, bias=False))
    near = abs(skewness) <= NEAR_NORMAL_SKEW and abs(kurtosis) <= NEAR_NORMAL_KURTOSIS
    return Distribution(len(values), median, sigma, skewness, kurtosis, near)


@dataclass(frozen=True)
class Trend:
    """A Mann-Kendall test of a monotonic trend with its least-squares slope."""

    slope_per_s: float  # least-squares slope, value units per second
    tau: float  # Kendall's tau between time and value
    p_value: float
    change: float  # slope x span of the history: the total change the trend explains
    residual_sigma: float  # robust sigma of the residuals around the fitted line
    significant: bool  # p < TREND_ALPHA and |change| >= residual_sigma


def trend_test(timestamps_ns: np.ndarray, values: np.ndarray, alpha: float = TREND_ALPHA) -> Trend:
    """Mann-Kendall (``scipy.stats.kendalltau`` of time against value) plus an effect-size check.

    Kendall's tau is rank-based, so spikes in the history do not create or hide a trend. With
    thousands of points a tiny drift is "significant", and slow wander of a flat series is too,
    so the trend must also explain a change of at least one residual sigma over the history.
    """
    t = (np.asarray(timestamps_ns, np.int64) - int(timestamps_ns[0])) / 1e9
    y = np.asarray(values, np.float64)
    tau, p = stats.kendalltau(t, y)
    fit = stats.linregress(t, y)
    residuals = y - (fit.intercept + fit.slope * t)
    sigma = float(stats.median_abs_deviation(residuals, scale="normal")) or float(np.std(residuals))
    change = float(fit.slope * (t[-1] - t[0]))
    tau, p = (0.0, 1.0) if np.isnan(tau) else (float(tau), float(p))
    return Trend(float(fit.slope), tau, p, change, sigma, p < alpha and abs(change) >= sigma > 0)


# -- threshold optimisation against labels ------------------------------------------------------


@dataclass(frozen=True)
class OptimisedThreshold:
    """The threshold minimising the weighted cost, with its exact error counts."""

    threshold: float
    cost: float  # smoothed cost at the threshold (what was minimised)
    false_positives: int  # non-incident points beyond the threshold
    false_negatives: int  # incident points not beyond it
    incidents: int
    width: float  # the logistic smoothing width


def threshold_cost(
    x: float | np.ndarray,
    values: np.ndarray,
    labels: np.ndarray,
    fp_weight: float,
    fn_weight: float,
    width: float = 0.0,
) -> np.ndarray:
    """``fp_weight x FP + fn_weight x FN`` of the rule ``value > x``, for one or many ``x``.

    With ``width == 0`` a point fires when ``value > x`` (the exact, piecewise-constant cost);
    with ``width > 0`` it fires with weight ``logistic((value - x) / width)``.
    """
    xs = np.atleast_1d(np.asarray(x, np.float64))
    labels = np.asarray(labels, bool)
    values = np.asarray(values, np.float64)
    out = np.empty(len(xs))
    for lo in range(0, len(xs), 256):  # 256 thresholds x n points at a time bounds the memory
        diff = values[None, :] - xs[lo : lo + 256, None]
        fires = (diff > 0).astype(np.float64) if width == 0 else special.expit(diff / width)
        fp = fires[:, ~labels].sum(axis=1)
        fn = (1.0 - fires[:, labels]).sum(axis=1)
        out[lo : lo + 256] = fp_weight * fp + fn_weight * fn
    return out if np.ndim(x) else out[0]


def optimise_threshold(
    values: np.ndarray,
    labels: np.ndarray,
    fp_weight: float = 1.0,
    fn_weight: float = 1.0,
    direction: str = "above",
) -> OptimisedThreshold:
    """The threshold that best separates labelled incidents, by ``scipy.optimize.minimize_scalar``.

    A false positive is a point beyond the threshold outside an incident, a false negative an
    incident point not beyond it. Counted exactly, the cost is piecewise constant in the threshold
    (it only changes at data values), which gives a minimiser zero gradient and flat plateaus, so it
    is smoothed: each point fires with ``logistic((value - x) / w)``, where the width ``w`` is 5% of
    the robust spread of the values (at least 1/2000 of their range). The smoothed cost still has
    a local minimum in every gap between the classes, so it is first evaluated on a grid of step
    ``w/2`` over the value range (global, coarse), then ``minimize_scalar(method="bounded")`` refines
    it within the grid cell on either side of the best grid point (local, fine). For a ``below``
    rule the values are negated. Raises ValueError when there are no incident points or no others.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {', '.join(DIRECTIONS)}, got {direction!r}")
    sign = 1.0 if direction == "above" else -1.0
    v = sign * np.asarray(values, np.float64)
    labels = np.asarray(labels, bool)
    if labels.shape != v.shape:
        raise ValueError(f"labels: {labels.shape[0]} labels for {v.shape[0]} values")
    if labels.all() or not labels.any():
        raise ValueError("labels: need both incident and non-incident points to optimise a threshold")
    span = float(np.ptp(v)) or 1.0
    width = max(0.05 * (describe(v).robust_sigma or span), span / 2000)
    grid = np.arange(v.min() - 3 * width, v.max() + 3 * width + width / 2, width / 2)
    costs = threshold_cost(grid, v, labels, fp_weight, fn_weight, width)
    best = int(np.argmin(costs))
    bounds = (grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)])
    found = optimize.minimize_scalar(
        lambda x: float(threshold_cost(x, v, labels, fp_weight, fn_weight, width)),
        bounds=bounds,
        method="bounded",
        options={"xatol": width * 1e-3},
    )
    x, cost = (float(found.x), float(found.fun)) if found.fun <= costs[best] else (grid[best], costs[best])
    fp = int(np.count_nonzero((v > x) & ~labels))
    fn = int(np.count_nonzero((v <= x) & labels))
    return OptimisedThreshold(sign * x, cost, fp, fn, int(labels.sum()), width)


def labels_from_intervals(
    timestamps_ns: np.ndarray, starts_ns: Sequence[int], ends_ns: Sequence[int]
) -> np.ndarray:
    """True for the points inside any incident interval ``[start, end]``."""
    t = np.asarray(timestamps_ns, np.int64)
    out = np.zeros(len(t), bool)
    for start, end in zip(starts_ns, ends_ns, strict=True):
        out |= (t >= start) & (t <= end)
    return out


def labels_from_points(
    timestamps_ns: np.ndarray, label_ns: np.ndarray, label_values: np.ndarray
) -> np.ndarray:
    """Each point takes the last label at or before its time (False before the first label)."""
    if len(label_ns) == 0:
        return np.zeros(len(timestamps_ns), bool)
    order = np.argsort(label_ns, kind="stable")
    label_ns, label_values = np.asarray(label_ns)[order], np.asarray(label_values, bool)[order]
    index = np.searchsorted(label_ns, np.asarray(timestamps_ns, np.int64), side="right") - 1
    return np.where(index >= 0, label_values[np.maximum(index, 0)], False)
