"""Where the demo's notifications land: a small webhook receiver writing JSON lines.

The demo's alerting sends every notification through the product's ``webhook`` channel
(Alertmanager webhook v4, through the durable outbox and its retries) to this server, which appends
each one, as received, as one line of ``notifications.jsonl``: ``tail -f`` shows alerts arrive,
``jq`` reads them.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class NotificationLog:
    """The demo webhook's receiver: each POSTed notification becomes one JSON line in ``path``.

    A real HTTP server (``ThreadingHTTPServer`` on ``127.0.0.1`` and a free port), so the
    notifications travel the way they would to any webhook: through the outbox, with retries.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.received: list[dict[str, Any]] = []
        self._shown = 0  # how many take_new() has handed out
        log = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_error(400, "expected a JSON notification")
                    return
                log._append(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # requests are logged in the file instead
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="notification-log", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def start(self) -> NotificationLog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def take_new(self) -> list[dict[str, Any]]:
        """The notifications received since the last call, so each is shown once and none is
        skipped (one arriving between a read and a count would be)."""
        with self._lock:
            new = self.received[self._shown :]
            self._shown = len(self.received)
            return new

    def _append(self, payload: Any) -> None:
        line = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        with self._lock:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
            self.received.append(payload if isinstance(payload, dict) else {"payload": payload})
