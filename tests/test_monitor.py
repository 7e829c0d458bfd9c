"""ProductionMonitor: the seed's example usage as written, embedded and remote, against real channels.

Slack and PagerDuty post to a RecordingServer, email goes to a real (aiosmtpd) SMTP server; their
settings come from the environment variables the docs name (``docs/production-monitor.md``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from otel_audio.monitor import ProductionMonitor
from otel_audio.monitor_backend import ChannelConfigError, MonitorError
from tests.external import MailInbox, RecordingServer

SEED_METRICS = {
    "latency": 45.2,
    "quality_score": 4.1,
    "throughput": 120,
    "error_rate": 0.002,
    "cpu_usage": 65.3,
    "memory_usage": 72.1,
}
DEFAULT_SLOS = {"availability", "latency", "quality", "throughput"}


@pytest.fixture
def channel_env(monkeypatch, hook, inbox, tmp_path) -> None:
    """The environment variables of the seed's three channels, pointing at the local servers."""
    port, _ = inbox
    for name, value in {
        "OTEL_AUDIO_SLACK_WEBHOOK_URL": hook.url("/slack"),
        "OTEL_AUDIO_PAGERDUTY_ROUTING_KEY": "r" * 32,
        "OTEL_AUDIO_PAGERDUTY_URL": hook.url("/pagerduty"),
        "OTEL_AUDIO_SMTP_HOST": "127.0.0.1",
        "OTEL_AUDIO_SMTP_PORT": str(port),
        "OTEL_AUDIO_SMTP_STARTTLS": "false",
        "OTEL_AUDIO_EMAIL_FROM": "otel-audio@example.org",
        "OTEL_AUDIO_EMAIL_TO": "oncall@example.org",
        "OTEL_AUDIO_DATA_DIR": str(tmp_path / "monitor"),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def monitors() -> Iterator[list[ProductionMonitor]]:
    """Monitors a test made, closed after it."""
    made: list[ProductionMonitor] = []
    yield made
    for monitor in made:
        monitor.close()


def _remote_receiver(start_receiver, hook: RecordingServer, smtp_port: int) -> Any:
    channels = {
        "slack": {"type": "slack", "webhook_url": hook.url("/slack")},
        "pagerduty": {"type": "pagerduty", "routing_key": "r" * 32, "url": hook.url("/pagerduty")},
        "email": {"type": "email", "host": "127.0.0.1", "port": smtp_port, "starttls": False,
                  "from": "otel-audio@example.org", "to": ["oncall@example.org"]},
    }  # fmt: skip
    return start_receiver(
        processors=["selfmon", {"derived": {}}, {"slo": {}}, {"alerting": {"channels": channels}}, "store"]
    )


def _seed_example(remote: dict[str, str], hook: RecordingServer, box: MailInbox, made: list) -> None:
    """The seed's "Example Usage", each call as written (``remote`` adds the endpoint keys)."""
    monitor = ProductionMonitor(
        config={
            "collection_interval": 10,
            "retention_days": 90,
            "alert_channels": ["email", "slack", "pagerduty"],
            **remote,
        }
    )
    made.append(monitor)
    monitor.collect_metrics(
        "audio_enhancement",
        {
            "latency": 45.2,
            "quality_score": 4.1,
            "throughput": 120,
            "error_rate": 0.002,
            "cpu_usage": 65.3,
            "memory_usage": 72.1,
        },
    )
    monitor.add_alert_rule(
        name="high_latency", condition="latency > 100", severity="warning", channels=["slack"]
    )

    health = monitor.check_health()
    assert (health.status, health.healthy_services, health.total_services) == ("healthy", 1, 1)
    assert health.services["audio_enhancement"].error_ratio == pytest.approx(0.002)

    data = monitor.get_dashboard_data(timeframe="last_hour", metrics=["latency", "quality", "throughput"])
    assert set(data) == {"latency", "quality", "throughput"}
    assert data["quality"]["metric"] == "quality_score"  # the seed's name mapped onto what was collected
    for name, value in (("latency", 45.2), ("quality", 4.1), ("throughput", 120.0)):
        assert data[name]["series"]["audio_enhancement"]["values"] == [pytest.approx(value)]

    report = monitor.generate_sla_report(month="2024-01")
    assert report.compliance is None  # nothing was collected in January 2024
    assert {s["name"] for s in report.slos} >= DEFAULT_SLOS
    assert all(s["status"] == "no data" for s in report.slos)

    condition, severity = "latency > 40", "critical"
    fired = monitor.trigger_alert(condition, severity)
    assert [(a.severity, a.labels["service"], a.value) for a in fired] == [
        ("critical", "audio_enhancement", pytest.approx(45.2))
    ]
    slack = hook.wait_for(1, "/slack")
    assert "manual.latency_40" in slack[0].body["text"]
    pages = hook.wait_for(1, "/pagerduty")
    assert pages[0].body["event_action"] == "trigger"
    assert b"manual.latency_40" in box.wait_for(1)[0][2]
    assert not [r for r in hook.received("/slack") if "high_latency" in r.body["text"]]  # 45.2 < 100


def test_seed_example_runs_as_written_embedded(channel_env, hook, inbox, monitors):
    _seed_example({}, hook, inbox[1], monitors)
    assert monitors[0].mode == "embedded"


def test_seed_example_runs_as_written_against_a_remote_receiver(start_receiver, hook, inbox, monitors):
    receiver = _remote_receiver(start_receiver, hook, inbox[0])
    remote = {
        "endpoint": f"http://127.0.0.1:{receiver.http_port}",
        "api": f"http://127.0.0.1:{receiver.api_port}",
    }
    _seed_example(remote, hook, inbox[1], monitors)
    assert monitors[0].mode == "remote"


def test_high_latency_rule_pages_slack_when_a_collected_latency_breaches(channel_env, hook, monitors):
    monitor = ProductionMonitor(config={"alert_channels": ["slack"]})
    monitors.append(monitor)
    monitor.add_alert_rule(
        name="high_latency", condition="latency > 100", severity="warning", channels=["slack"]
    )
    monitor.collect_metrics("audio_enhancement", {"latency": 45.2})
    monitor.collect_metrics("audio_enhancement", {"latency": 180.0})
    body = hook.wait_for(1, "/slack")[0].body
    assert body["text"] == "[FIRING:1] high_latency audio_enhancement"
    firing = monitor.active_alerts()
    assert [(a["labels"]["alertname"], a["value"]) for a in firing] == [("high_latency", 180.0)]


def test_metrics_over_grpc_reach_a_remote_receiver(start_receiver, monitors):
    receiver = start_receiver()
    monitor = ProductionMonitor(
        config={
            "endpoint": f"grpc://127.0.0.1:{receiver.grpc_port}",
            "api": f"http://127.0.0.1:{receiver.api_port}",
        }
    )
    monitors.append(monitor)
    monitor.collect_metrics("denoiser", {"latency": 12.5})
    data = monitor.get_dashboard_data("last_5m", ["latency"])
    assert data["latency"]["series"]["denoiser"]["values"] == [12.5]


def test_a_channel_without_its_setting_fails_at_construction_naming_it(channel_env, monkeypatch):
    monkeypatch.delenv("OTEL_AUDIO_SLACK_WEBHOOK_URL")
    with pytest.raises(ChannelConfigError) as error:
        ProductionMonitor(config={"alert_channels": ["email", "slack", "pagerduty"]})
    message = str(error.value)
    assert "'slack'" in message and "'webhook_url'" in message and "OTEL_AUDIO_SLACK_WEBHOOK_URL" in message


def test_channel_settings_from_config_win_over_the_environment(channel_env, hook, monitors, tmp_path):
    config = {"alert_channels": ["ops"], "data_dir": str(tmp_path / "own"),
              "channels": {"ops": {"type": "webhook", "url": hook.url("/ops")}}}  # fmt: skip
    monitor = ProductionMonitor(config=config)
    monitors.append(monitor)
    assert monitor.data_dir == tmp_path / "own"
    monitor.collect_metrics("svc", {"queue": 7})
    assert monitor.trigger_alert("queue >= 7", "info")[0].value == 7
    assert hook.wait_for(1, "/ops")[0].body["version"] == "4"


@pytest.fixture(params=["embedded", "remote"])
def any_monitor(request, tmp_path, start_receiver, monitors) -> ProductionMonitor:
    if request.param == "embedded":
        monitor = ProductionMonitor(config={"data_dir": str(tmp_path / "embedded")})
    else:
        receiver = start_receiver(processors=["selfmon", {"slo": {}}, "alerting", "store"])
        api = f"http://127.0.0.1:{receiver.api_port}"
        monitor = ProductionMonitor(config={"endpoint": f"http://127.0.0.1:{receiver.http_port}", "api": api})
    monitors.append(monitor)
    return monitor


def test_slos_are_defined_listed_inspected_and_deleted(any_monitor):
    spec = {"name": "fast_enough", "objective": 0.99, "window": "7d",
            "sli": {"threshold": {"metric": "latency", "op": "<", "value": 100}},
            "budgeting": "timeslices", "timeslice": "1m"}  # fmt: skip
    created = any_monitor.define_slo(spec)
    assert created["name"] == "fast_enough"
    assert {s["name"] for s in any_monitor.list_slos()} == DEFAULT_SLOS | {"fast_enough"}
    assert any_monitor.slo_status("fast_enough")["status"]["objective"] == 0.99
    any_monitor.delete_slo("fast_enough")
    assert {s["name"] for s in any_monitor.list_slos()} == DEFAULT_SLOS


def test_invalid_slos_are_refused_naming_the_field(any_monitor):
    with pytest.raises(MonitorError, match="objective"):
        any_monitor.define_slo({"name": "bad", "objective": 1.5, "window": "7d",
                                "sli": {"ratio": {"good": "a", "total": "b"}}})  # fmt: skip
    with pytest.raises(MonitorError, match="comes from the default SLOs"):
        any_monitor.delete_slo("availability")
    with pytest.raises(MonitorError, match="not found"):
        any_monitor.slo_status("no_such_slo")


def test_an_invalid_condition_is_refused_with_its_position(any_monitor):
    with pytest.raises(MonitorError, match="column"):
        any_monitor.trigger_alert("latency >> 100", "warning")
    assert any_monitor.trigger_alert("latency > 100", "warning") == []  # no data: nothing holds


def test_health_is_degraded_by_errors_and_down_when_stale(tmp_path, monitors):
    monitor = ProductionMonitor(config={"data_dir": str(tmp_path / "m"), "collection_interval": 10})
    monitors.append(monitor)
    monitor.collect_metrics("ok", {"error_rate": 0.001})
    monitor.collect_metrics("failing", {"error_rate": 0.2})
    monitor.collect_metrics("silent", {"error_rate": 0.0}, timestamp=time.time() - 600)
    health = monitor.check_health()
    assert {name: s.status for name, s in health.services.items()} == {
        "ok": "healthy",
        "failing": "degraded",
        "silent": "down",
    }
    assert (health.status, health.healthy_services, health.total_services) == ("degraded", 1, 3)
    assert health.services["failing"].reasons == ("error ratio 0.2 > 0.05",)


def test_unknown_config_keys_and_timeframes_are_refused(tmp_path, monitors):
    with pytest.raises(MonitorError, match="'alert_channel'"):
        ProductionMonitor(config={"alert_channel": ["slack"]})
    monitor = ProductionMonitor(config={"data_dir": str(tmp_path / "m")})
    monitors.append(monitor)
    with pytest.raises(MonitorError, match="last_hour"):
        monitor.get_dashboard_data(timeframe="yesterday")


def test_the_seed_import_path_and_a_light_sdk_side():
    from monitoring import ProductionMonitor as Seed

    assert Seed is ProductionMonitor
    code = (
        "import sys, monitoring, otel_audio; otel_audio.ProductionMonitor;"
        "bad = [m for m in sys.modules if m.startswith(('otel_audio.receiver', 'otel_audio.store',"
        " 'otel_audio.processors', 'pyarrow', 'duckdb', 'fastapi'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_building_blocks_are_the_engine_modules():
    import otel_audio
    from monitoring import (
        IntelligentAlertGenerator,
        MetricAggregationEngine,
        SLOManager,
        TimeSeriesOptimizer,
        trace_audio_pipeline,
    )
    from otel_audio.processors.aggregation import Aggregation

    assert trace_audio_pipeline is otel_audio.audio_pipeline
    assert isinstance(
        MetricAggregationEngine({"rules": [{"metric": "latency", "window": "1m"}]}), Aggregation
    )
    budget = SLOManager.calculate_error_budget(0.999, 999_600, 1_000_000, period_s=30 * 86400)
    assert (budget.total, budget.consumed, budget.remaining_ratio) == pytest.approx((1000, 400, 0.6))
    values = np.array([148.3, 148.4, 150.0, 0.1 + 0.2])
    columns = TimeSeriesOptimizer.compress(values)
    assert TimeSeriesOptimizer.decompress(columns).tolist() == values.tolist()
    t = np.arange(200, dtype=np.int64) * 60 * 10**9
    rules = IntelligentAlertGenerator.suggest({"latency": (t, 50 + np.sin(np.arange(200)))})
    assert rules and all(r.condition for r in rules)


def test_the_docs_example_runs_as_an_unguarded_script(channel_env, hook, inbox):
    """docs/production-monitor.md's first block, top-level code in a fresh interpreter (no
    ``if __name__ == "__main__"``: the embedded store must not spawn a process re-running it)."""
    import os
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "production-monitor.md").read_text()
    block = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)[0]
    script = Path(os.environ["OTEL_AUDIO_DATA_DIR"]).parent / "example.py"
    script.write_text(block)
    root = str(Path(__file__).resolve().parents[1])  # a checkout; an installed wheel ships monitoring too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == ["healthy 1 1", "[45.2]", "None"]
    assert "manual.latency_40" in done.stdout
    assert "manual.latency_40" in hook.wait_for(1, "/slack")[0].body["text"]


