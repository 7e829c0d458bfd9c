"""SLO routes: list, define, inspect and delete SLOs of the receiver's ``slo`` processor.

``GET /api/v1/slos`` lists every SLO with its status; ``POST /api/v1/slos`` defines one at run time
(validated: 400 naming the field, 409 for a name taken); ``GET /api/v1/slos/{name}`` gives its
status (SLI, error budget, error ratios and burn rates per window, time to exhaustion);
``DELETE /api/v1/slos/{name}`` removes a runtime SLO (403 for SLOs of the config or the defaults).
Statuses are computed at ``time`` (default now; RFC 3339, Unix seconds or ``now-1h``). Numbers
that do not exist (no events yet, a budget that never runs out) are ``null``.
"""

from __future__ import annotations

import dataclasses
import math
import time as _time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response

from otel_audio.api import params

router = APIRouter(prefix="/api/v1", tags=["slo"])


class _Missing(Exception):
    pass


def _slo(request: Request) -> Any:
    slo = getattr(request.app.state.receiver, "slo", None)
    if slo is None:
        raise _Missing
    return slo


def _guard(request: Request, action) -> Any:
    try:
        return action(_slo(request))
    except _Missing:
        return JSONResponse(
            {"error": "SLOs are not configured: add the slo processor to the receiver config"}, 404
        )
    except PermissionError as exc:
        return JSONResponse({"error": str(exc)}, 403)
    except KeyError as exc:
        return JSONResponse({"error": str(exc.args[0]) if exc.args else "not found"}, 404)
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 409 if "already exists" in str(exc) else 400)


def status_json(spec: Any, status: dict[str, Any]) -> dict[str, Any]:
    """One SLO for the API: its definition, where it comes from, and its status."""
    budget = dataclasses.asdict(status["budget"])
    return {
        "name": spec.name,
        "source": spec.source,
        "definition": spec.to_dict(),
        "status": {
            "time": status["at_ns"] / 1e9,
            "window": status["window"],
            "window_start": status["window_start_ns"] / 1e9,
            "objective": spec.objective,
            "sli": _num(status["sli"]),
            "good": _num(status["good"]),
            "total": _num(status["total"]),
            "error_budget": {k: _num(v) for k, v in budget.items() if k not in ("objective", "sli")},
            "error_ratios": {w: _num(v) for w, v in status["error_ratios"].items()},
            "burn_rates": {w: _num(v) for w, v in status["burn_rates"].items()},
            "time_to_exhaustion_seconds": _num(budget["time_to_exhaustion_s"]),
        },
    }


@router.get("/slos", summary="Every SLO with its current status")
def list_slos(request: Request, time: str | None = None) -> Any:
    def run(slo: Any) -> dict[str, Any]:
        now = params.time_ns(time, "time", default_ns=_now())
        return {"slos": [status_json(spec, slo.status(spec.name, now)) for spec in slo.list()]}

    return _guard(request, run)


@router.post("/slos", summary="Define an SLO (validated; kept across restarts)", status_code=201)
def create_slo(request: Request, body: Annotated[Any, Body()]) -> Any:
    def run(slo: Any) -> Any:
        spec = slo.add(body)
        return JSONResponse(status_json(spec, slo.status(spec.name, _now())), 201)

    return _guard(request, run)


@router.get("/slos/{name}", summary="One SLO: SLI, error budget, burn rates, time to exhaustion")
def get_slo(request: Request, name: str, time: str | None = None) -> Any:
    def run(slo: Any) -> dict[str, Any]:
        now = params.time_ns(time, "time", default_ns=_now())
        return status_json(slo.get(name), slo.status(name, now))

    return _guard(request, run)


@router.delete(
    "/slos/{name}", summary="Delete an SLO defined through the API", status_code=204, response_model=None
)
def delete_slo(request: Request, name: str) -> Any:
    def run(slo: Any) -> Response:
        slo.remove(name)
        return Response(status_code=204)

    return _guard(request, run)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _now() -> int:
    return _time.time_ns()
