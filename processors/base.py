"""The types every receiver stage shares: columnar batches, their Arrow schemas, the Processor protocol.

Ingest decodes each OTLP request into one batch of Arrow tables and hands it down the
processor chain (``otel_audio.receiver.chain``): storage, self-monitoring, and in later
stages aggregation, alerting, SLOs. Data moves forward only; a processor reads the batch it
is given and the store's query interface, never another processor's internals.

Conventions of the tables:

- times are ``int64`` nanoseconds since the Unix epoch, as in OTLP;
- trace and span ids are lower-case hex strings (32 and 16 characters), ``""`` when absent,
  as in OTLP/JSON and the Jaeger API;
- attribute sets are canonical JSON objects (sorted keys, compact separators), so equal
  sets are equal strings and DuckDB's JSON functions can read them;
- a metric series is its metric name plus resource, scope and point attributes; its
  ``series_id`` is a stable 64-bit hash of those (:func:`series_id`), the same after a restart.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa


class Signal(enum.Enum):
    """The three OTLP signals."""

    METRICS = "metrics"
    TRACES = "traces"
    LOGS = "logs"


class MetricType(enum.Enum):
    """OTLP metric data kinds, as stored in ``SERIES_SCHEMA.type``."""

    GAUGE = "gauge"
    SUM = "sum"
    HISTOGRAM = "histogram"
    EXPONENTIAL_HISTOGRAM = "exponential_histogram"
    SUMMARY = "summary"


class Temporality(enum.Enum):
    """Aggregation temporality of sums and histograms (gauges and summaries: unspecified)."""

    UNSPECIFIED = "unspecified"
    DELTA = "delta"  # each point covers (start, time] only
    CUMULATIVE = "cumulative"  # each point covers (start, time]; start stays until the sender restarts


SERIES_SCHEMA = pa.schema(
    [
        ("series_id", pa.uint64()),
        ("metric", pa.string()),
        ("type", pa.string()),  # MetricType value
        ("unit", pa.string()),
        ("description", pa.string()),
        ("temporality", pa.string()),  # Temporality value
        ("monotonic", pa.bool_()),
        ("service", pa.string()),  # resource service.name, for convenience
        ("resource", pa.string()),  # canonical JSON
        ("scope", pa.string()),
        ("scope_version", pa.string()),
        ("attributes", pa.string()),  # point attributes, canonical JSON
    ]
)

# One row per data point. Columns that do not apply to a point's type are null.
POINTS_SCHEMA = pa.schema(
    [
        ("series_id", pa.uint64()),
        ("time_unix_nano", pa.int64()),
        ("start_time_unix_nano", pa.int64()),
        ("value", pa.float64()),  # gauge/sum value; histogram and summary: their sum
        ("count", pa.uint64()),  # histogram and summary count
        ("min", pa.float64()),
        ("max", pa.float64()),
        ("bounds", pa.list_(pa.float64())),  # explicit histogram upper bounds
        ("bucket_counts", pa.list_(pa.uint64())),  # explicit histogram, len(bounds) + 1
        ("exp_scale", pa.int32()),
        ("exp_zero_count", pa.uint64()),
        ("exp_zero_threshold", pa.float64()),
        ("exp_positive_offset", pa.int32()),
        ("exp_positive_counts", pa.list_(pa.uint64())),
        ("exp_negative_offset", pa.int32()),
        ("exp_negative_counts", pa.list_(pa.uint64())),
        ("quantiles", pa.list_(pa.float64())),  # summary quantiles, e.g. 0.5, 0.99
        ("quantile_values", pa.list_(pa.float64())),
        ("flags", pa.uint32()),  # OTLP DataPointFlags (bit 0: no recorded value)
    ]
)

EXEMPLARS_SCHEMA = pa.schema(
    [
        ("series_id", pa.uint64()),
        ("time_unix_nano", pa.int64()),
        ("value", pa.float64()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("attributes", pa.string()),  # filtered attributes, canonical JSON
    ]
)

SPANS_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("parent_span_id", pa.string()),
        ("trace_state", pa.string()),
        ("name", pa.string()),
        ("kind", pa.int8()),  # OTLP SpanKind: 0 unset, 1 internal, 2 server, 3 client, 4 producer, 5 consumer
        ("start_time_unix_nano", pa.int64()),
        ("end_time_unix_nano", pa.int64()),
        ("duration_ns", pa.int64()),
        ("status_code", pa.int8()),  # OTLP StatusCode: 0 unset, 1 ok, 2 error
        ("status_message", pa.string()),
        ("service", pa.string()),
        ("resource", pa.string()),
        ("scope", pa.string()),
        ("scope_version", pa.string()),
        ("attributes", pa.string()),
        ("events", pa.string()),  # JSON list of {time_unix_nano, name, attributes}
        ("links", pa.string()),  # JSON list of {trace_id, span_id, trace_state, attributes}
        ("flags", pa.uint32()),
    ]
)

LOGS_SCHEMA = pa.schema(
    [
        ("time_unix_nano", pa.int64()),
        ("observed_time_unix_nano", pa.int64()),
        ("severity_number", pa.int8()),  # 1-24, OTLP SeverityNumber
        ("severity_text", pa.string()),
        ("body", pa.string()),  # string bodies as is, other AnyValues as JSON
        ("attributes", pa.string()),
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("flags", pa.uint32()),
        ("service", pa.string()),
        ("resource", pa.string()),
        ("scope", pa.string()),
        ("event_name", pa.string()),
    ]
)


def canonical_json(attributes: dict[str, Any]) -> str:
    """The one string form of an attribute set: sorted keys, no whitespace."""
    return json.dumps(attributes, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def series_id(metric: str, resource: str, scope: str, attributes: str) -> int:
    """Stable 64-bit id of a series: 16 bits from the metric name, 48 from everything else.

    The metric's bits lead so that sorting by id keeps each metric's series together: a block's
    row groups (and a rollup file's) then hold few metrics each, and a query for one metric
    skips the others' row groups by their ``series_id`` min/max statistics alone, in any
    Parquet reader. 48 bits keep collisions negligible at any series budget (10,000 series of
    one metric: about 2e-7).
    """
    digest = hashlib.blake2b(digest_size=6)
    for part in (resource, scope, attributes):
        digest.update(part.encode())
        digest.update(b"\x00")
    digest.update(metric.encode())
    return _metric_bits(metric) << 48 | int.from_bytes(digest.digest(), "little")


def series_row(
    metric: str,
    *,
    scope: str,
    attributes: dict[str, Any],
    service: str = "",
    resource: str | None = None,
    unit: str = "",
    description: str = "",
    scope_version: str = "",
    kind: MetricType = MetricType.GAUGE,
    monotonic: bool = False,
) -> dict[str, Any]:
    """The ``SERIES_SCHEMA`` row of a series a processor emits, its ``series_id`` included.

    Processors describe what they compute as new series; one builder keeps those rows alike, so
    every emitted series is found by the same labels. ``resource`` is canonical JSON; by default
    it holds only ``service.name`` (when given). The id hashes the scope as ingest does (its
    canonical JSON); the ``scope`` column keeps its name. Gauges have no temporality; the sums
    and histograms processors emit are cumulative.
    """
    if resource is None:
        resource = canonical_json({"service.name": service} if service else {})
    attrs = canonical_json(attributes)
    scope_json = canonical_json({"attributes": {}, "name": scope, "version": scope_version})
    temporality = Temporality.UNSPECIFIED if kind is MetricType.GAUGE else Temporality.CUMULATIVE
    return {
        "series_id": series_id(metric, resource, scope_json, attrs),
        "metric": metric,
        "type": kind.value,
        "unit": unit,
        "description": description,
        "temporality": temporality.value,
        "monotonic": monotonic,
        "service": service,
        "resource": resource,
        "scope": scope,
        "scope_version": scope_version,
        "attributes": attrs,
    }


@functools.lru_cache(maxsize=65536)
def _metric_bits(metric: str) -> int:
    return int.from_bytes(hashlib.blake2b(metric.encode(), digest_size=2).digest(), "little")


@dataclass(frozen=True)
class MetricBatch:
    """Decoded metrics of one request: points, the series they belong to, and exemplars."""

    points: pa.Table  # POINTS_SCHEMA
    series: pa.Table  # SERIES_SCHEMA, one row per series referenced by points
    exemplars: pa.Table  # EXEMPLARS_SCHEMA
    signal: Signal = Signal.METRICS
    lsn: int = 0  # write-ahead log sequence number; 0 for batches not from the log

    def __len__(self) -> int:
        return self.points.num_rows


@dataclass(frozen=True)
class SpanBatch:
    """Decoded spans of one request."""

    spans: pa.Table  # SPANS_SCHEMA
    signal: Signal = Signal.TRACES
    lsn: int = 0  # write-ahead log sequence number; 0 for batches not from the log

    def __len__(self) -> int:
        return self.spans.num_rows


@dataclass(frozen=True)
class LogBatch:
    """Decoded log records of one request."""

    logs: pa.Table  # LOGS_SCHEMA
    signal: Signal = Signal.LOGS
    lsn: int = 0  # write-ahead log sequence number; 0 for batches not from the log

    def __len__(self) -> int:
        return self.logs.num_rows


Batch = MetricBatch | SpanBatch | LogBatch


@runtime_checkable
class Processor(Protocol):
    """One stage of the receiver's chain.

    ``process`` sees every accepted batch, in ingest order, on the single writer thread;
    ``tick`` is called on a schedule with the current time (never read a clock inside: tests
    drive ``now``); ``close`` flushes on shutdown.
    """

    name: str

    def process(self, batch: Batch) -> None: ...

    def tick(self, now_unix_nano: int) -> None: ...

    def close(self) -> None: ...