def _counter_request(service: str, totals: dict[str, float]) -> Any:
    """Cumulative counters from 0 five minutes ago to ``totals`` a minute ago."""
    from tests.receiver_helpers import cumulative_counter, metrics_request

    now, second = time.time_ns(), 10**9
    start = now - 600 * second
    counters = [
        cumulative_counter(name, [(start, now - 300 * second, 0.0), (start, now - 60 * second, total)])
        for name, total in totals.items()
    ]
    return metrics_request(service, counters)


def test_sla_compliance_is_the_weakest_slo_of_the_month(start_receiver, monitors):
    from datetime import UTC, datetime

    from tests.receiver_helpers import grpc_export_metrics

    receiver = start_receiver(processors=["selfmon", {"slo": {"defaults": False}}, "alerting", "store"])
    api = f"http://127.0.0.1:{receiver.api_port}"
    monitor = ProductionMonitor(config={"endpoint": f"http://127.0.0.1:{receiver.http_port}", "api": api})
    monitors.append(monitor)
    for name, good, objective in (("success", "req.ok", 0.9), ("fast", "req.fast", 0.99)):
        ratio = {"ratio": {"good": good, "total": "req.total"}}
        monitor.define_slo({"name": name, "objective": objective, "window": "7d", "sli": ratio})
    grpc_export_metrics(
        receiver.grpc_port, _counter_request("svc", {"req.total": 100, "req.ok": 95, "req.fast": 80})
    )
    report = monitor.generate_sla_report(month=datetime.now(UTC).strftime("%Y-%m"))
    by_name = {s["name"]: (s["compliance_pct"], s["status"]) for s in report.slos}
    assert by_name == {"success": (pytest.approx(95.0), "met"), "fast": (pytest.approx(80.0), "missed")}
    assert (report.compliance, report.met) == (pytest.approx(80.0), False)


