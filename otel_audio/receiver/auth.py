"""Bearer-token authentication shared by the gRPC and HTTP ports.

Tokens are compared in constant time against every configured token (so the comparison does
not reveal which prefix matched), and the whole header is checked, scheme included. When no
token is configured, authentication is off and every request is allowed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

import grpc

_HEALTH_PREFIX = "/grpc.health.v1.Health/"


class TokenAuth:
    """Accepts ``Authorization: Bearer <token>`` for any configured token."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._expected = [f"Bearer {t}".encode() for t in tokens]

    @property
    def enabled(self) -> bool:
        return bool(self._expected)

    def allows(self, header: str | None) -> bool:
        """True when auth is off, or ``header`` is exactly ``Bearer <a configured token>``."""
        if not self._expected:
            return True
        given = (header or "").encode()
        ok = False
        for expected in self._expected:
            ok |= hmac.compare_digest(given, expected)
        return ok


class GrpcAuthInterceptor(grpc.ServerInterceptor):
    """Refuses RPCs without a valid token with UNAUTHENTICATED, before any decoding."""

    def __init__(self, auth: TokenAuth, public_health: bool) -> None:
        self._auth = auth
        self._public_health = public_health

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        if self._public_health and handler_call_details.method.startswith(_HEALTH_PREFIX):
            return continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        if self._auth.allows(metadata.get("authorization")):
            return continuation(handler_call_details)
        return self._deny
