"""The scripts of examples/api run as written and print what the receiver really holds.

Each script runs as a real subprocess from the repository root, as its docstring says; where it
needs a receiver, it talks to one this module starts on free loopback ports (real OTLP and HTTP).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "example-denoiser"  # the service the example scripts report as


def run_example(name: str, *args: str, timeout: float = 90) -> str:
    """Run ``python examples/api/<name>.py args`` from the repository root; its stdout."""
    done = subprocess.run(
        [sys.executable, f"examples/api/{name}.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{name}.py exited {done.returncode}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def receiver(tmp_path_factory) -> Iterator[Any]:
    """One receiver with the slo and alerting processors, shared by the scripts of this module."""
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    config = load_config(
        None,
        storage__data_dir=str(tmp_path_factory.mktemp("examples") / "data"),
        storage__blocks__flush_process=False,
        server__grpc_port=0,
        server__http_port=0,
        server__api_port=0,
        tick_interval_s=0.2,
        processors=["selfmon", {"slo": {"defaults": False}}, "alerting", "store"],
    )
    server = Receiver(config)
    server.start()
    yield server
    server.stop(grace_s=1)


def api_url(receiver: Any) -> str:
    return f"http://127.0.0.1:{receiver.api_port}"


def test_decorators_in_memory_show_each_stage_span_and_the_failed_file():
    out = run_example("decorators", "--files", "3")
    assert "processed 3 files, 1 failed" in out
    # the last file fails in normalize: enhancement never runs for it
    assert "span normalize: 2 ok, 1 error" in out
    assert "span enhancement: 2 ok, 0 error" in out
    assert "span example_enhancement: 2 ok, 1 error" in out
    assert "metric audio.pipeline.files [{file}]: 2 series, sum 3" in out  # ok and error.type series
    assert "metric audio.stage.duration [s]: 2 series, observations 5" in out
    assert "metric audio.errors [{error}]: 1 series, sum 1" in out


def test_decorators_export_to_a_receiver_what_they_recorded(receiver):
    out = run_example("decorators", "--files", "4", "--endpoint", f"http://127.0.0.1:{receiver.grpc_port}")
    assert "processed 4 files, 1 failed" in out
    spans = requests.get(
        f"{api_url(receiver)}/api/v1/spans", params={"service": SERVICE, "limit": 1000}, timeout=10
    ).json()["spans"]
    by_name: dict[str, list[int]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span["status_code"])
    assert sorted(by_name["normalize"]) == [0, 0, 0, 2]  # three unset, one ERROR
    assert len(by_name["enhancement"]) == 3
    series = requests.get(
        f"{api_url(receiver)}/api/v1/series", params={"metric": "audio.pipeline.files"}, timeout=10
    ).json()
    assert SERVICE in str(series)


def test_rules_are_added_listed_dry_run_and_deleted(receiver):
    grpc = f"http://127.0.0.1:{receiver.grpc_port}"
    run_example("decorators", "--files", "2", "--endpoint", grpc, "--service", "rules-test")
    condition = 'p95(audio.stage.duration{service="rules-test"}, 5m) > 0'
    out = run_example("rules", "--api", api_url(receiver), "--condition", condition)
    assert f"added ExampleSlowStage: {condition} (for 1m, warning)" in out
    assert re.search(r"^rules: .*ExampleSlowStage", out, re.MULTILINE)
    assert "holds for 2 series" in out  # the two stages, both slower than zero seconds
    assert "{service=rules-test, audio.pipeline=example_enhancement, audio.stage=normalize}" in out
    assert "invalid condition: HTTP 400: line 1, column 32" in out
    assert "deleted ExampleSlowStage" in out
    rules = requests.get(f"{api_url(receiver)}/api/v1/rules", timeout=10).json()["rules"]
    assert "ExampleSlowStage" not in {r["name"] for r in rules}


def test_a_condition_that_holds_nowhere_is_reported_as_such(receiver):
    out = run_example("rules", "--api", api_url(receiver), "--condition", "last(no.such.metric) > 1")
    assert "holds for 0 series" in out


def test_an_slo_reports_its_sli_and_budget_and_the_month_reports_it(receiver, tmp_path):
    endpoint = f"http://127.0.0.1:{receiver.http_port}"
    out = run_example("slos", "--endpoint", endpoint, "--api", api_url(receiver))
    # 95 good of 100 against 0.9: SLI 0.95, bad share 0.05 of an allowed 0.1
    assert "defined example-requests: objective 90.0% over 1d" in out
    assert "SLI 0.9500 (1d window)" in out
    assert "error budget: 50.0% consumed, 50.0% remaining" in out
    assert re.search(r"burn rates: (\S+ 0\.50(, )?)+$", out, re.MULTILINE)
    slo = requests.get(f"{api_url(receiver)}/api/v1/slos/example-requests", timeout=10).json()
    assert slo["status"]["sli"] == pytest.approx(0.95)

    html = tmp_path / "sla.html"
    report = run_example("reports", "--api", api_url(receiver), "--html", str(html))
    assert re.search(r"^SLA report \d{4}-\d\d \(so far\): 1 SLOs$", report, re.MULTILINE)
    assert "example-requests: 95.000% against 90% -> met; budget consumed 50.000%" in report
    assert "overall: met, lowest compliance 95.000% (example-requests)" in report
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html") and "example-requests" in page


def test_a_month_without_data_reports_no_data(receiver):
    out = run_example("reports", "--api", api_url(receiver), "--month", "2020-01")
    assert "SLA report 2020-01:" in out
    assert "overall: no SLO has data this month" in out


def test_an_embedded_monitor_collects_alerts_checks_health_and_reports(tmp_path):
    out = run_example("monitor", "--data-dir", str(tmp_path / "monitor"))
    assert "mode: embedded" in out
    assert "health: healthy, 1/1 services healthy" in out
    assert re.search(r"^dashboard latency \(avg, step [\d.]+s\): \[41\.0, 45\.2, 48\.9\]$", out, re.M)
    assert "dashboard quality: [4.1, 4.1, 4.1]" in out
    # the condition holds for the newest latency, 48.9, and fires through the engine
    assert "triggered: [('manual.latency_40', 'critical', 48.9)]" in out
    assert re.search(r"SLA \d{4}-\d\d: compliance None, SLOs: availability no data", out)
    assert (tmp_path / "monitor" / "wal").is_dir()  # the engine kept its data where it was told


def test_a_monitor_drives_a_remote_receiver_the_same_way(receiver):
    endpoint = f"http://127.0.0.1:{receiver.http_port}"
    out = run_example("monitor", "--endpoint", endpoint, "--api", api_url(receiver))
    assert "mode: remote" in out
    assert re.search(r"^dashboard latency \(avg, step [\d.]+s\): \[41\.0, 45\.2, 48\.9\]$", out, re.M)
    assert "triggered: [('manual.latency_40', 'critical', 48.9)]" in out


def test_the_webhook_sink_prints_each_alert_of_a_notification():
    from tests.external import free_port

    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "examples/api/webhook_sink.py", "--port", str(port), "--count", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}/alerts"
        alert = {
            "status": "firing",
            "labels": {"alertname": "SlowEnhancement", "service": "denoiser", "severity": "critical"},
            "annotations": {"summary": "enhancement p95 0.61s"},
        }
        reply = requests.post(
            f"http://127.0.0.1:{port}/alerts",
            json={"version": "4", "status": "firing", "alerts": [alert]},
            timeout=10,
        )
        assert reply.status_code == 200
        out, _ = sink.communicate(timeout=10)
    finally:
        sink.kill()
    assert out.strip() == "firing SlowEnhancement service=denoiser severity=critical: enhancement p95 0.61s"
