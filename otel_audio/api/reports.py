"""Report routes: ``GET /api/v1/reports/sla?month=YYYY-MM&format=json|csv|html``.

The SLA report of a UTC calendar month (``processors/slo/report.py``, ``docs/sla-reports.md``):
each SLO's good and total counts at 1-minute steps over the month from the ``slo`` processor,
and the incidents of the ``alerting`` processor when the chain has one. Answers
``application/json``, ``text/csv`` or ``text/html``; 404 without an ``slo`` processor, 400 for a
month not written YYYY-MM or an unknown format, with ``{"error": ...}``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from otel_audio.processors.slo.report import MINUTE_NS, SLOInput, month_bounds, sla_report

router = APIRouter(prefix="/api/v1", tags=["reports"])
FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}
_NO_SLO = "SLOs are not configured: add the slo processor to the receiver config"
_MAX_INCIDENTS = 10_000  # processors/alerting/incidents.py MAX_LIST_LIMIT: the newest this many


@router.get("/reports/sla", summary="SLA report of a calendar month (JSON, CSV or printable HTML)")
def sla(
    request: Request,
    month: str = Query(..., description="UTC calendar month, YYYY-MM"),
    format: str = Query("json", description="json, csv or html"),
) -> Response:
    receiver = request.app.state.receiver
    engine = getattr(receiver, "slo", None)
    if engine is None:
        return JSONResponse(
            {"error": "SLOs are not configured: add the slo processor to the receiver config"}, 404
        )
    if format not in FORMATS:
        return JSONResponse({"error": f"format {format!r}: expected one of {', '.join(FORMATS)}"}, 400)
    try:
        start, end = month_bounds(month)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    now = time.time_ns()
    inputs = [slo_input(engine, spec, start, min(end, max(start, now))) for spec in engine.list()]
    alerting = getattr(receiver, "alerting", None)
    incidents = alerting.incidents.list(limit=_MAX_INCIDENTS) if alerting is not None else []
    report = sla_report(inputs, month, incidents, now=now)
    body = {"json": report.to_json, "csv": report.to_csv, "html": report.to_html}[format]()
    return Response(body, media_type=FORMATS[format])


def slo_input(engine: Any, spec: Any, start_ns: int, end_ns: int) -> SLOInput:
    """One SLO's spec fields and its counts at 1-minute steps over [start_ns, end_ns)."""
    if end_ns > start_ns:
        t, good, total = engine.counts(spec.name, start_ns, end_ns, MINUTE_NS)
    else:
        t = good = total = np.zeros(0)
    sli = getattr(spec, "sli", None)
    return SLOInput(
        name=spec.name,
        objective=float(spec.objective),
        t=np.asarray(t, np.int64),
        good=np.asarray(good, np.float64),
        total=np.asarray(total, np.float64),
        budgeting=spec.budgeting,
        service=spec.service or getattr(sli, "span_service", "") or "",
        window=getattr(spec, "window_label", ""),
        description=getattr(spec, "description", ""),
        timeslice_ns=int(getattr(spec, "timeslice_ns", 0) or 0),
    )
