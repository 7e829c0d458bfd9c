"""``make demo``: the receiver, the streaming pipeline, faults, alerts and notifications, for real.

One ``make demo`` run (a subprocess, with free ports and a temporary data directory) is shared by
the tests of this module: it streams files with the errors fault on every few seconds, and is
stopped with SIGINT once a notification has landed. A second, short run of the CLI on a
pseudo-terminal shows the in-place status line and a stop by Ctrl-C typed on that terminal.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from examples.demo_faults import FaultSchedule
from examples.demo_serve import StopSignals
from otel_audio import cli
from tests.external import require_external

ROOT = Path(__file__).resolve().parents[1]
VENV = sys.prefix  # the venv running the tests: make must not create or reinstall one
STATUS = re.compile(
    r"^\[\d\d:\d\d:\d\d\] files (\d+) \(\d+\.\d/s\), (\d+) failed \| .+ \| notifications (\d+) \| firing: .+$"
)
STARTUP_S = 60.0  # a loaded CI machine imports and opens the store slowly
ALERT_S = 45.0


@dataclass
class Output:
    """A process's output lines, read as they come by a thread (so the pipe never fills)."""

    lines: list[str] = field(default_factory=list)

    def follow(self, stream: Any) -> None:
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{self.text}")


@dataclass
class DemoRun:
    """What the shared ``make demo`` run showed before and after SIGINT."""

    api: str
    data_dir: Path
    notifications: list[dict[str, Any]]
    metrics: list[str]
    traces: list[dict[str, Any]]
    history: list[dict[str, Any]]
    make_status: int
    stdout: list[str]
    stderr: str


