"""Series budgets: at most N series per metric, so one bad label cannot flood the store.

A metric series is its name plus resource, scope and point attributes, identified by a 64-bit
``series_id`` (``otel_audio.processors.base.series_id``). A value such as a request id put on a
metric attribute makes every point a new series; the budget turns that into a bounded number of
series and an OTLP partial success for the rest, instead of unbounded memory and disk.

:class:`CardinalityLimiter` keeps the admitted series ids per metric with the time each was last
seen. An admitted series stays admitted while it keeps sending; a new series is admitted while the
metric has fewer than ``max_series_per_metric`` *active* series; the points of series beyond the
budget are refused and counted per metric. A series silent for longer than the idle timeout frees
its slot (:meth:`CardinalityLimiter.tick`): OpenTelemetry SDKs put a random
``service.instance.id`` on their resource, so every restart of a sender starts new series, and a
budget that never forgot would fill up with the series of processes long gone. This is the
"active series" budget Prometheus users know from its head block. After a restart,
:meth:`CardinalityLimiter.restore` re-admits the series found in the write-ahead log, so budgets
survive restarts.

Usage::

    limiter = CardinalityLimiter(max_series_per_metric=1000)
    keep = limiter.admit("audio.processing.duration", series_ids)  # bool mask, one per point
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable

import numpy as np


class CardinalityLimiter:
    """Admits metric points by series, up to a fixed number of series per metric. Thread-safe.

    Args:
        max_series_per_metric: how many active series each metric name may have; must be >= 1.
        idle_ns: a series not seen for this long stops counting against the budget.
    """

    def __init__(self, max_series_per_metric: int, idle_ns: int = 3600 * 10**9) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric must be >= 1, got {max_series_per_metric}")
        self.max_series_per_metric = max_series_per_metric
        self.idle_ns = idle_ns
        self._now = 0  # the latest tick time; admissions are stamped with it
        self._known: dict[str, dict[int, int]] = {}
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
            now = self._now
            known = self._known.setdefault(metric, {})
            if known.keys() >= set(candidates):
                known.update(zip(candidates, itertools.repeat(now)))
                return np.ones(ids.size, dtype=bool)
            room = self.max_series_per_metric - len(known)
            admitted_unique = np.ones(unique.size, dtype=bool)
            # New series are taken in order of their first point, so a request is cut predictably.
            for index in np.argsort(first, kind="stable").tolist():
                sid = candidates[index]
                if sid in known:
                    known[sid] = now
                    continue
                if room > 0:
                    known[sid] = now
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
            self._known.setdefault(metric, {}).update(zip(values, itertools.repeat(self._now)))

    def tick(self, now_ns: int) -> int:
        """Advance the clock to ``now_ns`` and free the slots of idle series; returns how many."""
        with self._lock:
            if self._now == 0:  # first tick: series restored or admitted so far count from now
                for known in self._known.values():
                    known.update(zip(known, itertools.repeat(now_ns)))
            self._now = now_ns
            cutoff = now_ns - self.idle_ns
            freed = 0
            for known in self._known.values():
                idle = [sid for sid, seen in known.items() if seen < cutoff]
                for sid in idle:
                    del known[sid]
                freed += len(idle)
            return freed

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
