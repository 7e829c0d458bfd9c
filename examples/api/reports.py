"""The monthly SLA report of a running receiver, as JSON (summarised here) and as a printable HTML page.

The receiver needs the ``slo`` processor; incidents come from its ``alerting`` processor
(docs/sla-reports.md). Run from the repository root::

    python examples/api/reports.py --api http://127.0.0.1:8080 [--month 2026-10] [--html sla.html]

It prints one line per SLO (compliance against target, budget consumed, downtime, incidents) and
the month's overall verdict; the same numbers as ``otel-audio report sla`` and
``ProductionMonitor.generate_sla_report``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import requests


def fetch(api: str, month: str, fmt: str, token: str | None) -> requests.Response:
    """``GET /api/v1/reports/sla``; an error answer stops the script with the receiver's message."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = requests.get(
        f"{api.rstrip('/')}/api/v1/reports/sla",
        params={"month": month, "format": fmt},
        headers=headers,
        timeout=60,
    )
    if reply.status_code >= 400:
        raise SystemExit(f"SLA report {month} ({fmt}): HTTP {reply.status_code}: {reply.text}")
    return reply


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value:.3f}%"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="the receiver's API, e.g. http://127.0.0.1:8080")
    this_month = datetime.now(UTC).strftime("%Y-%m")
    parser.add_argument("--month", default=this_month, help="YYYY-MM (default: this month)")
    parser.add_argument("--html", metavar="FILE", help="also write the printable HTML report here")
    parser.add_argument("--token", help="bearer token, when the receiver requires one")
    args = parser.parse_args(argv)

    report = fetch(args.api, args.month, "json", args.token).json()
    partial = " (so far)" if report["partial"] else ""
    print(f"SLA report {report['month']}{partial}: {len(report['slos'])} SLOs")
    for slo in report["slos"]:
        print(
            f"  {slo['name']}: {_pct(slo['compliance_pct'])} against {slo['target_pct']:g}%"
            f" -> {slo['status']}; "
            f"budget consumed {_pct(slo['budget_consumed_pct'])}, downtime {slo['downtime_minutes']:g} min, "
            f"{len(slo['incidents'])} incidents"
        )
    # An SLA holds only as well as its weakest objective with data.
    with_data = [s for s in report["slos"] if s["compliance_pct"] is not None]
    if with_data:
        worst = min(with_data, key=lambda s: s["compliance_pct"])
        verdict = "met" if all(s["status"] == "met" for s in with_data) else "missed"
        print(f"overall: {verdict}, lowest compliance {_pct(worst['compliance_pct'])} ({worst['name']})")
    else:
        print("overall: no SLO has data this month")

    if args.html:
        page = fetch(args.api, args.month, "html", args.token).text
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"wrote {args.html} ({len(page.encode()):,} bytes of self-contained HTML)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
