"""Seasonal decomposition with the generalised ESD test: STL on a rolling buffer, refit every k points.

Every ``refit_every`` points, statsmodels' STL decomposes the last ``window`` points into trend,
seasonal and residual; the generalised ESD test (Rosner 1983) then finds up to
``max_outliers * n`` outliers among the residuals at significance ``alpha``, and the residuals
left are summarised by their mean and standard deviation. Between refits each new point is
compared with the fit's forecast (the trend's end, extended by its recent slope, plus the last
season's value for the point's phase) and tested as the next ESD step:
``R = |r - mean| / sd`` against the critical value ``lambda`` for the buffer's size, giving the
z-equivalent statistic ``4 * R / lambda``. STL costs O(window) per refit, so the work per point is
O(window / refit_every): amortised O(1) for a fixed ratio (4 periods / a quarter period = 16 by
default). STL's loess is evaluated every ~10th point and interpolated, as R's ``stl`` does.

Out-of-sample residuals are wider than STL's in-sample ones, so ``sd`` is the larger of the
in-sample figure and an exponentially weighted standard deviation of the forecast errors seen.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from scipy import stats
from statsmodels.tsa.seasonal import STL

from otel_audio.processors.anomaly import params
from otel_audio.processors.anomaly.score import DEFAULT_THRESHOLD, Score, check_threshold, score_of, z_of


def esd_critical_values(n: int, count: int, alpha: float) -> np.ndarray:
    """Rosner's critical values lambda_1..lambda_count for a sample of ``n``."""
    i = np.arange(1, count + 1)
    p = 1.0 - alpha / (2.0 * (n - i + 1))
    t = stats.t.ppf(p, n - i - 1)
    return (n - i) * t / np.sqrt((n - i - 1 + t * t) * (n - i + 1))


def generalized_esd(values: np.ndarray, max_outliers: int, alpha: float = 0.05) -> np.ndarray:
    """Indices of the outliers the generalised ESD test finds (at most ``max_outliers``)."""
    x = np.asarray(values, dtype=float)
    n = x.size
    count = min(max_outliers, n - 3)
    if count < 1:
        return np.empty(0, dtype=np.int64)
    lam = esd_critical_values(n, count, alpha)
    keep = np.ones(n, dtype=bool)
    removed = np.empty(count, dtype=np.int64)
    found = 0
    for step in range(count):
        rest = x[keep]
        sd = rest.std(ddof=1)
        if sd == 0.0:
            break
        dev = np.where(keep, np.abs(x - rest.mean()), -1.0)
        worst = int(dev.argmax())
        removed[step] = worst
        keep[worst] = False
        if dev[worst] / sd > lam[step]:
            found = step + 1
    return removed[:found]


class StlEsd:
    """STL decomposition on a rolling buffer, generalised ESD on its residuals.

    Args:
        period: points per season (>= 2).
        window: points in the buffer (>= 3 * period); default 4 periods. The first fit happens
            once 3 periods have arrived (STL on 2 periods leaves hardly any residual).
        refit_every: points between STL fits; default ``period // 4`` (at least 1).
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
        alpha: float = 0.05,
        max_outliers: float = 0.05,
        robust: bool = False,
        var_beta: float = 0.02,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.period = params.integer("period", period, 2)
        window = 4 * self.period if window is None else window
        self.window = params.integer("window", window, 3 * self.period)
        refit_every = max(1, self.period // 4) if refit_every is None else refit_every
        self.refit_every = params.integer("refit_every", refit_every, 1)
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
        self._buffer: deque[float] = deque(maxlen=self.window)
        self._since_fit = 0
        self._fitted = False
        self._season: list[float] = []
        self._trend_end = 0.0
        self._slope = 0.0
        self._mean = 0.0
        self._sd = 0.0
        self._lam = 1.0
        self._oos_var = 0.0

    def update(self, t_ns: int, value: float) -> Score | None:
        out = None
        if self._fitted:
            h = self._since_fit + 1
            expected = self._trend_end + self._slope * h + self._season[(h - 1) % self.period]
            resid = value - expected
            sd = max(self._sd, math.sqrt(self._oos_var), 1e-12 + 1e-9 * abs(expected))
            centred = resid - self._mean
            z = 4.0 * (centred / sd) / self._lam
            s = score_of(z)
            half = self._zthr * self._lam * sd / 4.0
            centre = expected + self._mean
            out = Score(s, centre, centre - half, centre + half, s >= self.threshold, value, z, 0.0,
                        self._TEMPLATE)  # fmt: skip
            limit = 4.0 * sd
            clipped = min(max(centred, -limit), limit)
            self._oos_var += self.var_beta * (clipped * clipped - self._oos_var)
        self._buffer.append(value)
        self._since_fit += 1
        due = not self._fitted or self._since_fit >= self.refit_every
        if due and len(self._buffer) >= 3 * self.period:
            self._fit()
        return out

    def _fit(self) -> None:
        y = np.fromiter(self._buffer, dtype=float, count=len(self._buffer))
        result = STL(y, period=self.period, robust=self.robust, **self._jumps).fit()
        resid = np.asarray(result.resid)
        n = resid.size
        outliers = generalized_esd(resid, int(self.max_outliers * n), self.alpha)
        clean = np.delete(resid, outliers)
        self._mean = float(clean.mean())
        self._sd = float(clean.std(ddof=1))
        self._lam = float(esd_critical_values(n, 1, self.alpha)[0])
        trend = np.asarray(result.trend)
        span = min(self.period, n - 1)
        self._trend_end = float(trend[-1])
        self._slope = float(trend[-1] - trend[-1 - span]) / span
        self._season = np.asarray(result.seasonal)[-self.period :].tolist()
        if not self._fitted:  # in-sample residuals of STL are ~0.6 of the forecast errors' spread
            self._oos_var = (self._sd / 0.6) ** 2
        self._fitted = True
        self._since_fit = 0
