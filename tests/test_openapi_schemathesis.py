"""The HTTP API checked against its own OpenAPI document with schemathesis.

A real receiver (alerting and SLO processors in its chain, some metrics and spans ingested)
serves ``/openapi.json``; schemathesis generates requests from it, valid and invalid, for every
GET operation and the one safe POST (``/api/v1/rules/test``, a dry run), and checks each answer:
never a 5xx, a status code and content type the document declares, a body that matches the
declared schema. ``/api/v1/stream`` is left out: it is server-sent events that never end.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.receiver_helpers import SECOND, gauge, grpc_export_metrics, metrics_request

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 20  # per operation and mode (valid, invalid): about 30 operations in under a minute


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    processors = [
        "selfmon",
        {"slo": {"defaults": False}},
        {"spanmetrics": {}},
        "store",
        {"alerting": {"channels": {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/never"}}}},
    ]
    receiver = Receiver(
        load_config(
            None,
            storage__data_dir=str(tmp_path_factory.mktemp("openapi") / "data"),
            server__grpc_port=0,
            server__http_port=0,
            server__api_port=0,
            tick_interval_s=0.5,
            processors=processors,
        )
    )
    receiver.start()
    now = time.time_ns()
    points = [(now - i * SECOND, float(i), {"audio.stage": "enhancement"}) for i in range(30)]
    request = metrics_request("enhancer", [gauge("audio.stage.duration", points)])
    grpc_export_metrics(receiver.grpc_port, request)
    _export_spans(receiver)
    try:
        yield receiver
    finally:
        receiver.stop(grace_s=1)


def _export_spans(receiver) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "enhancer"}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.grpc_port}", insecure=True)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("enhance", attributes={"audio.codec": "opus"}):
        with tracer.start_as_current_span("denoise"):
            pass
    provider.shutdown()


@pytest.fixture(scope="module")
def api_schema(receiver):
    """Every GET but the endless event stream, and the dry-run POST."""
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{receiver.api_port}/openapi.json")
    return schema.include(
        lambda ctx: (
            (ctx.operation.method.upper() == "GET" and ctx.operation.path != "/api/v1/stream")
            or (ctx.operation.method.upper() == "POST" and ctx.operation.path == "/api/v1/rules/test")
        )
    )


def _check_operation(operation, base_url: str) -> list[str]:
    """Run schemathesis' checks on generated requests to one operation; the failures found."""
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def run(case) -> None:
            response = case.call_and_validate(base_url=base_url, checks=CHECKS)
            if response.status_code >= 400:
                body = response.json()
                message = body["errors"][0]["msg"] if "errors" in body else body["error"]
                assert isinstance(message, str) and message.strip(), body

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.path  # no parameter that can be wrong
        except (Exception, BaseExceptionGroup) as exc:  # every operation's failures, not the first only
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    return failures


def test_api_answers_as_its_openapi_document_says(receiver, api_schema):
    base_url = f"http://127.0.0.1:{receiver.api_port}"
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 25, [op.path for op in operations]
    failures = [failure for op in operations for failure in _check_operation(op, base_url)]
    assert not failures, "\n\n".join(failures)
