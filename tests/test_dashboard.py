"""The dashboard (``otel_audio/dashboard``): its APIs (custom views, the live stream) and the page itself,
driven in Debian's real headless Chromium by Playwright against a real receiver with data.

Screenshots land in ``tests/artifacts/`` (gitignored); the measured ingest-to-screen latency is
recorded there too (``dashboard_latency.json``), not asserted against a threshold.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_audio.dashboard.hub import Subscription
from tests.external import require_external
from tests.receiver_helpers import api, gauge, grpc_export_metrics, metrics_request

ARTIFACTS = Path(__file__).parent / "artifacts"
RTF = "audio.derived.realtime_factor"
QUALITY = "audio.derived.quality_index"
CALLS = "traces.span.metrics.calls"
DURATION = "traces.span.metrics.duration"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ANALYTICS = ["selfmon", {"spanmetrics": {"flush_interval_s": 0.2, "dimensions": ["model"]}}, "store"]
VIEW = {
    "title": "Enhancer latency",
    "range": "6h",
    "panels": [
        {
            "title": "p95 by span",
            "chart": "line",
            "query": {"metric": "traces.span.metrics.duration", "agg": "p95", "group_by": ["span.name"]},
        }
    ],
}


def base(receiver) -> str:
    return f"http://127.0.0.1:{receiver.api_port}"


def send_gauge(receiver, service: str, metric: str, value: float) -> None:
    point = [(time.time_ns(), value, {"aggregation.window": "1m"})]
    grpc_export_metrics(receiver.grpc_port, metrics_request(service, [gauge(metric, point)]))


def seed(receiver) -> str:
    """Spans (with attributes, events, an error) and a log of one trace, from the real SDK, plus
    audio gauges for two services; returns the slow trace's id once span metrics are stored."""
    endpoint = f"http://127.0.0.1:{receiver.grpc_port}"
    resource = Resource.create({"service.name": "enhancer"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
    )
    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True))
    )
    logger = logging.getLogger("test-dashboard")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=log_provider)
    logger.addHandler(handler)
    tracer = tracer_provider.get_tracer("dashboard-test")
    now = time.time_ns()
    slow = ""
    for i in range(4):
        start = now - (10 - i) * 10**9
        took = 400 if i == 3 else 100
        with tracer.start_as_current_span("enhance", kind=SpanKind.SERVER, start_time=start,
                                          end_on_exit=False) as root:  # fmt: skip
            with tracer.start_as_current_span(
                "denoise",
                start_time=start + 10**6,
                attributes={"audio.stage": "denoise", "model": f"v{i % 2}"},
                end_on_exit=False,
            ) as child:
                child.add_event("model loaded", {"model.bytes": 1024}, timestamp=start + 2 * 10**6)
                if i == 3:
                    logger.warning("denoise slow for file-3")
                    child.set_status(Status(StatusCode.ERROR, "clipping"))
                    slow = format(child.get_span_context().trace_id, "032x")
                child.end(end_time=start + took * 10**6)
            root.end(end_time=start + (took + 5) * 10**6)
    logger.removeHandler(handler)
    log_provider.shutdown()
    tracer_provider.shutdown()
    send_gauge(receiver, "enhancer", RTF, 0.25)
    send_gauge(receiver, "enhancer", QUALITY, 3.9)
    send_gauge(receiver, "separator", RTF, 0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # span metrics are emitted on the receiver's next flush
        got = api(receiver, "/api/v1/series", metric="traces.span.metrics.calls").json()
        if len(got.get("series", [])) == 4:  # enhance; denoise v0, v1, v1 with an error
            return slow
        time.sleep(0.1)
    raise AssertionError("span metrics did not reach the store")


# -- APIs ------------------------------------------------------------------------------------------


def test_a_view_is_validated_saved_listed_replaced_and_deleted(start_receiver):
    receiver = start_receiver()
    url = f"{base(receiver)}/api/v1/views/enhancer"
    created = requests.put(url, json=VIEW, timeout=10)
    assert created.status_code == 201 and created.json()["id"] == "enhancer"
    assert requests.get(url, timeout=10).json()["panels"][0]["query"]["agg"] == "p95"
    replaced = requests.put(url, json={**VIEW, "title": "Renamed"}, timeout=10)
    assert replaced.status_code == 200
    assert [v["title"] for v in api(receiver, "/api/v1/views").json()["views"]] == ["Renamed"]
    stored = receiver.data_dir / "dashboard" / "views" / "enhancer.json"
    assert json.loads(stored.read_text())["title"] == "Renamed"
    assert requests.delete(url, timeout=10).status_code == 204
    assert requests.get(url, timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"panels": []}, "view.title"),
        (
            {"title": "x", "panels": [{"title": "p", "chart": "pie", "query": {"metric": "m"}}]},
            "panels[0].chart",
        ),
        ({"title": "x", "panels": [{"title": "p", "query": {"metric": "m", "agg": "median"}}]}, "query.agg"),
        (
            {"title": "x", "panels": [{"title": "p", "query": {"metric": "m", "match": ["a~b"]}}]},
            "query: match",
        ),
        ({"title": "x", "panels": [], "colour": "red"}, "view.colour: unknown field"),
    ],
)
def test_an_invalid_view_is_refused_with_the_field_named(start_receiver, body, message):
    receiver = start_receiver()
    response = requests.put(f"{base(receiver)}/api/v1/views/bad", json=body, timeout=10)
    assert response.status_code == 400 and message in response.json()["error"]
    assert requests.put(f"{base(receiver)}/api/v1/views/..x", json=VIEW, timeout=10).status_code == 400


