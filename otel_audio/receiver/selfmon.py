"""The receiver watching itself: ingest rate, rejects by reason, queue depth, WAL lag, bytes stored.

The figures live in a ``prometheus_client`` registry, so ``/metrics`` serves them in the
Prometheus text format for any scraper; :class:`SelfMonitor` also writes them into the
receiver's own store on every tick, as series of the service ``otel-audio-receiver``, so the
query API, alert rules and the dashboard treat them like any other metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
    MetricType,
    canonical_json,
    series_row,
)
from otel_audio.version import __version__

SERVICE = "otel-audio-receiver"
_RESOURCE = canonical_json({"service.name": SERVICE, "service.version": __version__})
_SCOPE_NAME = "otel_audio.receiver.selfmon"
# The scope part of series ids, defined as in otel_audio.receiver.decode.scope_identity.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SelfMetrics:
    """The receiver's own instruments, in one registry per receiver instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "otel_audio_receiver_requests",
            "Export requests by signal, transport and outcome.",
            ["signal", "transport", "outcome"],
            registry=r,
        )
        self.accepted = Counter(
            "otel_audio_receiver_accepted_items",
            "Data points, spans or log records stored.",
            ["signal"],
            registry=r,
        )
        self.rejected = Counter(
            "otel_audio_receiver_rejected_items",
            "Items refused, by reason (invalid, cardinality, overloaded, unavailable, too_large).",
            ["signal", "reason"],
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "otel_audio_receiver_inflight_bytes",
            "Bytes of requests being ingested (the queue depth).",
            registry=r,
        )
        self.wal_lag = Gauge(
            "otel_audio_receiver_wal_lag_records", "WAL records written but not yet fsynced.", registry=r
        )
        self.wal_bytes = Gauge("otel_audio_receiver_wal_bytes", "Bytes in the write-ahead log.", registry=r)
        self.stored_rows = Gauge(
            "otel_audio_receiver_stored_rows", "Rows held by the store.", ["kind"], registry=r
        )
        self.stored_bytes = Gauge(
            "otel_audio_receiver_stored_bytes", "Bytes held by the store.", ["kind"], registry=r
        )
        self.ack_seconds = Histogram(
            "otel_audio_receiver_ack_seconds",
            "From request received to acknowledgement sent.",
            ["signal"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.processor_seconds = Histogram(
            "otel_audio_receiver_processor_seconds",
            "Time each processor spends on a batch.",
            ["processor"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.processor_errors = Counter(
            "otel_audio_receiver_processor_errors",
            "Batches a processor failed on.",
            ["processor"],
            registry=r,
        )


class SelfMonitor:
    """Processor that turns :class:`SelfMetrics` into store series on each tick.

    Args:
        metrics: the registry to read.
        refresh: called before each snapshot to update gauges read from other parts
            (WAL, store); the service wires it.
    """

    name = "selfmon"

    def __init__(self, metrics: SelfMetrics, refresh: Callable[[], None] | None = None) -> None:
        self._metrics = metrics
        self._refresh = refresh
        self._emit: Callable[[Batch], None] | None = None
        self._start_ns = time.time_ns()

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        """The chain hands over how to pass new series to the processors after this one."""
        self._emit = emit

    def process(self, batch: Batch) -> None:
        """Ingest counts are recorded where requests are handled; nothing to do per batch."""

    def tick(self, now_unix_nano: int) -> None:
        if self._refresh is not None:
            self._refresh()
        if self._emit is not None:
            self._emit(self.snapshot(now_unix_nano))

    def close(self) -> None:
        pass

    def snapshot(self, now_unix_nano: int) -> MetricBatch:
        """All current values as one batch: counters as cumulative sums, gauges, histograms."""
        series: list[dict] = []
        points: list[dict] = []
        for family in self._metrics.registry.collect():
            if family.type == "histogram":
                self._histograms(family, now_unix_nano, series, points)
                continue
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                counter = family.type == "counter"
                sid = self._series(
                    sample.name,
                    MetricType.SUM if counter else MetricType.GAUGE,
                    family.documentation,
                    sample.labels,
                    series,
                    monotonic=counter,
                )
                points.append(self._point(sid, now_unix_nano, value=float(sample.value)))
        return MetricBatch(
            points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
            series=pa.Table.from_pylist(series, schema=SERIES_SCHEMA),
            exemplars=EXEMPLARS_SCHEMA.empty_table(),
        )

    def _histograms(self, family, now: int, series: list[dict], points: list[dict]) -> None:
        by_labels: dict[str, dict] = {}
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k != "le"}
            entry = by_labels.setdefault(
                canonical_json(labels), {"labels": labels, "buckets": [], "sum": 0.0}
            )
            if sample.name.endswith("_bucket"):
                entry["buckets"].append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                entry["sum"] = float(sample.value)
        for entry in by_labels.values():
            cumulative = sorted(entry["buckets"])
            bounds = [le for le, _ in cumulative if le != float("inf")]
            counts, previous = [], 0.0
            for _, total in cumulative:
                counts.append(int(total - previous))
                previous = total
            sid = self._series(
                family.name, MetricType.HISTOGRAM, family.documentation, entry["labels"], series
            )
            point = self._point(sid, now, value=entry["sum"])
            point.update(count=int(previous), bounds=bounds, bucket_counts=counts)
            points.append(point)

    def _series(
        self,
        name: str,
        kind: MetricType,
        description: str,
        labels: dict[str, str],
        out: list[dict],
        monotonic: bool = False,
    ) -> int:
        row = series_row(
            name,
            scope=_SCOPE_NAME,
            scope_version=__version__,
            attributes=dict(labels),
            service=SERVICE,
            resource=_RESOURCE,
            description=description,
            kind=kind,
            monotonic=monotonic or kind is MetricType.HISTOGRAM,
        )
        out.append(row)
        return row["series_id"]

    def _point(self, sid: int, now: int, value: float) -> dict:
        return {
            "series_id": sid,
            "time_unix_nano": now,
            "start_time_unix_nano": self._start_ns,
            "value": value,
        }
