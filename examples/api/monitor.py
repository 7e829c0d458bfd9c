"""ProductionMonitor embedded in a script: collect metrics, add a rule, check health, read dashboard
data and the month's SLA report, with no receiver to run (docs/production-monitor.md).

The monitor starts the otel-audio engine in this process (store, derived metrics, SLOs, alerting)
on loopback ports the OS picks; ``--endpoint``/``--api`` point it at a running receiver instead.
Run from the repository root::

    python examples/api/monitor.py                   # embedded, data in a temporary directory
    python examples/api/monitor.py --data-dir DIR    # embedded, data kept in DIR
    python examples/api/monitor.py --endpoint http://127.0.0.1:4318 --api http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from otel_audio import ProductionMonitor

SERVICE = "audio_enhancement"
LATENCIES_MS = [41.0, 45.2, 48.9]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="embedded: where the engine keeps its data (default: a temp dir)")
    parser.add_argument("--endpoint", help="remote: OTLP endpoint, http://host:4318 or grpc://host:4317")
    parser.add_argument("--api", help="remote: the receiver's API, http://host:8080")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="otel-audio-monitor-") as scratch:
        config: dict[str, Any] = {"collection_interval": 10}
        if args.endpoint:
            config.update(endpoint=args.endpoint, api=args.api)
        else:
            config["data_dir"] = args.data_dir or scratch
        with ProductionMonitor(config=config) as monitor:
            run(monitor)
    return 0


def run(monitor: ProductionMonitor) -> None:
    print(f"mode: {monitor.mode}")

    # Each call is one OTLP gauge point per metric, for the service, at now (or `timestamp=`).
    now = time.time()
    for age, latency in zip((20, 10, 0), LATENCIES_MS, strict=True):
        monitor.collect_metrics(
            SERVICE,
            {"latency": latency, "quality_score": 4.1, "throughput": 120, "error_rate": 0.002},
            timestamp=now - age,
        )
    print(f"collected {len(LATENCIES_MS)} reports of {SERVICE}")

    # A rule in the parsed condition language: a bare metric is its latest value.
    monitor.add_alert_rule(name="high_latency", condition="latency > 100", severity="warning")
    print("rule high_latency: latency > 100 (warning)")

    health = monitor.check_health()
    print(f"health: {health.status}, {health.healthy_services}/{health.total_services} services healthy")

    data = monitor.get_dashboard_data(timeframe="last_5m", metrics=["latency", "quality"])
    latency = data["latency"]["series"][SERVICE]["values"]
    quality = data["quality"]["series"][SERVICE]["values"]
    print(f"dashboard latency ({data['latency']['agg']}, step {data['latency']['step']:g}s): {latency}")
    print(f"dashboard quality: {quality}")

    # A condition that holds now fires through the engine's real pipeline, then its rule is removed.
    fired = monitor.trigger_alert("latency > 40", severity="critical")
    print(f"triggered: {[(a.name, a.severity, a.value) for a in fired]}")

    month = time.strftime("%Y-%m", time.gmtime())
    report = monitor.generate_sla_report(month=month)
    statuses = ", ".join(f"{s['name']} {s['status']}" for s in report.slos)
    print(f"SLA {report.month}: compliance {report.compliance}, SLOs: {statuses}")
    monitor.remove_alert_rule("high_latency")
    print("removed high_latency")


if __name__ == "__main__":
    sys.exit(main())
