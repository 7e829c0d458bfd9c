"""Real servers and programs the tests talk to, and the rule for external ones that may be missing.

``require_external(what)``: an external program (Debian's ``prometheus-alertmanager``, ...) that is
not installed skips the test with the reason, except under ``OTEL_AUDIO_REQUIRE_EXTERNAL=1`` (set
by ``.ci/run``, which installs them), where a missing one fails the test.

``RecordingServer``: a real HTTP server on a loopback port that keeps every request it receives
(method, path, headers, JSON body) and answers from a script: per path, a list of responses used
in turn, then 200. A path can also be held (``hold(path)``) so requests to it block until
``release(path)``: a slow receiver whose slowness is an event, not a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

REQUIRE_EXTERNAL = os.environ.get("OTEL_AUDIO_REQUIRE_EXTERNAL") == "1"


def require_external(program: str, install: str) -> str:
    """The path of ``program``; skips (or, in CI, fails) the test when it is not installed."""
    found = shutil.which(program)
    if found:
        return found
    reason = f"{program} is not installed ({install})"
    if REQUIRE_EXTERNAL:
        pytest.fail(f"OTEL_AUDIO_REQUIRE_EXTERNAL=1 and {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


class RecordingServer:
    """A loopback HTTP server recording requests; see the module docstring."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Recorded] = []
        self._script: dict[str, list[Reply]] = {}
        self._held: dict[str, threading.Event] = {}
        self._arrived: dict[str, int] = {}
        self._changed = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with server._changed:
                    server._arrived[self.path] = server._arrived.get(self.path, 0) + 1
                held = server._held.get(self.path)
                if held is not None:
                    held.wait(30)
                reply = server._next_reply(self.path)
                with server._changed:
                    server.requests.append(Recorded("POST", self.path, dict(self.headers.items()), body))
                    server._changed.notify_all()
                data = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for event in self._held.values():
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies`` in turn, then 200 ``ok``."""
        with self._changed:
            self._script.setdefault(path, []).extend(replies)

    def hold(self, path: str) -> None:
        self._held[path] = threading.Event()

    def release(self, path: str) -> None:
        self._held.pop(path).set()

    def arrived(self, path: str) -> int:
        """Requests to ``path`` whose body was read, including those held and not yet answered."""
        with self._changed:
            return self._arrived.get(path, 0)

    def received(self, path: str | None = None) -> list[Recorded]:
        with self._changed:
            return [r for r in self.requests if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Recorded]:
        """Wait until ``count`` requests (to ``path``) arrived; fails the test after ``timeout`` s."""
        with self._changed:
            done = self._changed.wait_for(lambda: len(self._matching(path)) >= count, timeout)
            found = self._matching(path)
        assert done, f"expected {count} requests to {path or 'any path'}, got {len(found)}"
        return found

    def _matching(self, path: str | None) -> list[Recorded]:
        return [r for r in self.requests if path is None or r.path == path]

    def _next_reply(self, path: str) -> Reply:
        with self._changed:
            queue = self._script.get(path)
            return queue.pop(0) if queue else Reply()
