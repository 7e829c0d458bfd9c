"""Bearer-token authentication with scopes, shared by the gRPC, OTLP/HTTP and API ports.

A token carries one scope (:class:`Scope`), and every request needs one (decided by the port
and, on the API, by method and route):

- ``ingest``: OTLP export only (gRPC ``Export`` and ``POST /v1/*``), what SDKs and Collectors hold;
- ``read``: API reads, the dashboard's data calls, the Jaeger API, the live stream, ``/metrics``;
- ``admin``: everything, including the API's mutating calls (rules, silences, SLOs, acks, views,
  channel tests). A plain token in the config is an admin token.

:meth:`TokenAuth.decide` answers ALLOWED, UNAUTHENTICATED (no or unknown token: HTTP 401 with
``WWW-Authenticate: Bearer``, gRPC UNAUTHENTICATED) or FORBIDDEN (a valid token without the
scope: HTTP 403, gRPC PERMISSION_DENIED). The presented header is compared with *every*
configured token, each through ``hmac.compare_digest`` on SHA-256 digests, so neither the
position of the matching token nor the length of a guess changes the work done. When no token is
configured, authentication is off and every request is allowed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

_HEALTH_PREFIX = "/grpc.health.v1.Health/"
_OTLP_EXPORT = frozenset(
    f"/opentelemetry.proto.collector.{signal}.v1.{service}/Export"
    for signal, service in (("trace", "TraceService"), ("metrics", "MetricsService"), ("logs", "LogsService"))
)


class Scope(enum.Enum):
    """What a token may do (and what a request needs)."""

    INGEST = "ingest"  # send telemetry over OTLP, nothing else
    READ = "read"  # read through the API, the dashboard, /metrics and the Jaeger API
    ADMIN = "admin"  # everything, including changes through the API


# What each token scope grants: ingest and read are disjoint, admin holds both and more.
GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.INGEST: frozenset({Scope.INGEST}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.ADMIN: frozenset(Scope),
}


class Decision(enum.Enum):
    """The outcome of checking one request."""

    ALLOWED = "allowed"
    UNAUTHENTICATED = "unauthenticated"  # no token, or not a configured one
    FORBIDDEN = "forbidden"  # a configured token whose scope does not cover the request


@dataclass(frozen=True)
class Token:
    """One accepted token and its scope (``server.auth.tokens`` entries)."""

    token: str
    scope: Scope = Scope.ADMIN


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` against the configured tokens.

    Args:
        tokens: the accepted tokens; a plain string is an admin token.
    """

    def __init__(self, tokens: Iterable[Token | str]) -> None:
        entries = [t if isinstance(t, Token) else Token(t) for t in tokens]
        self._expected = [(_digest(f"Bearer {t.token}".encode()), t.scope) for t in entries]

    @property
    def enabled(self) -> bool:
        return bool(self._expected)

    def scope_of(self, header: str | None) -> Scope | None:
        """The scope of the token in ``header``, or None when it is missing or unknown.

        Every configured token is compared, whatever matched before, so the time taken says
        nothing about which token (or how much of one) was right.
        """
        given = _digest((header or "").encode())
        found: Scope | None = None
        for expected, scope in self._expected:
            match = hmac.compare_digest(given, expected)
            found = scope if match else found
        return found

    def decide(self, header: str | None, need: Scope | None) -> Decision:
        """Whether a request with ``header`` may do what needs ``need`` (None: any valid token)."""
        if not self._expected:
            return Decision.ALLOWED
        scope = self.scope_of(header)
        if scope is None:
            return Decision.UNAUTHENTICATED
        if need is not None and need not in GRANTS[scope]:
            return Decision.FORBIDDEN
        return Decision.ALLOWED

    def allows(self, header: str | None, need: Scope | None = None) -> bool:
        """True when auth is off, or ``header`` holds a configured token covering ``need``."""
        return self.decide(header, need) is Decision.ALLOWED


def grpc_method_scope(method: str) -> Scope | None:
    """The scope a gRPC method needs: OTLP export is ingest, health any valid token, else admin."""
    if method in _OTLP_EXPORT:
        return Scope.INGEST
    if method.startswith(_HEALTH_PREFIX):
        return None
    return Scope.ADMIN  # a service added later is closed until someone decides otherwise


class GrpcAuthInterceptor(grpc.ServerInterceptor):
    """Refuses RPCs before any decoding: UNAUTHENTICATED without a valid token, PERMISSION_DENIED
    for a token whose scope does not cover the method."""

    def __init__(self, auth: TokenAuth, public_health: bool) -> None:
        self._auth = auth
        self._public_health = public_health

        def refuse(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
            def handler(request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(handler)

        self._refusals = {
            Decision.UNAUTHENTICATED: refuse(
                grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token"
            ),
            Decision.FORBIDDEN: refuse(
                grpc.StatusCode.PERMISSION_DENIED, "this token's scope does not allow this call"
            ),
        }

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        method = handler_call_details.method
        if self._public_health and method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        decision = self._auth.decide(metadata.get("authorization"), grpc_method_scope(method))
        if decision is Decision.ALLOWED:
            return continuation(handler_call_details)
        return self._refusals[decision]
