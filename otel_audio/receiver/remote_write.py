"""Remote write: the series the processors emit, pushed to any Prometheus-compatible store.

A chain member (``remote_write``) placed after the analytics processors sees what they emit
(aggregates, ``audio.derived.*``, ``traces.span.metrics.*``, ``slo.*``, anomaly and forecast
series) and sends every point to a Prometheus remote-write 1.0 endpoint: Prometheus itself with
``--web.enable-remote-write-receiver``, Mimir, Thanos Receive, VictoriaMetrics, Cortex.

**Protocol.** A request is a ``prometheus.WriteRequest`` protobuf (``timeseries``: labels sorted
by name, ``__name__`` among them; samples in time order, timestamps in milliseconds),
snappy-compressed (block format), posted with ``Content-Encoding: snappy``,
``Content-Type: application/x-protobuf`` and ``X-Prometheus-Remote-Write-Version: 0.1.0``. The
four messages are small, so they are encoded here by hand (:func:`encode_write_request`), with no
generated code. Names and labels are those of ``/metrics`` (:mod:`otel_audio.receiver.promnames`).

**Delivery.** ``process`` turns points into samples and puts them on a bounded queue
(``max_queue`` samples; when full, new samples are dropped and counted). A sender thread wakes
every ``interval`` (or as soon as ``batch_size`` samples wait) and posts batches of at most
``batch_size`` samples, in arrival order. A 2xx answer sends the batch; 5xx, 429 and connection
errors are retried with exponential backoff (``min_backoff`` doubling to ``max_backoff``; a 429's
``Retry-After`` is honoured) up to ``max_retries`` times, then dropped and counted; any other 4xx
means the store refuses the data (out of order, too old, bad labels), so the batch is dropped at
once and counted. ``close()`` sends what is queued, without retries. Counts are the
``otel_audio_receiver_remote_write_samples{outcome}`` self-metric and :meth:`RemoteWrite.stats`.

Options (``docs/prometheus.md``)::

    - remote_write:
        url: http://prometheus:9090/api/v1/write
        bearer_token: env:PROM_TOKEN      # or headers: {X-Scope-OrgID: audio}; env:/file: secrets
        metrics: ['audio\\.derived\\..*', 'slo\\..*']   # full-match regexes; default: every series
        batch_size: 2000
        interval: 5s
"""

from __future__ import annotations

import collections
import logging
import re
import struct
import threading
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from otel_audio.processors.base import Batch, MetricBatch
from otel_audio.processors.units import duration_ns
from otel_audio.receiver.config import resolve_secret
from otel_audio.receiver.promnames import PROCESSOR_SCOPE, describe_row, exportable, samples

_log = logging.getLogger(__name__)

_PROCESSOR_SCOPE = re.compile(PROCESSOR_SCOPE)
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "otel-audio-remote-write",
}
_OPTIONS = ("url", "headers", "bearer_token", "metrics", "batch_size", "interval", "max_queue", "timeout",
            "min_backoff", "max_backoff", "max_retries")  # fmt: skip

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, int, float]  # labels with __name__, timestamp in ms, value


@dataclass(frozen=True)
class Options:
    """Validated ``remote_write`` options; see the module docstring."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    metrics: tuple[re.Pattern[str], ...] = ()
    batch_size: int = 2000
    interval_s: float = 5.0
    max_queue: int = 100_000
    timeout_s: float = 10.0
    min_backoff_s: float = 0.1
    max_backoff_s: float = 30.0
    max_retries: int = 5


# -- the wire format ------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_write_request(series: Iterable[tuple[Labels, Sequence[tuple[int, float]]]]) -> bytes:
    """``prometheus.WriteRequest{timeseries: [TimeSeries{labels, samples}]}`` as protobuf bytes.

    ``Label{name=1, value=2}``, ``Sample{value=1 (double), timestamp=2 (int64 ms)}``,
    ``TimeSeries{labels=1, samples=2}``, ``WriteRequest{timeseries=1}``.
    """
    out = bytearray()
    for labels, points in series:
        body = bytearray()
        for name, value in labels:
            body += _field(1, _field(1, name.encode()) + _field(2, value.encode()))
        for timestamp_ms, value in points:
            sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms)
            body += _field(2, sample)
        out += _field(1, bytes(body))
    return bytes(out)


def compress(payload: bytes) -> bytes:
    """Snappy block format (not framed), as remote write requires."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(payload))


def group_samples(batch: Sequence[Sample]) -> list[tuple[Labels, list[tuple[int, float]]]]:
    """Samples grouped into time series (first-seen order), each series' samples by time."""
    by_series: dict[Labels, list[tuple[int, float]]] = {}
    for labels, timestamp_ms, value in batch:
        by_series.setdefault(labels, []).append((timestamp_ms, value))
    return [(labels, sorted(points)) for labels, points in by_series.items()]


