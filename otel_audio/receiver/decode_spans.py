"""Decode OTLP trace and log export requests into :class:`SpanBatch` and :class:`LogBatch`.

The rules (what is refused, how ids and attributes are written) are those of
:mod:`otel_audio.receiver.decode`, which also decodes metrics.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_audio.processors.base import LOGS_SCHEMA, SPANS_SCHEMA, LogBatch, SpanBatch
from otel_audio.receiver.decoded import I64_MAX, Decoded, Errors, rows_table
from otel_audio.receiver.otlp_values import (
    any_value,
    attributes_dict,
    attributes_json,
    canonical,
    resource_identity,
)

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def _id_problem(name: str, raw: bytes, size: int, zero: bytes) -> str | None:
    if len(raw) != size:
        return f"{name} must be {size} bytes, got {len(raw)}"
    if raw == zero:
        return f"{name} must not be all zeros"
    return None


def span_problem(span: Any) -> str | None:
    """Why a span is refused (the message after its location), or None when it is accepted."""
    problem = _id_problem("trace_id", span.trace_id, 16, _ZERO_TRACE) or _id_problem(
        "span_id", span.span_id, 8, _ZERO_SPAN
    )
    if problem:
        return problem
    parent = span.parent_span_id
    if parent and len(parent) != 8:
        return f"parent_span_id must be empty or 8 bytes, got {len(parent)}"
    if not 0 <= span.kind <= 5:
        return f"kind {span.kind} is not an OTLP SpanKind (0-5)"
    if not 0 <= span.status.code <= 2:
        return f"status.code {span.status.code} is not an OTLP StatusCode (0-2)"
    if (span.start_time_unix_nano | span.end_time_unix_nano) > I64_MAX:
        return "start_time_unix_nano or end_time_unix_nano beyond int64 nanoseconds"
    return None


def _events_json(events: Any) -> str:
    if not events:
        return "[]"
    return canonical(
        [
            {"time_unix_nano": e.time_unix_nano, "name": e.name, "attributes": attributes_dict(e.attributes)}
            for e in events
        ]
    )


def _links_json(links: Any) -> str:
    if not links:
        return "[]"
    return canonical(
        [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "trace_state": link.trace_state,
                "attributes": attributes_dict(link.attributes),
            }
            for link in links
        ]
    )


def decode_traces(request: ExportTraceServiceRequest) -> Decoded[SpanBatch]:
    """Decode a trace export request; spans with invalid ids are refused (see module doc)."""
    errs = Errors()
    rows: list[tuple] = []
    append = rows.append
    for ri, rs in enumerate(request.resource_spans):
        resource, service = resource_identity(rs.resource)
        for si, ss in enumerate(rs.scope_spans):
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for i, span in enumerate(ss.spans):
                problem = span_problem(span)
                if problem:
                    errs.add(f"resource_spans[{ri}].scope_spans[{si}].spans[{i}]: {problem}")
                    continue
                start, end, status = span.start_time_unix_nano, span.end_time_unix_nano, span.status
                parent = span.parent_span_id
                append(
                    (
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        "" if not parent or parent == _ZERO_SPAN else parent.hex(),
                        span.trace_state,
                        span.name,
                        span.kind,
                        start,
                        end,
                        end - start,
                        status.code,
                        status.message,
                        service,
                        resource,
                        scope_name,
                        scope_version,
                        attributes_json(span.attributes),
                        _events_json(span.events),
                        _links_json(span.links),
                        span.flags,
                    )
                )
    return Decoded(SpanBatch(rows_table(rows, SPANS_SCHEMA)), errs.rejected, errs.lines())


# ---------------------------------------------------------------- logs


def _log_problem(record: Any) -> str | None:
    trace_id, span_id = record.trace_id, record.span_id
    if trace_id and len(trace_id) != 16:
        return f"trace_id must be empty or 16 bytes, got {len(trace_id)}"
    if span_id and len(span_id) != 8:
        return f"span_id must be empty or 8 bytes, got {len(span_id)}"
    if not 0 <= record.severity_number <= 24:
        return f"severity_number {record.severity_number} is not an OTLP SeverityNumber (0-24)"
    if (record.time_unix_nano | record.observed_time_unix_nano) > I64_MAX:
        return "time_unix_nano or observed_time_unix_nano beyond int64 nanoseconds"
    return None


def _body(body: Any) -> str:
    kind = body.WhichOneof("value")
    if kind == "string_value":
        return body.string_value
    return "" if kind is None else canonical(any_value(body))


def decode_logs(request: ExportLogsServiceRequest) -> Decoded[LogBatch]:
    """Decode a logs export request; records with malformed ids are refused (see module doc)."""
    errs = Errors()
    rows: list[tuple] = []
    append = rows.append
    for ri, rl in enumerate(request.resource_logs):
        resource, service = resource_identity(rl.resource)
        for si, sl in enumerate(rl.scope_logs):
            scope_name = sl.scope.name
            for i, record in enumerate(sl.log_records):
                problem = _log_problem(record)
                if problem:
                    errs.add(f"resource_logs[{ri}].scope_logs[{si}].log_records[{i}]: {problem}")
                    continue
                trace_id, span_id = record.trace_id, record.span_id
                append(
                    (
                        record.time_unix_nano,
                        record.observed_time_unix_nano,
                        record.severity_number,
                        record.severity_text,
                        _body(record.body),
                        attributes_json(record.attributes),
                        "" if trace_id == _ZERO_TRACE else trace_id.hex(),
                        "" if span_id == _ZERO_SPAN else span_id.hex(),
                        record.flags,
                        service,
                        resource,
                        scope_name,
                        record.event_name,
                    )
                )
    return Decoded(LogBatch(rows_table(rows, LOGS_SCHEMA)), errs.rejected, errs.lines())
