"""One error shape for the whole API, and an OpenAPI document that says so.

Every refusal is JSON ``{"error": "<what was wrong>"}``: the routes' own (``ParamError``,
``QueryError``, ``ViewError``, the alerting and SLO engines' errors) and FastAPI's. FastAPI's
parameter validation answers ``422`` with ``{"detail": [...]}`` and its ``HTTPException`` with
``{"detail": "..."}``; :func:`install` turns the first into ``400`` with the parameter named
(``limit: Input should be less than or equal to 10000, got '99999'``) and the second into
``{"error": ...}`` with its status, so a client reads one field whatever went wrong.

The OpenAPI document (``/openapi.json``) then declares what the routes really answer: the
``Error`` schema for 400, 401, 403 and 404 on every operation (404 also when the processor
behind a route is not configured), 409 on operations that create, 503 on ``/readyz``; the
``422`` FastAPI adds is dropped because it is never sent. ``tests/test_openapi_schemathesis.py``
checks the live API against this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "properties": {"error": {"type": "string", "description": "what was wrong, naming the field"}},
    "required": ["error"],
}
JAEGER_ERROR_SCHEMA = {
    "title": "JaegerError",
    "type": "object",
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"code": {"type": "integer"}, "msg": {"type": "string"}},
                "required": ["code", "msg"],
            },
        }
    },
    "required": ["errors"],
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
# The Jaeger query API's routes answer in Jaeger's envelope; auth refusals come before them.
_JAEGER_ERROR = {"anyOf": [{"$ref": "#/components/schemas/JaegerError"}, _ERROR_REF]}
_EVERY_OPERATION = {
    "400": "Invalid parameter or body; the message names it and what is accepted",
    "401": "Missing or unknown bearer token (when auth is configured)",
    "403": "The token's scope does not allow this request, or the object is read-only",
    "404": "Not found, or the processor behind this route is not configured",
}
_CREATING = {"409": "The name is already taken"}
_METHODS = ("get", "put", "post", "delete", "patch")


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line naming each parameter and what it got."""
    parts = []
    for error in exc.errors():
        location = [str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body", "header")]
        name = ".".join(location) or "request"
        got = error.get("input")
        shown = repr(got) if len(repr(got)) <= 60 else repr(got)[:57] + "..."
        parts.append(f"{name}: {error.get('msg', 'invalid')}, got {shown}")
    return "; ".join(parts) or "invalid request"


def is_jaeger(path: str) -> bool:
    """Whether a route belongs to the Jaeger-compatible query API (``/api/...`` outside ``/api/v1``)."""
    return path.startswith("/api/") and not path.startswith("/api/v1/")


def _with_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["JaegerError"] = JAEGER_ERROR_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = operations.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            declared = dict(_EVERY_OPERATION)
            if method in ("post", "put"):
                declared.update(_CREATING)
            if path == "/readyz":
                declared["503"] = "Starting: the WAL is being replayed or a port is not accepting yet"
            body = _JAEGER_ERROR if is_jaeger(path) else _ERROR_REF
            for status, description in declared.items():
                responses.setdefault(
                    status, {"description": description, "content": {"application/json": {"schema": body}}}
                )
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return schema


def install(app: FastAPI) -> None:
    """Map FastAPI's own refusals to ``{"error": ...}`` and declare the errors in ``/openapi.json``."""

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": validation_message(exc)}, 400)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_error_responses(
                get_openapi(title=app.title, version=app.version, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
