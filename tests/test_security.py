"""Authentication and authorisation on every listening port of a real receiver, and where it binds.

The API matrix enumerates the routes of the app the receiver builds, so a route added later is
checked without anyone remembering to list it: each route is called with no token, a wrong
token, and an ingest, read and admin token, and must answer 401, 401, 403, and (by method) 403
or not, and not 401/403 for admin. Reads need ``read``; anything else needs ``admin``, except
the read-only POSTs listed here.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otel_audio.api.app import build_api_app
from otel_audio.receiver import auth as auth_module
from otel_audio.receiver.auth import Decision, Scope, Token, TokenAuth
from otel_audio.receiver.config import ConfigError, load_config
from otel_audio.receiver.service import Receiver
from tests.receiver_helpers import gauge, metrics_request

TOKENS = {"ingest": "tok-ingest-9f2c", "read": "tok-read-41ab", "admin": "tok-admin-77de"}
KINDS = ("none", "wrong", "ingest", "read", "admin")
READ_ONLY_POSTS = {("POST", "/api/v1/rules/test")}  # evaluate a condition; create nothing
# health probes, and the dashboard page's files (no data; the page's API calls carry the token)
PUBLIC_BY_DEFAULT = {
    "/healthz",
    "/readyz",
    "/",
    "/dashboard",
    "/dashboard/",
    "/dashboard/vendor/plotly.min.js",
}


def _scoped_tokens() -> list[Any]:
    return [
        {"token": TOKENS["ingest"], "scope": "ingest"},
        {"token": TOKENS["read"], "scope": "read"},
        TOKENS["admin"],  # the plain form: admin, as before scopes existed
    ]


def _headers(kind: str) -> dict[str, str]:
    if kind == "none":
        return {}
    token = "not-a-configured-token" if kind == "wrong" else TOKENS[kind]
    return {"Authorization": f"Bearer {token}"}


def _metadata(kind: str) -> list[tuple[str, str]] | None:
    headers = _headers(kind)
    return [("authorization", headers["Authorization"])] if headers else None


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route, looking into included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's lazily included router
        if inner is not None:
            yield from _routes(inner.routes, prefix + route.include_context.prefix)
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                yield method, prefix + route.path


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x-missing", template)


def _call(port: int, method: str, path: str, kind: str, scheme: str = "http") -> requests.Response:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    with requests.request(
        method,
        f"{scheme}://127.0.0.1:{port}{path}",
        headers=_headers(kind),
        json=body,
        timeout=10,
        stream=True,  # the live stream never ends: read the status and hang up
    ) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.content  # noqa: B018 - read the body while the connection is open
        return response


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[Receiver]:
    """One receiver with ingest, read and admin tokens, alerting and SLOs, shared by the matrix tests."""
    config = load_config(
        None,
        storage__data_dir=str(tmp_path_factory.mktemp("secured")),
        server__grpc_port=0,
        server__http_port=0,
        server__api_port=0,
        server__auth__tokens=_scoped_tokens(),
        processors=["selfmon", {"slo": {}}, {"alerting": {"rules": []}}, "store"],
    )
    receiver = Receiver(config)
    receiver.start()
    yield receiver
    receiver.stop(grace_s=1)


def test_every_api_route_answers_by_token_scope(secured):
    routes = sorted(set(_routes(build_api_app(secured).router.routes)))
    assert ("GET", "/api/v1/stream") in routes and ("GET", "/dashboard/{name}") in routes
    assert ("POST", "/api/v1/rules") in routes and ("GET", "/metrics") in routes
    wrong: list[str] = []
    for method, template in routes:
        path = _concrete(template)
        public = method == "GET" and template in PUBLIC_BY_DEFAULT
        reads = method == "GET" or (method, template) in READ_ONLY_POSTS
        for kind in KINDS:
            status = _call(secured.api_port, method, path, kind).status_code
            if public:
                expected_denied = None
            elif kind in ("none", "wrong"):
                expected_denied = 401
            elif kind == "ingest" or (kind == "read" and not reads):
                expected_denied = 403
            else:
                expected_denied = None
            if expected_denied is None and status in (401, 403):
                wrong.append(f"{method} {path} with {kind}: {status}, expected to pass auth")
            if expected_denied is not None and status != expected_denied:
                wrong.append(f"{method} {path} with {kind}: {status}, expected {expected_denied}")
    assert wrong == []


def test_refusals_say_how_to_authenticate_and_why(secured):
    refused = _call(secured.api_port, "GET", "/api/v1/metrics", "wrong")
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    forbidden = _call(secured.api_port, "POST", "/api/v1/silences", "read")
    assert "admin" in forbidden.json()["error"]


def test_a_read_token_cannot_create_a_rule_that_an_admin_token_can(secured):
    rule = {"name": "Loud", "condition": "avg(level, 1m) > 3"}
    url = f"http://127.0.0.1:{secured.api_port}/api/v1/rules"
    assert requests.post(url, json=rule, headers=_headers("read"), timeout=10).status_code == 403
    listed = requests.get(url, headers=_headers("read"), timeout=10).json()
    assert "Loud" not in str(listed)
    assert requests.post(url, json=rule, headers=_headers("admin"), timeout=10).status_code == 201
    assert "Loud" in str(requests.get(url, headers=_headers("read"), timeout=10).json())


def test_unknown_paths_need_a_token_before_they_say_not_found(secured):
    assert _call(secured.api_port, "GET", "/no/such/thing", "none").status_code == 401
    assert _call(secured.api_port, "GET", "/no/such/thing", "read").status_code == 404
    assert _call(secured.api_port, "DELETE", "/no/such/thing", "read").status_code == 403


def test_dashboard_files_are_public_and_carry_no_data(secured):
    page = _call(secured.api_port, "GET", "/dashboard/", "none")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert _call(secured.api_port, "GET", "/dashboard/api.js", "none").status_code == 200
    assert _call(secured.api_port, "GET", "/dashboard/../../etc/passwd", "none").status_code in (401, 404)
    assert _call(secured.api_port, "GET", "/api/v1/stream", "none").status_code == 401
    with requests.get(
        f"http://127.0.0.1:{secured.api_port}/api/v1/stream",
        headers=_headers("read"),
        stream=True,
        timeout=10,
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert next(stream.iter_lines()).startswith(b"retry:")


def test_otlp_http_export_needs_an_ingest_or_admin_token(secured):
    bodies = {
        "/v1/traces": trace_service_pb2.ExportTraceServiceRequest().SerializeToString(),
        "/v1/metrics": metrics_request("s", [gauge("g", [(time.time_ns(), 1.0, {})])]).SerializeToString(),
        "/v1/logs": logs_service_pb2.ExportLogsServiceRequest().SerializeToString(),
    }
    expected = {"none": 401, "wrong": 401, "read": 403, "ingest": 200, "admin": 200}
    seen = {}
    for path, body in bodies.items():
        for kind in KINDS:
            reply = requests.post(
                f"http://127.0.0.1:{secured.http_port}{path}",
                data=body,
                headers={"Content-Type": "application/x-protobuf", **_headers(kind)},
                timeout=10,
            )
            seen[path, kind] = reply.status_code
            if reply.status_code == 401:
                assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert seen == {(path, kind): expected[kind] for path in bodies for kind in KINDS}
    health = requests.get(f"http://127.0.0.1:{secured.http_port}/healthz", timeout=10)
    assert health.status_code == 200  # public by default


def test_otlp_http_judges_the_token_before_the_backlog(secured, monkeypatch):
    """With no room for another export, a sender without a valid token still hears 401 or 403
    (not "retry later"), and only a sender that may export gets the 429."""
    from otel_audio.receiver import http_server

    monkeypatch.setattr(http_server, "MAX_BACKLOG", 0)  # every export finds the backlog full
    body = metrics_request("s", [gauge("g", [(time.time_ns(), 1.0, {})])]).SerializeToString()
    seen = {
        kind: requests.post(
            f"http://127.0.0.1:{secured.http_port}/v1/metrics",
            data=body,
            headers={"Content-Type": "application/x-protobuf", **_headers(kind)},
            timeout=10,
        ).status_code
        for kind in KINDS
    }
    assert seen == {"none": 401, "wrong": 401, "read": 403, "ingest": 429, "admin": 429}


def test_grpc_export_needs_an_ingest_or_admin_token(secured):
    calls = {
        "traces": lambda ch, md: trace_service_pb2_grpc.TraceServiceStub(ch).Export(
            trace_service_pb2.ExportTraceServiceRequest(), metadata=md, timeout=10
        ),
        "metrics": lambda ch, md: metrics_service_pb2_grpc.MetricsServiceStub(ch).Export(
            metrics_request("s", [gauge("g", [(time.time_ns(), 1.0, {})])]), metadata=md, timeout=10
        ),
        "logs": lambda ch, md: logs_service_pb2_grpc.LogsServiceStub(ch).Export(
            logs_service_pb2.ExportLogsServiceRequest(), metadata=md, timeout=10
        ),
    }
    expected = {
        "none": grpc.StatusCode.UNAUTHENTICATED,
        "wrong": grpc.StatusCode.UNAUTHENTICATED,
        "read": grpc.StatusCode.PERMISSION_DENIED,
        "ingest": grpc.StatusCode.OK,
        "admin": grpc.StatusCode.OK,
    }
    seen = {}
    with grpc.insecure_channel(f"127.0.0.1:{secured.grpc_port}") as channel:
        for signal, call in calls.items():
            for kind in KINDS:
                try:
                    call(channel, _metadata(kind))
                    seen[signal, kind] = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    seen[signal, kind] = exc.code()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert seen == {(signal, kind): expected[kind] for signal in calls for kind in KINDS}
    assert health.status == health_pb2.HealthCheckResponse.SERVING  # public by default


def test_health_and_metrics_are_public_only_when_configured(start_receiver):
    receiver = start_receiver(
        server__auth__tokens=_scoped_tokens(),
        server__auth__public_health=False,
        server__auth__public_metrics=True,
    )
    for path in ("/healthz", "/readyz"):
        assert _call(receiver.api_port, "GET", path, "none").status_code == 401
        assert _call(receiver.api_port, "GET", path, "ingest").status_code == 200  # any valid token
    assert _call(receiver.http_port, "GET", "/healthz", "none").status_code == 401
    assert _call(receiver.http_port, "GET", "/healthz", "ingest").status_code == 200
    metrics = _call(receiver.api_port, "GET", "/metrics", "none")
    assert metrics.status_code == 200 and "otel_audio" in metrics.text
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
        reply = stub.Check(health_pb2.HealthCheckRequest(), metadata=_metadata("ingest"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_need_a_read_token_by_default(secured):
    assert _call(secured.api_port, "GET", "/metrics", "none").status_code == 401
    assert _call(secured.api_port, "GET", "/metrics", "ingest").status_code == 403
    assert _call(secured.api_port, "GET", "/metrics", "read").status_code == 200


# -- the comparison ------------------------------------------------------------------------------


def test_every_configured_token_is_compared_whichever_matches(monkeypatch):
    calls = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    auth = TokenAuth([Token("first", Scope.INGEST), Token("second", Scope.READ), "third"])
    for header, scope in (
        ("Bearer first", Scope.INGEST),
        ("Bearer third", Scope.ADMIN),
        ("Bearer nope", None),
        (None, None),
        ("Bearer first-but-longer", None),
    ):
        calls.clear()
        assert auth.scope_of(header) is scope
        assert len(calls) == 3
        assert {len(a) for a, _ in calls} == {len(b) for _, b in calls} == {32}  # digests: equal length


def test_decisions_follow_the_scope_grants():
    auth = TokenAuth([Token("i", Scope.INGEST), Token("r", Scope.READ), Token("a", Scope.ADMIN)])
    assert auth.decide("Bearer i", Scope.READ) is Decision.FORBIDDEN
    assert auth.decide("Bearer r", Scope.INGEST) is Decision.FORBIDDEN
    assert auth.decide("Bearer r", Scope.ADMIN) is Decision.FORBIDDEN
    assert auth.decide("Bearer a", Scope.INGEST) is Decision.ALLOWED
    assert auth.decide("bearer a", Scope.READ) is Decision.UNAUTHENTICATED  # the whole header counts
    assert TokenAuth([]).decide(None, Scope.ADMIN) is Decision.ALLOWED  # no tokens: auth is off


def test_scoped_tokens_read_secrets_and_reject_bad_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_AUDIO_INGEST_TOKEN", "from-env")
    (tmp_path / "read").write_text("from-file\n")
    config = load_config(
        None,
        server__auth__tokens=[
            {"token": "env:OTEL_AUDIO_INGEST_TOKEN", "scope": "ingest"},
            {"token": f"file:{tmp_path / 'read'}", "scope": "read"},
            "plain",
        ],
    )
    got = [(t.token, t.scope) for t in config.server.auth.tokens]
    assert got == [("from-env", "ingest"), ("from-file", "read"), ("plain", "admin")]
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.scope: expected one of 'ingest', 'read', 'admin'"):
        load_config(None, server__auth__tokens=[{"token": "t", "scope": "write"}])
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.token: required") as caught:
        load_config(None, server__auth__tokens=[{"tokn": "hunter2"}])
    assert "hunter2" not in str(caught.value)


# -- where it listens ----------------------------------------------------------------------------


def _listening_addresses(port: int) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Local addresses with a socket listening on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, _remote, state = line.split()[1:4]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # the kernel prints each 32-bit word of the address in host (little-endian) order
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, len(address), 8))
                ip = ipaddress.ip_address(raw)
                found.add(getattr(ip, "ipv4_mapped", None) or ip)
    return found


def test_every_port_listens_on_loopback_by_default(start_receiver):
    assert load_config(None).server.host == "127.0.0.1"
    receiver = start_receiver()
    for port in (receiver.grpc_port, receiver.http_port, receiver.api_port):
        addresses = _listening_addresses(port)
        assert addresses and all(address.is_loopback for address in addresses), addresses


def test_binding_elsewhere_without_tokens_warns(start_receiver, caplog):
    with caplog.at_level(logging.WARNING, logger="otel_audio.receiver.service"):
        receiver = start_receiver(server__host="0.0.0.0")
    (warning,) = [r for r in caplog.records if "without authentication" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "0.0.0.0" in warning.getMessage() and "server.auth.tokens" in warning.getMessage()
    assert str(receiver.api_port) in warning.getMessage()


def test_binding_elsewhere_with_tokens_does_not_warn(start_receiver, caplog):
    with caplog.at_level(logging.WARNING, logger="otel_audio.receiver.service"):
        start_receiver(server__host="0.0.0.0", server__auth__tokens=_scoped_tokens())
    assert not [r for r in caplog.records if "without authentication" in r.getMessage()]
