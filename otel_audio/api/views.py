"""Custom dashboard views: ``GET /api/v1/views``, ``GET/PUT/DELETE /api/v1/views/{id}``.

A view is a titled list of panels, each a query of ``/api/v1/query_range`` plus a chart type::

    {"title": "Enhancer latency", "range": "6h",
     "panels": [{"title": "p95 by stage", "chart": "line",
                 "query": {"metric": "traces.span.metrics.duration", "agg": "p95",
                           "group_by": ["span.name"], "match": ["service.name=\\"enhancer\\""]}}]}

Views are validated (:func:`validate_view`; errors name the field) and stored one JSON file per
view under ``<data_dir>/dashboard/views/<id>.json``, written atomically (temporary file, fsync,
rename), so a crash leaves the old view or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response

from otel_audio.api import params

router = APIRouter(prefix="/api/v1", tags=["dashboard"])

VIEW_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CHARTS = ("line", "bar", "area", "stat", "table")
AGGS = ("avg", "min", "max", "sum", "count", "last", "rate", "increase")
MAX_PANELS = 50
_PERCENTILE = re.compile(r"^p\d{1,3}(\.\d+)?$")
_VIEW_FIELDS = {"id", "title", "description", "range", "panels"}
_PANEL_FIELDS = {"title", "chart", "query"}
_QUERY_FIELDS = {"metric", "agg", "group_by", "match", "step"}


class ViewError(ValueError):
    """A view is not valid; the message names the field and what is accepted."""


def _text(value: Any, where: str, required: bool = True, limit: int = 200) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise ViewError(f"{where}: expected a non-empty string of at most {limit} characters, got {value!r}")
    return value


def _unknown(given: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(given) - known)
    if extra:
        raise ViewError(f"{where}.{extra[0]}: unknown field; accepted: {', '.join(sorted(known))}")


def validate_query(query: Any, where: str) -> dict[str, Any]:
    if not isinstance(query, dict):
        raise ViewError(f"{where}: expected an object with metric, agg, group_by, match")
    _unknown(query, _QUERY_FIELDS, where)
    agg = query.get("agg", "avg")
    if agg not in AGGS and not (isinstance(agg, str) and _PERCENTILE.match(agg)):
        raise ViewError(
            f"{where}.agg: expected one of {', '.join(AGGS)} or a percentile like p95, got {agg!r}"
        )
    group_by = query.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [k.strip() for k in group_by.split(",") if k.strip()]
    if not isinstance(group_by, list) or not all(isinstance(k, str) and k for k in group_by):
        raise ViewError(f"{where}.group_by: expected a list of attribute names, got {group_by!r}")
    match = query.get("match", [])
    if not isinstance(match, list) or not all(isinstance(m, str) for m in match):
        raise ViewError(f'{where}.match: expected a list of matchers like stage="enhancement", got {match!r}')
    try:
        params.matchers(match)
        if query.get("step"):
            params.duration_ns(str(query["step"]), f"{where}.step")
    except params.ParamError as exc:
        raise ViewError(f"{where}: {exc}") from None
    out = {
        "metric": _text(query.get("metric"), f"{where}.metric"),
        "agg": agg,
        "group_by": group_by,
        "match": match,
    }
    if query.get("step"):
        out["step"] = str(query["step"])
    return out


def validate_view(view: Any, view_id: str) -> dict[str, Any]:
    """The stored form of a view, or :class:`ViewError` naming the first wrong field."""
    if not isinstance(view, dict):
        raise ViewError("view: expected a JSON object with title and panels")
    _unknown(view, _VIEW_FIELDS, "view")
    if "id" in view and view["id"] != view_id:
        raise ViewError(f"view.id: {view['id']!r} differs from the id in the URL {view_id!r}")
    panels = view.get("panels")
    if not isinstance(panels, list) or len(panels) > MAX_PANELS:
        raise ViewError(f"view.panels: expected a list of at most {MAX_PANELS} panels")
    out_panels = []
    for index, panel in enumerate(panels):
        where = f"view.panels[{index}]"
        if not isinstance(panel, dict):
            raise ViewError(f"{where}: expected an object with title, chart, query")
        _unknown(panel, _PANEL_FIELDS, where)
        chart = panel.get("chart", "line")
        if chart not in CHARTS:
            raise ViewError(f"{where}.chart: expected one of {', '.join(CHARTS)}, got {chart!r}")
        out_panels.append(
            {
                "title": _text(panel.get("title"), f"{where}.title"),
                "chart": chart,
                "query": validate_query(panel.get("query"), f"{where}.query"),
            }
        )
    out = {"id": view_id, "title": _text(view.get("title"), "view.title"), "panels": out_panels}
    if view.get("description") is not None:
        out["description"] = _text(view["description"], "view.description", limit=2000)
    if view.get("range") is not None:
        try:
            params.duration_ns(str(view["range"]), "view.range")
        except params.ParamError as exc:
            raise ViewError(str(exc)) from None
        out["range"] = str(view["range"])
    return out


class ViewStore:
    """Views as JSON files in one directory, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def _path(self, view_id: str) -> Path:
        if not VIEW_ID.match(view_id):
            raise ViewError(
                f"id: expected 1-64 letters, digits, '.', '_' or '-' (not first), got {view_id!r}"
            )
        return self.dir / f"{view_id}.json"

    def list(self) -> list[dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        views = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                views.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a file someone broke by hand is left alone, not served
        return views

    def get(self, view_id: str) -> dict[str, Any] | None:
        path = self._path(view_id)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, view_id: str, view: Any) -> tuple[dict[str, Any], bool]:
        """Validate and store; returns the stored view and whether it is new."""
        path = self._path(view_id)
        stored = validate_view(view, view_id)
        self.dir.mkdir(parents=True, exist_ok=True)
        created = not path.exists()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{view_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(stored, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return stored, created

    def delete(self, view_id: str) -> bool:
        path = self._path(view_id)
        if not path.exists():
            return False
        path.unlink()
        return True


def _store(request: Request) -> ViewStore:
    return ViewStore(Path(request.app.state.receiver.data_dir) / "dashboard" / "views")


def _bad(exc: ViewError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, 400)


@router.get("/views", summary="Every saved dashboard view")
def list_views(request: Request) -> dict[str, Any]:
    return {"views": _store(request).list()}


@router.get("/views/{view_id}", summary="One saved dashboard view")
def get_view(request: Request, view_id: str) -> Any:
    try:
        view = _store(request).get(view_id)
    except ViewError as exc:
        return _bad(exc)
    return view if view is not None else JSONResponse({"error": f"view {view_id!r} not found"}, 404)


@router.put("/views/{view_id}", summary="Create or replace a view (validated)")
def put_view(request: Request, view_id: str, view: Annotated[Any, Body()]) -> Any:
    try:
        stored, created = _store(request).put(view_id, view)
    except ViewError as exc:
        return _bad(exc)
    return JSONResponse(stored, 201 if created else 200)


@router.delete("/views/{view_id}", summary="Delete a view", status_code=204, response_model=None)
def delete_view(request: Request, view_id: str) -> Any:
    try:
        deleted = _store(request).delete(view_id)
    except ViewError as exc:
        return _bad(exc)
    return (
        Response(status_code=204) if deleted else JSONResponse({"error": f"view {view_id!r} not found"}, 404)
    )