def test_the_stream_pushes_new_points_of_the_chosen_metrics_only(start_receiver):
    receiver = start_receiver()
    frames: list[dict] = []
    connected = threading.Event()

    def read() -> None:
        with requests.get(
            f"{base(receiver)}/api/v1/stream", params={"metrics": RTF}, stream=True, timeout=10
        ) as r:
            for line in r.iter_lines():
                connected.set()
                if line.startswith(b"data:") and b'"points"' in line:
                    frames.append(json.loads(line[5:]))
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert connected.wait(10)
    send_gauge(receiver, "enhancer", QUALITY, 3.0)  # not subscribed
    send_gauge(receiver, "enhancer", RTF, 0.3)
    reader.join(10)
    (frame,) = frames
    assert [(p["metric"], p["service"], p["value"]) for p in frame["points"]] == [(RTF, "enhancer", 0.3)]


def test_an_open_stream_does_not_hold_up_a_stopping_receiver(start_receiver):
    receiver = start_receiver()
    with requests.get(f"{base(receiver)}/api/v1/stream", stream=True, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines) == b"retry: 1000"
        receiver.stop(grace_s=1)
        assert not any(server.thread.is_alive() for server in receiver._servers)
        assert b"event: hello" in list(lines)  # ... and then the stream ended


def test_a_client_that_does_not_keep_up_is_dropped_not_buffered():
    sub = Subscription(max_pending=2)
    updates = [{"series": str(i), "metric": "m", "service": "s", "value": i} for i in range(3)]
    sub.offer(updates[:2], {})
    assert not sub.dropped
    sub.offer(updates, {})
    assert sub.dropped


def test_updates_of_one_series_are_coalesced_to_its_newest_value():
    sub = Subscription()
    for value in (1.0, 2.0, 3.0):
        sub.offer([{"series": "1", "metric": "m", "service": "s", "value": value}], {})
    assert [p["value"] for p in sub.take()["points"]] == [3.0]


def test_the_page_loads_without_a_token_and_its_data_needs_one(start_receiver):
    receiver = start_receiver(server__auth__tokens=["s3cret"])
    page = requests.get(f"{base(receiver)}/", timeout=10)
    assert page.status_code == 200 and "otel-audio" in page.text
    assert requests.get(f"{base(receiver)}/dashboard/vendor/plotly.min.js", timeout=10).status_code == 200
    assert requests.get(f"{base(receiver)}/api/v1/stream", timeout=10).status_code == 401
    assert api(receiver, "/api/v1/views").status_code == 401
    assert api(receiver, "/api/v1/views", token="s3cret").status_code == 200


