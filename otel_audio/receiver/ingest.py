"""Ingest: one decoded OTLP request becomes durable, then flows down the processor chain.

The order is the durability contract: admission (bounded in-flight bytes) -> decode (with
partial success for what cannot be kept) -> write-ahead log, fsynced -> processor chain, in LSN
order (:mod:`~otel_audio.receiver.sequencer`) -> acknowledgement. A request that is
acknowledged is therefore on disk and already queryable; a request the receiver cannot keep
is refused with a retryable status instead:

- over the in-flight byte budget, the WAL's own queue full, or the process's resident memory
  past ``limits.max_memory_bytes``: :class:`Overloaded` (gRPC RESOURCE_EXHAUSTED / HTTP 429,
  with a retry delay);
- the disk refusing writes: :class:`Unavailable` (gRPC UNAVAILABLE / HTTP 503, retry delay).

Both transports (``grpc_server``, ``http_server``) call :meth:`Ingestor.export`, so they
behave identically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_audio.processors.base import Batch, MetricBatch, Signal
from otel_audio.receiver import decode_fast, decode_spans_fast
from otel_audio.receiver.attribute_limits import AttributeLimits
from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.chain import ProcessorChain
from otel_audio.receiver.decode import decode_logs, decode_metrics, decode_traces
from otel_audio.receiver.memory_guard import MemoryGuard
from otel_audio.receiver.selfmon import SelfMetrics
from otel_audio.receiver.sequencer import Sequencer
from otel_audio.store.batch_codec import decode_batch, encode_batch
from otel_audio.store.wal import WalOverloaded, WalUnavailable, WriteAheadLog

REQUEST_TYPES = {
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
    Signal.LOGS: ExportLogsServiceRequest,
}


class InvalidRequest(Exception):
    """The payload is not a decodable Export*ServiceRequest; the sender must not retry it."""


class Overloaded(Exception):
    """More arrives than the receiver can absorb right now; the sender should retry later."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(Exception):
    """The receiver cannot make data durable (disk full, read-only); the sender should retry."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class ExportResult:
    """What the reply reports: accepted and rejected item counts, and why items were rejected."""

    accepted: int
    rejected: int
    message: str


class Ingestor:
    """Admission, decode, WAL and chain for every export request, from any transport.

    Args:
        wal: where accepted batches are made durable before the reply.
        chain: the processors every accepted batch flows through.
        limiter: per-metric series budgets (partial success beyond them).
        metrics: self-monitoring counters.
        max_inflight_bytes: bytes of requests being ingested at once before refusing more.
        retry_after_s: the delay suggested to senders that are refused.
        pressure: says why the receiver cannot take more right now (the store's memory is
            full while a flush catches up), or None; checked before each request.
        max_memory_bytes: resident memory of the process past which requests are refused
            (0: no limit); see :class:`MemoryGuard`.
        attribute_limits: attribute count and value length per item
            (:mod:`~otel_audio.receiver.attribute_limits`); None: no limits.
    """

    def __init__(
        self,
        wal: WriteAheadLog,
        chain: ProcessorChain,
        limiter: CardinalityLimiter,
        metrics: SelfMetrics,
        max_inflight_bytes: int,
        retry_after_s: int,
        pressure: Callable[[], str | None] = lambda: None,
        max_memory_bytes: int = 0,
        attribute_limits: AttributeLimits | None = None,
    ) -> None:
        self._wal = wal
        self._attribute_limits = attribute_limits
        self._memory = MemoryGuard(max_memory_bytes)
        self._pressure = pressure
        self._chain = chain
        self._limiter = limiter
        self._metrics = metrics
        self._max_inflight = max_inflight_bytes
        self._retry_after_s = retry_after_s
        self._inflight = 0
        self._lock = threading.Lock()
        self._sequencer = Sequencer(int(wal.stats()["last_lsn"]) + 1)

    def export(self, signal: Signal, request: Any, size: int, transport: str) -> ExportResult:
        """Make one request durable and processed; raise to refuse it.

        ``request`` is the serialized protobuf (``bytes``; metrics then take the native fast path
        when it is built) or an already parsed message (OTLP/JSON). Raises
        :class:`InvalidRequest` for undecodable bytes, :class:`Overloaded` or
        :class:`Unavailable` when the data cannot be taken now.
        """
        began = time.perf_counter()
        self._admit(signal, size, transport)
        try:
            try:
                decoded = self._decode(signal, request)
            except InvalidRequest:
                self._metrics.requests.labels(signal.value, transport, "invalid").inc()
                raise
            if self._attribute_limits is not None:
                decoded = self._attribute_limits.apply(decoded)
            batch = decoded.batch
            if len(batch):
                self._log_and_process(batch, signal, transport, len(batch) + decoded.rejected)
            message = decoded.error_message
            over_budget = decoded.rejected_over_budget
            self._metrics.accepted.labels(signal.value).inc(len(batch))
            if over_budget:
                self._metrics.rejected.labels(signal.value, "cardinality").inc(over_budget)
            if decoded.rejected > over_budget:
                self._metrics.rejected.labels(signal.value, "invalid").inc(decoded.rejected - over_budget)
            outcome = "partial" if decoded.rejected or message else "ok"
            self._metrics.requests.labels(signal.value, transport, outcome).inc()
            self._metrics.ack_seconds.labels(signal.value).observe(time.perf_counter() - began)
            return ExportResult(len(batch), decoded.rejected, message)
        finally:
            with self._lock:
                self._inflight -= size
                self._metrics.inflight_bytes.set(self._inflight)

    def _log_and_process(self, batch: Batch, signal: Signal, transport: str, items: int) -> None:
        """WAL first, then the chain in LSN order (the store's checkpoints rely on that order)."""
        kind, payload = encode_batch(batch)
        try:
            pending = self._wal.submit(kind, payload)
        except WalOverloaded as exc:
            self._refused(signal, transport, "overloaded", items)
            raise Overloaded(f"write-ahead log queue is full: {exc}", self._retry_after_s) from None
        except WalUnavailable as exc:
            self._refused(signal, transport, "unavailable", items)
            raise Unavailable(f"cannot make data durable: {exc}", self._retry_after_s) from None
        try:
            pending.wait()
        except WalUnavailable as exc:
            self._sequencer.skip(pending.lsn)
            self._refused(signal, transport, "unavailable", items)
            raise Unavailable(f"cannot make data durable: {exc}", self._retry_after_s) from None
        except BaseException:
            self._sequencer.skip(pending.lsn)
            raise
        self._sequencer.run(pending.lsn, lambda: self._chain.process(replace(batch, lsn=pending.lsn)))

    def tick(self, now_unix_nano: int) -> None:
        """Time-driven housekeeping: series silent past the idle timeout free their budget slots."""
        self._limiter.tick(now_unix_nano)

    def refuse(self, signal: Signal, transport: str, outcome: str) -> None:
        """Count a request refused before it reached :meth:`export` (auth, size, decode)."""
        self._metrics.requests.labels(signal.value, transport, outcome).inc()

    @property
    def retry_after_s(self) -> int:
        """The delay suggested to refused senders (``limits.retry_after_s``)."""
        return self._retry_after_s

    def _admit(self, signal: Signal, size: int, transport: str) -> None:
        reason = self._pressure() or self._memory.over()
        if reason is not None:  # a flush catches up within seconds: a short retry delay
            self._refused(signal, transport, "overloaded", 0)
            raise Overloaded(reason, min(1, self._retry_after_s))
        with self._lock:
            if self._inflight and self._inflight + size > self._max_inflight:
                self._refused(signal, transport, "overloaded", 0)
                raise Overloaded(
                    f"{self._inflight} bytes already being ingested (limit {self._max_inflight})",
                    self._retry_after_s,
                )
            self._inflight += size
            self._metrics.inflight_bytes.set(self._inflight)

    def _refused(self, signal: Signal, transport: str, reason: str, items: int) -> None:
        self._metrics.requests.labels(signal.value, transport, reason).inc()
        if items:
            self._metrics.rejected.labels(signal.value, reason).inc(items)

    def _decode(self, signal: Signal, request: Any) -> Any:
        if isinstance(request, (bytes, bytearray, memoryview)):
            try:
                if signal is Signal.METRICS and decode_fast.available():
                    return decode_fast.decode_metrics_bytes(bytes(request), self._limiter)
                if signal is Signal.TRACES:
                    return decode_spans_fast.decode_traces_bytes(bytes(request))
                request = REQUEST_TYPES[signal].FromString(request)
            except DecodeError as exc:
                raise InvalidRequest(f"cannot decode {REQUEST_TYPES[signal].__name__}: {exc}") from None
        if signal is Signal.METRICS:
            return decode_metrics(request, self._limiter)
        if signal is Signal.TRACES:
            return decode_traces(request)
        return decode_logs(request)

    def replay(self, from_lsn: int = 0) -> int:
        """Feed the WAL records from ``from_lsn`` on back through the chain after a restart.

        Call it once, before any :meth:`export`; ``from_lsn`` is the first record the store's
        blocks do not hold. Returns the number of records replayed.
        """
        count = 0
        for lsn, kind, payload in self._wal.replay(from_lsn):
            batch: Batch = replace(decode_batch(kind, payload), lsn=lsn)
            if isinstance(batch, MetricBatch):
                self.restore_series(batch.series)
            self._chain.process(batch)
            count += 1
        self._wal.skip_to(from_lsn - 1)
        self._sequencer = Sequencer(int(self._wal.stats()["last_lsn"]) + 1)
        return count

    def restore_series(self, series: pa.Table) -> None:
        """Series admitted before the restart stay admitted, so budgets survive restarts.

        The receiver passes the store's series dictionary (what blocks hold) before replaying
        the log, and the replay passes each batch's series.
        """
        series = series.select(["metric", "series_id"]).to_pydict()
        by_metric: dict[str, list[int]] = {}
        for metric, sid in zip(series["metric"], series["series_id"], strict=True):
            by_metric.setdefault(metric, []).append(sid)
        for metric, ids in by_metric.items():
            self._limiter.restore(metric, ids)
