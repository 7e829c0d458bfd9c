"""OTLP/HTTP: ``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs`` in protobuf or JSON, plain or gzip.

Follows the OTLP/HTTP specification: the reply uses the request's encoding; failures carry a
``google.rpc.Status`` body (protobuf or JSON) with a message; 400 for an undecodable payload,
413 beyond the size limit (checked while reading and while decompressing, so neither a large
body nor a gzip bomb is ever held whole), 415 for other content types, 401 without a valid
token, 403 for a token without the ingest scope, and 429/503 with ``Retry-After`` when the
receiver cannot take the data now.
"""

from __future__ import annotations

import zlib
from typing import Any

from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from otel_audio.processors.base import Signal
from otel_audio.receiver.auth import Decision, Scope, TokenAuth
from otel_audio.receiver.grpc_server import SERVICES, export_response, retry_status
from otel_audio.receiver.ingest import Ingestor, InvalidRequest, Overloaded, Unavailable
from otel_audio.receiver.otlp_json import OtlpJsonError, parse_request

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PATHS = {"/v1/traces": Signal.TRACES, "/v1/metrics": Signal.METRICS, "/v1/logs": Signal.LOGS}
# Export requests being read or ingested at once; past this, new ones get 429 unread. Below
# anyio's 40 worker threads, so an admitted request never waits for one while holding its body.
MAX_BACKLOG = 16


class TooLarge(Exception):
    """The body, or what it decompresses to, exceeds the request size limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed when gzip-encoded, never more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", "gzip"):
        raise ValueError(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if inflater is not None:
            chunk = inflater.decompress(chunk, limit + 1 - size)
            if inflater.unconsumed_tail:
                raise TooLarge(f"decompressed request exceeds the limit of {limit} bytes")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request exceeds the limit of {limit} bytes")
        parts.append(chunk)
    if inflater is not None and not inflater.eof:
        raise ValueError("truncated gzip body")
    return b"".join(parts)


def _status_response(
    code: int, http_status: int, message: str, as_json: bool, headers: dict[str, str] | None = None
) -> Response:
    return _encoded(status_pb2.Status(code=code, message=message), http_status, as_json, headers)


def _encoded(
    message: Any, http_status: int, as_json: bool, headers: dict[str, str] | None = None
) -> Response:
    """A protobuf reply in the request's encoding; replies carry no ids, so proto3 JSON is OTLP/JSON."""
    if as_json:
        body = json_format.MessageToJson(message, indent=None).encode()
        return Response(body, http_status, headers=headers, media_type=JSON)
    return Response(message.SerializeToString(), http_status, headers=headers, media_type=PROTOBUF)


_UNAUTHENTICATED = "missing or invalid bearer token"
_FORBIDDEN = "this token's scope does not allow sending telemetry; use an ingest or admin token"


def _bounded(export: Any, ingestor: Ingestor, denied: Any) -> Any:
    """``export`` behind the token check and a count of requests in progress: past
    ``MAX_BACKLOG`` the reply is 429 with Retry-After before the body is read (uvicorn discards
    it and keeps the connection), so waiting requests never pile up in memory. The token is
    judged first, so a sender without one learns that (401), not to retry later."""
    backlog = 0  # one event loop runs every request: no lock needed

    async def bounded(request: Request) -> Response:
        nonlocal backlog
        refusal = denied(request)
        if refusal is not None:
            return refusal
        if backlog >= MAX_BACKLOG:
            ingestor.refuse(_PATHS[request.url.path], "http", "overloaded")
            as_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == JSON
            message = f"{backlog} export requests already being read or ingested (limit {MAX_BACKLOG})"
            status = retry_status(code_pb2.RESOURCE_EXHAUSTED, message, ingestor.retry_after_s)
            return _encoded(status, 429, as_json, {"Retry-After": str(ingestor.retry_after_s)})
        backlog += 1
        try:
            return await export(request)
        finally:
            backlog -= 1

    return bounded


def build_otlp_http_app(
    ingestor: Ingestor, auth: TokenAuth, max_request_bytes: int, *, public_health: bool = True
) -> Starlette:
    """The Starlette application serving OTLP/HTTP: export needs an ingest (or admin) token,
    ``/healthz`` any valid token unless ``public_health``."""

    def denied(request: Request) -> Response | None:
        """401 without a valid token, 403 for a token without the ingest scope, else None."""
        decision = auth.decide(request.headers.get("authorization"), Scope.INGEST)
        if decision is Decision.ALLOWED:
            return None
        signal = _PATHS[request.url.path]
        as_json = request.headers.get("content-type", "").split(";")[0].strip().lower() == JSON
        if decision is Decision.UNAUTHENTICATED:
            ingestor.refuse(signal, "http", "unauthenticated")
            return _status_response(
                code_pb2.UNAUTHENTICATED, 401, _UNAUTHENTICATED, as_json, {"WWW-Authenticate": "Bearer"}
            )
        ingestor.refuse(signal, "http", "forbidden")
        return _status_response(code_pb2.PERMISSION_DENIED, 403, _FORBIDDEN, as_json)

    async def export(request: Request) -> Response:
        signal = _PATHS[request.url.path]
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        as_json = content_type == JSON
        if content_type not in (PROTOBUF, JSON):
            ingestor.refuse(signal, "http", "invalid")
            return _status_response(
                code_pb2.INVALID_ARGUMENT,
                415,
                f"unsupported Content-Type {content_type!r}; use {PROTOBUF} or {JSON}",
                False,
            )
        try:
            body = await read_body(request, max_request_bytes)
        except TooLarge as exc:
            ingestor.refuse(signal, "http", "too_large")
            return _status_response(code_pb2.INVALID_ARGUMENT, 413, str(exc), as_json)
        except (ValueError, zlib.error) as exc:
            ingestor.refuse(signal, "http", "invalid")
            return _status_response(code_pb2.INVALID_ARGUMENT, 400, f"cannot read body: {exc}", as_json)
        _service, request_type, *_rest = SERVICES[signal]
        try:
            message = parse_request(body, signal.value) if as_json else body
        except OtlpJsonError as exc:
            ingestor.refuse(signal, "http", "invalid")
            return _status_response(
                code_pb2.INVALID_ARGUMENT, 400, f"cannot decode {request_type.__name__}: {exc}", as_json
            )
        try:
            result = await run_in_threadpool(ingestor.export, signal, message, len(body), "http")
        except InvalidRequest as exc:
            return _status_response(code_pb2.INVALID_ARGUMENT, 400, str(exc), as_json)
        except Overloaded as exc:
            retry = {"Retry-After": str(exc.retry_after_s)}
            status = retry_status(code_pb2.RESOURCE_EXHAUSTED, str(exc), exc.retry_after_s)
            return _encoded(status, 429, as_json, retry)
        except Unavailable as exc:
            retry = {"Retry-After": str(exc.retry_after_s)}
            status = retry_status(code_pb2.UNAVAILABLE, str(exc), exc.retry_after_s)
            return _encoded(status, 503, as_json, retry)
        return _encoded(export_response(signal, result.rejected, result.message), 200, as_json)

    async def healthz(request: Request) -> Response:
        if not public_health and not auth.allows(request.headers.get("authorization")):
            return JSONResponse({"error": _UNAUTHENTICATED}, 401, headers={"WWW-Authenticate": "Bearer"})
        return JSONResponse({"status": "ok"})

    routes = [Route(path, _bounded(export, ingestor, denied), methods=["POST"]) for path in _PATHS]
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    return Starlette(routes=routes)