# -- the page in Chromium ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator:
    chromium = require_external("chromium", "apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def open_page(page, receiver, hash_: str = "#/") -> None:
    page.goto(f"{base(receiver)}/dashboard/{hash_}")
    page.wait_for_selector("body[data-state=ready]")


def cell(page, key: str, service: str):
    return page.locator(f'#services td[data-key="{key}"][data-service="{service}"]')


def test_the_overview_shows_the_numbers_the_api_gives(start_receiver, page):
    receiver = start_receiver(processors=ANALYTICS)
    seed(receiver)
    open_page(page, receiver)
    shot(page, "overview")
    table = page.locator("#services")
    window = {k: table.get_attribute(f"data-{k}") for k in ("start", "end", "step")}
    window["step"] += "s"
    checks = [("rtf", RTF, "last", "enhancer"), ("rtf", RTF, "last", "separator"),
              ("quality", QUALITY, "last", "enhancer"), ("p95", DURATION, "p95", "enhancer"),
              ("p50", DURATION, "p50", "enhancer"), ("rate", CALLS, "rate", "enhancer")]  # fmt: skip
    for key, metric, agg, service in checks:
        answer = api(
            receiver, "/api/v1/query_range", metric=metric, agg=agg, match=f'service="{service}"', **window
        )
        newest = answer.json()["series"][0]["points"][-1][1]
        assert float(cell(page, key, service).get_attribute("data-value")) == pytest.approx(newest), key
    assert cell(page, "quality", "separator").inner_text() == "no data"
    assert page.locator('#services tr[data-service="enhancer"] td').nth(1).inner_text() in ("ok", "warn")


def test_a_value_on_screen_changes_within_a_second_of_ingest(start_receiver, page):
    receiver = start_receiver()
    send_gauge(receiver, "enhancer", RTF, 0.25)
    open_page(page, receiver)
    page.wait_for_selector("#live.on")
    target = cell(page, "rtf", "enhancer")
    assert target.inner_text() == "0.25"
    latencies = []
    for value in (0.5, 0.75, 1.5):
        before_ms = page.evaluate("Date.now()")
        send_gauge(receiver, "enhancer", RTF, value)
        shown = "document.querySelector('#services td[data-key=rtf][data-service=enhancer]').dataset.value"
        page.wait_for_function(f"{shown} == '{value}'", timeout=5000)
        latencies.append(float(target.get_attribute("data-updated-ms")) - before_ms)
    shot(page, "overview-live")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard_latency.json").write_text(json.dumps({"ingest_to_screen_ms": latencies}))
    print(f"ingest -> on screen (ms): {latencies}")
    assert target.inner_text() == "1.5"


def test_drill_down_from_a_service_reaches_a_span_waterfall_and_the_trace_logs(start_receiver, page):
    receiver = start_receiver(processors=ANALYTICS)
    slow = seed(receiver)
    open_page(page, receiver)
    page.click('#services a[href="#/service/enhancer"]')
    page.wait_for_selector('#stages tr[data-stage="denoise"]')
    page.click('#stages a:text-is("denoise")')
    page.wait_for_selector("#split")
    page.select_option("#split", "model")
    page.wait_for_selector('#split-table td:text-is("model=v1")')
    shot(page, "stage-split")
    page.click(f'a.trace-link[href="#/trace/{slow}"]')
    page.wait_for_selector("#waterfall .span-row")
    assert page.locator("#waterfall .span-row").count() == 2
    page.locator('#waterfall .span-row:has-text("denoise")').click()
    assert '"model": "v1"' in page.inner_text(".span-attributes")
    assert "model loaded" in page.inner_text(".span-events")
    assert "denoise slow for file-3" in page.inner_text("#logs")
    shot(page, "trace")
    with page.expect_download() as info:  # fetched with the token (when there is one), saved as a file
        page.click("#jaeger-download")
    assert info.value.suggested_filename == f"trace-{slow}.json"
    saved = json.loads(Path(info.value.path()).read_text())
    assert [t["traceID"] for t in saved["data"]] == [slow]


def test_a_custom_view_is_saved_reloaded_and_still_there(start_receiver, page):
    receiver = start_receiver(processors=ANALYTICS)
    seed(receiver)
    open_page(page, receiver, "#/views")
    page.fill("#new-title", "Latency board")
    page.click("#create")
    page.wait_for_selector("#panel-form")
    page.fill("#p-title", "p95 by span")
    page.fill("#p-metric", "traces.span.metrics.duration")
    page.fill("#p-agg", "p95")
    page.fill("#p-group", "span.name")
    page.click("#add-panel")
    page.wait_for_selector('[data-panel="0"] .js-plotly-plot')
    page.goto(f"{base(receiver)}/dashboard/?view=latency-board")  # the shared link, in a fresh load
    page.reload()
    page.wait_for_selector('[data-panel="0"] .js-plotly-plot')
    assert page.inner_text("#view-title") == "Latency board"
    assert "p95 by span" in page.inner_text("#panels")
    assert api(receiver, "/api/v1/views/latency-board").json()["panels"][0]["query"]["group_by"] == [
        "span.name"
    ]
    shot(page, "view")


def _alerting_chain() -> list:
    rule = {"name": "SlowRTF", "condition": f"avg({RTF}, 1m) > 1", "severity": "critical"}
    route = {"receiver": "default", "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"}
    return ["selfmon", {"alerting": {"route": route, "rules": [rule]}}, "store"]


def test_the_alerts_page_acknowledges_an_incident_and_silences_an_alert(start_receiver, page):
    receiver = start_receiver(processors=_alerting_chain())
    send_gauge(receiver, "enhancer", RTF, 2.0)
    deadline = time.monotonic() + 10
    while not api(receiver, "/api/v1/incidents").json()["incidents"] and time.monotonic() < deadline:
        time.sleep(0.1)
    (incident,) = api(receiver, "/api/v1/incidents").json()["incidents"]
    open_page(page, receiver, "#/alerts")
    assert "SlowRTF" in page.inner_text("#alerts")
    page.click(f'tr[data-incident="{incident["id"]}"] button.ack')
    page.wait_for_selector(f'tr[data-incident="{incident["id"]}"] td.status:has-text("by dashboard")')
    assert api(receiver, f"/api/v1/incidents/{incident['id']}").json()["acknowledged_by"] == "dashboard"
    page.click('tr[data-alert="SlowRTF"] button.silence')
    page.wait_for_selector('#silences td:has-text("alertname")')
    shot(page, "alerts")
    (silence,) = api(receiver, "/api/v1/silences").json()["silences"]
    assert 'alertname="SlowRTF"' in silence["matchers"] and silence["createdBy"] == "dashboard"


def test_with_auth_on_the_page_asks_for_the_token_once_and_then_shows_data(start_receiver, page):
    receiver = start_receiver(server__auth__tokens=["s3cret"])
    grpc_export_metrics(
        receiver.grpc_port,
        metrics_request("enhancer", [gauge(RTF, [(time.time_ns(), 0.25, {})])]),
        token="s3cret",
    )
    page.goto(f"{base(receiver)}/dashboard/")
    page.wait_for_selector("#login[open]")
    page.fill("#token", "s3cret")
    page.click("#login button")
    page.wait_for_selector("body[data-state=ready]")
    assert cell(page, "rtf", "enhancer").inner_text() == "0.25"
    page.wait_for_selector("#live.on")  # the stream sends the token too
    page.reload()  # kept for the tab: no second prompt
    page.wait_for_selector("body[data-state=ready]")
    assert not page.locator("#login[open]").count()


def test_the_range_picker_and_a_drag_zoom_set_the_window_the_page_queries(start_receiver, page):
    receiver = start_receiver(processors=ANALYTICS)
    seed(receiver)
    open_page(page, receiver)
    page.select_option("#range", "24h")
    page.wait_for_function("document.querySelector('#services').dataset.step === '900'")
    page.select_option("#range", "90d")
    page.wait_for_function("document.querySelector('#services').dataset.step === '86400'")
    page.select_option("#range", "1h")
    page.wait_for_function("document.querySelector('#services').dataset.step === '30'")
    end = float(page.get_attribute("#services", "data-end"))
    zoom_to = [(end - 600) * 1000, (end - 300) * 1000]  # what plotly reports after a drag
    drag = "([a, b]) => Plotly.relayout('c-rate', {'xaxis.range[0]': a, 'xaxis.range[1]': b})"
    page.evaluate(drag, zoom_to)
    page.wait_for_function("document.querySelector('#services').dataset.step === '15'")
    assert float(page.get_attribute("#services", "data-start")) == pytest.approx(end - 600, abs=1)
    assert page.input_value("#range") == "custom"


def test_a_view_exported_to_a_file_comes_back_by_import(start_receiver, page, tmp_path):
    receiver = start_receiver()
    requests.put(f"{base(receiver)}/api/v1/views/enhancer", json=VIEW, timeout=10)
    open_page(page, receiver, "#/views/enhancer")
    with page.expect_download() as download:
        page.click("#export")
    exported = tmp_path / "enhancer.json"
    download.value.save_as(exported)
    assert (
        json.loads(exported.read_text())["panels"]
        == requests.get(f"{base(receiver)}/api/v1/views/enhancer", timeout=10).json()["panels"]
    )
    requests.delete(f"{base(receiver)}/api/v1/views/enhancer", timeout=10)
    open_page(page, receiver, "#/views")
    assert "no saved views" in page.inner_text("#views")
    page.set_input_files("#import", str(exported))
    page.wait_for_selector('#view-title:text-is("Enhancer latency")')
    assert api(receiver, "/api/v1/views/enhancer").json()["title"] == "Enhancer latency"


def test_the_slo_page_lists_every_slo_the_api_has(start_receiver, page):
    receiver = start_receiver(processors=["selfmon", {"slo": {"defaults": True}}, "store"])
    names = [s["name"] for s in api(receiver, "/api/v1/slos").json()["slos"]]
    open_page(page, receiver, "#/slos")
    shot(page, "slos")
    assert names and [page.get_attribute(f'#slos tr[data-slo="{n}"]', "data-slo") for n in names] == names
    assert page.locator("#burn").count() == 1


def test_the_dashboard_benchmark_prints_one_json_line_of_latencies():
    """Tiny settings: the shape of the output, never a speed."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dashboard.py"
    tiny = [
        "--probes",
        "3",
        "--warmup",
        "1",
        "--interval",
        "0.01",
        "--hours",
        "1",
        "--filler",
        "2",
        "--repeats",
        "2",
    ]
    done = subprocess.run(
        [sys.executable, str(script), *tiny], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    keys = ("push_p50_ms", "push_p99_ms", "page_load_p95_ms", "query_p95_ms")
    assert all(result[k] > 0 for k in keys), result
    assert (result["probes"], result["metrics"], result["store"]) == (3, 2 + 6 + 2, "blocks")


def test_a_service_without_span_metrics_shows_no_data_not_an_error(start_receiver, page):
    receiver = start_receiver()  # no spanmetrics processor: its metrics do not exist at all
    send_gauge(receiver, "separator", RTF, 0.5)
    open_page(page, receiver)
    assert cell(page, "p95", "separator").inner_text() == "no data"
    page.click('#services a[href="#/service/separator"]')
    page.wait_for_selector("#stages")
    page.wait_for_selector("body[data-state=ready]")
    assert "no span metrics" in page.inner_text("#stages")
    assert "no traces" in page.inner_text("#slow")
