"""Live updates: a fan-out hub the processor chain feeds, drained by server-sent-event clients.

The receiver appends one :class:`DashboardHub` to the end of its processor chain, so it sees every
accepted batch and every series the processors emit (span metrics, derived, SLO), right after
they are stored. ``process`` only copies the newest point of each series into the pending map of
each subscribed client: it never blocks the chain.

Each client (:class:`Subscription`) is bounded and coalescing:

- pending updates are a map keyed by series, so a value that changes ten times between two
  sends is sent once, with its newest value; at most ``max_pending`` series wait per client;
- a client is sent at most one frame per ``min_interval_s`` (250 ms by default);
- a client whose pending map overflows (it does not read fast enough) is dropped: its stream
  ends with a ``dropped`` event and the page reconnects and reloads.

Example::

    hub = DashboardHub()
    sub = hub.subscribe(metrics={"audio.derived.realtime_factor"})
    hub.process(metric_batch)          # on the chain's writer thread
    frame = await sub.next_frame()     # {"points": [...], "sent_ms": ...} or None when dropped
    hub.unsubscribe(sub)
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import Batch, MetricBatch, SpanBatch

DEFAULT_MIN_INTERVAL_S = 0.25
DEFAULT_MAX_PENDING = 5000


class Subscription:
    """One stream client: which metrics it wants, and its pending, coalesced updates.

    Args:
        metrics: metric names to receive; empty means every metric.
        services: service names to receive; empty means every service.
        min_interval_s: least time between two frames.
        max_pending: most series waiting to be sent before the client is dropped.
    """

    def __init__(
        self,
        metrics: Iterable[str] = (),
        services: Iterable[str] = (),
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.metrics = frozenset(metrics)
        self.services = frozenset(services)
        self.min_interval_s = min_interval_s
        self.max_pending = max_pending
        self.dropped = False
        self._pending: dict[str, dict[str, Any]] = {}
        self._spans: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._last_sent = 0.0

    def wants(self, metric: str, service: str) -> bool:
        return (not self.metrics or metric in self.metrics) and (
            not self.services or service in self.services
        )

    def offer(self, updates: list[dict[str, Any]], spans: dict[str, int]) -> None:
        """Merge updates (called on the writer thread); drops the client past ``max_pending``."""
        with self._lock:
            if self.dropped:
                return
            for update in updates:
                if self.wants(update["metric"], update["service"]):
                    self._pending[update["series"]] = update
            for service, count in spans.items():
                if not self.services or service in self.services:
                    self._spans[service] = self._spans.get(service, 0) + count
            if len(self._pending) > self.max_pending:
                self.dropped = True
                self._pending.clear()
            has_news = bool(self._pending or self._spans) or self.dropped
        if has_news and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def take(self) -> dict[str, Any]:
        """Every pending update, now (and no more pending)."""
        with self._lock:
            points, self._pending = list(self._pending.values()), {}
            spans, self._spans = self._spans, {}
        return {"points": points, "spans": spans}

    async def next_frame(self, timeout_s: float = 15.0) -> dict[str, Any] | None:
        """The next coalesced frame; ``{}`` after ``timeout_s`` without news (a keep-alive), ``None``
        once the client is dropped."""
        if self._wake is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            if self._pending or self._spans:
                self._wake.set()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        except TimeoutError:
            return {}
        self._wake.clear()
        if self.dropped:
            return None
        wait = self._last_sent + self.min_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.dropped:
            return None
        self._last_sent = time.monotonic()
        frame = self.take()
        frame["sent_ms"] = time.time() * 1000
        return frame


class DashboardHub:
    """The last member of the processor chain: hands new points to live clients.

    ``name``, ``process``, ``tick`` and ``close`` make it a :class:`~otel_audio.processors.base.Processor`.
    """

    name = "dashboard"

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0  # points handed to at least one client

    def subscribe(self, **options: Any) -> Subscription:
        sub = Subscription(**options)
        with self._lock:
            self._subs = [*self._subs, sub]
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]

    @property
    def clients(self) -> int:
        return len(self._subs)

    def process(self, batch: Batch) -> None:
        subs = self._subs
        if not subs:
            return
        if isinstance(batch, MetricBatch):
            everything = any(not s.metrics for s in subs)
            wanted = None if everything else frozenset().union(*(s.metrics for s in subs))
            updates, spans = newest_points(batch, wanted), {}
        elif isinstance(batch, SpanBatch):
            updates, spans = [], span_counts(batch.spans)
        else:
            return
        if not updates and not spans:
            return
        for sub in subs:
            sub.offer(updates, spans)
        self.published += len(updates)

    def tick(self, now_unix_nano: int) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if not s.dropped]

    def close(self) -> None:
        for sub in self._subs:
            sub.dropped = True
            sub.offer([], {})


def newest_points(batch: MetricBatch, metrics: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """The newest point of every series in a batch (of ``metrics`` only, when given), as the stream
    sends it."""
    points, series_table = batch.points, batch.series
    if metrics is not None:
        series_table = series_table.filter(pc.is_in(series_table.column("metric"), pa.array(sorted(metrics))))
        if series_table.num_rows == 0:
            return []
        points = points.filter(pc.is_in(points.column("series_id"), series_table.column("series_id")))
    if points.num_rows == 0:
        return []
    order = pc.sort_indices(points, [("series_id", "ascending"), ("time_unix_nano", "descending")])
    sorted_points = points.select(["series_id", "time_unix_nano", "value", "count"]).take(order)
    ids = sorted_points.column("series_id").to_numpy()
    keep = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))  # first row of each series
    newest = sorted_points.take(pa.array(keep)).to_pylist()
    series = {row["series_id"]: row for row in series_table.to_pylist()}
    out = []
    for row in newest:
        info = series.get(row["series_id"])
        if info is None:
            continue
        out.append(
            {
                "series": str(row["series_id"]),  # beyond JavaScript's safe integers
                "metric": info["metric"],
                "type": info["type"],
                "service": info["service"] or "",
                "attributes": json.loads(info["attributes"] or "{}"),
                "t": row["time_unix_nano"] / 1e9,
                "value": _finite(row["value"]),
                "count": row["count"],
            }
        )
    return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def span_counts(spans: pa.Table) -> dict[str, int]:
    """Spans per service in a batch (the page refreshes trace panels of those services)."""
    if spans.num_rows == 0:
        return {}
    counts = pc.value_counts(spans.column("service"))
    return {str(c["values"]): int(c["counts"]) for c in counts.to_pylist()}
