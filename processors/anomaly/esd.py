"""Seasonal decomposition with the generalised ESD test: STL on a rolling buffer, refit every k points.

Every ``refit_every`` points, statsmodels' STL decomposes the last ``window`` points into trend,
seasonal and residual; the generalised ESD test (Rosner 1983) then finds up to
``max_outliers * n`` outliers among the residuals at significance ``alpha``, and the residuals
left are summarised by their mean and standard deviation. Between refits each new point is
compared with the fit's forecast (the trend's end, extended by its recent slope, plus the last
season's value for the point's phase) and tested as the next ESD step:
``R = |r - mean| / sd`` against the critical value ``lambda`` for the buffer's size, giving the
z-equivalent statistic ``4 * R / lambda``. STL costs O(window) per refit, so the work per point is
O(window / refit_every): amortised O(1) for a fixed ratio (4 periods / half a period = 8 by
default). STL's loess is evaluated every ~10th point and interpolated, as R's ``stl`` does, and
each fit runs one pass of STL's inner loop (``inner_iter``; statsmodels' default of 5 costs 5
times more, and on the project's labelled set detects no better: see ``benchmarks/anomaly.py``).
The forecast for the points until the next refit is computed once per fit, so a point costs a
list lookup and a few float operations.

The ESD test itself sorts the residuals once and walks in from both ends (the value farthest from
the mean of those left is always the smallest or the largest of them), so it costs O(n log n)
per fit instead of O(n * max_outliers); its critical values are cached per buffer size.

Out-of-sample residuals are wider than STL's in-sample ones, so ``sd`` is the larger of the
in-sample figure and an exponentially weighted standard deviation of the forecast errors seen.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats
from statsmodels.tsa.seasonal import STL

from otel_audio.processors.anomaly import params
from otel_audio.processors.anomaly.score import DEFAULT_THRESHOLD, Score, check_threshold, score_of, z_of


@lru_cache(maxsize=64)
def _critical_values(n: int, count: int, alpha: float) -> tuple[float, ...]:
    i = np.arange(1, count + 1)
    p = 1.0 - alpha / (2.0 * (n - i + 1))
    t = stats.t.ppf(p, n - i - 1)
    return tuple((n - i) * t / np.sqrt((n - i - 1 + t * t) * (n - i + 1)))


def esd_critical_values(n: int, count: int, alpha: float) -> np.ndarray:
    """Rosner's critical values lambda_1..lambda_count for a sample of ``n`` (cached: a buffer's
    size rarely changes, and scipy's t quantile costs more than the test itself)."""
    return np.array(_critical_values(int(n), int(count), float(alpha)))


