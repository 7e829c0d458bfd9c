"""The receiver's HTTP API (port 8080): FastAPI app with auth, error mapping and health routes.

Every route requires a bearer token when auth is configured, except the health probes (unless
``server.auth.public_health`` is off), ``/metrics`` when ``server.auth.public_metrics`` is set,
and the dashboard's static files (they carry no data). Which scope a route needs is decided by
method and route (:func:`required_scope`): reads need ``read``, anything else ``admin`` unless
:data:`ROUTE_SCOPES` says otherwise, so a new mutating route is admin-only until someone decides
it is not. No or unknown token: 401 with ``WWW-Authenticate: Bearer``; a token without the scope:
403 (docs/security.md). Parameter and query errors become ``400`` with
``{"error": "<what was wrong>"}``; the OpenAPI document is at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.routing import compile_path

from otel_audio.api import alerts, errors, query, reports, slo, stream, traces, views
from otel_audio.api import jaeger as jaeger_api
from otel_audio.api.exposition import CONTENT_TYPE, Exposition
from otel_audio.api.params import ParamError
from otel_audio.dashboard import web as dashboard_web
from otel_audio.receiver.auth import Decision, Scope
from otel_audio.store.query import QueryError
from otel_audio.version import __version__

_HEALTH_PATHS = ("/healthz", "/readyz")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Routes whose method does not tell what they do: (method, route path) -> the scope they need.
# Route paths may hold parameters (``/api/v1/things/{name}``); anything not listed follows the
# method, so a route added later that changes something is admin-only until it is listed here.
ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("POST", "/api/v1/rules/test"): Scope.READ,  # evaluates a condition now; creates nothing
}
_LISTED = [(method, compile_path(path)[0], scope) for (method, path), scope in ROUTE_SCOPES.items()]


def required_scope(method: str, path: str) -> Scope:
    """The scope a request needs: :data:`ROUTE_SCOPES`, else ``read`` for reads, else ``admin``."""
    for listed_method, pattern, scope in _LISTED:
        if method == listed_method and pattern.fullmatch(path):
            return scope
    return Scope.READ if method in _READ_METHODS else Scope.ADMIN


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
        if not auth.enabled or (request.method in _READ_METHODS and request.url.path in public):
            return await call_next(request)
        path = request.url.path
        # a probe may hold any valid token (an ingest-only one, say) when probes are not public
        need = None if path in _HEALTH_PATHS else required_scope(request.method, path)
        decision = auth.decide(request.headers.get("authorization"), need)
        if decision is Decision.UNAUTHENTICATED:
            return JSONResponse(
                {"error": "missing or invalid bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )
        if decision is Decision.FORBIDDEN:
            wanted = need.value if need else "a valid token"
            message = f"this token's scope does not allow this request; it needs {wanted}"
            return JSONResponse({"error": message}, 403)
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
