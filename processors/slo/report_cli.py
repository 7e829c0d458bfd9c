"""``otel-audio report sla``: the SLA report of a calendar month, from a running receiver's API.

Calls ``GET {api}/api/v1/reports/sla?month=YYYY-MM&format=...`` (``otel_audio/api/reports.py``)
with the bearer token, and writes the answer as it came to stdout or ``--output``::

    otel-audio report sla --month 2026-10 --format html --output sla-2026-10.html

Errors (bad month, unreachable API, an error answer, an unwritable file) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from otel_audio.processors.slo.report import month_bounds

PROG = "otel-audio report"
FORMATS = ("json", "csv", "html")


class UsageError(ValueError):
    """Bad arguments or an error answer from the API; the message is the one line printed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Reports from a running receiver.")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    sub = commands.add_parser("sla", help="the SLA report of a calendar month", description=__doc__)
    sub.formatter_class = argparse.RawDescriptionHelpFormatter
    sub.add_argument("--month", required=True, help="UTC calendar month, YYYY-MM (e.g. 2026-10)")
    sub.add_argument("--format", default="json", choices=FORMATS, help="output format (default: json)")
    sub.add_argument("--api", default="http://127.0.0.1:8080", help="receiver API (default: %(default)s)")
    sub.add_argument("--token", help="bearer token, if the receiver requires one")
    sub.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the API (default: 60)")
    return parser


def report_main(argv: list[str]) -> int:
    """Run ``otel-audio report``; 0 on success, 2 on bad arguments or failures."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        month_bounds(args.month)
        body = fetch_report(args.api, args.month, args.format, args.token, args.timeout)
        if args.output:
            Path(args.output).write_bytes(body)
        else:
            sys.stdout.buffer.write(body)
            sys.stdout.flush()
    except (UsageError, ValueError, OSError) as exc:
        print(f"{PROG} sla: {exc}", file=sys.stderr)
        return 2
    return 0


def fetch_report(api: str, month: str, fmt: str, token: str | None = None, timeout_s: float = 60.0) -> bytes:
    """The body of ``GET {api}/api/v1/reports/sla``; UsageError with the API's message on failure."""
    query = urllib.parse.urlencode({"month": month, "format": fmt})
    url = f"{api.rstrip('/')}/api/v1/reports/sla?{query}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise UsageError(f"{api}: {_api_error(exc)} (HTTP {exc.code})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the receiver API at {api}: {reason}") from None


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)
