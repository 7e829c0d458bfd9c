"""The Jaeger query HTTP API over the receiver's spans, for Jaeger UI and Grafana's Jaeger data source.

Jaeger UI and Grafana read traces through the HTTP API of ``jaeger-query`` (``/api/...``, Jaeger's
"internal" UI API, ``cmd/query/app/http_handler.go``). The receiver answers the same routes on its
API port, in Jaeger's JSON model (``model/json/model.go``), so either tool can be pointed at it:

- ``GET /api/services``, ``GET /api/services/{service}/operations``,
  ``GET /api/operations?service=&spanKind=``
- ``GET /api/traces?service=&operation=&tags=&tag=&start=&end=&minDuration=&maxDuration=&limit=&lookback=``
  (or ``traceID=`` repeated), ``GET /api/traces/{traceID}`` (``?download=1``: a file Jaeger UI opens)
- ``GET /api/dependencies?endTs=&lookback=&service=``

Every answer is ``{"data": ..., "total", "limit", "offset", "errors"}``; errors are
``{"data": null, "errors": [{"code": 400, "msg": "..."}]}`` with the same HTTP status. Spans map from
OTLP as the OpenTelemetry Collector's Jaeger translator does (``docs/jaeger.md``): times in
microseconds (``ns // 1000``), the parent as the first ``CHILD_OF`` reference and links as
``FOLLOWS_FROM``, kind as ``span.kind``, status as ``otel.status_code`` (and ``error=true``), the
scope as ``otel.scope.name``/``otel.scope.version``, events as logs with an ``event`` field, and
resources as ``processes``. Integers beyond JavaScript's safe range (2**53 - 1) are strings.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Request
from fastapi.responses import Response

from otel_audio.store.query import MAX_LIMIT, QueryError, SpanQuery

router = APIRouter(prefix="/api", tags=["jaeger"])

DEFAULT_LIMIT = 100  # traces per search, as jaeger-query
DEFAULT_LOOKBACK_US = 2 * 24 * 3600 * 10**6  # a search without start looks back two days, as jaeger-query
DEFAULT_DEPENDENCY_LOOKBACK_MS = 24 * 3600 * 1000
PARENT_SLACK_NS = 3600 * 10**9  # dependencies: span blocks this far before the window are read for parents
SAFE_INTEGER = 2**53 - 1  # larger integers lose digits in JavaScript, so they go out as strings

# OTLP SpanKind -> Jaeger's span.kind tag (INTERNAL and UNSPECIFIED get no tag, as in the translator)
SPAN_KIND_TAG = {2: "server", 3: "client", 4: "producer", 5: "consumer"}
# OTLP SpanKind -> the spanKind of /api/operations
OPERATION_KIND = {0: "", 1: "internal", **SPAN_KIND_TAG}
_STATUS_TAG = {1: "OK", 2: "ERROR"}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")
_DURATION_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}
_DURATION_NS.update(h=3600 * 10**9, d=86400 * 10**9)  # d: Jaeger UI's lookback=2d (Go has no d)
_LOGFMT = re.compile(r'\s*([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


class JaegerError(ValueError):
    """A request Jaeger would refuse; answered as ``{"errors": [{"code", "msg"}]}`` with that status."""

    def __init__(self, msg: str, code: int = 400) -> None:
        super().__init__(msg)
        self.code = code


# -- responses ------------------------------------------------------------------------------------


def _json(
    body: Any, status: int = 200, pretty: bool = False, headers: dict[str, str] | None = None
) -> Response:
    text = json.dumps(
        body, ensure_ascii=False, indent=4 if pretty else None, separators=None if pretty else (",", ":")
    )
    return Response(text, status, headers=headers, media_type="application/json")


def _structured(data: Any, request: Request, total: int = 0) -> Response:
    pretty = request.query_params.get("prettyPrint", "") not in ("", "false")
    return _json({"data": data, "total": total, "limit": 0, "offset": 0, "errors": None}, pretty=pretty)


def _error(exc: JaegerError | QueryError) -> Response:
    code = exc.code if isinstance(exc, JaegerError) else 400
    return _json(
        {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": code, "msg": str(exc)}]}, code
    )


# -- OTLP rows -> Jaeger model --------------------------------------------------------------------


def tag(key: str, value: Any) -> dict[str, Any]:
    """One typed Jaeger key-value from a stored attribute value (arrays and maps as JSON strings)."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value if abs(value) <= SAFE_INTEGER else str(value)}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    if value is None:
        return {"key": key, "type": "string", "value": ""}
    return {
        "key": key,
        "type": "string",
        "value": json.dumps(value, ensure_ascii=False, separators=(",", ":")),
    }


def _loads(text: str | None, empty: Any) -> Any:
    return json.loads(text) if text else empty


