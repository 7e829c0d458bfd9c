"""SLOs: define one on a running receiver, feed it events, read its SLI and error budget.

The receiver needs the ``slo`` processor (docs/slo.md). This script sends a request counter from
the plain OpenTelemetry SDK (any SDK or Collector would do), defines an SLO on it with
:class:`otel_audio.ProductionMonitor`, and prints the SLO's status. Run from the repository root::

    python examples/api/slos.py --endpoint http://127.0.0.1:4318 --api http://127.0.0.1:8080

100 requests, 5 of them failed, against a 90 % objective: SLI 0.95, half the error budget spent.
The SLO stays defined (``--delete`` removes it at the end), so ``examples/api/reports.py`` can
report it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel_audio import ProductionMonitor

SERVICE = "example-denoiser"
SLO = {
    "name": "example-requests",
    "service": SERVICE,  # adds service="example-denoiser" to both selectors
    "objective": 0.9,
    "window": "1d",
    "description": "requests of the example that did not fail",
    # Selectors use the alert grammar's syntax (docs/alerting-rules.md).
    "sli": {"ratio": {"good": 'example.requests{outcome="ok"}', "total": "example.requests"}},
}


def send_requests(endpoint: str, ok: int, failed: int, token: str | None) -> None:
    """Export a cumulative request counter twice: at zero, then after ``ok + failed`` requests.

    A counter's first sample only says where it starts (what came before is unknown), so the
    events are those between the two exports, as in Prometheus's ``increase()``.
    """
    headers = {"authorization": f"Bearer {token}"} if token else None
    exporter = OTLPMetricExporter(endpoint=f"{endpoint.rstrip('/')}/v1/metrics", headers=headers)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)  # we flush by hand
    provider = MeterProvider(resource=Resource.create({"service.name": SERVICE}), metric_readers=[reader])
    requests = provider.get_meter("examples.api.slos").create_counter("example.requests", unit="{request}")
    for outcome in ("ok", "error"):
        requests.add(0, {"outcome": outcome})
    provider.force_flush()
    requests.add(ok, {"outcome": "ok"})
    requests.add(failed, {"outcome": "error"})
    provider.shutdown()  # flushes the second sample


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="OTLP/HTTP, e.g. http://127.0.0.1:4318")
    parser.add_argument("--api", required=True, help="the receiver's API, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="bearer token, when the receiver requires one")
    parser.add_argument("--delete", action="store_true", help="delete the SLO at the end")
    args = parser.parse_args(argv)

    config = {"endpoint": args.endpoint, "api": args.api, "token": args.token}
    with ProductionMonitor(config={k: v for k, v in config.items() if v}) as monitor:
        if SLO["name"] not in {s["name"] for s in monitor.list_slos()}:
            monitor.define_slo(SLO)  # validated by the engine: errors name the field
        print(f"defined {SLO['name']}: objective {SLO['objective']:.1%} over {SLO['window']}")
        send_requests(args.endpoint, ok=95, failed=5, token=args.token)

        status = monitor.slo_status(SLO["name"])["status"]
        budget = status["error_budget"]
        print(f"SLI {status['sli']:.4f} ({status['window']} window)")
        consumed, remaining = budget["consumed_ratio"], budget["remaining_ratio"]
        print(f"error budget: {consumed:.1%} consumed, {remaining:.1%} remaining")
        rates = ", ".join(f"{w} {r:.2f}" for w, r in status["burn_rates"].items() if r is not None)
        print(f"burn rates: {rates}")
        print(f"SLOs on the receiver: {', '.join(sorted(s['name'] for s in monitor.list_slos()))}")
        if args.delete:
            monitor.delete_slo(SLO["name"])
            print(f"deleted {SLO['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
