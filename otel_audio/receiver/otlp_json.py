"""OTLP/JSON (``Content-Type: application/json``) to and from the OTLP protobuf messages.

OTLP/JSON is the protobuf JSON mapping with differences the OTLP specification fixes:

- ``traceId``, ``spanId`` and ``parentSpanId`` (in spans, span links, exemplars and log records)
  are hex strings, not base64 as for other ``bytes`` fields;
- keys are lowerCamelCase (the parser also accepts the protobuf field names);
- 64-bit integers may be JSON numbers or decimal strings; enums are integers;
- unknown fields are ignored, so newer senders keep working.

:func:`parse_request` turns a request body into an ``Export*ServiceRequest`` by rewriting the hex
ids to base64 and handing the rest to ``google.protobuf.json_format``; any problem raises
:class:`OtlpJsonError` (a ``ValueError``) saying which field and what was wrong.
:func:`response_to_json` encodes a reply (``partial_success``); :func:`request_to_json` encodes
a request with hex ids, the inverse of :func:`parse_request`.

Usage::

    request = parse_request(body, "traces")       # ExportTraceServiceRequest
    reply = response_to_json(ExportTraceServiceResponse())
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "logs": ExportLogsServiceRequest,
}

_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


class OtlpJsonError(ValueError):
    """An OTLP/JSON body that cannot be read; the message names the field and the problem."""


# Where the ids live, per signal: a path of repeated fields from the request down to the objects
# holding ids. Each step names the lowerCamelCase key and the protobuf field name; either may be
# used. A "*" step means "any of the data kinds below" (metrics: gauge, sum, ...).
_PATHS: dict[str, list[tuple[tuple[str, str], ...]]] = {
    "traces": [
        (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")),
        (
            ("resourceSpans", "resource_spans"),
            ("scopeSpans", "scope_spans"),
            ("spans", "spans"),
            ("links", "links"),
        ),
    ],
    "metrics": [
        (
            ("resourceMetrics", "resource_metrics"),
            ("scopeMetrics", "scope_metrics"),
            ("metrics", "metrics"),
            ("*", "*"),
            ("dataPoints", "data_points"),
            ("exemplars", "exemplars"),
        )
    ],
    "logs": [(("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records"))],
}
_METRIC_DATA = (
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
)


def parse_request(body: bytes, signal: str) -> Message:
    """Parse an OTLP/JSON export request of ``signal`` ("traces", "metrics" or "logs")."""
    request_type = REQUEST_TYPES.get(signal)
    if request_type is None:
        raise OtlpJsonError(f"unknown signal {signal!r}; expected one of {sorted(REQUEST_TYPES)}")
    try:
        document = json.loads(body.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise OtlpJsonError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise OtlpJsonError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise OtlpJsonError("JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise OtlpJsonError(
            f"the body must be a JSON object ({request_type.__name__}), got {_json_type(document)}"
        )
    for path in _PATHS[signal]:
        _rewrite_ids(document, path, "")
    message = request_type()
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpJsonError(_describe(str(exc))) from None
    except RecursionError:
        raise OtlpJsonError("JSON nested too deeply") from None
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:  # json_format lets these through
        raise OtlpJsonError(f"cannot read {request_type.__name__}: {exc}") from None
    return message


_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field: ")


def _describe(message: str) -> str:
    """json_format's nested "Failed to parse a field: Failed to parse b field: ..." as "a.b: ..."."""
    fields = _FAILED_FIELD.findall(message)
    detail = _FAILED_FIELD.sub("", message).rstrip(".")
    detail = re.sub(r" at \w+$", "", detail)
    return f"{'.'.join(fields)}: {detail}" if fields else detail


def response_to_json(message: Message) -> bytes:
    """Encode an export response (or any message without ids) as OTLP/JSON."""
    return _dump(json_format.MessageToDict(message))


def request_to_json(message: Message) -> bytes:
    """Encode an export request as OTLP/JSON, with hex trace and span ids."""
    signal = next((s for s, t in REQUEST_TYPES.items() if isinstance(message, t)), None)
    if signal is None:
        raise TypeError(f"not an OTLP export request: {type(message).__name__}")
    document = json_format.MessageToDict(message)
    for path in _PATHS[signal]:
        _walk(document, path, "", _base64_to_hex)
    return _dump(document)


def _dump(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "an object"
    )


def _rewrite_ids(document: dict, path: tuple, where: str) -> None:
    _walk(document, path, where, _hex_to_base64)


def _walk(node: dict, path: tuple, where: str, convert: Any) -> None:
    """Apply ``convert(holder, key, where)`` to the id fields of the objects at the end of ``path``."""
    if not path:
        for key in _ID_FIELDS:
            if key in node:
                convert(node, key, f"{where}.{key}" if where else key)
        return
    camel, snake = path[0]
    if camel == "*":
        for data_camel, data_snake in _METRIC_DATA:
            for key in (data_camel, data_snake) if data_camel != data_snake else (data_camel,):
                child = node.get(key)
                if isinstance(child, dict):
                    _walk(child, path[1:], f"{where}.{key}", convert)
        return
    for key in (camel, snake) if camel != snake else (camel,):
        items = node.get(key)
        if not isinstance(items, list):
            continue  # absent, or the wrong type: json_format reports that with the field name
        for index, item in enumerate(items):
            if isinstance(item, dict):
                _walk(item, path[1:], f"{where}.{key}[{index}]" if where else f"{key}[{index}]", convert)


def _hex_to_base64(holder: dict, key: str, where: str) -> None:
    value = holder[key]
    if value is None:
        return
    if not isinstance(value, str):
        raise OtlpJsonError(f"{where}: expected a hex string, got {_json_type(value)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise OtlpJsonError(f"{where}: not a hex string: {value[:64]!r}") from None
    holder[key] = base64.b64encode(raw).decode("ascii")


def _base64_to_hex(holder: dict, key: str, where: str) -> None:
    try:
        holder[key] = base64.b64decode(holder[key]).hex()
    except (binascii.Error, TypeError):
        raise OtlpJsonError(f"{where}: not base64: {holder[key]!r}") from None
