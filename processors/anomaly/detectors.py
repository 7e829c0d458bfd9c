"""The streaming detectors: robust z-score, EWMA, Holt-Winters and CUSUM, O(1)-ish work per point.

Every detector follows one series: ``update(t_ns, value)`` scores the point against what was seen
before it, then learns from it, and returns a :class:`~otel_audio.processors.anomaly.score.Score`
(``None`` while warming up). Residuals are clipped at ``clip`` standard deviations before they
update any state, so an anomaly does not drag the baseline or inflate the spread after it.

Seasonality is in points: ``period`` is the number of points per season (288 for a daily cycle of
5-minute points); the phase of a point is its index modulo ``period``.
"""

from __future__ import annotations

import math

from otel_audio.processors.anomaly import params
from otel_audio.processors.anomaly.score import DEFAULT_THRESHOLD, Score, check_threshold, score_of, z_of
from otel_audio.processors.anomaly.window import ROBUST_SIGMA, RollingWindow, SeasonalProfile

_TINY = 1e-12


def _sigma_floor(level: float) -> float:
    """The smallest spread a detector divides by: a constant series must not make every change infinite."""
    return _TINY + 1e-9 * abs(level)


class RobustZ:
    """Robust z-score: distance from the rolling median in robust standard deviations (1.4826 MAD).

    Exact rolling median and MAD from a sorted window (see
    :class:`~otel_audio.processors.anomaly.window.RollingWindow`). With ``period`` > 0 the values are
    deseasonalised first by a learned additive profile.

    Args:
        window: points in the rolling window.
        min_points: points in the window before scoring starts.
        period: points per season, 0 for none.
        gamma: learning rate of the seasonal profile.
        clip: residuals beyond this many sigmas update the profile as if they were at it.
        threshold: score at which a point is an anomaly.
    """

    name = "robust_z"
    _TEMPLATE = (
        "value {value:.4g} is {z:.1f} robust sigmas (1.4826 MAD) {side} the rolling median {expected:.4g}"
    )

    def __init__(
        self,
        *,
        window: int = 120,
        min_points: int = 30,
        period: int = 0,
        gamma: float = 0.1,
        clip: float = 4.0,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.window = params.integer("window", window, 3)
        self.min_points = params.integer("min_points", min_points, 3)
        if self.min_points > self.window:
            raise ValueError(f"min_points ({min_points}) must not exceed window ({window})")
        self.period = params.integer("period", period, 0)
        if self.period == 1:
            raise ValueError("period must be 0 (no seasonality) or >= 2 points")
        self.gamma = params.number("gamma", gamma, 0.0, 1.0)
        self.clip = params.number("clip", clip, 0.0, 1e9, low_open=True)
        self.threshold = check_threshold(threshold)
        self._zthr = z_of(self.threshold)
        self._win = RollingWindow(self.window)
        self._season = SeasonalProfile(self.period, self.gamma)
        self._n = 0
        self._warm = False
        self.sigma = 0.0  # the robust sigma the last score used

    def rebase(self, shift: float) -> None:
        """Move the reference by ``shift`` (a level shift was found)."""
        self._win.shift(shift)

    def update(self, t_ns: int, value: float) -> Score | None:
        step = self._step(value)
        if step is None:
            return None
        expected, z, sigma = step
        s = score_of(z)
        half = self._zthr * sigma
        return Score(s, expected, expected - half, expected + half, s >= self.threshold, value, z, 0.0,
                     self._TEMPLATE)  # fmt: skip

    def _step(self, value: float) -> tuple[float, float, float] | None:
        """Score ``value`` and learn it: ``(expected, z, sigma)``, or None while warming up.

        The whole of :meth:`update` but the :class:`Score`, which :class:`Cusum` does not need.
        """
        n = self._n
        self._n = n + 1
        period = self.period
        offset = 0.0
        if period:
            offsets = self._season.offsets
            if not offsets:
                self._season.learn(value)
                return None
            phase = n % period
            offset = offsets[phase]
        d = value - offset
        win = self._win
        if not self._warm:  # the window only grows until full, so once warm it stays so
            if len(win) < self.min_points:
                win.push(d)
                return None
            self._warm = True
        med, mad = win.median_mad()
        sigma = ROBUST_SIGMA * mad
        floor = _TINY + 1e-9 * abs(med)
        if floor > sigma:
            sigma = floor
        self.sigma = sigma
        resid = d - med
        if period:  # the profile learns the clipped residual: an anomaly does not drag it
            limit = self.clip * sigma
            clipped = -limit if resid < -limit else (limit if resid > limit else resid)
            offsets[phase] += self.gamma * clipped
        win.push(d)
        return med + offset, resid / sigma, sigma


class _Spread:
    """Exponentially weighted variance of residuals; plain mean of squares while warming up."""

    __slots__ = ("beta", "n", "var")

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.var = 0.0
        self.n = 0

    def add(self, resid: float) -> None:
        self.n += 1
        w = max(self.beta, 1.0 / self.n)
        self.var += w * (resid * resid - self.var)


class Ewma:
    """EWMA residuals: distance from the exponentially weighted mean, in EW standard deviations.

    Args:
        alpha: weight of each new point in the mean.
        beta: weight of each new squared residual in the variance.
        min_points: points before scoring starts.
        clip: residuals beyond this many sigmas update the state as if they were at it.
        threshold: score at which a point is an anomaly.
    """

    name = "ewma"
    _TEMPLATE = "value {value:.4g} is {z:.1f} sigmas {side} the moving average {expected:.4g}"

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        beta: float = 0.05,
        min_points: int = 30,
        clip: float = 4.0,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.alpha = params.number("alpha", alpha, 0.0, 1.0, low_open=True)
        self.beta = params.number("beta", beta, 0.0, 1.0, low_open=True)
        self.min_points = params.integer("min_points", min_points, 2)
        self.clip = params.number("clip", clip, 0.0, 1e9, low_open=True)
        self.threshold = check_threshold(threshold)
        self._zthr = z_of(self.threshold)
        self._level: float | None = None
        self._spread = _Spread(self.beta)

    def update(self, t_ns: int, value: float) -> Score | None:
        level = self._level
        if level is None:
            self._level = value
            return None
        spread = self._spread
        resid = value - level
        out = None
        if spread.n >= self.min_points:
            sigma = max(math.sqrt(spread.var), _sigma_floor(level))
            z = resid / sigma
            s = score_of(z)
            half = self._zthr * sigma
            out = Score(s, level, level - half, level + half, s >= self.threshold, value, z, 0.0,
                        self._TEMPLATE)  # fmt: skip
            limit = self.clip * sigma
            resid = min(max(resid, -limit), limit)
        self._level = level + self.alpha * resid
        spread.add(resid)
        return out


class HoltWinters:
    """Additive Holt-Winters (level, trend, seasonal) one-step forecast residuals, in EW sigmas.

    The first ``period`` points initialise the level (their median) and the seasonal offsets;
    residual variance then warms up over ``min_points`` points before scoring starts.

    Args:
        period: points per season (>= 2).
        alpha, beta, gamma: smoothing weights of level, trend and season.
        var_beta: weight of each new squared residual in the variance.
        min_points: residuals seen before scoring starts.
        clip: residuals beyond this many sigmas update the state as if they were at it.
        threshold: score at which a point is an anomaly.
    """

    name = "holt_winters"
    _TEMPLATE = "value {value:.4g} is {z:.1f} sigmas {side} the Holt-Winters forecast {expected:.4g}"

    def __init__(
        self,
        *,
        period: int = 24,
        alpha: float = 0.2,
        beta: float = 0.01,
        gamma: float = 0.1,
        var_beta: float = 0.05,
        min_points: int = 30,
        clip: float = 4.0,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.period = params.integer("period", period, 2)
        self.alpha = params.number("alpha", alpha, 0.0, 1.0, low_open=True)
        self.beta = params.number("beta", beta, 0.0, 1.0)
        self.gamma = params.number("gamma", gamma, 0.0, 1.0)
        self.var_beta = params.number("var_beta", var_beta, 0.0, 1.0, low_open=True)
        self.min_points = params.integer("min_points", min_points, 2)
        self.clip = params.number("clip", clip, 0.0, 1e9, low_open=True)
        self.threshold = check_threshold(threshold)
        self._zthr = z_of(self.threshold)
        self._season = SeasonalProfile(self.period, self.gamma)
        self._first: list[float] = []
        self._level = 0.0
        self._trend = 0.0
        self._spread = _Spread(self.var_beta)
        self._n = 0

    def update(self, t_ns: int, value: float) -> Score | None:
        n = self._n
        self._n = n + 1
        season = self._season
        if not season.offsets:
            self._first.append(value)
            if season.learn(value):
                ordered = sorted(self._first)
                self._level = ordered[len(ordered) // 2]
                self._first = []
            return None
        phase = n % self.period
        offsets = season.offsets
        level, trend = self._level, self._trend
        base = level + trend
        forecast = base + offsets[phase]
        resid = value - forecast
        spread = self._spread
        out = None
        if spread.n >= self.min_points:
            sigma = math.sqrt(spread.var)
            floor = _TINY + 1e-9 * abs(forecast)
            if floor > sigma:
                sigma = floor
            z = resid / sigma
            s = score_of(z)
            half = self._zthr * sigma
            out = Score(s, forecast, forecast - half, forecast + half, s >= self.threshold, value, z, 0.0,
                        self._TEMPLATE)  # fmt: skip
            limit = self.clip * sigma
            resid = -limit if resid < -limit else (limit if resid > limit else resid)
        spread.add(resid)
        x = forecast + resid
        new_level = base + self.alpha * (x - offsets[phase] - base)
        self._trend = trend + self.beta * (new_level - level - trend)
        offsets[phase] += self.gamma * (x - new_level - offsets[phase])
        self._level = new_level
        return out


class Cusum:
    """Two-sided CUSUM of robust z-scores: level shifts up or down.

    Each point's residual from the reference (rolling median of the deseasonalised values, as in
    :class:`RobustZ`) is divided by the robust sigma and clipped at ``clip``; then
    ``S+ = max(0, S+ + r - k)`` and ``S- = max(0, S- - r - k)``. The statistic is ``4 * S / h``
    (signed by the side), so with the default threshold a change point is reported when ``S >= h``.
    The point reporting it carries the shift's size (mean residual since the sum left zero); the
    reference window is then moved by that shift and both sums restart, so a new level is
    learned at once instead of raising alarms until the median catches up. Because residuals are
    clipped, one point alone cannot reach ``h`` when ``h + k > clip``: single spikes are not level
    shifts. The band is the one-step band before clipping.

    Args:
        window, min_points, period, gamma: the reference, as for :class:`RobustZ`.
        k: drift (allowance) per point, in robust sigmas.
        h: decision threshold of the cumulative sum, in robust sigmas.
        clip: bound of each point's contribution, in robust sigmas.
        threshold: score at which a point is an anomaly.
    """

    name = "cusum"
    _TEMPLATE = (
        "cumulative deviation {z:.1f} (alarm at 4) {side} the reference {expected:.4g}; value {value:.4g}"
    )
    _SHIFT = "level shift of {detail:+.4g} from the reference {expected:.4g} (CUSUM {z:.1f}, alarm at 4)"

    def __init__(
        self,
        *,
        window: int = 120,
        min_points: int = 30,
        period: int = 0,
        gamma: float = 0.1,
        k: float = 1.0,
        h: float = 6.0,
        clip: float = 4.0,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self._ref = RobustZ(
            window=window, min_points=min_points, period=period, gamma=gamma, clip=clip, threshold=threshold
        )
        self.k = params.number("k", k, 0.0, 1e9)
        self.h = params.number("h", h, 0.0, 1e9, low_open=True)
        self.clip = self._ref.clip
        self.threshold = self._ref.threshold
        self._alarm = self.h * z_of(self.threshold) / 4.0  # S at which the score reaches the threshold
        self._hi = self._lo = 0.0
        self._hi_sum = self._lo_sum = 0.0  # raw residuals since each sum left zero
        self._hi_n = self._lo_n = 0

    def update(self, t_ns: int, value: float) -> Score | None:
        step = self._ref._step(value)
        if step is None:
            return None
        expected, z_raw, sigma = step
        resid = value - expected
        clip, k = self.clip, self.k
        r = min(max(z_raw, -clip), clip)
        hi = self._hi + r - k
        if hi > 0.0:
            self._hi_sum = self._hi_sum + resid if self._hi > 0.0 else resid
            self._hi_n = self._hi_n + 1 if self._hi > 0.0 else 1
        else:
            hi = 0.0
        lo = self._lo - r - k
        if lo > 0.0:
            self._lo_sum = self._lo_sum + resid if self._lo > 0.0 else resid
            self._lo_n = self._lo_n + 1 if self._lo > 0.0 else 1
        else:
            lo = 0.0
        up = hi >= lo
        stat = hi if up else -lo
        z = 4.0 * stat / self.h
        s = score_of(z)
        alarm = s >= self.threshold
        lower = expected - (self._alarm - self._lo + k) * sigma
        upper = expected + (self._alarm - self._hi + k) * sigma
        if alarm:
            shift = self._hi_sum / self._hi_n if up else self._lo_sum / self._lo_n
            self._ref.rebase(shift)
            hi = lo = 0.0
            out = Score(s, expected, lower, upper, True, value, z, shift, self._SHIFT)
        else:
            out = Score(s, expected, lower, upper, False, value, z, 0.0, self._TEMPLATE)
        self._hi, self._lo = hi, lo
        return out