def generalized_esd(values: np.ndarray, max_outliers: int, alpha: float = 0.05) -> np.ndarray:
    """Indices of the outliers the generalised ESD test finds (at most ``max_outliers``).

    Each step removes the value farthest from the mean of those left, which is always the
    smallest or the largest of them: so the values are sorted once and two pointers walk in
    from the ends, the mean and variance of the rest kept as running sums (about the median,
    so they do not cancel). O(n log n) for the sort, O(1) per step.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    count = min(max_outliers, n - 3)
    if count < 1:
        return np.empty(0, dtype=np.int64)
    lam = _critical_values(n, count, float(alpha))
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    centred = ordered - ordered[n // 2]
    s1 = float(centred.sum())
    s2 = float(centred @ centred)
    d = centred.tolist()
    index = order.tolist()  # input position of each sorted value
    lo, hi, m = 0, n - 1, n
    removed = []
    found = 0
    for step in range(count):
        if d[lo] == d[hi]:  # every value left is equal: no spread
            break
        mean = s1 / m
        var = (s2 - s1 * mean) / (m - 1)
        if var <= 0.0:
            break
        low_dev, high_dev = mean - d[lo], d[hi] - mean
        if d[hi - 1] == d[hi]:  # equal largest values: the first of them in the input goes first
            run = hi - 1
            while run > lo and d[run - 1] == d[hi]:
                run -= 1
            first = min(range(run, hi + 1), key=index.__getitem__)
            index[first], index[hi] = index[hi], index[first]
        if high_dev > low_dev or (high_dev == low_dev and index[hi] < index[lo]):
            worst, dev = hi, high_dev
            hi -= 1
        else:
            worst, dev = lo, low_dev
            lo += 1
        v = d[worst]
        s1 -= v
        s2 -= v * v
        m -= 1
        removed.append(worst)
        if dev / math.sqrt(var) > lam[step]:
            found = step + 1
    return np.array([index[i] for i in removed[:found]], dtype=np.int64)


class StlEsd:
    """STL decomposition on a rolling buffer, generalised ESD on its residuals.

    Args:
        period: points per season (>= 2).
        window: points in the buffer (>= 3 * period); default 4 periods. The first fit happens
            once 3 periods have arrived (STL on 2 periods leaves hardly any residual).
        refit_every: points between STL fits; default ``period // 2`` (at least 1).
        inner_iter: passes of STL's inner loop per fit (statsmodels' default is 5, R's 2).
        alpha: significance of the ESD test.
        max_outliers: largest fraction of the buffer the ESD test may remove.
        robust: STL's robust (outlier-downweighting) fitting; off by default because it costs
            about 6 times more and the ESD step already keeps outliers out of the statistics.
        var_beta: weight of each new squared forecast error in the out-of-sample variance.
        threshold: score at which a point is an anomaly.
    """

    name = "stl_esd"
    _TEMPLATE = "value {value:.4g} is {z:.1f} (alarm at 4) ESD units {side} the STL forecast {expected:.4g}"

    def __init__(
        self,
        *,
        period: int = 24,
        window: int | None = None,
        refit_every: int | None = None,
        inner_iter: int = 1,
        alpha: float = 0.05,
        max_outliers: float = 0.05,
        robust: bool = False,
        var_beta: float = 0.02,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.period = params.integer("period", period, 2)
        window = 4 * self.period if window is None else window
        self.window = params.integer("window", window, 3 * self.period)
        refit_every = max(1, self.period // 2) if refit_every is None else refit_every
        self.refit_every = params.integer("refit_every", refit_every, 1)
        self.inner_iter = params.integer("inner_iter", inner_iter, 1)
        self.alpha = params.number("alpha", alpha, 0.0, 0.5, low_open=True)
        self.max_outliers = params.number("max_outliers", max_outliers, 0.0, 0.5)
        if not isinstance(robust, bool):
            raise ValueError(f"robust must be true or false, got {robust!r}")
        self.robust = robust
        self.var_beta = params.number("var_beta", var_beta, 0.0, 1.0, low_open=True)
        self.threshold = check_threshold(threshold)
        self._zthr = z_of(self.threshold)
        # Loess evaluated every ~10th point and interpolated, as R's stl does by default: 20-60x faster
        # than statsmodels' default of every point for daily periods, with the same residuals to 1e-3.
        trend = math.ceil(1.5 * self.period / (1.0 - 1.5 / 7))
        self._jumps = {
            "trend_jump": max(1, math.ceil(trend / 10)),
            "low_pass_jump": max(1, math.ceil(self.period / 10)),
        }
        # ring buffer written twice (at i and i + window) so the last ``window`` values are
        # always one contiguous slice, handed to STL without a copy
        self._ring = np.zeros(2 * self.window)
        self._count = 0  # points seen
        self._since_fit = 0
        self._fitted = False
        self._forecast: list[float] = []  # trend extrapolated plus season, h = 1 .. refit horizon
        self._mean = 0.0
        self._sd = 0.0
        self._lam = 1.0
        self._oos_var = 0.0

    def update(self, t_ns: int, value: float) -> Score | None:
        out = None
        h = self._since_fit
        if self._fitted:
            expected = self._forecast[h]
            sd = self._sd
            oos = math.sqrt(self._oos_var)
            if oos > sd:
                sd = oos
            floor = 1e-12 + 1e-9 * abs(expected)
            if floor > sd:
                sd = floor
            centred = value - expected - self._mean
            z = 4.0 * (centred / sd) / self._lam
            s = score_of(z)
            half = self._zthr * self._lam * sd / 4.0
            centre = expected + self._mean
            out = Score(s, centre, centre - half, centre + half, s >= self.threshold, value, z, 0.0,
                        self._TEMPLATE)  # fmt: skip
            limit = 4.0 * sd
            clipped = -limit if centred < -limit else (limit if centred > limit else centred)
            self._oos_var += self.var_beta * (clipped * clipped - self._oos_var)
        window = self.window
        i = self._count % window
        ring = self._ring
        ring[i] = ring[i + window] = value
        self._count += 1
        self._since_fit = h + 1
        if (not self._fitted or h + 1 >= self.refit_every) and self._count >= 3 * self.period:
            self._fit()
        return out

    def _fit(self) -> None:
        n = min(self._count, self.window)
        end = (self._count - 1) % self.window + self.window + 1
        stl = STL(self._ring[end - n : end], period=self.period, robust=self.robust, **self._jumps)
        result = stl.fit(inner_iter=self.inner_iter)
        resid = result.resid
        outliers = generalized_esd(resid, int(self.max_outliers * n), self.alpha)
        clean = np.delete(resid, outliers)
        self._mean = float(clean.mean())
        self._sd = float(clean.std(ddof=1))
        self._lam = _critical_values(n, 1, self.alpha)[0]
        # the forecast until the next refit: the trend's end extended by its slope over the last
        # period, plus the last season's value for each point's phase
        trend = result.trend
        span = min(self.period, n - 1)
        slope = float(trend[-1] - trend[-1 - span]) / span
        h = np.arange(self.refit_every)
        season = result.seasonal[-self.period :]
        self._forecast = (float(trend[-1]) + slope * (h + 1) + season[h % self.period]).tolist()
        if not self._fitted:  # in-sample residuals of STL are ~0.6 of the forecast errors' spread
            self._oos_var = (self._sd / 0.6) ** 2
        self._fitted = True
        self._since_fit = 0
