"""The receiver's HTTP API (port 8080): FastAPI app with auth, error mapping and health routes.

Every route requires the bearer token when auth is configured, except the health probes
(and ``/metrics`` when ``server.auth.public_metrics`` is set). Parameter and query errors
become ``400`` with ``{"error": "<what was wrong>"}``; the OpenAPI document is at
``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from otel_audio.api import alerts, errors, query, reports, slo, stream, traces, views
from otel_audio.api import jaeger as jaeger_api
from otel_audio.api.exposition import CONTENT_TYPE, Exposition
from otel_audio.api.params import ParamError
from otel_audio.dashboard import web as dashboard_web
from otel_audio.store.query import QueryError
from otel_audio.version import __version__

_HEALTH_PATHS = ("/healthz", "/readyz")


def build_api_app(receiver: Any) -> FastAPI:
    """The API application for a :class:`otel_audio.receiver.service.Receiver`."""
    app = FastAPI(title="otel-audio receiver API", version=__version__, docs_url=None, redoc_url=None)
    app.state.receiver = receiver
    errors.install(app)
    auth = receiver.auth
    public = set(_HEALTH_PATHS) if receiver.config.server.auth.public_health else set()
    if receiver.config.server.auth.public_metrics:
        public.add("/metrics")
    public |= dashboard_web.PUBLIC_PATHS  # the page's files; its data calls send the token

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if request.url.path not in public and not auth.allows(request.headers.get("authorization")):
            return JSONResponse(
                {"error": "missing or invalid bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )
        return await call_next(request)

    @app.exception_handler(ParamError)
    @app.exception_handler(QueryError)
    async def bad_request(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: WAL replayed and every port accepting")
    def readyz() -> Response:
        if receiver.serving:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "starting"}, 503)

    exposition = Exposition(receiver.store, receiver.metrics.registry, receiver.config.exposition)

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Self-metrics and processor series, Prometheus text format",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def metrics() -> Response:
        return Response(exposition.render(), media_type=CONTENT_TYPE)

    app.include_router(query.router)
    app.include_router(traces.router)
    app.include_router(alerts.router)
    app.include_router(reports.router)
    app.include_router(jaeger_api.router)
    app.include_router(slo.router)
    app.include_router(views.router)
    app.include_router(stream.router)
    dashboard_web.mount(app)
    return app
