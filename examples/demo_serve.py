"""``make demo``: a receiver, the example pipeline streaming through it, faults, alerts, notifications.

What runs, all in one process (``otel-audio demo --serve``):

- a receiver on the embedded store (:class:`otel_audio.receiver.service.Receiver`) with span
  metrics, derived audio metrics, SLOs, one alert rule per injected fault and a ``webhook``
  channel (Alertmanager webhook v4, the product's own) that every alert is routed to;
- the webhook's target (:mod:`examples.notification_log`): a small HTTP server on a free loopback
  port appending every notification as one JSON line to ``<data_dir>/notifications.jsonl``;
- the instrumented pipeline (:mod:`examples.enhance_pipeline`) exporting over OTLP to the
  receiver, a few files a second, with one fault at a time (:mod:`examples.demo_faults`);
- a progress display (:mod:`examples.demo_progress`).

Ctrl-C or SIGTERM stops it cleanly: the pipeline loop ends, telemetry is flushed, the receiver and
the log server stop, exit status 0. ``--duration`` stops it by itself (tests, CI); ``--once`` runs
the pipeline once over ``--files`` files, prints what the receiver holds and stops. Described for
users in ``docs/demo.md``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import otel_audio
from examples import demo, enhance_pipeline, speech
from examples.demo_faults import FAULT_RULES, FAULTS, FaultSchedule
from examples.demo_progress import Counts, Progress
from examples.enhance_pipeline import EnhancementPipeline, Faults
from examples.notification_log import NotificationLog
from otel_audio.processors.slo.spec import DEFAULT_SLOS

SERVICE = "otel-audio-demo"
CHANNEL = "demo-log"
NOTIFICATIONS_FILE = "notifications.jsonl"

# The default SLOs (docs/slo.md) fitted to a demo: availability as it is; latency on the
# enhancement stage alone (whole files take 0.1 s to over 1 s, as busy as the machine is, where the
# default asks 100 ms; the denoiser takes tens of milliseconds); quality on STOI (the noisy inputs
# never reach the default's PESQ 3.5). Throughput is left out: the demo paces itself, and its
# partial first minute would count as a bad one.
DEMO_SLOS: list[dict[str, Any]] = [
    *(slo for slo in DEFAULT_SLOS if slo["name"] == "availability"),
    {
        "name": "latency",
        "description": "Enhancement (the denoiser) in 400 ms or less.",
        "objective": 0.95,
        "window": "7d",
        "sli": {"histogram": {"metric": 'audio.stage.duration{audio.stage="enhancement"}', "le": 0.4}},
    },
    {
        "name": "quality",
        "description": "Scored files with STOI > 0.6 (validation spans' attributes).",
        "objective": 0.95,
        "window": "7d",
        "sli": {"spans": {"good": {"attributes": {"audio.quality.stoi": "> 0.6"}}}},
    },
]


def demo_processors(webhook_url: str, external_url: str) -> list[Any]:
    """The demo receiver's chain: what the dashboard shows, and every alert to the webhook.

    Alerts are grouped by rule and service; a group's first notification goes out one second
    after its first alert (Alertmanager waits 30 s), later changes every ten seconds.
    """
    return [
        "selfmon",
        {"spanmetrics": {"flush_interval_s": 5}},
        {"derived": {"window": "1m"}},
        {"slo": {"slos": DEMO_SLOS, "defaults": False}},
        {
            "alerting": {
                "external_url": external_url,
                "channels": {CHANNEL: {"type": "webhook", "url": webhook_url, "external_url": external_url}},
                "route": {
                    "receiver": CHANNEL,
                    "group_by": ["alertname", "service"],
                    "group_wait": "1s",
                    "group_interval": "10s",
                    "repeat_interval": "1h",
                    # an SLO's burn-rate alerts (one per window pair) as one notification
                    "routes": [{"matchers": ['alertname=~"SLOBurnRate:.*"'], "group_by": ["slo"]}],
                },
                "rules": FAULT_RULES,
            }
        },
        "store",
    ]


@dataclass(frozen=True)
class DemoSettings:
    """What ``otel-audio demo --serve`` was asked for (``otel_audio/cli.py`` parses it)."""

    data_dir: str = "./otel-audio-data"
    files: int = 20
    once: bool = False
    faults: bool = False
    output_dir: str | None = None
    seed: int = 0
    duration_s: float | None = None
    rate: float = 2.0
    fault_every_s: float = 120.0
    fault_length_s: float = 45.0
    fault_kinds: tuple[str, ...] = tuple(FAULTS)
    grpc_port: int = 4317
    http_port: int = 4318
    api_port: int = 8080
    progress_every_s: float = 10.0


def run(settings: DemoSettings, out: TextIO = sys.stdout) -> int:
    """Run the demo (see the module docstring); returns the exit status."""
    from otel_audio.receiver.service import Receiver

    schedule = FaultSchedule(settings.fault_kinds, settings.fault_every_s, settings.fault_length_s)
    data_dir = Path(settings.data_dir).resolve()
    stop = StopSignals() if not settings.once else None
    log = NotificationLog(data_dir / NOTIFICATIONS_FILE).start()
    receiver: Receiver | None = None
    try:
        receiver = _start_receiver(settings, data_dir, log.url, out)
        api = f"http://{receiver.config.server.host}:{receiver.api_port}"
        _banner(receiver, api, log, data_dir, schedule, settings, out)
        endpoint = f"http://127.0.0.1:{receiver.grpc_port}"
        if settings.once:
            demo.run_demo(
                settings.files,
                endpoint=endpoint,
                faults=settings.faults,
                output_dir=settings.output_dir,
                seed=settings.seed,
                out=out,
                shutdown=False,
            )
            print(demo.receiver_summary(api), file=out, flush=True)
        elif stop is not None and not stop.event.is_set():
            _stream(settings, schedule, endpoint, receiver, log, stop, out)
            _summary(api, out)
    finally:
        # configure() is idempotent: this is the demo's telemetry, shut down before its receiver.
        otel_audio.configure().shutdown()
        if receiver is not None:
            receiver.stop()
        log.stop()
    for payload in log.take_new():  # those that landed after the stream ended
        print(f"notification: {_describe(payload)} -> {log.path.name}", file=out)
    print(f"stopped; {log.count()} notifications in {log.path}", file=out, flush=True)
    return 0


def _start_receiver(settings: DemoSettings, data_dir: Path, webhook_url: str, out: TextIO) -> Any:
    """The receiver on the asked ports (0: a free one), or on free ones when those are taken."""
    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    ports = (settings.grpc_port, settings.http_port, settings.api_port)
    for attempt in range(2):
        grpc_port, http_port, api_port = (port or _free_port() for port in ports)
        processors = demo_processors(webhook_url, f"http://127.0.0.1:{api_port}")
        receiver = Receiver(
            load_config(
                None,
                storage__data_dir=str(data_dir),
                server__grpc_port=grpc_port,
                server__http_port=http_port,
                server__api_port=api_port,
                processors=processors,
            )
        )
        try:
            receiver.start()
            return receiver
        except OSError as exc:  # the default ports are taken, e.g. by another receiver
            if attempt:
                raise
            print(f"note: ports {ports} unavailable ({exc}); using free ports", file=out, flush=True)
            ports = (0, 0, 0)
    raise AssertionError("unreachable")


def _free_port() -> int:
    """A port free on loopback now, so the alert links can name the API port before it listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _banner(
    receiver: Any, api: str, log: NotificationLog, data_dir: Path, schedule: FaultSchedule,
    settings: DemoSettings, out: TextIO,
) -> None:  # fmt: skip
    host = receiver.config.server.host
    if schedule.every_s and not settings.once:
        faults = (
            f"{', '.join(schedule.kinds)} in turn, one every {schedule.every_s:g} s "
            f"for {schedule.length_s:g} s (the first at {schedule.every_s:g} s)"
        )
    else:
        faults = "mixed into the run" if settings.faults else "none"
    lines = [
        f"receiver started: OTLP gRPC :{receiver.grpc_port}, OTLP HTTP :{receiver.http_port}, API {api}",
        f"dashboard: {api}/",
        f"api: {api}/api/v1 (try {api}/api/v1/metrics, {api}/api/v1/alerts)",
        f"otlp: grpc http://{host}:{receiver.grpc_port}, "
        f"http http://{host}:{receiver.http_port} (/v1/traces, /v1/metrics, /v1/logs)",
        f"notifications: {log.path} (Alertmanager webhook v4, one JSON line each, received at {log.url})",
        f"data dir: {data_dir}",
        f"faults: {faults}",
    ]
    if not settings.once:
        stop = f"stops after {settings.duration_s:g} s, or " if settings.duration_s else ""
        lines.append(f"stop: {stop}Ctrl-C (or SIGTERM)")
    print("\n".join(lines), file=out, flush=True)


