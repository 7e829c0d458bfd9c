"""Real servers and programs the tests talk to, and the rule for external ones that may be missing.

``require_external(what)``: an external program (Debian's ``prometheus-alertmanager``, ...) that is
not installed skips the test with the reason, except under ``OTEL_AUDIO_REQUIRE_EXTERNAL=1`` (set
by ``.ci/run``, which installs them), where a missing one fails the test.

``RecordingServer``: a real HTTP server on a loopback port that keeps every request it receives
(method, path, headers, JSON body) and answers from a script: per path, a list of responses used
in turn, then 200. A path can also be held (``hold(path)``) so requests to it block until
``release(path)``: a slow receiver whose slowness is an event, not a sleep.

``Prometheus``: Debian's ``prometheus`` on a loopback port with its own data dir and config, fed by
``promtool tsdb create-blocks-from openmetrics`` and asked instant queries at given times; in scrape
mode (``scrape(target, bearer_token)``) it scrapes a receiver's ``/metrics`` every second, and its
remote-write receiver (``/api/v1/write``) is always on.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
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


class Prometheus:
    """A real Prometheus server of its own: loopback port, data dir and config, never a system service.

    Everything lives under ``workdir``: ``data/`` (the TSDB), ``prometheus.yml`` and
    ``prometheus.log``. ``backfill(openmetrics_text)`` turns samples into TSDB blocks with
    ``promtool tsdb create-blocks-from openmetrics`` (timestamps in seconds, ending in ``# EOF``)
    before ``start()``; ``query(expr, at)`` is an instant query at a time. Retention is set far beyond
    any test's history, so backfilled blocks are never deleted.
    """

    def __init__(self, workdir: str | os.PathLike[str], rule_files: tuple[str, ...] = ()) -> None:
        self.binary = require_external("prometheus", "apt-get install prometheus")
        self.promtool = require_external("promtool", "apt-get install prometheus")
        self.workdir = os.fspath(workdir)
        self.data_dir = os.path.join(self.workdir, "data")
        self.rule_files = rule_files
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = os.path.join(self.workdir, "prometheus.log")
        self._scrape_jobs: list[dict[str, Any]] = []
        os.makedirs(self.data_dir, exist_ok=True)

    def backfill(self, openmetrics: str) -> None:
        """Write ``openmetrics`` (OpenMetrics text) as TSDB blocks into the data dir."""
        source = os.path.join(self.workdir, "backfill.om")
        with open(source, "w") as out:
            out.write(openmetrics)
        command = [self.promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", source, self.data_dir]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"promtool create-blocks-from failed: {done.stderr or done.stdout}"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def scrape(self, target: str, bearer_token: str | None = None, job: str = "otel-audio") -> None:
        """Scrape ``target`` (host:port, path ``/metrics``) every second, before ``start()``.

        ``honor_labels`` keeps the page's own ``job`` (a series' ``service.name``), as
        ``collector-config/prometheus/prometheus.yml`` does.
        """
        entry: dict[str, Any] = {
            "job_name": job,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "honor_labels": True,
            "static_configs": [{"targets": [target]}],
        }
        if bearer_token:
            token_file = os.path.join(self.workdir, f"{job}.token")
            with open(token_file, "w") as out:
                out.write(bearer_token)
            entry["authorization"] = {"type": "Bearer", "credentials_file": token_file}
        self._scrape_jobs.append(entry)

    def start(self, timeout: float = 30.0) -> Prometheus:
        config = os.path.join(self.workdir, "prometheus.yml")
        with open(config, "w") as out:
            out.write("global:\n  evaluation_interval: 30s\n")
            if self.rule_files:
                out.write("rule_files:\n" + "".join(f"  - {json.dumps(p)}\n" for p in self.rule_files))
            if self._scrape_jobs:  # JSON is YAML
                out.write(f"scrape_configs: {json.dumps(self._scrape_jobs)}\n")
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir}",
            "--storage.tsdb.retention.time=3650d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-remote-write-receiver",
        ]
        with open(self._log, "wb") as log:  # the child keeps its own descriptor
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._process.poll() is None:
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=1) as reply:
                    if reply.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        with open(self._log, errors="replace") as log_text:
            tail = log_text.read()[-2000:]
        raise AssertionError(f"prometheus did not become ready within {timeout} s:\n{tail}")

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """The result vector of the instant query ``expr`` at ``at`` (Unix seconds)."""
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        with urllib.request.urlopen(self.url(f"/api/v1/query?{params}"), timeout=60) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expr: str, at: float) -> float:
        """The single value of ``expr`` at ``at``; fails unless the result has exactly one sample."""
        result = self.query(expr, at)
        assert len(result) == 1, f"{expr} at {at}: expected one sample, got {result}"
        return float(result[0]["value"][1])

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None


class MailInbox:
    """An aiosmtpd handler keeping every mail as (from, to, raw bytes); serve it with a Controller."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[str, list[str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.messages) >= count, f"expected {count} mails, got {len(self.messages)}"
        return self.messages