def test_a_token_protected_receiver_takes_metrics_and_questions_with_the_token(start_receiver, monitors):
    receiver = start_receiver(server__auth__tokens=["s3cret"])
    urls = {
        "endpoint": f"http://127.0.0.1:{receiver.http_port}",
        "api": f"http://127.0.0.1:{receiver.api_port}",
    }
    without = ProductionMonitor(config=urls)
    monitors.append(without)
    with pytest.raises(MonitorError, match="401"):
        without.collect_metrics("svc", {"latency": 1.0})
    monitor = ProductionMonitor(config={**urls, "token": "s3cret"})
    monitors.append(monitor)
    monitor.collect_metrics("svc", {"latency": 3.5})
    assert monitor.get_dashboard_data("last_5m", ["latency"])["latency"]["series"]["svc"]["values"] == [3.5]


def test_dashboard_latency_falls_back_to_the_sdk_pipeline_histogram(start_receiver, monitors):
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    from tests.receiver_helpers import grpc_export_metrics, metrics_request

    receiver = start_receiver()
    api = f"http://127.0.0.1:{receiver.api_port}"
    monitor = ProductionMonitor(config={"endpoint": f"grpc://127.0.0.1:{receiver.grpc_port}", "api": api})
    monitors.append(monitor)
    now, second = time.time_ns(), 10**9
    points = [
        metrics_pb2.HistogramDataPoint(
            start_time_unix_nano=now - 600 * second,
            time_unix_nano=now - age * second,
            count=sum(counts),
            sum=0.05 * sum(counts),
            explicit_bounds=[0.1, 1.0],
            bucket_counts=counts,
        )
        for age, counts in ((120, [0, 0, 0]), (60, [90, 10, 0]))
    ]
    histogram = metrics_pb2.Metric(
        name="audio.pipeline.duration",
        unit="s",
        histogram=metrics_pb2.Histogram(
            data_points=points, aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        ),
    )
    grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", [histogram]))
    latency = monitor.get_dashboard_data("last_hour", ["latency"])["latency"]
    assert (latency["metric"], latency["agg"]) == ("audio.pipeline.duration", "p95")
    values = latency["series"]["enhancer"]["values"]
    assert values and 0.1 < max(values) <= 1.0  # the 95th of 100 files falls in the (0.1, 1] bucket


