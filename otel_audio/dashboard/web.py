"""Serving the page: ``/`` redirects to ``/dashboard/``, which serves ``static/`` and plotly.js.

The page's files carry no data, so they answer without a token (:data:`PUBLIC_PATHS`, exempted by
the API's auth middleware); every ``/api`` call the page makes sends the bearer token the user
typed once (kept in ``sessionStorage``). plotly.js is read from the installed ``plotly`` Python
package, so the dashboard works with no internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response

STATIC = Path(__file__).parent / "static"
PLOTLY_PATH = "/dashboard/vendor/plotly.min.js"


def _plotly_js() -> Path | None:
    try:
        import plotly
    except ImportError:
        return None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path if path.exists() else None


PUBLIC_PATHS = frozenset(
    {"/", "/dashboard", "/dashboard/", PLOTLY_PATH}
    | {f"/dashboard/{p.relative_to(STATIC).as_posix()}" for p in STATIC.rglob("*") if p.is_file()}
)

_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def mount(app: FastAPI) -> None:
    """Add the dashboard's routes to the API app."""

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/dashboard/")

    @app.get("/dashboard", include_in_schema=False)
    @app.get("/dashboard/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get(PLOTLY_PATH, include_in_schema=False)
    def plotly_js() -> Response:
        path = _plotly_js()
        if path is None:
            return Response("plotly is not installed: pip install 'otel-audio[receiver]'", 404)
        return FileResponse(path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/dashboard/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return Response("not found", 404)
        return FileResponse(path, media_type=_TYPES.get(path.suffix), headers={"Cache-Control": "no-cache"})
