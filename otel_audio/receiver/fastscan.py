"""The native fast path of metric decoding: gauge and sum points of a serialized request as numpy columns.

Decoding an ``ExportMetricsServiceRequest`` point by point in Python costs microseconds per point;
:func:`scan_numbers` walks the serialized request once in C (``_otlp_scan.c``, built by setuptools
when the package is installed) and returns every ``NumberDataPoint`` of every gauge and sum as
columns, in request order, with what describes them::

    from otel_audio.receiver import fastscan

    if fastscan.available():
        scan = fastscan.scan_numbers(body)  # ValueError on a malformed request
        scan.time_unix_nano, scan.value, scan.series_key  # numpy arrays, one entry per point

What the scan leaves to the Python decoder, located by byte offsets into the request: resource
and scope contents (``resources``, ``scopes``: serialized ``Resource`` / ``InstrumentationScope``),
metrics of other kinds (``metric_offset``/``metric_length`` of the serialized ``Metric``), point
attributes (``attr_offset``/``attr_length``: a slice that parses as a ``NumberDataPoint`` holding
exactly the point's attributes) and exemplars (``point_offset``/``point_length``: the whole point).
The scan checks the wire format only where it walks; the messages it hands over are checked when
Python parses them.

Keys. ``attr_hash`` hashes a point's attribute fields as serialized, in order; ``series_key`` mixes
it with the resource, the scope and the metric name, so equal keys mean the same series (up to
64-bit collisions; bytes that differ give different keys, even when they mean the same attribute
set). Keys are XXH64, seeded per process (:data:`SEED`): cache keys within one process, never
stored or compared across processes.

Without a C compiler at install time the extension is missing, :func:`available` is False and the
receiver keeps its pure-Python decoder, which stays the reference for what the scan returns.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import numpy as np

try:
    from otel_audio.receiver import _otlp_scan
except ImportError:  # built at install time, optionally
    _otlp_scan = None

SEED = int.from_bytes(os.urandom(8), "little")  # of attr_hash and series_key in this process


class MetricKind(enum.IntEnum):
    """Which member of ``Metric.data`` a metric has (the last one on the wire, as protobuf reads it)."""

    NONE = 0  # no data: refused by the decoder
    GAUGE = 1  # points scanned
    SUM = 2  # points scanned
    HISTOGRAM = 3  # left to Python
    EXPONENTIAL_HISTOGRAM = 4  # left to Python
    SUMMARY = 5  # left to Python


class ValueKind(enum.IntEnum):
    """Which member of ``NumberDataPoint.value`` a point has."""

    NONE = 0  # neither as_double nor as_int
    DOUBLE = 1
    INT = 2  # as_int, converted to float64 in ``value``


@dataclass(frozen=True)
class NumberScan:
    """Gauge and sum points of one request (one entry per point), and their resources, scopes and metrics.

    Point arrays are read-only numpy views of the scan's output. Scope and metric indexes count
    across the whole request, in order: scope ``j`` belongs to resource ``scope_resource[j]``,
    metric ``k`` to scope ``metric_scope[k]``.
    """

    # per point
    metric: np.ndarray  # int32: index into the metric_* columns
    start_time_unix_nano: np.ndarray  # uint64, as sent (may exceed int64)
    time_unix_nano: np.ndarray  # uint64
    value: np.ndarray  # float64; 0.0 when value_kind is NONE
    value_kind: np.ndarray  # uint8: ValueKind
    flags: np.ndarray  # uint32: DataPointFlags
    attr_count: np.ndarray  # uint32: attribute fields (repeated keys counted)
    attr_hash: np.ndarray  # uint64
    series_key: np.ndarray  # uint64
    attr_offset: np.ndarray  # int64: byte offset of the attribute fields in the request
    attr_length: np.ndarray  # int64: 0 when the point has no attributes
    exemplar_count: np.ndarray  # uint32
    point_offset: np.ndarray  # int64: the serialized NumberDataPoint
    point_length: np.ndarray  # int64
    # per resource
    resources: list[bytes]  # serialized Resource (b"" when absent)
    # per scope
    scope_resource: np.ndarray  # int32
    scopes: list[bytes]  # serialized InstrumentationScope (b"" when absent)
    # per metric
    metric_scope: np.ndarray  # int32
    metric_name: list[str]
    metric_description: list[str]
    metric_unit: list[str]
    metric_kind: np.ndarray  # int32: MetricKind
    metric_temporality: np.ndarray  # int32: a sum's aggregation_temporality, else 0
    metric_monotonic: np.ndarray  # bool: a sum's is_monotonic
    metric_offset: np.ndarray  # int64: the serialized Metric
    metric_length: np.ndarray  # int64
    metric_first_point: np.ndarray  # int64: index of the metric's first point
    metric_points: np.ndarray  # int64: how many points it has (gauges and sums)

    def __len__(self) -> int:
        return int(self.metric.size)

    def where(self, metric: int) -> str:
        """The path of a metric in the request, as decode's error messages write it."""
        scope = int(self.metric_scope[metric])
        resource = int(self.scope_resource[scope])
        si = scope - int(np.searchsorted(self.scope_resource, resource))
        mi = metric - int(np.searchsorted(self.metric_scope, scope))
        return f"resource_metrics[{resource}].scope_metrics[{si}].metrics[{mi}]"


_POINT_DTYPES = {
    "metric": np.int32,
    "start_time_unix_nano": np.uint64,
    "time_unix_nano": np.uint64,
    "value": np.float64,
    "value_kind": np.uint8,
    "flags": np.uint32,
    "attr_count": np.uint32,
    "attr_hash": np.uint64,
    "series_key": np.uint64,
    "attr_offset": np.int64,
    "attr_length": np.int64,
    "exemplar_count": np.uint32,
    "point_offset": np.int64,
    "point_length": np.int64,
    "scope_resource": np.int32,
    "metric_scope": np.int32,
    "metric_kind": np.int32,
    "metric_temporality": np.int32,
    "metric_monotonic": np.bool_,
    "metric_offset": np.int64,
    "metric_length": np.int64,
    "metric_first_point": np.int64,
    "metric_points": np.int64,
}


def available() -> bool:
    """Whether the native scanner was built; without it, decode in Python."""
    return _otlp_scan is not None


def scan_numbers(buf: bytes | bytearray | memoryview) -> NumberScan:
    """Scan a serialized ``ExportMetricsServiceRequest``; ValueError (with the byte offset) if malformed.

    Raises RuntimeError when the extension is not built (see :func:`available`).
    """
    if _otlp_scan is None:
        raise RuntimeError("otel_audio.receiver._otlp_scan is not built; decode in Python")
    raw = _otlp_scan.scan_numbers(buf, SEED)
    del raw["points"]
    for name, dtype in _POINT_DTYPES.items():
        raw[name] = np.frombuffer(raw[name], dtype=dtype)
    return NumberScan(**raw)


def scan_spans(buf: bytes | bytearray | memoryview) -> dict | None:
    """Scan a serialized ``ExportTraceServiceRequest`` (see ``decode_spans_fast``); ValueError if malformed.

    None when the request holds what the scan leaves to protobuf (a string that is not UTF-8, an
    attribute value sent in two parts, columns beyond 2 GiB): decode it with protobuf then.
    Raises RuntimeError when the extension is not built (see :func:`available`).
    """
    if _otlp_scan is None:
        raise RuntimeError("otel_audio.receiver._otlp_scan is not built; decode in Python")
    return _otlp_scan.scan_spans(buf)