def test_time_series_optimizer_downsamples_with_the_store_rollups():
    import pyarrow as pa

    from monitoring import TimeSeriesOptimizer
    from otel_audio.processors.base import POINTS_SCHEMA, SERIES_SCHEMA, series_row

    row = series_row("latency", scope="t", attributes={}, service="svc")
    series = pa.Table.from_pylist([row], SERIES_SCHEMA)
    minute = 60 * 10**9
    values = [10.0, 20.0, 30.0, 100.0]  # two points in each of two minutes
    points = pa.Table.from_pylist(
        [
            {"series_id": row["series_id"], "time_unix_nano": minute * (i // 2) + i % 2 + 1, "value": v}
            for i, v in enumerate(values)
        ],
        POINTS_SCHEMA,
    )
    rows, _ = TimeSeriesOptimizer.downsample(points, series, "1m")
    got = rows.select(["window_start_ns", "count", "min", "max", "last"]).to_pylist()
    assert got == [
        {"window_start_ns": 0, "count": 2, "min": 10.0, "max": 20.0, "last": 20.0},
        {"window_start_ns": minute, "count": 2, "min": 30.0, "max": 100.0, "last": 100.0},
    ]


def test_predictive_monitor_forecasts_a_linear_trend_to_its_limit():
    from monitoring import PredictiveMonitor

    hour = 3600 * 10**9
    t = np.arange(48, dtype=np.int64) * hour
    disk = 100.0 + 2.0 * np.arange(48) + np.random.default_rng(0).normal(0, 0.5, 48)  # +2 per hour
    predictor = PredictiveMonitor(horizon="1d")
    fc = predictor.forecast(t, disk)
    assert fc.timestamps_ns[-1] == t[-1] + 24 * hour
    when, _ = PredictiveMonitor.time_to_limit(fc, 210.0)
    assert when is not None and abs(when - (t[-1] + 8 * hour)) <= hour
