"""The query API's parameters under random values, through a real receiver's HTTP API.

Every answer is 200, or a 4xx with a JSON message (``{"error": ...}``, or Jaeger's
``{"errors": [{"msg": ...}]}`` on the Jaeger routes); never a 5xx, never a hang (each request
has a timeout). Values mix random text, numbers, and near-misses of the accepted forms (times,
durations, matchers, regexes, ids), so that both the parsers and the store's limits are reached.
"""

from __future__ import annotations

import time

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import budget, tried
from tests.receiver_helpers import SECOND, gauge, grpc_export_metrics, metrics_request

ENDPOINTS = {
    "/api/v1/query_range": ["metric", "start", "end", "step", "agg", "group_by", "match"],
    "/api/v1/series": ["metric", "match"],
    "/api/v1/spans": ["service", "operation", "start", "end", "min_duration", "max_duration", "status",
                      "attr", "limit"],
    "/api/v1/traces": ["service", "start", "end", "min_duration", "status", "attr", "limit"],
    "/api/v1/logs": ["start", "end", "severity", "service", "q", "trace_id", "attr", "limit"],
    "/api/traces": ["service", "operation", "tags", "start", "end", "minDuration", "maxDuration", "limit",
                    "lookback", "traceID"],
    "/api/dependencies": ["endTs", "lookback"],
    "/api/operations": ["service", "spanKind"],
}  # fmt: skip
PATHS = ["/api/v1/traces/{}", "/api/traces/{}", "/api/v1/views/{}", "/api/services/{}/operations"]

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
values = st.one_of(
    _text,
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(str),
    st.sampled_from(
        [
            "audio.stage.duration", "enhancer", "now", "now-1h", "now+5m", "now-", "now-99999999999d",
            "2026-11-27T10:00:00Z", "2026-11-27T10:00:00", "9999-12-31T23:59:59Z", "1e308", "-1e308", "nan",
            "inf", "0", "-1", "15s", "0s", "1ms", "1ns", "99999999999999999999h", "p95", "p101", "p-1",
            "rate", "increase", 'stage="a"', 'stage=~"(a+)+$"', 'stage=~"(?=x)"', 'a=~"' + "x" * 2000 + '"',
            "stage!~", "=", "k=v", '{"a": "b"}', "{", "error", "ok", "ff" * 16, "zz" * 16, "ff" * 8,
            "10001", "1000000000", "avg", "", " ", "\x00", "%", "'", "\\",
        ]
    ),
)  # fmt: skip


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    receiver = Receiver(
        load_config(
            None,
            storage__data_dir=str(tmp_path_factory.mktemp("query-fuzz") / "data"),
            server__grpc_port=0,
            server__http_port=0,
            server__api_port=0,
            tick_interval_s=0.5,
            processors=["selfmon", "spanmetrics", "store"],
        )
    )
    receiver.start()
    now = time.time_ns()
    points = [(now - i * SECOND, float(i), {"stage": "a" if i % 2 else "b"}) for i in range(60)]
    request = metrics_request("enhancer", [gauge("audio.stage.duration", points)])
    grpc_export_metrics(receiver.grpc_port, request)
    try:
        yield receiver
    finally:
        receiver.stop(grace_s=1)


def assert_answered(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        message = body["errors"][0]["msg"] if "errors" in body else body["error"]
        assert isinstance(message, str) and message.strip(), body


@budget(80)
@given(st.data())
def test_random_query_parameters(receiver, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(ENDPOINTS)))
    names = data.draw(st.lists(st.sampled_from(ENDPOINTS[path]), max_size=6))
    query = [(name, data.draw(values)) for name in names]
    tried["query_api.parameters"] += 1
    url = f"http://127.0.0.1:{receiver.api_port}{path}"
    assert_answered(requests.get(url, params=query, timeout=30))


@budget(40)
@given(st.sampled_from(PATHS), values)
def test_random_path_parameters(receiver, template: str, value: str) -> None:
    tried["query_api.path"] += 1
    quoted = requests.utils.quote(value, safe="")
    if not quoted or quoted in (".", ".."):
        quoted = "x"
    url = f"http://127.0.0.1:{receiver.api_port}{template.format(quoted)}"
    assert_answered(requests.get(url, timeout=30))


def test_times_beyond_int64_nanoseconds_are_a_400_naming_the_parameter(receiver) -> None:
    # Found by this module's fuzz profile: start=1E30 overflowed int64 in the store (a 500).
    for path in ("/api/v1/logs", "/api/v1/spans", "/api/v1/query_range"):
        for value in ("1E30", "9999-12-31T23:59:59Z", "now-99999999999999999999h"):
            query = {"start": value, "metric": "audio.stage.duration"}
            response = requests.get(f"http://127.0.0.1:{receiver.api_port}{path}", params=query, timeout=30)
            assert response.status_code == 400, (path, value, response.text)
            assert response.json()["error"].startswith("start: "), response.text