def _stream(
    settings: DemoSettings, schedule: FaultSchedule, endpoint: str, receiver: Any, log: NotificationLog,
    stop: StopSignals, out: TextIO,
) -> None:  # fmt: skip
    """The pipeline, file after file at ``settings.rate``, until stopped."""
    inputs = _Inputs(settings.seed)  # generated before the process's memory is measured
    otel_audio.configure(
        SERVICE, endpoint=endpoint, logs=False, signal_metrics=True, signal_sample_ratio=0.25,
        system_metrics=True,
    )  # fmt: skip
    progress = Progress(out, every_s=settings.progress_every_s)
    pipeline = EnhancementPipeline(seed=settings.seed)
    counts = Counts()
    started = time.monotonic()
    deadline = started + settings.duration_s if settings.duration_s else float("inf")
    i = 0
    next_at = started
    while not stop.event.is_set() and time.monotonic() < deadline:
        elapsed = time.monotonic() - started
        fault, counts.change_in_s = schedule.at(elapsed)
        if fault != counts.fault:
            _switch(pipeline, counts.fault, fault, schedule, progress)
            counts.fault = fault
        counts.next_fault = schedule.next_kind(elapsed)
        noisy, clean, audio_id = inputs.file(i)
        try:
            pipeline.process(noisy, audio_id=audio_id, reference=clean)
        except Exception:  # recorded on its spans and in audio.errors; the stream goes on
            counts.failed += 1
        i += 1
        counts.files = i
        for payload in log.take_new():
            progress.event(f"notification: {_describe(payload)} -> {log.path.name}")
        counts.notifications = log.count()
        counts.firing = _firing(receiver)
        progress.status(counts)
        next_at += 1.0 / settings.rate
        late = int((time.monotonic() - next_at) * settings.rate)  # files behind the schedule
        otel_audio.record_queue_size(max(late, 0), pipeline=pipeline.name)
        next_at = max(next_at, time.monotonic() - 1.0)  # after a stall, catch up one second at most
        stop.event.wait(max(0.0, min(next_at, deadline) - time.monotonic()))
    progress.end()
    if stop.received is not None:
        print(f"{signal.Signals(stop.received).name}: stopping (again to force)", file=out, flush=True)
    if counts.fault == "memory":
        enhance_pipeline.release_leaked()
    print(f"stopping: {counts.files} files processed ({counts.failed} failed)", file=out, flush=True)
    otel_audio.configure().force_flush(timeout_millis=5_000)


