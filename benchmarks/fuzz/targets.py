"""The fuzz targets: one function per reader of untrusted input, taking the raw bytes.

Each target accepts what is valid and refuses the rest with its reader's own error and a message;
anything else it raises (a disagreement between the native and the reference decoder, another
exception type, a refusal without a message) is a finding. The atheris harnesses next to this
file (``otlp_scan.py``, ``otlp_json.py``, ``rules.py``, ``config.py``) run one target each under
libFuzzer; ``benchmarks/fuzz_all.py`` runs them all, with :data:`SEEDS` as starting corpus.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import seeds as valid
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_audio.processors.alerting.grammar import parse
from otel_audio.processors.alerting.lexer import RuleSyntaxError
from otel_audio.receiver import fastscan
from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.config import ConfigError, load_config
from otel_audio.receiver.decode import decode_logs, decode_metrics, decode_traces
from otel_audio.receiver.decode_fast import decode_metrics_bytes
from otel_audio.receiver.decode_spans_fast import decode_traces_bytes
from otel_audio.receiver.otlp_json import OtlpJsonError, parse_request, request_to_json

REFERENCE_CONFIG = Path(__file__).resolve().parents[2] / "collector-config" / "otel-audio.yaml"


def same_table(a, b) -> bool:
    """Arrow tables equal, NaNs included (``Table.equals`` counts NaN as unequal to itself)."""
    return a.equals(b) or (a.schema == b.schema and repr(a.to_pylist()) == repr(b.to_pylist()))


def _outcome(decode, data: bytes):
    try:
        return decode(data)
    except DecodeError:
        return None


def otlp_scan(data: bytes) -> None:
    """The C scan of metrics and traces, and the fast decoders agreeing with protobuf + reference."""
    for scan in (fastscan.scan_numbers, fastscan.scan_spans):
        try:
            scan(data)
        except ValueError:
            pass
    expected = _outcome(
        lambda b: decode_metrics(ExportMetricsServiceRequest.FromString(b), CardinalityLimiter(1000)), data
    )
    got = _outcome(lambda b: decode_metrics_bytes(b, CardinalityLimiter(1000)), data)
    if (expected is None) != (got is None):
        raise AssertionError(f"metrics: protobuf {'refuses' if expected is None else 'reads'}, the scan not")
    if got is not None and not (
        same_table(got.batch.points, expected.batch.points) and got.rejected == expected.rejected
    ):
        raise AssertionError("metrics: the fast decoder's points or refusals differ from the reference's")
    expected = _outcome(lambda b: decode_traces(ExportTraceServiceRequest.FromString(b)), data)
    got = _outcome(decode_traces_bytes, data)
    if (expected is None) != (got is None):
        raise AssertionError(f"traces: protobuf {'refuses' if expected is None else 'reads'}, the scan not")
    if got is not None and not (
        same_table(got.batch.spans, expected.batch.spans)
        and (got.rejected, got.errors) == (expected.rejected, expected.errors)
    ):
        raise AssertionError("traces: the fast decoder's spans or refusals differ from the reference's")


_DECODE_JSON = {
    "metrics": lambda m: decode_metrics(m, CardinalityLimiter(1000)),
    "traces": decode_traces,
    "logs": decode_logs,
}


def otlp_json(data: bytes) -> None:
    """One body as an OTLP/JSON request of each signal: parsed and decoded, or OtlpJsonError."""
    for signal, decode in _DECODE_JSON.items():
        try:
            message = parse_request(data, signal)
        except OtlpJsonError as exc:
            if not str(exc).strip():
                raise AssertionError("an OTLP/JSON refusal without a message") from None
            continue
        decode(message)


def rules(data: bytes) -> None:
    """Condition text: a Condition that prints back to itself, or RuleSyntaxError with a place."""
    text = data.decode("utf-8", "replace")
    try:
        condition = parse(text)
    except RuleSyntaxError as exc:
        if exc.line < 1 or exc.column < 1 or not exc.reason.strip():
            raise AssertionError(f"a rule refusal without a place or a reason: {exc}") from None
        return
    if parse(str(condition)) != condition:
        raise AssertionError(f"{text!r} prints as {str(condition)!r}, which means something else")


_CONFIG_DIR = Path(
    tempfile.mkdtemp(prefix="otel-audio-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
)


def config(data: bytes) -> None:
    """A YAML file for ``otel-audio serve --config``: loads, or ConfigError naming the key or file."""
    path = _CONFIG_DIR / "config.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        where, sep, why = str(exc).partition(": ")
        if not (where and sep and why.strip()):
            raise AssertionError(f"a config refusal that names no key: {exc}") from None


TARGETS = {"otlp_scan": otlp_scan, "otlp_json": otlp_json, "rules": rules, "config": config}


def seeds(target: str) -> list[bytes]:
    """The starting corpus of a target: valid inputs of its format."""
    if target == "otlp_scan":
        return [request.SerializeToString() for request in valid.requests()]
    if target == "otlp_json":
        return [request_to_json(request) for request in valid.requests()]
    if target == "rules":
        return [text.encode() for text in valid.RULES]
    return [REFERENCE_CONFIG.read_bytes(), b"limits: {max_request_bytes: 2048}\n", b"processors: [store]\n"]
