"""Series budgets: at most N series per metric, so one bad label cannot flood the store.

A metric series is its name plus resource, scope and point attributes, identified by a 64-bit
``series_id`` (``otel_audio.processors.base.series_id``). A value such as a request id put on a
metric attribute makes every point a new series; the budget turns that into a bounded number of
series and an OTLP partial success for the rest, instead of unbounded memory and disk.

:class:`CardinalityLimiter` keeps the set of admitted series ids per metric. A series once admitted
stays admitted (its points are always accepted); a new series is admitted while the metric has
fewer than ``max_series_per_metric`` series; the points of series beyond the budget are refused
and counted per metric. After a restart, :meth:`CardinalityLimiter.restore` re-admits the series
found in the write-ahead log, so budgets survive restarts.

Usage::

    limiter = CardinalityLimiter(max_series_per_metric=1000)
    keep = limiter.admit("audio.processing.duration", series_ids)  # bool mask, one per point
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np


class CardinalityLimiter:
    """Admits metric points by series, up to a fixed number of series per metric. Thread-safe.

    Args:
        max_series_per_metric: how many distinct series each metric name may have; must be >= 1.
    """

    def __init__(self, max_series_per_metric: int) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric must be >= 1, got {max_series_per_metric}")
        self.max_series_per_metric = max_series_per_metric
        self._known: dict[str, set[int]] = {}
        self._rejected: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, metric: str, series_ids: np.ndarray) -> np.ndarray:
        """Which points to keep: a bool array, one entry per entry of ``series_ids``.

        ``series_ids`` holds the series id of each point (repeats allowed). Known series are
        always admitted; new ones in order of first appearance while the budget lasts. Refused
        points are added to :meth:`rejected_points`.
        """
        ids = np.asarray(series_ids, dtype=np.uint64)
        if ids.size == 0:
            return np.ones(0, dtype=bool)
        unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        candidates = unique.tolist()
        with self._lock:
            known = self._known.setdefault(metric, set())
            if known.issuperset(candidates):
                return np.ones(ids.size, dtype=bool)
            room = self.max_series_per_metric - len(known)
            admitted_unique = np.ones(unique.size, dtype=bool)
            # New series are taken in order of their first point, so a request is cut predictably.
            for index in np.argsort(first, kind="stable").tolist():
                sid = candidates[index]
                if sid in known:
                    continue
                if room > 0:
                    known.add(sid)
                    room -= 1
                else:
                    admitted_unique[index] = False
            keep = admitted_unique[inverse.reshape(-1)]
            refused = int(ids.size - np.count_nonzero(keep))
            if refused:
                self._rejected[metric] = self._rejected.get(metric, 0) + refused
        return keep

    def restore(self, metric: str, series_ids: Iterable[int] | np.ndarray) -> None:
        """Re-admit series admitted before a restart (WAL replay); ignores the budget."""
        values = np.asarray(series_ids, dtype=np.uint64).reshape(-1).tolist()
        with self._lock:
            self._known.setdefault(metric, set()).update(values)

    def series_count(self, metric: str) -> int:
        """How many series of ``metric`` are admitted."""
        with self._lock:
            return len(self._known.get(metric, ()))

    def rejected_points(self, metric: str | None = None) -> int:
        """Points refused so far for ``metric``, or for all metrics when ``metric`` is None."""
        with self._lock:
            if metric is None:
                return sum(self._rejected.values())
            return self._rejected.get(metric, 0)

    def rejected_by_metric(self) -> dict[str, int]:
        """A snapshot of refused points per metric (for self-monitoring)."""
        with self._lock:
            return dict(self._rejected)
