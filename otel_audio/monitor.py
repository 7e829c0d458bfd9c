"""ProductionMonitor: the seed's one-object API over the otel-audio engine, embedded or remote.

Usage (``docs/production-monitor.md``)::

    from otel_audio import ProductionMonitor          # or: from monitoring import ProductionMonitor

    monitor = ProductionMonitor(config={'collection_interval': 10, 'retention_days': 90,
                                        'alert_channels': ['email', 'slack', 'pagerduty']})
    monitor.collect_metrics('audio_enhancement', {'latency': 45.2, 'error_rate': 0.002})
    monitor.add_alert_rule(name='high_latency', condition='latency > 100', severity='warning',
                           channels=['slack'])
    health = monitor.check_health()                    # .status, .healthy_services, .total_services
    data = monitor.get_dashboard_data(timeframe='last_hour', metrics=['latency', 'throughput'])
    report = monitor.generate_sla_report(month='2024-01')   # .compliance
    monitor.trigger_alert('latency > 40', 'critical')

Modes:

- **embedded** (no ``endpoint`` in the config): an in-process receiver with the chain selfmon,
  derived, slo (the four defaults), alerting (the ``alert_channels``), store, its data under
  ``config['data_dir']`` (default :func:`~otel_audio.monitor_backend.default_data_dir`);
- **remote** (``config={'endpoint': 'http://host:4318' | 'grpc://host:4317', 'api':
  'http://host:8080', 'token': ...}``): metrics over OTLP, everything else over the receiver's API.
  The channels are the remote receiver's; ``alert_channels`` only name the defaults for rules.

Every method but :meth:`~ProductionMonitor.collect_metrics` goes through the receiver's HTTP API
(on loopback in embedded mode), so both modes validate and answer identically. The receiver side
is imported only when an embedded monitor starts: ``import otel_audio`` stays light.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_audio.monitor_backend import (
    EmbeddedBackend,
    MonitorError,
    RemoteBackend,
    channel_settings,
    default_data_dir,
)

TIMEFRAMES = {"last_5m": 300, "last_15m": 900, "last_hour": 3600, "last_6h": 6 * 3600,
              "last_day": 86400, "last_week": 7 * 86400, "last_month": 30 * 86400}  # fmt: skip
POINTS_PER_CHART = 120  # a timeframe is divided into about this many steps
# Seed dashboard names -> (metric, aggregation) candidates, first one that exists wins.
DASHBOARD_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "latency": (("latency", "avg"), ("audio.pipeline.duration", "p95"), ("audio.stage.duration", "p95")),
    "quality": (("quality", "avg"), ("quality_score", "avg"), ("audio.derived.quality_index", "avg")),
    "throughput": (("throughput", "avg"), ("audio.derived.throughput", "avg")),
    "error_rate": (("error_rate", "avg"), ("audio.derived.error_ratio", "avg")),
}
ERROR_METRICS = ("error_rate", "audio.derived.error_ratio")  # health: the first that a service has
ACTIVITY_METRICS = ("audio.pipeline.files", "audio.stage.duration")  # SDK pipelines' signs of life
_CONFIG_KEYS = {"collection_interval", "retention_days", "alert_channels", "channels", "data_dir",
                "endpoint", "api", "token", "tick_interval", "slos", "stale_after",
                "error_ratio_threshold"}  # fmt: skip


@dataclass(frozen=True)
class ServiceHealth:
    """One service's health and why."""

    service: str
    status: str  # "healthy" | "degraded" | "down"
    last_seen: float | None  # Unix seconds of its newest point, None when none in the lookback
    error_ratio: float | None  # latest error_rate / audio.derived.error_ratio, None when none
    firing_alerts: tuple[str, ...]  # alertnames firing with this service's label
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class HealthStatus:
    """``check_health()``: overall status, counts, and per-service details."""

    status: str  # "healthy": every service healthy; "down": none is (or none reports); else "degraded"
    healthy_services: int
    total_services: int
    services: dict[str, ServiceHealth] = field(default_factory=dict)
    checked_at: float = 0.0


@dataclass(frozen=True)
class SLAReportSummary:
    """``generate_sla_report()``: the engine's SLA report (``processors/slo/report.py``) as data.

    ``compliance`` is the lowest compliance % among the SLOs that have data in the month (an SLA
    holds only as well as its weakest objective), None when none has; ``slos`` holds each SLO's
    entry as ``SLAReport.to_dict()`` gives it (compliance_pct, target_pct, status, budget, ...).
    """

    month: str
    compliance: float | None
    met: bool | None  # every SLO with data met its target; None without data
    slos: list[dict[str, Any]]
    partial: bool
    raw: dict[str, Any]


