"""OTLP/JSON under random and mutated documents: parsed and decoded, or OtlpJsonError saying why.

The JSON the receiver reads is not plain proto3 JSON (hex ids, decimal-string 64-bit integers):
the mutations aim at exactly those places (ids, times, values) with wrong types, huge numbers,
odd strings and deep nesting, on top of random JSON trees and random bytes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.decode import decode_logs, decode_metrics, decode_traces
from otel_audio.receiver.otlp_json import OtlpJsonError, parse_request, request_to_json
from tests.fuzz import budget, tried
from tests.fuzz.otlp_requests import logs_requests, metrics_requests, trace_requests

VALID = {"metrics": metrics_requests, "traces": trace_requests, "logs": logs_requests}
DECODE = {
    "metrics": lambda m: decode_metrics(m, CardinalityLimiter(1000)),
    "traces": decode_traces,
    "logs": decode_logs,
}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "Infinity", "ff" * 8, "ff" * 16, "zz", str(2**64)]),
)
json_trees = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_OTLP_KEYS = [
    "resourceMetrics", "resourceSpans", "resourceLogs", "scopeMetrics", "scopeSpans", "scopeLogs",
    "metrics", "spans", "logRecords", "dataPoints", "traceId", "spanId", "parentSpanId", "timeUnixNano",
    "startTimeUnixNano", "asInt", "asDouble", "attributes", "value", "stringValue", "intValue",
    "arrayValue", "kvlistValue", "bytesValue", "gauge", "sum", "histogram", "bucketCounts", "kind",
    "severityNumber", "body", "name", "events", "links", "status", "code",
]  # fmt: skip
weird = st.one_of(
    json_trees,
    st.sampled_from([10**400, -(10**30), 2**64, 1e308, "9" * 400, [[[[[]]]]], {"": {}}]),
    st.integers(1, 200).map(lambda depth: json.loads("[" * depth + "]" * depth)),
)


def _nodes(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON tree (dict keys and list indexes)."""
    out = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _nodes(child, (*path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _nodes(child, (*path, i))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn, signal: str) -> bytes:
    """A valid OTLP/JSON request of ``signal`` with a few nodes replaced, dropped or renamed."""
    document = json.loads(request_to_json(draw(VALID[signal])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_nodes(document)))
        if not path:
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        leaf = path[-1]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":  # copies: a sampled constant mutated in place would change later draws
            parent[leaf] = copy.deepcopy(draw(weird))
        elif action == "drop":
            del parent[leaf]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(_OTLP_KEYS))] = copy.deepcopy(draw(weird))
    return json.dumps(document).encode()


def assert_parsed_or_refused(body: bytes, signal: str) -> None:
    try:
        message = parse_request(body, signal)
    except OtlpJsonError as exc:
        assert str(exc).strip(), "a refusal says why"
        return
    decoded = DECODE[signal](message)
    assert decoded.rejected >= 0 and all(decoded.errors)


signals = st.sampled_from(sorted(VALID))


@budget(200)
@given(signals, st.binary(max_size=256))
def test_random_bytes(signal: str, body: bytes) -> None:
    tried["json.random_bytes"] += 1
    assert_parsed_or_refused(body, signal)


@budget(200)
@given(signals, json_trees)
def test_random_json_trees(signal: str, tree: Any) -> None:
    tried["json.random_trees"] += 1
    assert_parsed_or_refused(json.dumps(tree).encode(), signal)


@budget(300)
@given(st.data())
def test_mutated_valid_documents(data: st.DataObject) -> None:
    tried["json.mutated"] += 1
    signal = data.draw(signals)
    assert_parsed_or_refused(data.draw(mutated_documents(signal)), signal)


def test_deep_nesting_is_refused_with_a_message() -> None:
    tried["json.deep"] += 1
    body = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for signal in VALID:
        try:
            parse_request(body, signal)
        except OtlpJsonError as exc:
            assert "nested" in str(exc) or "resourceSpans" in str(exc)


def test_a_number_too_large_for_a_double_is_refused_with_a_message() -> None:
    # Found by the fuzz profile: json_format's OverflowError escaped parse_request.
    point = {"timeUnixNano": "1", "asDouble": 10**400}
    document = {
        "resourceMetrics": [
            {"scopeMetrics": [{"metrics": [{"name": "m", "gauge": {"dataPoints": [point]}}]}]}
        ]
    }
    try:
        parse_request(json.dumps(document).encode(), "metrics")
    except OtlpJsonError as exc:
        assert "too large" in str(exc)
    else:
        raise AssertionError("a double beyond float range was read")