def _span(row: dict[str, Any], process_id: str) -> dict[str, Any]:
    trace_id = row["trace_id"]
    references = []
    if row["parent_span_id"]:
        references.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": row["parent_span_id"]})
    for link in _loads(row["links"], []):
        references.append({"refType": "FOLLOWS_FROM", "traceID": link["trace_id"], "spanID": link["span_id"]})
    tags = [tag(k, v) for k, v in _loads(row["attributes"], {}).items()]
    if row["scope"]:
        tags.append(tag("otel.scope.name", row["scope"]))
    if row["scope_version"]:
        tags.append(tag("otel.scope.version", row["scope_version"]))
    if row["kind"] in SPAN_KIND_TAG:
        tags.append(tag("span.kind", SPAN_KIND_TAG[row["kind"]]))
    if row["status_code"] in _STATUS_TAG:
        tags.append(tag("otel.status_code", _STATUS_TAG[row["status_code"]]))
        if row["status_message"]:
            tags.append(tag("otel.status_description", row["status_message"]))
    if row["status_code"] == 2:
        tags = [t for t in tags if t["key"] != "error"] + [tag("error", True)]
    if row["trace_state"]:
        tags.append(tag("w3c.tracestate", row["trace_state"]))
    logs = []
    for event in _loads(row["events"], []):
        attributes = event.get("attributes") or {}
        if isinstance(attributes, str):
            attributes = _loads(attributes, {})
        fields = [] if "event" in attributes else [tag("event", event["name"])]
        fields += [tag(k, v) for k, v in attributes.items()]
        logs.append({"timestamp": int(event["time_unix_nano"]) // 1000, "fields": fields})
    return {
        "traceID": trace_id,
        "spanID": row["span_id"],
        "flags": (row["flags"] or 0) & 0xFF,  # the W3C trace flags byte: 1 = sampled
        "operationName": row["name"],
        "references": references,
        "startTime": row["start_time_unix_nano"] // 1000,
        "duration": row["duration_ns"] // 1000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": None,
    }


def to_jaeger(spans: pa.Table) -> dict[str, Any]:
    """One trace's spans (SPANS_SCHEMA) as a Jaeger trace: spans, processes keyed p1, p2, ... by resource."""
    processes: dict[tuple[str, str], str] = {}
    process_body: dict[str, dict[str, Any]] = {}
    out = []
    for row in spans.to_pylist():
        key = (row["service"] or "", row["resource"] or "{}")
        if key not in processes:
            pid = processes[key] = f"p{len(processes) + 1}"
            resource = _loads(key[1], {})
            process_body[pid] = {
                "serviceName": key[0],
                "tags": [tag(k, v) for k, v in resource.items() if k != "service.name"],
            }
        out.append(_span(row, processes[key]))
    trace_id = out[0]["traceID"] if out else ""
    return {"traceID": trace_id, "spans": out, "processes": process_body, "warnings": None}


# -- request parsing ------------------------------------------------------------------------------


def parse_duration_ns(text: str, name: str) -> int:
    """A Go duration (``1.2s``, ``100ms``, ``1h30m``, ``500us``) as nanoseconds, as Jaeger parses it."""
    value = text.strip()
    if value == "0":
        return 0
    parts = _DURATION_PART.findall(value)
    if not value or "".join(a + b for a, b in parts) != value:
        raise JaegerError(
            f"unable to parse param '{name}': time: invalid duration {text!r} "
            "(expected e.g. 1.2s, 100ms, 500us, 1h30m)"
        )
    return sum(round(float(number) * _DURATION_NS[unit]) for number, unit in parts)


def _integer(text: str | None, name: str, what: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise JaegerError(f"unable to parse param '{name}': expected {what}, got {text!r}") from None


def parse_tags(tag_params: list[str], tags_params: list[str]) -> dict[str, str]:
    """``tag=key:value`` (repeated) and ``tags=`` as a JSON object (what Jaeger UI and Grafana send)
    or logfmt (``error=true http.status_code=500``), into one mapping of strings."""
    out: dict[str, str] = {}
    for text in tag_params:
        key, sep, value = text.partition(":")
        if not sep:
            raise JaegerError(f"malformed 'tag' parameter, expecting key:value, received: {text}")
        out[key] = value
    for text in tags_params:
        if text.strip().startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise JaegerError(f"malformed 'tags' parameter, cannot unmarshal JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise JaegerError("malformed 'tags' parameter: expected a JSON object of key: value")
            out.update({k: json.dumps(v) if isinstance(v, bool) else str(v) for k, v in parsed.items()})
            continue
        pos = 0
        for match in _LOGFMT.finditer(text):
            if match.start() != pos:
                break
            value = match.group(2)
            out[match.group(1)] = json.loads(value) if value.startswith('"') else value
            pos = match.end()
        if text[pos:].strip():
            raise JaegerError(
                f"malformed 'tags' parameter: expected a JSON object or logfmt key=value pairs, got {text!r}"
            )
    return out


def _trace_id(text: str) -> str:
    """1-32 hex digits, left-padded to 32 (Jaeger accepts 64-bit ids written short)."""
    value = text.strip().lower()
    if not 1 <= len(value) <= 32 or any(c not in "0123456789abcdef" for c in value):
        raise JaegerError(f"cannot parse traceID {text!r}: expected 1 to 32 hex digits")
    return value.rjust(32, "0")


def _search_query(request: Request) -> tuple[SpanQuery, Callable[[dict], bool] | None, list[str]]:
    """The span filters of ``/api/traces``; a check on span rows for what the store cannot filter
    (``span.kind``, ``error=false``), or None; and any ``traceID`` params."""
    params = request.query_params
    trace_ids = [_trace_id(t) for t in params.getlist("traceID")]
    service = params.get("service") or None
    if not service and not trace_ids:
        raise JaegerError("parameter 'service' is required")
    now_us = time.time_ns() // 1000
    end_us = _integer(params.get("end"), "end", "Unix microseconds")
    end_us = now_us if end_us is None else end_us
    start_us = _integer(params.get("start"), "start", "Unix microseconds")
    if start_us is None:
        lookback = params.get("lookback")
        back_us = DEFAULT_LOOKBACK_US
        if lookback and lookback != "custom":
            back_us = parse_duration_ns(lookback, "lookback") // 1000
        start_us = end_us - back_us
    if end_us < start_us:
        raise JaegerError(f"'end' ({end_us}) is before 'start' ({start_us})")
    min_d = parse_duration_ns(params["minDuration"], "minDuration") if params.get("minDuration") else None
    max_d = parse_duration_ns(params["maxDuration"], "maxDuration") if params.get("maxDuration") else None
    if min_d and max_d and max_d < min_d:
        raise JaegerError("'maxDuration' should be greater than 'minDuration'")
    limit = _integer(params.get("limit"), "limit", "an integer") or DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise JaegerError(f"unable to parse param 'limit': expected 1 to {MAX_LIMIT}, got {limit}")
    tags = parse_tags(params.getlist("tag"), params.getlist("tags"))
    status, not_error = None, False
    if "error" in tags:  # the tag Jaeger UI users search errors by; it is derived from the status
        error = tags.pop("error").lower()
        status, not_error = (2, False) if error == "true" else (None, error == "false")
    if "otel.status_code" in tags:
        code = tags.pop("otel.status_code").upper()
        status = {"OK": 1, "ERROR": 2, "UNSET": 0}.get(code, -1)
        if status == -1:
            raise JaegerError(f"tag otel.status_code: expected OK, ERROR or UNSET, got {code!r}")
    kind = tags.pop("span.kind", None)
    if kind is not None and kind not in SPAN_KIND_TAG.values() and kind != "internal":
        raise JaegerError(
            f"tag span.kind: expected server, client, producer, consumer or internal, got {kind!r}"
        )
    code = next((k for k, name in OPERATION_KIND.items() if name == kind), None)
    keep = None
    if code is not None or not_error:

        def keep(row: dict[str, Any]) -> bool:
            return (code is None or row["kind"] == code) and not (not_error and row["status_code"] == 2)

    query = SpanQuery(
        service=service,
        operation=params.get("operation") or None,
        start_ns=start_us * 1000,
        end_ns=end_us * 1000 + 1000,  # Jaeger's end is inclusive at microsecond precision
        min_duration_ns=min_d or None,
        max_duration_ns=max_d or None,
        status_code=status,
        attributes=tags,
        limit=limit,
    )
    return query, keep, trace_ids


# -- catalog queries (services, operations, dependencies) -----------------------------------------


def _over_spans(
    request: Request, columns: str, sql: str, params: dict[str, Any], start_ns=None, end_ns=None
) -> list:
    """Run ``sql`` over ``spans`` (the head plus the span blocks of the range, only ``columns``)."""
    store = request.app.state.receiver.store
    for attempt in (1, 2):  # a block compacted or expired while reading: once more on a fresh view
        view = store.view()
        files = [str(f) for f in view.span_files(start_ns, end_ns)]
        con = duckdb.connect()
        try:
            con.register("head", view.head.spans)
            source = f"SELECT {columns} FROM head"
            if files:
                source += f" UNION ALL BY NAME SELECT {columns} FROM read_parquet($files)"
                params = {**params, "files": files}
            return con.execute(f"WITH spans AS ({source}) {sql}", params).fetchall()
        except (FileNotFoundError, duckdb.IOException):
            if attempt == 2:
                raise
        finally:
            con.close()
    return []


def _operations(request: Request, service: str) -> list[tuple[str, int]]:
    return _over_spans(
        request,
        "service, name, kind",
        "SELECT DISTINCT name, kind FROM spans WHERE service = $service ORDER BY name, kind",
        {"service": service},
    )


# -- routes ---------------------------------------------------------------------------------------


@router.get("/services", summary="Jaeger: every service that sent spans")
def services(request: Request) -> Response:
    names = [
        r[0] for r in _over_spans(request, "service", "SELECT DISTINCT service FROM spans ORDER BY 1", {})
    ]
    return _structured(names, request, total=len(names))


@router.get("/services/{service}/operations", summary="Jaeger: the span names of one service")
def service_operations(request: Request, service: str) -> Response:
    names = sorted({name for name, _ in _operations(request, service)})
    return _structured(names, request, total=len(names))


@router.get("/operations", summary="Jaeger: the operations of a service with their span kind")
def operations(request: Request) -> Response:
    service = request.query_params.get("service")
    kind = request.query_params.get("spanKind", "")
    try:
        if not service:
            raise JaegerError("parameter 'service' is required")
        if kind and kind not in OPERATION_KIND.values():
            raise JaegerError(
                f"spanKind: expected server, client, producer, consumer or internal, got {kind!r}"
            )
    except JaegerError as exc:
        return _error(exc)
    data = [
        {"name": name, "spanKind": OPERATION_KIND.get(k, "")}
        for name, k in _operations(request, service)
        if not kind or OPERATION_KIND.get(k) == kind
    ]
    return _structured(data, request, total=len(data))


@router.get("/traces", summary="Jaeger: traces with a span matching service, operation, tags, time, duration")
def search(request: Request) -> Response:
    engine = request.app.state.receiver.query
    try:
        query, keep, trace_ids = _search_query(request)
        if trace_ids:
            found = [engine.get_trace(t) for t in trace_ids]
            return _structured([to_jaeger(t) for t in found if t.num_rows], request)
        if keep is None:
            ids = engine.search_traces(query)
        else:  # filters the store lacks: check the newest matching spans one by one
            spans = engine.search_spans(replace(query, limit=MAX_LIMIT))
            rows = spans.select(["trace_id", "kind", "status_code"]).to_pylist()
            ids = list(dict.fromkeys(r["trace_id"] for r in rows if keep(r)))[: query.limit]
    except (JaegerError, QueryError) as exc:
        return _error(exc)
    return _structured([to_jaeger(engine.get_trace(t)) for t in ids], request)


@router.get("/traces/{trace_id}", summary="Jaeger: one trace; ?download=1 as a file Jaeger UI opens")
def get_trace(request: Request, trace_id: str) -> Response:
    try:
        tid = _trace_id(trace_id)
        engine = request.app.state.receiver.query
        spans, total = engine.get_trace_counted(tid)
        if spans.num_rows == 0:
            raise JaegerError("trace not found", 404)
    except (JaegerError, QueryError) as exc:
        return _error(exc)
    trace = to_jaeger(spans)
    if total > spans.num_rows:  # limits.max_spans_per_trace; Jaeger UI shows a trace's warnings
        trace["warnings"] = [
            f"trace has {total} spans; the first {spans.num_rows} by start time are shown "
            "(limits.max_spans_per_trace)"
        ]
    if request.query_params.get("download", "").lower() in ("1", "true", "yes"):
        disposition = f'attachment; filename="trace-{tid}.json"'
        return _json({"data": [trace]}, pretty=True, headers={"Content-Disposition": disposition})
    return _structured([trace], request)


@router.get("/dependencies", summary="Jaeger: calls between services (parent span -> child span)")
def dependencies(request: Request) -> Response:
    params = request.query_params
    try:
        end_ms = _integer(params.get("endTs"), "endTs", "Unix milliseconds")
        end_ms = time.time_ns() // 10**6 if end_ms is None else end_ms
        lookback = _integer(params.get("lookback"), "lookback", "milliseconds")
        lookback = DEFAULT_DEPENDENCY_LOOKBACK_MS if lookback is None else lookback
    except JaegerError as exc:
        return _error(exc)
    start_ns, end_ns = (end_ms - lookback) * 10**6, end_ms * 10**6
    rows = _over_spans(
        request,
        "trace_id, span_id, parent_span_id, service, start_time_unix_nano",
        "SELECT p.service, c.service, count(*) FROM spans c JOIN spans p "
        "ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id "
        "WHERE c.start_time_unix_nano >= $lo AND c.start_time_unix_nano < $hi AND p.service <> c.service "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        {"lo": start_ns, "hi": end_ns},
        start_ns - PARENT_SLACK_NS,  # a parent may start before the window
        end_ns,
    )
    service = params.get("service")
    data = [{"parent": p, "child": c, "callCount": n} for p, c, n in rows if not service or service in (p, c)]
    return _structured(data, request)