def _summary(api: str, out: TextIO) -> None:
    """What the receiver holds, from its API; a note instead if it does not answer in time."""
    import requests

    try:
        print(demo.receiver_summary(api), file=out, flush=True)
    except (requests.RequestException, ValueError, KeyError) as exc:
        print(f"note: no summary from {api}: {exc}", file=out, flush=True)


def _switch(
    pipeline: EnhancementPipeline,
    old: str | None,
    new: str | None,
    schedule: FaultSchedule,
    progress: Progress,
) -> None:
    if old == "memory":
        freed = enhance_pipeline.release_leaked()
        progress.event(f"fault ended: memory (the leaking cache is dropped, {freed / 2**20:.0f} MiB freed)")
    elif old is not None:
        progress.event(f"fault ended: {old}")
    pipeline.faults = FAULTS[new][0] if new else Faults()
    if new is not None:
        progress.event(f"fault started: {FAULTS[new][1]}, for {schedule.length_s:g} s")


def _describe(payload: dict[str, Any]) -> str:
    """``[FIRING:2] StageErrors``, as Alertmanager titles a notification."""
    alerts = payload.get("alerts") or []
    group = payload.get("groupLabels") or {}
    name = group.get("alertname") or ", ".join(f"{k}={v}" for k, v in sorted(group.items())) or "?"
    return f"[{str(payload.get('status', '?')).upper()}:{len(alerts)}] {name}"


def _firing(receiver: Any) -> tuple[str, ...]:
    alerting = receiver.alerting
    if alerting is None:
        return ()
    return tuple(sorted({a.name for a in alerting.active_alerts() if a.state.value == "firing"}))


class StopSignals:
    """SIGINT and SIGTERM end the pipeline loop; a second one while stopping exits at once.

    The handler only records the signal: printing from a signal handler can interrupt a write to
    the same stream and fail, so the loop says why it stopped.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: int | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set():
            os.write(2, f"{signal.Signals(signum).name} again: exiting now\n".encode())
            os._exit(128 + signum)
        self.received = signum
        self.event.set()


class _Inputs:
    """Noisy speech files for the stream: a small pool of generated files, reused under new ids."""

    POOL = 8

    def __init__(self, seed: int, noises: Sequence[str] = ("white", "pink")) -> None:
        self.seed = seed
        rng = np.random.default_rng(seed)
        self._pool: list[tuple[np.ndarray, np.ndarray]] = []
        for k in range(self.POOL):
            clean = speech.speech(3.0, seed=seed * 100_003 + k)
            noise = speech.noise(noises[k % len(noises)], clean.size, seed=seed * 100_003 + k + 50_000)
            self._pool.append((speech.mix_at_snr(clean, noise, float(rng.uniform(0.0, 10.0))), clean))

    def file(self, i: int) -> tuple[np.ndarray, np.ndarray, str]:
        """File ``i``: (noisy, clean, audio id)."""
        noisy, clean = self._pool[i % self.POOL]
        return noisy, clean, f"stream-{self.seed}-{i:06d}"
