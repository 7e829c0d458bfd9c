"""Streaming building blocks the detectors share: an exact rolling median/MAD and a seasonal profile.

:class:`RollingWindow` keeps the last ``size`` values twice: in arrival order (a deque) and sorted
(a Python list maintained with :mod:`bisect`). The median is then an index lookup, and the MAD
(median absolute deviation) is the k-th smallest element of two sorted sequences (distances below
and above the median), found by binary search in O(log n). Insertion and removal are O(log n)
comparisons plus a pointer ``memmove`` that is negligible next to Python's per-call cost for windows
up to ~10^4. Both statistics are exact, not approximations.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

ROBUST_SIGMA = 1.4826  # MAD -> standard deviation for normal data


class RollingWindow:
    """The last ``size`` values, with exact median and MAD.

    Args:
        size: how many values to keep.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def push(self, value: float) -> None:
        """Add a value, dropping the oldest once the window is full."""
        if len(self._fifo) == self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]
        self._fifo.append(value)
        insort(self._sorted, value)

    def shift(self, delta: float) -> None:
        """Add ``delta`` to every value (order is kept): re-baselining after a level shift."""
        self._fifo = deque(v + delta for v in self._fifo)
        self._sorted = [v + delta for v in self._sorted]

    def median(self) -> float:
        s = self._sorted
        n = len(s)
        half = n >> 1
        if n & 1:
            return s[half]
        return 0.5 * (s[half - 1] + s[half])

    def mad(self, median: float) -> float:
        """Median of ``|x - median|`` over the window."""
        s = self._sorted
        n = len(s)
        p = bisect_left(s, median)
        half = n >> 1
        if n & 1:
            return _kth_distance(s, p, median, half)
        below, above = _kth_distances(s, p, median, half - 1)
        return 0.5 * (below + above)

    def median_mad(self) -> tuple[float, float]:
        """``(median(), mad(median()))`` in one call: what the detectors ask for every point."""
        s = self._sorted
        n = len(s)
        half = n >> 1
        if n & 1:
            m = s[half]
            return m, _kth_distance(s, bisect_left(s, m), m, half)
        m = 0.5 * (s[half - 1] + s[half])
        below, above = _kth_distances(s, bisect_left(s, m), m, half - 1)
        return m, 0.5 * (below + above)


def _kth_distances(s: list[float], p: int, m: float, k: int) -> tuple[float, float]:
    """The k-th and (k+1)-th smallest of ``|s[i] - m|``: the k-th by :func:`_kth_distance`'s search,
    the next as the nearer of the two sequences' next candidates (O(1) more instead of a second
    search)."""
    n_low, n_high = p, len(s) - p
    lo, hi = max(0, k + 1 - n_high), min(k + 1, n_low)
    while lo < hi:
        i = (lo + hi) >> 1
        if m - s[p - 1 - i] < s[p + k - i] - m:
            lo = i + 1
        else:
            hi = i
    best = m - s[p - lo] if lo > 0 else -1.0
    up = k + 1 - lo  # distances taken from above the median
    if up > 0:
        above = s[p + up - 1] - m
        if above > best:
            best = above
    following = m - s[p - 1 - lo] if lo < n_low else math.inf
    if up < n_high:
        above = s[p + up] - m
        if above < following:
            following = above
    return best, following


def _kth_distance(s: list[float], p: int, m: float, k: int) -> float:
    """The k-th smallest (0-based) of ``|s[i] - m|``; ``s`` sorted, ``s[:p] < m <= s[p:]``.

    The distances below ``m`` read ``m - s[p-1], m - s[p-2], ...`` (increasing) and those above
    ``s[p] - m, s[p+1] - m, ...`` (increasing): the k-th of two sorted sequences. Binary search
    on how many of the k+1 smallest come from the lower side.
    """
    n_low, n_high = p, len(s) - p
    lo, hi = max(0, k + 1 - n_high), min(k + 1, n_low)
    while lo < hi:
        i = (lo + hi) >> 1
        if m - s[p - 1 - i] < s[p + k - i] - m:
            lo = i + 1
        else:
            hi = i
    best = -1.0
    if lo > 0:
        best = m - s[p - lo]
    if k + 1 - lo > 0:
        best = max(best, s[p + k - lo] - m)
    return best


class SeasonalProfile:
    """An additive seasonal profile of ``period`` phases (points), learned by exponential smoothing.

    The first ``period`` values initialise it (their circular moving average over ``period // 24 + 1``
    points, minus its median, so the noise of one cycle is mostly averaged out); afterwards
    ``update`` moves a phase's offset by ``gamma`` times the residual it is given, so callers
    clip residuals first to keep anomalies out of the profile.

    Args:
        period: points per season; 0 switches the profile off (all offsets 0, ready at once).
        gamma: smoothing weight of each new residual.
    """

    def __init__(self, period: int, gamma: float) -> None:
        self.period = period
        self.gamma = gamma
        self.offsets: list[float] = []
        self._first: list[float] = []

    @property
    def ready(self) -> bool:
        return self.period == 0 or bool(self.offsets)

    def learn(self, value: float) -> bool:
        """Feed a warm-up value; True once the profile is initialised."""
        self._first.append(value)
        if len(self._first) == self.period:
            self.offsets = _smoothed_offsets(self._first)
            self._first = []
            return True
        return False

    def offset(self, phase: int) -> float:
        return self.offsets[phase] if self.period else 0.0

    def update(self, phase: int, residual: float) -> None:
        if self.period:
            self.offsets[phase] += self.gamma * residual


def _smoothed_offsets(values: list[float]) -> list[float]:
    n = len(values)
    half = n // 48
    width = 2 * half + 1
    smooth = [sum(values[(i + j) % n] for j in range(-half, half + 1)) / width for i in range(n)]
    mid = sorted(smooth)[n // 2]
    return [v - mid for v in smooth]