def to_samples(batch: MetricBatch, keep: Callable[[dict[str, Any]], bool]) -> list[Sample]:
    """The remote-write samples of a metric batch's points whose series ``keep`` accepts."""
    series = {row["series_id"]: row for row in batch.series.to_pylist() if keep(row)}
    if not series:
        return []
    out: list[Sample] = []
    for point in batch.points.to_pylist():
        row = series.get(point["series_id"])
        if row is None or (point.get("flags") or 0) & 1:
            continue
        prom = describe_row(row)
        timestamp_ms = int(point["time_unix_nano"]) // 1_000_000
        for name, labels, value in samples(prom, point):
            out.append((tuple(sorted({**labels, "__name__": name}.items())), timestamp_ms, value))
    return out


# -- the chain member -----------------------------------------------------------------------------


class RemoteWrite:
    """Chain member queueing the processors' points and a sender thread posting them.

    Args:
        options: validated options (:func:`parse_options`).
        registry: where the ``remote_write`` self-metrics go (the receiver's), or None.
        post: ``post(body, headers, timeout_s) -> (status, response headers)``; HTTP by default,
            replaceable in tests. Connection errors raise ``OSError``.
        start: start the sender thread (tests drive :meth:`flush` themselves).
    """

    name = "remote_write"

    def __init__(
        self,
        options: Options,
        registry: CollectorRegistry | None = None,
        post: Callable[[bytes, dict[str, str], float], tuple[int, dict[str, str]]] | None = None,
        start: bool = True,
    ) -> None:
        self.options = options
        self._post = post or self._http_post
        self._queue: collections.deque[Sample] = collections.deque()
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._counts = collections.Counter[str]()
        self._metrics = _instruments(registry)
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="remote-write", daemon=True)
            self._thread.start()

    def process(self, batch: Batch) -> None:
        if not isinstance(batch, MetricBatch) or batch.points.num_rows == 0:
            return
        found = to_samples(batch, self._keep)
        if not found:
            return
        with self._lock:
            room = max(self.options.max_queue - len(self._queue), 0)
            self._queue.extend(found[:room])
            depth = len(self._queue)
        if len(found) > room:
            self._count("dropped_queue_full", len(found) - room)
        self._set_depth(depth)
        if depth >= self.options.batch_size:
            self._wake.set()

    def tick(self, now_unix_nano: int) -> None:
        """Sending runs on its own thread at ``interval``; nothing is due on the chain's tick."""

    def close(self) -> None:
        """Stop the sender and send what is queued, once each, without retries."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.options.timeout_s + 5)
        self.flush(retry=False)

    def stats(self) -> dict[str, int]:
        """Samples by outcome (sent, dropped_*) and the current queue depth."""
        with self._lock:
            return {**self._counts, "queued": len(self._queue)}

    def flush(self, retry: bool = True) -> None:
        """Post everything queued now, in batches of ``batch_size``."""
        with self._send_lock:
            while True:
                with self._lock:
                    count = min(len(self._queue), self.options.batch_size)
                    batch = [self._queue.popleft() for _ in range(count)]
                    depth = len(self._queue)
                self._set_depth(depth)
                if not batch:
                    return
                self._deliver(batch, retry)

    def _keep(self, row: dict[str, Any]) -> bool:
        scope = row["scope"] or ""
        if not _PROCESSOR_SCOPE.fullmatch(scope) or not exportable(row["type"], row["temporality"] or ""):
            return False
        return not self.options.metrics or any(p.fullmatch(row["metric"]) for p in self.options.metrics)

    def _deliver(self, batch: list[Sample], retry: bool) -> None:
        body = compress(encode_write_request(group_samples(batch)))
        headers = {**HEADERS, **self.options.headers}
        backoff = self.options.min_backoff_s
        attempts = self.options.max_retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                status, reply_headers = self._post(body, headers, self.options.timeout_s)
            except OSError as exc:
                status, reply_headers, reason = 0, {}, str(exc)
            else:
                reason = f"HTTP {status}"
            if 200 <= status < 300:
                self._count("sent", len(batch))
                return
            if 400 <= status < 500 and status != 429:
                _log.warning(
                    "remote write to %s refused %d samples: %s", self.options.url, len(batch), reason
                )
                self._count("dropped_rejected", len(batch))
                return
            if attempt + 1 < attempts:
                wait = _retry_after(reply_headers) if status == 429 else None
                self._stop.wait(wait if wait is not None else backoff)  # closing: retry at once
                backoff = min(backoff * 2, self.options.max_backoff_s)
        _log.warning(
            "remote write to %s failed (%s); %d samples dropped", self.options.url, reason, len(batch)
        )
        self._count("dropped_failed", len(batch))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.options.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # the sender must outlive one bad batch
                _log.exception("remote write sender failed")

    def _http_post(
        self, body: bytes, headers: dict[str, str], timeout_s: float
    ) -> tuple[int, dict[str, str]]:
        request = urllib.request.Request(self.options.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                return reply.status, dict(reply.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()) if exc.headers else {}

    def _count(self, outcome: str, n: int) -> None:
        with self._lock:
            self._counts[outcome] += n
        if self._metrics is not None:
            self._metrics[0].labels(outcome).inc(n)

    def _set_depth(self, depth: int) -> None:
        if self._metrics is not None:
            self._metrics[1].set(depth)


def _retry_after(headers: dict[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except ValueError:
                return None
    return None


_INSTRUMENTS: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Counter, Gauge]] = (
    weakref.WeakKeyDictionary()
)


def _instruments(registry: CollectorRegistry | None) -> tuple[Counter, Gauge] | None:
    """The self-metrics, created once per registry (a registry refuses a name twice)."""
    if registry is None:
        return None
    if registry not in _INSTRUMENTS:
        _INSTRUMENTS[registry] = (
            Counter(
                "otel_audio_receiver_remote_write_samples",
                "Remote-write samples by outcome (sent, dropped_queue_full, _rejected, _failed).",
                ["outcome"],
                registry=registry,
            ),
            Gauge(
                "otel_audio_receiver_remote_write_queued", "Samples waiting to be sent.", registry=registry
            ),
        )
    return _INSTRUMENTS[registry]


# -- options --------------------------------------------------------------------------------------


def parse_options(options: dict[str, Any] | None) -> Options:
    """Validate ``remote_write`` options; ``ValueError`` names the option and what it accepts."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown option; accepted: {', '.join(_OPTIONS)}")
    url = options.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url: expected an http:// or https:// URL, got {url!r}")
    raw_headers = options.get("headers", {})
    # Header values may be secrets: errors name the key and the type, never the value.
    if not isinstance(raw_headers, dict):
        kind = type(raw_headers).__name__
        raise ValueError(f"headers: expected a mapping of header names to strings, got {kind}")
    for key, value in raw_headers.items():
        if not isinstance(value, str):
            raise ValueError(f"headers.{key}: expected a string, got {type(value).__name__}")
    headers = {str(k): resolve_secret(v, f"headers.{k}") for k, v in raw_headers.items()}
    if "bearer_token" in options:
        token = options["bearer_token"]
        if not isinstance(token, str) or not token:
            kind = type(token).__name__  # a secret: name the type, never echo it
            raise ValueError(f"bearer_token: expected a non-empty token, env:NAME or file:/path, got {kind}")
        headers["Authorization"] = f"Bearer {resolve_secret(token, 'bearer_token')}"
    patterns = options.get("metrics", [])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"metrics: expected a list of regular expressions, got {patterns!r}")
    compiled = []
    for i, text in enumerate(patterns):
        try:
            compiled.append(re.compile(text))
        except re.error as exc:
            raise ValueError(f"metrics[{i}]: not a regular expression ({exc}): {text!r}") from None
    return Options(
        url=url,
        headers=headers,
        metrics=tuple(compiled),
        batch_size=_count_option(options, "batch_size", 2000),
        interval_s=_seconds(options, "interval", "5s"),
        max_queue=_count_option(options, "max_queue", 100_000),
        timeout_s=_seconds(options, "timeout", "10s"),
        min_backoff_s=_seconds(options, "min_backoff", "100ms"),
        max_backoff_s=_seconds(options, "max_backoff", "30s"),
        max_retries=_count_option(options, "max_retries", 5, minimum=0),
    )


def _count_option(options: dict[str, Any], key: str, default: int, minimum: int = 1) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _seconds(options: dict[str, Any], key: str, default: str) -> float:
    value = options.get(key, default)
    try:
        nanos = duration_ns(value if isinstance(value, str) else "", key)
    except ValueError:
        raise ValueError(f"{key}: expected a duration like '500ms', '5s', '1m', got {value!r}") from None
    if nanos <= 0:
        raise ValueError(f"{key}: expected a positive duration, got {value!r}")
    return nanos / 1e9


def from_options(options: dict[str, Any] | None, registry: CollectorRegistry | None = None) -> RemoteWrite:
    """The chain member for the receiver config's ``remote_write`` entry."""
    return RemoteWrite(parse_options(options), registry)
