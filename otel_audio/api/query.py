"""Metric routes: list metrics and series, and range queries with aggregation and grouping."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from otel_audio.api import params
from otel_audio.store.query import RangeQuery

router = APIRouter(prefix="/api/v1", tags=["metrics"])

DEFAULT_RANGE_NS = 3600 * 10**9


def _engine(request: Request) -> Any:
    return request.app.state.receiver.query


@router.get("/metrics", summary="Every metric with its type, unit and series count")
def list_metrics(request: Request) -> dict[str, Any]:
    return {"metrics": _engine(request).list_metrics()}


@router.get("/series", summary="The series of one metric, with their attributes")
def list_series(
    request: Request,
    metric: str,
    match: Annotated[list[str] | None, Query(description='label matchers, e.g. stage="enhancement"')] = None,
) -> dict[str, Any]:
    series = _engine(request).list_series(metric, params.matchers(match))
    return {"metric": metric, "series": series}


@router.get("/query_range", summary="Aggregated values of a metric over time, grouped by attributes")
def query_range(
    request: Request,
    metric: str,
    start: str | None = None,
    end: str | None = None,
    step: str = "15s",
    agg: str = "avg",
    group_by: Annotated[str, Query(description="comma-separated attribute names")] = "",
    match: Annotated[list[str] | None, Query(description='label matchers, e.g. stage="enhancement"')] = None,
) -> dict[str, Any]:
    end_ns = params.time_ns(end, "end", default_ns=params.time_ns("now", "end"))
    start_ns = params.time_ns(start, "start", default_ns=end_ns - DEFAULT_RANGE_NS)
    step_ns = params.duration_ns(step, "step")
    query = RangeQuery(
        metric=metric,
        start_ns=start_ns,
        end_ns=end_ns,
        step_ns=step_ns,
        agg=agg,
        group_by=tuple(k.strip() for k in group_by.split(",") if k.strip()),
        matchers=params.matchers(match),
    )
    results = _engine(request).query_range(query)
    return {
        "metric": metric,
        "agg": agg,
        "start": start_ns / 1e9,
        "end": end_ns / 1e9,
        "step": step_ns / 1e9,
        "series": [
            {
                "labels": result.labels,
                "points": [
                    [int(t) / 1e9, float(v)]
                    for t, v in zip(result.timestamps_ns, result.values, strict=True)
                    if math.isfinite(v)
                ],
            }
            for result in results
        ],
    }
