"""The configs in collector-config/ for the Collector, Prometheus, Alertmanager and Grafana are valid and
name metrics the receiver really exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.external import require_external
from tests.test_prometheus_export import scrape, start_fed_receiver

CONFIGS = Path(__file__).resolve().parents[1] / "collector-config"
DASHBOARD = CONFIGS / "grafana" / "dashboards" / "otel-audio-overview.json"
ALERTS = CONFIGS / "prometheus" / "alerts.yml"
# PromQL words that are not metric names.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
}  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers outside label matchers, grouping
    clauses, ranges and strings that are not function calls or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        if match.group(2) is None and match.group(1) not in _PROMQL_WORDS:
            names.add(match.group(1))
    return names


def test_metric_names_are_read_out_of_promql():
    expr = 'histogram_quantile(0.9, sum by (le) (rate(a_bucket{job=~"$job",x="y z"}[5m]))) / on (job) b > 0.5'
    assert metric_names(expr) == {"a_bucket", "b"}


# -- Prometheus and Alertmanager, checked by their own tools ---------------------------------------


def test_prometheus_config_with_its_rule_files_passes_promtool(tmp_path):
    promtool = require_external("promtool", "apt-get install prometheus")
    copy = tmp_path / "prometheus"
    shutil.copytree(CONFIGS / "prometheus", copy)
    (copy / "otel-audio.token").write_text("token\n")  # the file a deployment provides
    done = run([promtool, "check", "config", str(copy / "prometheus.yml")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout


def test_alert_and_slo_rule_files_pass_promtool():
    promtool = require_external("promtool", "apt-get install prometheus")
    done = run([promtool, "check", "rules", str(ALERTS), str(CONFIGS / "prometheus" / "slo-rules.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_severity_that_alertmanager_routes():
    routes = yaml.safe_load((CONFIGS / "alertmanager" / "alertmanager.yml").read_text())["route"]["routes"]
    routed = {m.split("=")[1].strip('"') for r in routes for m in r["matchers"]}
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    severities = {rule["labels"]["severity"] for g in groups for rule in g["rules"]}
    assert severities <= routed == {"critical", "warning"}


def test_alertmanager_config_passes_amtool_and_routes_by_severity_to_webhooks():
    amtool = require_external("amtool", "apt-get install prometheus-alertmanager")
    path = CONFIGS / "alertmanager" / "alertmanager.yml"
    done = run([amtool, "check-config", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(path.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    by_severity = {r["matchers"][0]: r["receiver"] for r in config["route"]["routes"]}
    assert by_severity == {'severity="critical"': "pager", 'severity="warning"': "chat"}
    assert all("webhook_configs" in receivers[name] for name in ("pager", "chat"))
    tested = run([amtool, "config", "routes", "test", f"--config.file={path}", "severity=critical"])
    assert tested.stdout.strip() == "pager", tested.stdout + tested.stderr


# -- Grafana --------------------------------------------------------------------------------------------


def test_the_dashboard_has_the_fields_grafana_requires():
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["type"] in ("timeseries", "stat", "bargauge", "gauge", "table"), panel["title"]
        assert (
            set(panel["gridPos"]) == {"x", "y", "w", "h"}
            and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        )
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert target["expr"] and target["refId"]
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("request rate", "error ratio", "p95 latency", "real-time factor", "quality", "budget"):
        assert topic in titles


def test_grafana_provisioning_has_the_prometheus_and_jaeger_data_sources_and_the_dashboard_provider():
    sources = {}
    for path in (CONFIGS / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        content = yaml.safe_load(path.read_text())  # jaeger.yaml is a link to jaeger/grafana-datasource.yaml
        assert content["apiVersion"] == 1
        sources.update({s["uid"]: s for s in content["datasources"]})
    assert sources["prometheus"]["type"] == "prometheus"
    assert {s["type"] for s in sources.values()} == {"prometheus", "jaeger"}
    providers = yaml.safe_load(
        (CONFIGS / "grafana" / "provisioning" / "dashboards" / "otel-audio.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


# -- the OpenTelemetry Collector ------------------------------------------------------------------------


def collector() -> dict:
    return yaml.safe_load((CONFIGS / "otel-collector.yaml").read_text())


def test_collector_pipelines_use_only_components_the_config_defines():
    config = collector()
    pipelines = config["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name}.{kind}: {component} is not defined"
        assert pipeline["processors"][-1] == "batch" and pipeline["processors"][0] == "memory_limiter"
    used = {
        c for p in pipelines.values() for kind in ("receivers", "processors", "exporters") for c in p[kind]
    }
    defined = {c for kind in ("receivers", "processors", "exporters") for c in config[kind]}
    assert defined == used


def test_the_loadbalancing_exporter_routes_by_service_to_static_receivers_over_otlp():
    exporter = collector()["exporters"]["loadbalancing"]
    # contrib's loadbalancingexporter: routing_key, protocol.otlp (the otlp exporter's options without
    # an endpoint), exactly one resolver (static, dns, k8s or aws_cloud_map)
    assert exporter["routing_key"] == "service"
    assert list(exporter["protocol"]) == ["otlp"] and "endpoint" not in exporter["protocol"]["otlp"]
    assert list(exporter["resolver"]) == ["static"]
    hostnames = exporter["resolver"]["static"]["hostnames"]
    assert len(hostnames) >= 2 and all(re.fullmatch(r"[\w.-]+:4317", h) for h in hostnames)
    for pipeline in collector()["service"]["pipelines"].values():
        assert "loadbalancing" in pipeline["exporters"]


def test_traces_also_go_to_jaeger_over_otlp():
    config = collector()
    assert config["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert "otlp/jaeger" in config["service"]["pipelines"]["traces"]["exporters"]
    assert "otlp/jaeger" not in config["service"]["pipelines"]["metrics"]["exporters"]


# -- the names used are the names exported ---------------------------------------------------------------


def test_every_metric_the_dashboard_and_alerts_query_is_on_a_receivers_metrics_page(start_receiver):
    receiver = start_fed_receiver(start_receiver)
    page = scrape(receiver).text
    exported = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and line[0] != "#"}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", page, re.M):  # declared, no sample yet
        exported |= {family} | (
            {f"{family}_{s}" for s in ("bucket", "sum", "count")} if kind == "histogram" else set()
        )
    wanted = set().union(*map(metric_names, dashboard_exprs() + alert_exprs())) - {"up"}  # up: Prometheus'
    assert {"traces_span_metrics_calls_total", "audio_derived_realtime_factor_ratio"} <= wanted
    assert wanted - exported == set()


def test_pipeline_and_slo_alerts_fire_on_the_exported_series_under_promtool(tmp_path):
    promtool = require_external("promtool", "apt-get install prometheus")
    cases = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'audio_derived_error_ratio{job="enhancer",audio_pipeline="p"}',
                        "values": "0.01x5 0.2x20",
                    },
                    {
                        "series": 'slo_error_budget_remaining_ratio{slo="availability"}',
                        "values": "0.5x5 -0.1x20",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "AudioErrorRatioHigh", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "AudioErrorRatioHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "job": "enhancer",
                                    "audio_pipeline": "p",
                                },
                                "exp_annotations": {"summary": "enhancer/p: 20% of files fail"},
                            }
                        ],
                    },
                    {
                        "eval_time": "15m",
                        "alertname": "SLOErrorBudgetExhausted",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "slo": "availability"},
                                "exp_annotations": {
                                    "summary": "SLO availability has spent its whole error budget"
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "alerts_test.yml"
    path.write_text(json.dumps(cases))  # JSON is YAML
    done = run([promtool, "test", "rules", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
