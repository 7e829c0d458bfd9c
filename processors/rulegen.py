"""Alert rule suggestion from history: statistics in, alerting rules out, as pure functions.

Given the history of a metric, already aggregated per step (``timestamps_ns``, ``values`` as
numpy arrays, e.g. the 1-minute averages ``GET /api/v1/query_range`` returns), this module
proposes rules in the alerting rule format (``docs/rulegen.md``):

- **sigma thresholds** when the distribution is near normal: robust centre and spread
  (median, 1.4826 x MAD) give ``median + 3 sigma`` (warning) and ``median + 4 sigma`` (critical);
- **quantile thresholds** when it is skewed or heavy-tailed: p99 (warning) and p99.9 (critical);
- a **trend rule** (``rate_of_change(...) > x``) when the series has a significant monotonic trend
  in the adverse direction;
- **composite rules** (``a > x and b > y``) for strongly correlated pairs of metrics;
- with labelled history (which points were incidents), the critical threshold is the one that
  minimises ``fp_weight x false positives + fn_weight x false negatives``
  (:func:`optimise_threshold`, ``scipy.optimize.minimize_scalar``).

Usage::

    from otel_audio.processors.rulegen import suggest_rules
    rules = suggest_rules({"audio.stage.duration": (t_ns, values)}, fn="avg", window_ns=60 * 10**9)
    yaml.safe_dump({"rules": [r.to_dict() for r in rules]}, sort_keys=False)

No I/O here: ``rulegen_cli`` fetches history and prints; the alerting rule parser reads the output.
The statistics (distribution shape, trend test, threshold fitted to labels) are in
:mod:`otel_audio.processors.rulegen_stats`, re-exported here; this module writes the rules.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from otel_audio.processors.rulegen_stats import (
    DIRECTIONS,
    NEAR_NORMAL_KURTOSIS,
    NEAR_NORMAL_SKEW,
    TREND_ALPHA,
    Distribution,
    OptimisedThreshold,
    Trend,
    describe,
    labels_from_intervals,
    labels_from_points,
    optimise_threshold,
    threshold_cost,
    trend_test,
)

__all__ = [
    "CORRELATION_ALPHA",
    "CORRELATION_MIN",
    "DEFAULT_FOR",
    "DIRECTIONS",
    "FUNCTIONS",
    "MIN_POINTS",
    "NEAR_NORMAL_KURTOSIS",
    "NEAR_NORMAL_SKEW",
    "TREND_ALPHA",
    "Distribution",
    "OptimisedThreshold",
    "Query",
    "RuleSuggestion",
    "Trend",
    "composite_rules",
    "describe",
    "format_duration",
    "format_number",
    "labelled_rule",
    "labels_from_intervals",
    "labels_from_points",
    "optimise_threshold",
    "selector",
    "suggest_rules",
    "threshold_cost",
    "threshold_rules",
    "trend_rule",
    "trend_test",
]

FUNCTIONS = ("avg", "min", "max", "sum", "count", "rate", "increase", "p50", "p90", "p95", "p99")
MIN_POINTS = 30  # fewer points say too little about a distribution to set a threshold from
CORRELATION_MIN = 0.7  # |Spearman rho| from which a pair of metrics gets a composite rule
CORRELATION_ALPHA = 1e-3
DEFAULT_FOR = "5m"

_NICE_NS = [
    n * 60 * 10**9 for n in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)
]  # windows a trend rule is rounded up to: 1m ... 7d


@dataclass(frozen=True)
class RuleSuggestion:
    """One proposed alerting rule; :meth:`to_dict` is its entry in the rules YAML.

    Args:
        name: unique rule name, ``[A-Za-z0-9_]+``.
        condition: the condition in the rule grammar (``docs/rulegen.md``).
        severity: ``warning`` or ``critical``.
        labels: labels every alert of the rule carries.
        annotations: ``summary`` (one line) and ``description`` (the statistic and numbers behind it).
        for_: how long the condition must hold before the alert fires (``for`` in YAML).
        keep_firing_for: how long the alert keeps firing after the condition clears; omitted if None.
        threshold: the number of a single-metric threshold condition, for callers (not in the YAML).
    """

    name: str
    condition: str
    severity: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    for_: str = DEFAULT_FOR
    keep_firing_for: str | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "condition": self.condition, "for": self.for_}
        if self.keep_firing_for is not None:
            out["keep_firing_for"] = self.keep_firing_for
        out.update(severity=self.severity, labels=dict(self.labels), annotations=dict(self.annotations))
        return out


# -- rule text ----------------------------------------------------------------------------------


def format_number(x: float) -> str:
    """Six significant digits in positional notation (no exponent), as the rule grammar reads."""
    return np.format_float_positional(float(x), precision=6, unique=False, fractional=False, trim="-")


def format_duration(ns: int) -> str:
    """The largest unit that divides ``ns`` exactly: ``90m``, ``2h``, ``7d``, ``1500ms``."""
    for unit, size in (
        ("w", 7 * 86400 * 10**9),
        ("d", 86400 * 10**9),
        ("h", 3600 * 10**9),
        ("m", 60 * 10**9),
    ):
        if ns and ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns // 10**9}s" if ns % 10**9 == 0 else f"{ns // 10**6}ms"


def selector(metric: str, matchers: Sequence[tuple[str, str, str]] = ()) -> str:
    """``metric{key="value",...}`` from (key, op, value) matchers; op is ``=``, ``!=``, ``=~`` or ``!~``."""
    if not matchers:
        return metric
    inner = ",".join(f'{key}{op}"{_quote(value)}"' for key, op, value in matchers)
    return f"{metric}{{{inner}}}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _term(
    fn: str, metric: str, window_ns: int, matchers: Sequence[tuple[str, str, str]], op: str, x: float
) -> str:
    return f"{fn}({selector(metric, matchers)}, {format_duration(window_ns)}) {op} {format_number(x)}"


def _p(p: float) -> str:
    return "p < 1e-12" if p < 1e-12 else f"p={p:.2g}"


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", metric)


# -- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """How the history was read, which the rules must repeat: the function, window and selector."""

    fn: str = "avg"
    window_ns: int = 5 * 60 * 10**9
    matchers: tuple[tuple[str, str, str], ...] = ()
    direction: str = "above"

    def __post_init__(self) -> None:
        if self.fn not in FUNCTIONS:
            raise ValueError(f"fn: expected one of {', '.join(FUNCTIONS)}, got {self.fn!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction: expected one of {', '.join(DIRECTIONS)}, got {self.direction!r}")

    @property
    def op(self) -> str:
        return ">" if self.direction == "above" else "<"

    def what(self, metric: str) -> str:
        return f"{self.fn} of {selector(metric, self.matchers)} over {format_duration(self.window_ns)}"


def threshold_rules(metric: str, values: np.ndarray, query: Query = Query()) -> list[RuleSuggestion]:
    """Warning and critical thresholds: 3/4 robust sigma if near normal, else p99/p99.9."""
    dist = describe(values)
    if dist.n < MIN_POINTS or dist.robust_sigma == 0.0:
        return []
    sign = 1 if query.direction == "above" else -1
    shape = f"skewness {dist.skewness:.2f}, excess kurtosis {dist.excess_kurtosis:.2f}"
    rules = []
    for severity, k, q in (("warning", 3, 0.99), ("critical", 4, 0.999)):
        if dist.near_normal:
            x = dist.median + sign * k * dist.robust_sigma
            how = f"median {sign * k:+d} sigma"
            why = (
                f"Near-normal history ({shape}; n={dist.n}): median {format_number(dist.median)} "
                f"{'+' if sign > 0 else '-'} {k} x robust sigma {format_number(dist.robust_sigma)} "
                f"(1.4826 x MAD) = {format_number(x)}."
            )
        else:
            level = q if sign > 0 else 1 - q
            x = float(np.quantile(values, level))
            how = f"p{100 * level:g}"
            why = (
                f"History not near normal ({shape}; n={dist.n}), so a quantile instead of sigma: "
                f"the {100 * level:g}th percentile is {format_number(x)}."
            )
        rules.append(
            RuleSuggestion(
                name=f"{_slug(metric)}_{'high' if sign > 0 else 'low'}_{severity}",
                condition=_term(query.fn, metric, query.window_ns, query.matchers, query.op, x),
                threshold=x,
                severity=severity,
                labels={"metric": metric},
                annotations={
                    "summary": f"{query.what(metric)} {query.direction} {format_number(x)} ({how})",
                    "description": why,
                },
            )
        )
    return rules


def trend_rule(
    metric: str, timestamps_ns: np.ndarray, values: np.ndarray, step_ns: int, query: Query = Query()
) -> RuleSuggestion | None:
    """``rate_of_change(metric, W) > slope / 2`` when an adverse trend is significant, else None.

    The window ``W`` is long enough that a least-squares slope over it has a standard error of at
    most a quarter of the trend's slope (``SE = sigma x sqrt(12 x step / W^3)``), so the rule fires
    while the trend continues at half its historical rate or more, and rarely on noise (the
    threshold is two standard errors from zero); ``W`` is rounded up to 1m, 2m, 5m, ... 7d and at
    most half the history.
    """
    if len(values) < MIN_POINTS:
        return None
    trend = trend_test(timestamps_ns, values)
    sign = 1 if query.direction == "above" else -1
    if not trend.significant or sign * trend.slope_per_s <= 0:
        return None
    step_s = step_ns / 1e9
    needed_s = (192 * trend.residual_sigma**2 * step_s / trend.slope_per_s**2) ** (1 / 3)
    span_ns = int(timestamps_ns[-1] - timestamps_ns[0])
    fitting = [w for w in _NICE_NS if w <= span_ns // 2 and w >= 10 * step_ns]
    if not fitting:
        return None
    window = next((w for w in fitting if w >= needed_s * 1e9), fitting[-1])
    x = trend.slope_per_s / 2
    per_hour = trend.slope_per_s * 3600
    return RuleSuggestion(
        name=f"{_slug(metric)}_trend",
        condition=_term("rate_of_change", metric, window, query.matchers, query.op, x),
        severity="warning",
        labels={"metric": metric},
        annotations={
            "summary": f"{selector(metric, query.matchers)} keeps {'rising' if sign > 0 else 'falling'} "
            f"at half its historical trend or faster",
            "description": (
                f"Significant trend (Mann-Kendall tau {trend.tau:.3f}, {_p(trend.p_value)}; "
                f"n={len(values)}): "
                f"least-squares slope {format_number(per_hour)}/h, a change of {format_number(trend.change)} "
                f"over the history against residual sigma {format_number(trend.residual_sigma)}. "
                f"Threshold: half the slope, {format_number(x)}/s, over {format_duration(window)}."
            ),
        },
    )


def composite_rules(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]], query: Query = Query()
) -> list[RuleSuggestion]:
    """``a > p95(a) and b > p95(b)`` (``b < p5(b)`` if anti-correlated) for each pair with |rho| >= 0.7.

    Correlated metrics crossing together are stronger evidence than either alone, so each side
    uses the 95th percentile (5th for the low side) instead of the single-metric p99 or 3 sigma.
    Pairs are aligned on equal timestamps; Spearman's rho (``scipy.stats.spearmanr``) is rank-based
    and so catches monotonic, not only linear, relations.
    """
    rules = []
    for (a, (ta, va)), (b, (tb, vb)) in itertools.combinations(series.items(), 2):
        _, ia, ib = np.intersect1d(ta, tb, assume_unique=True, return_indices=True)
        if len(ia) < MIN_POINTS:
            continue
        x, y = np.asarray(va, np.float64)[ia], np.asarray(vb, np.float64)[ib]
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rho, p = stats.spearmanr(x, y)
        if abs(rho) < CORRELATION_MIN or p >= CORRELATION_ALPHA:
            continue
        above_a = query.direction == "above"
        above_b = above_a == (rho > 0)
        xa = float(np.quantile(x, 0.95 if above_a else 0.05))
        xb = float(np.quantile(y, 0.95 if above_b else 0.05))
        both = np.mean(((x > xa) if above_a else (x < xa)) & ((y > xb) if above_b else (y < xb)))
        term_a = _term(query.fn, a, query.window_ns, query.matchers, ">" if above_a else "<", xa)
        term_b = _term(query.fn, b, query.window_ns, query.matchers, ">" if above_b else "<", xb)
        rules.append(
            RuleSuggestion(
                name=f"{_slug(a)}_and_{_slug(b)}",
                condition=f"{term_a} and {term_b}",
                severity="warning",
                labels={"metric": a, "correlated_with": b},
                annotations={
                    "summary": f"{a} and {b} both beyond their usual range",
                    "description": (
                        f"Strongly correlated (Spearman rho {rho:.3f}, {_p(p)}; n={len(x)}): each side at "
                        f"its {'95th' if above_a else '5th'} / {'95th' if above_b else '5th'} percentile "
                        f"({format_number(xa)}, {format_number(xb)}); both were beyond them together in "
                        f"{100 * both:.2f}% of the history."
                    ),
                },
            )
        )
    return rules


def labelled_rule(
    metric: str,
    values: np.ndarray,
    labels: np.ndarray,
    fp_weight: float = 1.0,
    fn_weight: float = 1.0,
    query: Query = Query(),
) -> RuleSuggestion:
    """The critical rule whose threshold :func:`optimise_threshold` fits to labelled incidents."""
    best = optimise_threshold(values, labels, fp_weight, fn_weight, query.direction)
    n_other = len(values) - best.incidents
    return RuleSuggestion(
        name=f"{_slug(metric)}_{'high' if query.direction == 'above' else 'low'}_critical",
        condition=_term(query.fn, metric, query.window_ns, query.matchers, query.op, best.threshold),
        threshold=best.threshold,
        severity="critical",
        labels={"metric": metric},
        annotations={
            "summary": f"{query.what(metric)} {query.direction} {format_number(best.threshold)} "
            f"(fitted to labelled incidents)",
            "description": (
                f"Threshold minimising {format_number(fp_weight)} x false positives + "
                f"{format_number(fn_weight)} x false negatives over labelled history "
                f"({best.incidents} incident points, {n_other} others): "
                f"{best.false_positives} false positives, {best.false_negatives} false negatives."
            ),
        },
    )


def suggest_rules(
    series: Mapping[str, tuple[np.ndarray, np.ndarray]],
    query: Query = Query(),
    step_ns: int | None = None,
    labels: Mapping[str, np.ndarray] | None = None,
    fp_weight: float = 1.0,
    fn_weight: float = 1.0,
) -> list[RuleSuggestion]:
    """Every suggestion for every metric, then composite rules across them.

    ``series`` maps metric names to (timestamps_ns, values); ``step_ns`` is their spacing
    (default: the median spacing); ``labels`` maps metric names to incident flags per point,
    which replace that metric's statistical critical rule with a fitted one (and drop the
    warning when the fitted threshold is not beyond it).
    """
    rules: list[RuleSuggestion] = []
    for metric, (t, v) in series.items():
        t, v = np.asarray(t, np.int64), np.asarray(v, np.float64)
        step = step_ns or (int(np.median(np.diff(t))) if len(t) > 1 else 60 * 10**9)
        own = threshold_rules(metric, v, query)
        if labels is not None and metric in labels:
            fitted = labelled_rule(metric, v, labels[metric], fp_weight, fn_weight, query)
            # The fitted rule replaces the statistical critical one, and a warning that could only
            # fire together with it (its threshold as far out or further) would add nothing.
            sign = 1 if query.direction == "above" else -1
            own = [
                r
                for r in own
                if r.severity == "warning" and sign * (fitted.threshold - (r.threshold or 0.0)) > 0
            ] + [fitted]
        rules += own
        trend = trend_rule(metric, t, v, step, query)
        if trend is not None:
            rules.append(trend)
    return rules + composite_rules(series, query)
