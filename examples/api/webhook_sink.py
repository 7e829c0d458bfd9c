"""A webhook endpoint that prints every alert notification it receives: the tutorial's pager.

The receiver's ``webhook`` channel posts Alertmanager's webhook payload (version 4) with its
durable outbox and retries (docs/notifications.md). Point a channel at this script::

    python examples/api/webhook_sink.py --port 9000     # then url: http://127.0.0.1:9000/alerts

Each notification prints one line per alert, e.g.
``firing SlowEnhancement service=denoiser severity=critical: enhancement p95 0.61s``, flushed at
once so it can be followed from a log. ``--count N`` exits after N notifications.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


class _Hook(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:  # the name http.server dispatches to
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_error(400, "expected a JSON body")
            return
        for alert in payload.get("alerts", []):
            print(describe(payload.get("status", "?"), alert), flush=True)
        self.send_response(200)
        self.end_headers()
        type(self).received += 1

    def log_message(self, format: str, *args: Any) -> None:  # one line per alert is enough
        pass


def describe(status: str, alert: dict[str, Any]) -> str:
    """One line for one alert of a notification."""
    labels = alert.get("labels", {})
    shown = " ".join(f"{k}={labels[k]}" for k in ("service", "severity") if k in labels)
    summary = alert.get("annotations", {}).get("summary", "")
    return f"{alert.get('status', status)} {labels.get('alertname', '?')} {shown}: {summary}".rstrip(": ")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--count", type=int, help="exit after this many notifications")
    args = parser.parse_args(argv)
    server = HTTPServer((args.host, args.port), _Hook)
    print(f"listening on http://{args.host}:{server.server_address[1]}/alerts", flush=True)
    try:
        while args.count is None or _Hook.received < args.count:
            server.handle_request()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