@dataclass(frozen=True)
class TriggeredAlert:
    """One alert ``trigger_alert`` fired: its labels and the value that made the condition hold."""

    name: str
    severity: str
    labels: dict[str, str]
    value: float | None
    state: str


class ProductionMonitor:
    """Collect, alert, report and check health for audio services (see the module docstring).

    Args:
        config: ``collection_interval`` (s, default 10: the expected reporting period, which sets
            staleness), ``retention_days`` (embedded), ``alert_channels`` (channel names),
            ``channels`` ({name: settings}), ``data_dir`` (embedded), ``endpoint``/``api``/``token``
            (remote), ``tick_interval`` (embedded, s, default 1), ``slos`` (embedded: extra SLO maps),
            ``stale_after`` (s, default 3 x collection_interval, at least 60),
            ``error_ratio_threshold`` (default 0.05).

    Raises:
        ChannelConfigError: an embedded alert channel lacks a setting (named, with its variable).
        MonitorError: an unknown config key or a malformed endpoint.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            raise MonitorError(
                f"config {unknown[0]!r}: unknown key; known: {', '.join(sorted(_CONFIG_KEYS))}"
            )
        self.config = config
        self.collection_interval = float(config.get("collection_interval", 10))
        self.alert_channels = list(config.get("alert_channels") or [])
        self.stale_after = float(config.get("stale_after", max(3 * self.collection_interval, 60.0)))
        self.error_ratio_threshold = float(config.get("error_ratio_threshold", 0.05))
        self._services: set[str] = set()
        self._metrics: set[str] = set()
        if config.get("endpoint"):
            if not config.get("api"):
                raise MonitorError(
                    "config 'api': required with 'endpoint' (the receiver's API, http://host:8080)"
                )
            self.backend: Any = RemoteBackend(config["endpoint"], config["api"], config.get("token"))
            self.data_dir: Path | None = None
        else:
            configured = dict(config.get("channels") or {})
            names = self.alert_channels + [n for n in configured if n not in self.alert_channels]
            channels = channel_settings(names, configured)
            self.data_dir = Path(config.get("data_dir") or default_data_dir())
            self.backend = EmbeddedBackend(
                self.data_dir,
                channels,
                retention_days=config.get("retention_days"),
                tick_interval_s=float(config.get("tick_interval", 1.0)),
                slos=config.get("slos"),
            )

    @property
    def mode(self) -> str:
        """``"embedded"`` or ``"remote"``."""
        return self.backend.mode

    def close(self) -> None:
        """Stop the embedded receiver (it drains: nothing acknowledged is lost) or close connections."""
        self.backend.close()

    def __enter__(self) -> ProductionMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metrics ---------------------------------------------------------------------------------

    def collect_metrics(self, service: str, metrics: dict[str, float], timestamp: float | None = None) -> int:
        """Record ``metrics`` (name -> number) of ``service`` as OTLP gauge points, now or at
        ``timestamp`` (Unix seconds); returns the number of points. They are stored, and rules and
        SLOs see them like any other data."""
        from otel_audio.monitor_otlp import gauge_request

        if not isinstance(service, str) or not service:
            raise MonitorError(f"service: expected a non-empty name, got {service!r}")
        bad = [k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise MonitorError(f"metrics[{bad[0]!r}]: expected a number, got {metrics[bad[0]]!r}")
        at = time.time_ns() if timestamp is None else int(timestamp * 1e9)
        self.backend.send_metrics(gauge_request(service, metrics, at))
        self._services.add(service)
        self._metrics.update(metrics)
        return len(metrics)

    # -- alerts ----------------------------------------------------------------------------------

    def add_alert_rule(
        self,
        name: str,
        condition: str,
        severity: str = "warning",
        channels: list[str] | None = None,
        for_: str = "0s",
        **extra: Any,
    ) -> dict[str, Any]:
        """Create (or replace) the alert rule ``name`` (``docs/alerting-rules.md`` grammar: a bare
        metric is its latest value); returns the rule as the API shows it. ``channels`` default to
        the route tree (every configured channel); ``extra`` passes labels, annotations,
        keep_firing_for."""
        rule = {"name": name, "condition": condition, "severity": severity, "for": for_, **extra}
        if channels is not None:
            rule["channels"] = list(channels)
        try:
            return self.backend.api("POST", "/api/v1/rules", body=rule)
        except MonitorError as exc:
            if "already exists" not in str(exc):
                raise
            return self.backend.api("PUT", f"/api/v1/rules/{name}", body=rule)

    def remove_alert_rule(self, name: str) -> None:
        self.backend.api("DELETE", f"/api/v1/rules/{name}")

    def active_alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts, as ``GET /api/v1/alerts`` gives them."""
        return self.backend.api("GET", "/api/v1/alerts")["alerts"]

    def trigger_alert(
        self, condition: str, severity: str = "warning", wait_s: float = 10.0
    ) -> list[TriggeredAlert]:
        """Evaluate ``condition`` now and, where it holds, fire a one-shot alert; returns what fired.

        The condition becomes the API rule ``manual.<condition as a slug>`` with ``for: 0s``, routed
        to the ``alert_channels``; the engine's next evaluation fires it through routing, grouping
        and the outbox like any rule, and the rule is then removed (its alerts resolve the same way).
        It is evaluated over the alerting windows: metrics some rule already reads have their
        recent history there, others only points from now on. An invalid condition raises
        :class:`MonitorError` with the line and column; a condition that does not hold fires nothing.
        """
        probe = self.backend.api("POST", "/api/v1/rules/test", body={"condition": condition})
        if not probe["samples"]:
            return []
        name = "manual." + (re.sub(r"[^A-Za-z0-9_]+", "_", condition).strip("_")[:150] or "condition")
        rule: dict[str, Any] = {
            "annotations": {"summary": f"triggered: {condition} (value {{{{ $value }}}})"}
        }
        self.add_alert_rule(name, condition, severity, channels=self.alert_channels or None, **rule)
        fired: list[dict[str, Any]] = []
        began, deadline = time.time(), time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                fired = [a for a in self.active_alerts() if a["labels"].get("alertname") == name]
                if fired and all(a["state"] == "firing" for a in fired):
                    break
                time.sleep(0.05)
            if fired and self.alert_channels:
                self._await_delivery(name, began, deadline)
        finally:
            self.remove_alert_rule(name)
        return [
            TriggeredAlert(name, severity, dict(a["labels"]), a.get("value"), a["state"])
            for a in fired
            if a["state"] == "firing"
        ]

    def _await_delivery(self, name: str, since: float, deadline: float) -> None:
        """Wait until the outbox holds the firing notification (so removing the rule cannot race it)."""
        while time.monotonic() < deadline:
            deliveries = self.backend.api("GET", "/api/v1/notifications", params={"limit": 1000})[
                "deliveries"
            ]
            key = f'alertname="{name}"'
            if any(key in d["group_key"] and d["created_at"] >= since - 1 for d in deliveries):
                return
            time.sleep(0.05)

    # -- health and dashboard -------------------------------------------------------------------

    def check_health(self) -> HealthStatus:
        """Each service's status from recent data, and the overall status.

        A service is every ``service`` with points in ``stale_after`` of the metrics this monitor
        collected, ``error_rate``/``audio.derived.error_ratio`` and the SDK's pipeline metrics, plus
        those collected by this monitor. It is ``down`` with no point in the last ``stale_after``
        seconds, ``degraded`` with a latest error ratio above ``error_ratio_threshold`` or a firing
        alert labelled with it, else ``healthy``.
        """
        now = time.time()
        known = self._known_metrics()
        metrics = sorted((self._metrics | set(ERROR_METRICS) | set(ACTIVITY_METRICS)) & known)
        last_seen: dict[str, float] = {}
        for metric in metrics:
            for svc, points in self._latest(metric, self.stale_after, now, agg="count").items():
                last_seen[svc] = max(last_seen.get(svc, 0.0), points[-1][0])
        error: dict[str, float] = {}
        for metric in [m for m in reversed(ERROR_METRICS) if m in known]:  # the first one wins
            for svc, points in self._latest(metric, max(self.stale_after, 900.0), now).items():
                error[svc] = points[-1][1]
        firing: dict[str, list[str]] = {}
        for alert in self._alerts_if_any():
            svc = alert["labels"].get("service")
            if svc and alert["state"] == "firing":
                firing.setdefault(svc, []).append(alert["labels"].get("alertname", ""))
        services = {}
        for svc in sorted(set(last_seen) | self._services):
            reasons = []
            if svc not in last_seen:
                reasons.append(f"no data in the last {self.stale_after:g} s")
            ratio = error.get(svc)
            if ratio is not None and ratio > self.error_ratio_threshold:
                reasons.append(f"error ratio {ratio:g} > {self.error_ratio_threshold:g}")
            if firing.get(svc):
                reasons.append(f"firing: {', '.join(sorted(firing[svc]))}")
            status = "down" if svc not in last_seen else ("degraded" if reasons else "healthy")
            services[svc] = ServiceHealth(
                svc, status, last_seen.get(svc), ratio, tuple(sorted(firing.get(svc, []))), tuple(reasons)
            )
        healthy = sum(1 for s in services.values() if s.status == "healthy")
        total = len(services)
        overall = "healthy" if total and healthy == total else ("down" if healthy == 0 else "degraded")
        return HealthStatus(overall, healthy, total, services, now)

    def _alerts_if_any(self) -> list[dict[str, Any]]:
        """Active alerts; none from a receiver without the alerting processor (its API answers
        404), whose services are still healthy, degraded or down by their data."""
        try:
            return self.active_alerts()
        except MonitorError as exc:
            if "(HTTP 404)" not in str(exc):
                raise
            return []

    def get_dashboard_data(
        self, timeframe: str = "last_hour", metrics: list[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Per requested name: the metric and aggregation it maps to (:data:`DASHBOARD_METRICS`; other
        names are read as metrics of that name), the step, and per service ``timestamps`` (Unix
        seconds) and ``values`` from ``query_range`` over the timeframe."""
        if timeframe not in TIMEFRAMES:
            raise MonitorError(f"timeframe: expected one of {', '.join(TIMEFRAMES)}, got {timeframe!r}")
        seconds = TIMEFRAMES[timeframe]
        step = max(1, seconds // POINTS_PER_CHART)
        known = self._known_metrics()
        out: dict[str, dict[str, Any]] = {}
        now = time.time()
        for wanted in metrics or list(DASHBOARD_METRICS):
            candidates = DASHBOARD_METRICS.get(wanted, ((wanted, "avg"),))
            metric, agg = next(((m, a) for m, a in candidates if m in known), candidates[0])
            series = self._query(metric, now - seconds, now, step, agg) if metric in known else []
            out[wanted] = {
                "metric": metric,
                "agg": agg,
                "step": step,
                "series": {
                    s["labels"].get("service", ""): {
                        "timestamps": [p[0] for p in s["points"]],
                        "values": [p[1] for p in s["points"]],
                    }
                    for s in series
                },
            }
        return out

    def _known_metrics(self) -> set[str]:
        return {m["name"] for m in self.backend.api("GET", "/api/v1/metrics")["metrics"]}

    def _query(self, metric: str, start: float, end: float, step: float, agg: str) -> list[dict[str, Any]]:
        params = {"metric": metric, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}s",
                  "agg": agg, "group_by": "service"}  # fmt: skip
        return self.backend.api("GET", "/api/v1/query_range", params=params)["series"]

    def _latest(self, metric: str, lookback: float, now: float, agg: str = "last") -> dict[str, list]:
        step = max(1.0, lookback / 30)
        series = self._query(metric, now - lookback, now + step, step, agg)
        return {s["labels"].get("service", ""): s["points"] for s in series if s["points"]}

    # -- SLOs and reports ------------------------------------------------------------------------

    def generate_sla_report(self, month: str) -> SLAReportSummary:
        """The SLA report of a UTC calendar month (``YYYY-MM``) from the engine's report module."""
        raw = self.backend.api("GET", "/api/v1/reports/sla", params={"month": month, "format": "json"})
        slos = list(raw["slos"])
        with_data = [s for s in slos if s.get("compliance_pct") is not None]
        compliance = min((s["compliance_pct"] for s in with_data), default=None)
        met = all(s["status"] == "met" for s in with_data) if with_data else None
        return SLAReportSummary(raw["month"], compliance, met, slos, bool(raw.get("partial")), raw)

    def define_slo(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Define an SLO at run time (``docs/slo.md``); invalid specs raise naming the field."""
        if not isinstance(spec, dict):
            raise MonitorError(f"slo: expected a mapping, got {type(spec).__name__}")
        return self.backend.api("POST", "/api/v1/slos", body=spec)

    def list_slos(self) -> list[dict[str, Any]]:
        """Every SLO (defaults, config, run time) with its current status."""
        return self.backend.api("GET", "/api/v1/slos")["slos"]

    def slo_status(self, name: str) -> dict[str, Any]:
        """One SLO's SLI, error budget, burn rates and time to exhaustion, now."""
        return self.backend.api("GET", f"/api/v1/slos/{name}")

    def delete_slo(self, name: str) -> None:
        """Delete an SLO defined at run time (the defaults and config SLOs are read-only)."""
        self.backend.api("DELETE", f"/api/v1/slos/{name}")