def _notifications(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _is_stage_errors(note: dict[str, Any]) -> bool:
    return note.get("status") == "firing" and note.get("groupLabels", {}).get("alertname") == "StageErrors"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    make = require_external("make", "apt-get install make")
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    demo_args = (
        f"--duration 120 --fault-every 4 --fault-length 3 --fault-kinds errors --rate 4 "
        f"--progress-every 1 --grpc-port 0 --http-port 0 --api-port 0 --data-dir {data_dir}"
    )
    command = [make, "--no-print-directory", "-o", f"{VENV}/.installed-stamp", "demo"]
    command += [f"VENV={VENV}", f"DEMO_ARGS={demo_args}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = Output(), Output()
    out.follow(process.stdout)
    err.follow(process.stderr)
    try:
        api = out.wait_for(r"^api: (http://127\.0\.0\.1:\d+)/api/v1 ", STARTUP_S).group(1)
        log = data_dir / "notifications.jsonl"
        deadline = time.monotonic() + ALERT_S
        while not any(_is_stage_errors(n) for n in _notifications(log)):
            assert time.monotonic() < deadline, (
                f"no firing notification in {log}; output:\n{out.text}\n{err.text}"
            )
            assert process.poll() is None, f"make demo ended early:\n{out.text}\n{err.text}"
            time.sleep(0.5)
        metrics = [m["name"] for m in requests.get(f"{api}/api/v1/metrics", timeout=30).json()["metrics"]]
        traces = requests.get(
            f"{api}/api/v1/traces", params={"service": "otel-audio-demo", "limit": 20}, timeout=30
        ).json()["traces"]
        history = requests.get(
            f"{api}/api/v1/alerts/history", params={"rule": "StageErrors"}, timeout=30
        ).json()["transitions"]
        demo = next(  # the Python process make started
            p for p in psutil.Process(process.pid).children(recursive=True) if "otel_audio.cli" in p.cmdline()
        )
        demo.send_signal(signal.SIGINT)  # what Ctrl-C delivers to it
        demo.wait(60)
        make_status = process.wait(30)  # make passes on the demo's status: 0 only if it exited 0
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait(10)
    time.sleep(0.3)  # the reader threads take the last lines
    yield DemoRun(
        api, data_dir, _notifications(log), metrics, traces, history, make_status,
        list(out.lines), err.text,
    )  # fmt: skip


def test_the_pipelines_telemetry_is_visible_through_the_api(demo_run: DemoRun) -> None:
    assert {"audio.stage.duration", "audio.pipeline.files", "audio.errors", "audio.quality.index"} <= set(
        demo_run.metrics
    )
    assert "process.memory.usage" in demo_run.metrics  # the memory-leak fault's rule reads it
    assert demo_run.traces, "no trace of otel-audio-demo"
    names = {span["name"] for trace in demo_run.traces for span in trace["spans"]}
    assert {"speech_enhancement", "load_audio", "enhancement", "validation", "output"} <= names


def test_an_injected_fault_fires_an_alert(demo_run: DemoRun) -> None:
    firing = [h for h in demo_run.history if h["state"] == "firing"]
    assert firing, demo_run.history
    assert all(h["labels"]["alertname"] == "StageErrors" for h in firing)
    started = demo_run.stdout.index(next(line for line in demo_run.stdout if "fault started: errors" in line))
    notified = next(i for i, line in enumerate(demo_run.stdout) if "] StageErrors ->" in line)
    assert started < notified, "StageErrors was notified before the errors fault started"


def test_the_notification_lands_in_the_log_in_webhook_v4_shape(demo_run: DemoRun) -> None:
    note = next(n for n in demo_run.notifications if _is_stage_errors(n))
    assert note["version"] == "4"
    assert note["receiver"] == "demo-log"
    assert note["groupLabels"] == {"alertname": "StageErrors", "service": "otel-audio-demo"}
    assert note["groupKey"] == '{}:{alertname="StageErrors", service="otel-audio-demo"}'
    assert note["externalURL"] == demo_run.api
    alert = note["alerts"][0]
    assert alert["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["labels"]["alertname"] == "StageErrors" and alert["labels"]["error.type"]
    assert alert["generatorURL"].startswith(demo_run.api)
    assert any(
        f"notification: [FIRING:{len(note['alerts'])}] StageErrors" in line for line in demo_run.stdout
    )


def test_sigint_stops_it_cleanly_with_status_0(demo_run: DemoRun) -> None:
    assert demo_run.make_status == 0, demo_run.stderr
    assert "make: ***" not in demo_run.stderr
    assert "Traceback" not in demo_run.stderr and "Traceback" not in "\n".join(demo_run.stdout)
    assert "SIGINT: stopping (again to force)" in demo_run.stdout
    stopped = next(line for line in demo_run.stdout if line.startswith("stopped; "))
    log = demo_run.data_dir / "notifications.jsonl"
    assert stopped == f"stopped; {len(demo_run.notifications)} notifications in {log}"


def test_the_start_says_where_everything_is(demo_run: DemoRun) -> None:
    text = "\n".join(demo_run.stdout)
    assert f"dashboard: {demo_run.api}/" in text
    assert re.search(
        r"^otlp: grpc http://127\.0\.0\.1:\d+, http http://127\.0\.0\.1:\d+ \(/v1/traces, ", text, re.M
    )
    assert f"notifications: {demo_run.data_dir / 'notifications.jsonl'} (Alertmanager webhook v4" in text
    assert f"data dir: {demo_run.data_dir}" in text
    assert "stop: stops after 120 s, or Ctrl-C (or SIGTERM)" in text


def test_progress_lines_appear_while_it_runs_when_not_on_a_terminal(demo_run: DemoRun) -> None:
    status = [STATUS.match(line) for line in demo_run.stdout]
    files = [int(m.group(1)) for m in status if m]
    assert len(files) >= 2, demo_run.stdout
    assert files == sorted(files) and files[-1] > files[0]
    assert not any("\r" in line or "\x1b[K" in line for line in demo_run.stdout)
    failed = [int(m.group(2)) for m in status if m]
    stopping = next(line for line in demo_run.stdout if line.startswith("stopping: "))
    end = re.match(r"stopping: (\d+) files processed \((\d+) failed\)$", stopping)
    assert end is not None and int(end.group(1)) >= files[-1]
    assert 1 <= int(end.group(2)) and failed == sorted(failed) and failed[-1] <= int(end.group(2))


def test_on_a_terminal_the_status_line_is_redrawn_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """The CLI on a pseudo-terminal it controls: ``\\r`` redraws; Ctrl-C there signals the whole
    process group (the receiver's flush worker too), and the demo still stops with status 0."""
    leader, follower = pty.openpty()
    command = [
        sys.executable,
        "-m",
        "otel_audio.cli",
        "demo",
        "--serve",
        "--fault-every",
        "0",
        "--duration",
        "60",
    ]
    command += [
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--api-port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdin=follower, stdout=follower, stderr=follower, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # the pty becomes its terminal
    )  # fmt: skip
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + STARTUP_S
        while seen.count(b"\rfiles ") < 3 and time.monotonic() < deadline and process.poll() is None:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        os.write(leader, b"\x03")  # Ctrl-C, as typed
        status = process.wait(60)
        while select.select([leader], [], [], 0.2)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(leader)
    text = seen.decode(errors="replace")
    assert status == 0, text
    assert text.count("\rfiles ") >= 3 and "\x1b[K" in text, text
    assert not re.search(r"^\[\d\d:\d\d:\d\d\] files ", text, re.M)  # no status as plain lines
    assert "SIGINT: stopping (again to force)" in text
    assert "Traceback" not in text and "BrokenProcessPool" not in text, text
    assert "stopped; 0 notifications in" in text


def test_sigterm_ends_the_loop_like_ctrl_c() -> None:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = StopSignals()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.event.wait(5) and stop.received == signal.SIGTERM
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_a_fault_schedule_takes_the_kinds_in_turn_after_a_quiet_start() -> None:
    schedule = FaultSchedule(("latency", "errors"), every_s=10, length_s=4)
    assert schedule.at(3) == (None, 7)  # the baseline first
    assert schedule.at(11) == ("latency", 3)
    assert schedule.at(15) == (None, 5)
    assert schedule.at(21) == ("errors", 3)
    assert schedule.at(31)[0] == "latency"
    assert schedule.next_kind(15) == "errors"
    assert FaultSchedule(("latency",), every_s=0, length_s=4).at(100) == (None, float("inf"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--fault-every", "5", "--fault-length", "5"],
            "a fault lasting 5 s must be shorter than its period, 5 s",
        ),
        (
            ["--fault-kinds", "latency,disk"],
            "unknown fault kind 'disk'; expected some of latency, quality, errors, memory",
        ),
    ],
)
def test_bad_fault_options_are_refused_before_anything_starts(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["demo", "--serve", "--data-dir", str(tmp_path / "data"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"otel-audio demo: {message}"
    assert not (tmp_path / "data").exists()
