"""Trace and log routes: span search, whole traces, log search.

Spans come back with their attributes, events and links as JSON objects (not strings), times
in Unix nanoseconds and durations in milliseconds. The Jaeger-compatible API (``/api/traces``)
is a separate router in a later module; these are otel-audio's own shapes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Depends, HTTPException, Query, Request

from otel_audio.api import params
from otel_audio.store.query import LogQuery, SpanQuery

router = APIRouter(prefix="/api/v1", tags=["traces and logs"])

_STATUS = {"unset": 0, "ok": 1, "error": 2}
_JSON_COLUMNS = ("attributes", "resource", "events", "links")


def _engine(request: Request) -> Any:
    return request.app.state.receiver.query


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """Arrow rows as JSON-ready dicts, attribute columns parsed."""
    out = table.to_pylist()
    for row in out:
        for column in _JSON_COLUMNS:
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column]) if row[column] else {}
        if "duration_ns" in row:
            row["duration_ms"] = row["duration_ns"] / 1e6
    return out


def span_filters(
    service: str | None = None,
    operation: str | None = None,
    start: str | None = None,
    end: str | None = None,
    min_duration: str | None = None,
    max_duration: str | None = None,
    status: str | None = None,
    attr: Annotated[list[str] | None, Query(description="attribute filters key=value")] = None,
) -> SpanQuery:
    """The span filters shared by span and trace search (a FastAPI dependency); limit set by the route."""
    if status is not None and status.lower() not in _STATUS:
        raise params.ParamError(f"status: expected one of {', '.join(_STATUS)}, got {status!r}")
    return SpanQuery(
        service=service,
        operation=operation,
        start_ns=params.time_ns(start, "start") if start else None,
        end_ns=params.time_ns(end, "end") if end else None,
        min_duration_ns=params.duration_ns(min_duration, "min_duration") if min_duration else None,
        max_duration_ns=params.duration_ns(max_duration, "max_duration") if max_duration else None,
        status_code=_STATUS[status.lower()] if status else None,
        attributes=params.key_values(attr, "attr"),
    )


@router.get("/spans", summary="Spans matching service, operation, time, duration, status and attributes")
def search_spans(
    request: Request,
    filters: Annotated[SpanQuery, Depends(span_filters)],
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    return {"spans": rows(_engine(request).search_spans(replace(filters, limit=limit)))}


@router.get("/traces", summary="Traces with at least one span matching the filters, newest first")
def search_traces(
    request: Request,
    filters: Annotated[SpanQuery, Depends(span_filters)],
    limit: Annotated[int, Query(ge=1, le=1_000)] = 20,
) -> dict[str, Any]:
    engine = _engine(request)
    trace_ids = engine.search_traces(replace(filters, limit=limit))
    return {"traces": [{"trace_id": tid, "spans": rows(engine.get_trace(tid))} for tid in trace_ids]}


@router.get(
    "/traces/{trace_id}", summary="The spans of one trace in start order, at most limits.max_spans_per_trace"
)
def get_trace(request: Request, trace_id: str) -> dict[str, Any]:
    if len(trace_id) != 32 or any(c not in "0123456789abcdefABCDEF" for c in trace_id):
        raise params.ParamError(f"trace_id: expected 32 hex digits, got {trace_id!r}")
    engine = _engine(request)
    table, total = engine.get_trace_counted(trace_id.lower())
    spans = rows(table)
    if not spans:
        raise HTTPException(404, f"trace {trace_id} not found")
    answer: dict[str, Any] = {"trace_id": trace_id.lower(), "spans": spans}
    if total > len(spans):  # limits.max_spans_per_trace: the first spans by start time, said so
        answer["truncated"] = {"total_spans": total, "limit": engine.max_trace_spans}
    return answer


@router.get("/logs", summary="Log records by time, severity, service, text and trace, newest first")
def search_logs(
    request: Request,
    start: str | None = None,
    end: str | None = None,
    severity: Annotated[int | None, Query(ge=1, le=24, description="minimum severity number")] = None,
    service: str | None = None,
    q: Annotated[str | None, Query(description="case-insensitive text in the body")] = None,
    trace_id: str | None = None,
    attr: Annotated[list[str] | None, Query(description="attribute filters key=value")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    query = LogQuery(
        start_ns=params.time_ns(start, "start") if start else None,
        end_ns=params.time_ns(end, "end") if end else None,
        min_severity=severity,
        service=service,
        text=q,
        trace_id=trace_id.lower() if trace_id else None,
        attributes=params.key_values(attr, "attr"),
        limit=limit,
    )
    return {"logs": rows(_engine(request).search_logs(query))}
