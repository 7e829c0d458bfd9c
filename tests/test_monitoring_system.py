"""The seed's six system tests, end to end: a receiver started by the test, fed over OTLP and through
``ProductionMonitor`` in remote mode, asked through its HTTP API, with real channels on loopback
(a webhook server, an SMTP server). The data comes from :mod:`tests.monitoring_data`, which states
the expected outcome next to each stream, so every assertion compares the product with a fact of
the generated data.

Nothing here asserts on elapsed time: waits poll with a deadline and fail with what they saw.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pytest
import requests

from otel_audio.monitor import ProductionMonitor
from tests import monitoring_data as md
from tests.receiver_helpers import grpc_export_metrics

T = TypeVar("T")
SECOND = md.SECOND


# -- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture
def monitors() -> Iterator[list[ProductionMonitor]]:
    made: list[ProductionMonitor] = []
    yield made
    for monitor in made:
        monitor.close()


def _remote(receiver: Any, monitors: list[ProductionMonitor], **config: Any) -> ProductionMonitor:
    """A ProductionMonitor in remote mode: OTLP/HTTP to the receiver, questions to its API."""
    monitor = ProductionMonitor(
        config={
            "endpoint": f"http://127.0.0.1:{receiver.http_port}",
            "api": f"http://127.0.0.1:{receiver.api_port}",
            **config,
        }
    )
    monitors.append(monitor)
    return monitor


def _get(receiver: Any, path: str, **params: Any) -> Any:
    reply = requests.get(f"http://127.0.0.1:{receiver.api_port}{path}", params=params, timeout=30)
    assert reply.status_code == 200, f"GET {path} {params}: {reply.status_code} {reply.text}"
    return reply.json()


def _post(receiver: Any, path: str, body: Any) -> Any:
    reply = requests.post(f"http://127.0.0.1:{receiver.api_port}{path}", json=body, timeout=30)
    assert reply.status_code < 300, f"POST {path}: {reply.status_code} {reply.text}"
    return reply.json()


def _export(receiver: Any, request: Any) -> None:
    reply = grpc_export_metrics(receiver.grpc_port, request, timeout=30)
    assert not reply.partial_success.rejected_data_points, reply.partial_success.error_message


def _until(probe: Callable[[], T], what: str, timeout: float = 20.0) -> T:
    """``probe()`` once it is truthy; fails naming ``what`` and the last answer after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout} s for {what}; last: {got!r}")
        time.sleep(0.05)


def _series(answer: dict[str, Any], label: str = "service") -> dict[str, dict[float, float]]:
    """A query_range answer as {label value: {time s: value}}."""
    return {s["labels"].get(label, ""): {t: v for t, v in s["points"]} for s in answer["series"]}


def _query(receiver: Any, metric: str, start_ns: int, end_ns: int, step: str, agg: str, **extra: Any):
    params = {"metric": metric, "start": f"{start_ns / 1e9:.0f}", "end": f"{end_ns / 1e9:.0f}",
              "step": step, "agg": agg, **extra}  # fmt: skip
    return _get(receiver, "/api/v1/query_range", **params)


# -- 1. metric collection ----------------------------------------------------------------------------

COLLECT_STEP = 5 * SECOND


def test_metric_collection(start_receiver, monitors):
    """Every value of several services, sent through ProductionMonitor (OTLP/HTTP) and as OTLP
    requests (gRPC, with per-stage latency), reads back unchanged through the query API."""
    receiver = start_receiver()
    monitor = _remote(receiver, monitors)
    steps = 12
    t0 = (time.time_ns() // COLLECT_STEP - steps - 2) * COLLECT_STEP
    times = t0 + np.arange(steps, dtype=np.int64) * COLLECT_STEP
    data = md.simulated_metrics(times, seed=1)
    by_monitor, by_otlp = data.services[:2], data.services[2]
    for i in range(steps):
        for service in by_monitor:
            sent = monitor.collect_metrics(service, data.monitor_dict(service, i), timestamp=times[i] / 1e9)
            assert sent == len(md.MONITOR_METRICS)
    _export(receiver, data.request(by_otlp))
    for service in by_monitor:  # the stage latencies of the others, OTLP too
        _export(receiver, data.request(service, names=(md.STAGE_LATENCY,)))

    listed = {m["name"]: m for m in _get(receiver, "/api/v1/metrics")["metrics"]}
    assert set(md.MONITOR_METRICS) | {md.STAGE_LATENCY} <= set(listed)
    assert listed["latency"]["type"] == "gauge" and listed[md.STAGE_LATENCY]["series"] == 3 * len(md.STAGES)

    end = t0 + steps * COLLECT_STEP
    stamps = [t / 1e9 for t in times]
    for metric in md.MONITOR_METRICS:
        got = _series(_query(receiver, metric, t0, end, "5s", "avg", group_by="service"))
        want = {s: dict(zip(stamps, data.values[s][metric].tolist(), strict=True)) for s in data.services}
        assert got == want, metric

    answer = _query(receiver, md.STAGE_LATENCY, t0, end, "5s", "last", group_by="service,audio.stage")
    got = {
        (s["labels"]["service"], s["labels"]["audio.stage"]): [v for _, v in s["points"]]
        for s in answer["series"]
    }
    want = {
        (svc, stage): data.stage_ms[svc][k].tolist()
        for svc in data.services
        for k, stage in enumerate(md.STAGES)
    }
    assert got == want
    # the stages add up to the pipeline: `sum` adds each stage series' value per bucket
    summed = _series(_query(receiver, md.STAGE_LATENCY, t0, end, "5s", "sum", group_by="service"))
    for service in data.services:
        assert list(summed[service].values()) == pytest.approx(data.values[service]["latency"], abs=1e-6)

    # a receiver without the alerting processor: health still judges the services by their data,
    # those that reported a metric this monitor collected included (the OTLP one)
    health = monitor.check_health()
    assert (health.status, health.healthy_services, health.total_services) == ("healthy", 3, 3)
    assert sorted(health.services) == sorted(data.services)


# -- 2. alert generation -----------------------------------------------------------------------------


def test_alert_generation(start_receiver, hook, monitors):
    """Each scenario's rule makes exactly the transitions the scenario states, at the stated steps,
    with its severity; the one still firing at the end is the only active alert; the first firing
    notification of each reaches a real webhook as Alertmanager's payload."""
    damping = {"flap_starts": md.FLAP_STARTS, "flap_window": "15m", "flap_hold": "5m"}
    alerting = {"channels": {"hook": {"type": "webhook", "url": hook.url("/alerts")}}, "damping": damping}
    # No ticks during the test: every rule is judged on each step at that step's (event) time, as
    # the stream arrives, so a replay of past data gives the same answers as the live stream did.
    receiver = start_receiver(processors=[{"alerting": alerting}, "store"], tick_interval_s=3600)
    monitor = _remote(receiver, monitors)
    scenarios = md.alert_scenarios()
    assert len({s.name for s in scenarios}) == 6
    for s in scenarios:
        rule = s.rule
        monitor.add_alert_rule(
            rule["name"], rule["condition"], rule["severity"], for_=rule["for"],
            keep_firing_for=rule["keep_firing_for"],
        )  # fmt: skip
    steps = len(scenarios[0].values)
    t0 = (time.time_ns() // md.SCENARIO_STEP - steps - 1) * md.SCENARIO_STEP
    for _, request in md.scenario_requests(scenarios, t0):
        _export(receiver, request)

    transitions = _get(receiver, "/api/v1/alerts/history", limit=10_000)["transitions"][::-1]
    for s in scenarios:
        mine = [tr for tr in transitions if tr["rule"] == s.name and tr["state"] in ("firing", "resolved")]
        assert all((tr["at"] - t0) % md.SCENARIO_STEP == 0 for tr in mine), s.name
        got = tuple((tr["state"], (tr["at"] - t0) // md.SCENARIO_STEP) for tr in mine)
        assert got == s.expected, f"{s.name}: {s.why}"
        assert {(tr["labels"]["service"], tr["labels"]["severity"]) for tr in mine} == {
            (s.service, s.severity)
        }
    flapping = [tr for tr in transitions if tr["rule"] == "flapping_signal" and tr["state"] == "firing"]
    assert [tr["annotations"].get("flapping") for tr in flapping] == [None, None, "true"]

    still_firing = {s.name for s in scenarios if s.expected[-1][0] == "firing"}
    active = monitor.active_alerts()
    assert (
        {a["labels"]["alertname"] for a in active if a["state"] == "firing"}
        == still_firing
        == {"memory_leak"}
    )

    pages = hook.wait_for(len(scenarios), "/alerts")
    assert all(p.body["version"] == "4" and p.body["status"] == "firing" for p in pages)
    assert {p.body["commonLabels"]["alertname"] for p in pages} == {s.name for s in scenarios}
    by_name = {p.body["commonLabels"]["alertname"]: p.body["alerts"][0] for p in pages}
    assert by_name["latency_spike"]["labels"]["severity"] == "critical"
    assert by_name["latency_spike"]["startsAt"] == _rfc3339(t0 + 32 * md.SCENARIO_STEP)


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns // SECOND, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- 3. dashboard updates ----------------------------------------------------------------------------


class _Stream:
    """The dashboard's live stream over real HTTP, its ``points`` frames collected on a thread."""

    def __init__(self, receiver: Any, **params: str) -> None:
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.opened = threading.Event()
        self._response = requests.get(
            f"http://127.0.0.1:{receiver.api_port}/api/v1/stream", params=params, stream=True, timeout=30
        )
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response.iter_lines():
                if line == b"event: hello":
                    self.opened.set()
                elif line.startswith(b"data:") and b'"points"' in line:
                    self.frames.put(json.loads(line[5:]))
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test

    def next_frame(self, timeout: float = 20.0) -> dict[str, Any]:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no points frame on the stream within {timeout} s")

    def close(self) -> None:
        self._response.close()


def test_dashboard_updates(start_receiver, monitors):
    """Subscribed to the enhancer's latency and quality, the live stream pushes exactly the values
    collected, at the times collected, and nothing of other services or metrics; a burst of
    reports reaches it coalesced, ending at the newest value."""
    receiver = start_receiver()
    monitor = _remote(receiver, monitors)
    stream = _Stream(receiver, metrics="latency,quality_score", service="enhancer")
    try:
        assert stream.opened.wait(20)
        now = time.time_ns() // SECOND * SECOND
        data = md.simulated_metrics(now + np.arange(6, dtype=np.int64) * SECOND, seed=3)
        for service in data.services:
            monitor.collect_metrics(service, data.monitor_dict(service, 0), timestamp=now / 1e9)
        seen: dict[str, tuple[float, float]] = {}
        while len(seen) < 2:
            for p in stream.next_frame()["points"]:
                assert (p["service"], p["type"]) == ("enhancer", "gauge")
                seen[p["metric"]] = (p["t"], p["value"])
        assert seen == {
            "latency": (now / 1e9, data.values["enhancer"]["latency"][0]),
            "quality_score": (now / 1e9, data.values["enhancer"]["quality_score"][0]),
        }

        sent = []
        for i in range(1, 6):  # a burst of five reports
            report = data.monitor_dict("enhancer", i)
            monitor.collect_metrics("enhancer", report, timestamp=data.times_ns[i] / 1e9)
            sent.append(report["latency"])
        pushed: list[float] = []
        while not pushed or pushed[-1] != sent[-1]:
            pushed += [p["value"] for p in stream.next_frame()["points"] if p["metric"] == "latency"]
        assert pushed == [v for v in sent if v in pushed]  # in order, each one sent, the newest last
    finally:
        stream.close()


# -- 4. data aggregation -----------------------------------------------------------------------------


def test_data_aggregation(start_receiver):
    """Three weeks of history backfilled over OTLP, flushed to blocks: hourly and daily averages,
    maxima, counts, summed counters and percentiles equal numpy on the generated data. Averages,
    maxima, counts and increases at 1 h and 1 d steps come from the 1-hour rollups; percentiles of
    values need raw points and come from the raw blocks."""
    from otel_audio.store import tiers

    receiver = start_receiver(
        processors=["store"],
        storage__blocks__flush_interval_s=1,
        storage__blocks__flush_process=False,
        storage__blocks__retention={"raw": "30d", "1m": "30d", "1h": "90d"},
    )
    history = md.historical_data(weeks=3, seed=5)
    days = len(history.times_ns) * history.step_ns // md.DAY
    for request in history.requests_for(range(days)):
        _export(receiver, request)
    start, end = int(history.times_ns[0]), int(history.times_ns[-1]) + history.step_ns

    def flushed() -> bool:
        stats = receiver.store.stats()
        return stats["points"]["rows"] == 0 and stats["frozen_cuts"] == 0 and stats["blocks"]["files"] > 0

    _until(flushed, "the history to be written to blocks")
    root = receiver.store.root / "blocks"
    day_dirs = {p.name for p in (root / "1h").iterdir()}
    first_day = datetime.fromtimestamp(start // SECOND, UTC).date()
    assert {str(first_day.fromordinal(first_day.toordinal() + d)) for d in range(days)} <= day_dirs
    retention = {"raw": 30 * md.DAY, "1m": 30 * md.DAY, "1h": 90 * md.DAY}
    for step in (md.HOUR, md.DAY):
        assert tiers.choose_tier(start, end, step, time.time_ns(), retention).name == "1h"

    per_hour = md.HOUR // history.step_ns
    per_day = md.DAY // history.step_ns

    def buckets(values: np.ndarray, width: int, reduce: Callable[[np.ndarray], float]) -> dict[float, float]:
        out = {}
        for k, chunk in enumerate(values.reshape(-1, width)):
            if not np.isnan(chunk).all():
                out[(start + k * width * history.step_ns) / 1e9] = float(reduce(chunk[~np.isnan(chunk)]))
        return out

    def check(metric: str, step: str, width: int, agg: str, reduce, *, source=None, rel=1e-9, **extra):
        got = _series(_query(receiver, metric, start, end, step, agg, group_by="service", **extra))
        source = source or getattr(history, metric)
        want = {svc: buckets(source[svc], width, reduce) for svc in history.services}
        assert got.keys() == want.keys(), (metric, agg, step)
        for svc in want:
            assert got[svc].keys() == want[svc].keys(), (metric, agg, step, svc)
            assert list(got[svc].values()) == pytest.approx(list(want[svc].values()), rel=rel), (
                metric,
                agg,
                svc,
            )

    check("latency", "1h", per_hour, "avg", np.mean)
    check("latency", "1d", per_day, "max", np.max)
    check("pesq", "1d", per_day, "count", len)
    check("pesq", "1h", per_hour, "min", np.min)
    check("latency", "1d", per_day, "p95", lambda c: np.quantile(c, 0.95))
    check("latency", "1h", per_hour, "p50", np.median)

    # Files served: the counters' increase, per hour for each service and per day for all together
    served = {}
    for svc in history.services:
        increments = np.diff(history.requests_total(svc), prepend=0.0)
        served[svc] = np.where(history.up(svc), increments, np.nan)
    check("requests", "1h", per_hour, "increase", np.sum, source=served)
    total = _series(_query(receiver, "requests", start, end, "1d", "increase"), label="none")[""]
    want = np.nansum(np.stack([served[s].reshape(-1, per_day) for s in history.services]), axis=(0, 2))
    assert list(total.values()) == pytest.approx(want.tolist(), rel=1e-12)

    # Latency summed over the services: each service's newest value in the hour, added up
    summed = _series(_query(receiver, "latency", start, end, "1h", "sum"), label="none")[""]
    hours = np.stack([history.latency[s].reshape(-1, per_hour) for s in history.services])
    has = ~np.isnan(hours)
    last = per_hour - 1 - np.argmax(has[:, :, ::-1], axis=2)  # index of the newest point in each hour
    newest = np.take_along_axis(hours, last[..., None], axis=2)[..., 0]
    want_sum = np.where(has.any(axis=2), newest, 0.0).sum(axis=0)
    assert list(summed.values()) == pytest.approx(want_sum.tolist(), rel=1e-12)

    # The incidents are in the aggregates where the data module put them
    outage, regression, drop = history.incidents
    counts = _series(_query(receiver, "latency", start, end, "1h", "count", group_by="service"))
    missing = [t for t in np.arange(start, end, md.HOUR) / 1e9 if t not in counts[outage.service]]
    assert missing == list(np.arange(outage.start_ns, outage.end_ns, md.HOUR) / 1e9)
    hourly = _series(_query(receiver, "latency", start, end, "1h", "avg", group_by="service"))[
        regression.service
    ]
    inside = [t for t in hourly if regression.start_ns <= t * 1e9 < regression.end_ns]
    assert len(inside) == (regression.end_ns - regression.start_ns) // md.HOUR
    day_before = [hourly[t] / hourly[t - 86400] for t in inside]  # the same hours, a normal day
    assert day_before == pytest.approx([2.5] * len(inside), rel=0.1)
    quality = _series(_query(receiver, "pesq", drop.start_ns, drop.end_ns, "1h", "max", group_by="service"))
    assert max(quality[drop.service].values()) < md.PROFILES[drop.service].pesq - 0.9


# -- 5. alert escalation -----------------------------------------------------------------------------


def test_alert_escalation(start_receiver, hook, inbox, monitors):
    """A critical alert nobody acknowledges pages the webhook (level 1), then email (level 2); one
    acknowledged after its first page never reaches level 2; at resolution every target paged is
    told, and only those."""
    smtp_port, box = inbox
    channels = {
        "hook": {"type": "webhook", "url": hook.url("/page")},
        "mail": {"type": "email", "host": "127.0.0.1", "port": smtp_port, "starttls": False,
                 "from": "otel-audio@example.org", "to": ["oncall@example.org"]},
    }  # fmt: skip
    level_1_s = 3
    alerting = {
        "channels": channels,
        "receivers": {"nobody": []},  # the dispatcher's own notification goes nowhere: only pages count
        "route": {"receiver": "nobody", "group_by": ["alertname", "service"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "4h"},
        "escalation_policies": {"oncall": {"match": ['severity="critical"'], "levels": [
            {"targets": ["hook"], "timeout": f"{level_1_s}s"}, {"targets": ["mail"], "timeout": "1s"}]}},
    }  # fmt: skip
    receiver = start_receiver(processors=[{"alerting": alerting}, "store"])
    monitor = _remote(receiver, monitors)
    monitor.add_alert_rule("DecoderErrors", "errors > 0", "critical")
    for service in ("ignored-svc", "acked-svc"):
        monitor.collect_metrics(service, {"errors": 3})

    pages = hook.wait_for(2, "/page")
    assert {p.body["commonLabels"]["service"] for p in pages} == {"ignored-svc", "acked-svc"}
    incidents = {i["labels"]["service"]: i for i in _get(receiver, "/api/v1/incidents")["incidents"]}
    acked = _post(receiver, f"/api/v1/incidents/{incidents['acked-svc']['id']}/ack", {"by": "ana"})
    assert acked["status"] == "acknowledged"

    mail = box.wait_for(1, timeout=20)[0][2]
    assert b"ignored-svc" in mail and b"DecoderErrors" in mail

    def timeline(service: str) -> dict[str, Any]:
        return _get(receiver, f"/api/v1/incidents/{incidents[service]['id']}")

    ignored = timeline("ignored-svc")
    steps = [
        (e["kind"], e["details"].get("level"), e["details"].get("targets") or e["details"].get("channel"))
        for e in ignored["timeline"]
        if e["kind"] in ("escalated", "notified")
    ]
    assert steps == [("notified", None, "nobody"), ("escalated", 1, ["hook"]), ("notified", 1, "hook"),
                     ("escalated", 2, ["mail"]), ("notified", 2, "mail")]  # fmt: skip

    # the acknowledged one: wait past the time its level 2 was due, then it must not have come
    acked_view = timeline("acked-svc")
    paged_at = next(e["at_ns"] for e in acked_view["timeline"] if e["kind"] == "escalated")
    _until(lambda: time.time_ns() > paged_at + (level_1_s + 2) * SECOND, "level 2's due time to pass", 30)
    acked_view = timeline("acked-svc")
    assert acked_view["escalation"]["state"] == "acknowledged"
    assert [e["details"]["level"] for e in acked_view["timeline"] if e["kind"] == "escalated"] == [1]
    assert len(box.messages) == 1 and b"acked-svc" not in box.messages[0][2]

    for service in ("ignored-svc", "acked-svc"):
        monitor.collect_metrics(service, {"errors": 0})

    def resolutions() -> list[Any] | None:
        found = [p for p in hook.received("/page") if p.body["status"] == "resolved"]
        return found if len(found) >= 2 else None

    resolved = _until(resolutions, "both resolutions on the webhook")
    assert {p.body["commonLabels"]["service"] for p in resolved} == {"ignored-svc", "acked-svc"}
    mails = box.wait_for(2, timeout=20)
    assert b"RESOLVED" in mails[1][2].upper() and b"ignored-svc" in mails[1][2]
    assert all(b"acked-svc" not in m[2] for m in mails)


# -- 6. system integration ---------------------------------------------------------------------------

REPORT_INTERVAL_S = 0.25


class _Fleet:
    """Three services reporting every REPORT_INTERVAL_S in the state the test sets, through
    ProductionMonitor, and their prober's cumulative counters over OTLP; everything sent is kept."""

    def __init__(self, monitor: ProductionMonitor, receiver: Any, seed: int = 7) -> None:
        self.monitor, self.receiver = monitor, receiver
        self.state = {svc: md.SystemState.HEALTHY for svc in md.SERVICES}
        self.sent: list[tuple[int, str, dict[str, float]]] = []  # (time ns, service, metrics)
        self.probes = {svc: [0, 0] for svc in md.SERVICES}  # attempts, ok: running totals
        self.probe_points: list[tuple[int, str, int, int]] = []  # (time ns, service, attempts, ok)
        self.started_ns = time.time_ns()
        self._rng = np.random.default_rng(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def set(self, **states: md.SystemState) -> int:
        """Change states; returns the time of the change."""
        with self._lock:
            self.state.update(states)
            return time.time_ns()

    def sends_since(self, t_ns: int) -> int:
        with self._lock:
            return sum(1 for t, *_ in self.probe_points if t > t_ns)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.error is None, self.error

    def _run(self) -> None:
        try:
            while not self._stop.wait(REPORT_INTERVAL_S):
                self._step()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _step(self) -> None:
        with self._lock:
            states = dict(self.state)
        now = time.time_ns()
        counters = []
        for svc, state in states.items():
            report = md.service_report(svc, state, self._rng)
            if report.metrics is not None:
                self.monitor.collect_metrics(svc, report.metrics, timestamp=now / 1e9)
            totals = self.probes[svc]
            totals[0] += report.probes
            totals[1] += report.probes_ok
            counters += [
                md.cumulative_counter(name, self.started_ns, [(now, float(total))], {"service": svc})
                for name, total in (("probe.attempts", totals[0]), ("probe.success", totals[1]))
            ]
            with self._lock:
                if report.metrics is not None:
                    self.sent.append((now, svc, report.metrics))
                self.probe_points.append((now, svc, totals[0], totals[1]))
        _export(self.receiver, md.metrics_request("prober", counters))


def test_system_integration(start_receiver, hook, monitors):
    """healthy -> degraded -> down -> healthy: check_health follows each state, the error alert
    and the down alert fire and resolve with them, the dashboard data holds exactly what was
    collected (and nothing while down), and the month's SLA compliance is the probes' success
    ratio, the down interval included."""
    alerting = {"channels": {"hook": {"type": "webhook", "url": hook.url("/alerts")}}}
    receiver = start_receiver(processors=[{"slo": {"defaults": False}}, {"alerting": alerting}, "store"])
    monitor = _remote(receiver, monitors, collection_interval=REPORT_INTERVAL_S, stale_after=2.0)
    monitor.define_slo({"name": "enhancer-probes", "service": "enhancer", "objective": 0.99, "window": "1d",
                        "sli": {"ratio": {"good": "probe.success", "total": "probe.attempts"}}})  # fmt: skip
    fleet = _Fleet(monitor, receiver)
    fleet.start()
    try:
        _run_states(monitor, fleet, receiver)
    finally:
        fleet.stop()

    # dashboard data: every bucket is the mean of what was collected in it, none while down
    data = monitor.get_dashboard_data("last_5m", ["latency", "error_rate"])
    for name in ("latency", "error_rate"):
        panel = data[name]
        assert panel["metric"] == name and set(panel["series"]) == set(md.SERVICES)
        for svc, series in panel["series"].items():
            for t, value in zip(series["timestamps"], series["values"], strict=True):
                inside = [
                    m[name] for ts, s, m in fleet.sent if s == svc and t <= ts / 1e9 < t + panel["step"]
                ]
                assert inside and value == pytest.approx(float(np.mean(inside)), rel=1e-9), (name, svc, t)
    assert max(data["error_rate"]["series"]["enhancer"]["values"]) == pytest.approx(md.DEGRADED_ERROR_RATE)

    # SLA: the probes' success ratio over the month, counted as plain counter increments
    month = datetime.fromtimestamp(fleet.started_ns / 1e9, UTC).strftime("%Y-%m")
    points = [(a, ok) for _, svc, a, ok in fleet.probe_points if svc == "enhancer"]
    (a0, ok0), (a1, ok1) = points[0], points[-1]
    report = monitor.generate_sla_report(month=month)
    (slo,) = report.slos
    assert (slo["good"], slo["total"]) == (ok1 - ok0, a1 - a0)
    assert report.compliance == pytest.approx(100 * (ok1 - ok0) / (a1 - a0))
    assert report.compliance < 100 * 0.99 and report.met is False and slo["downtime_minutes"] >= 1
    assert any(i["matched_by"] == "service" for i in slo["incidents"])  # the down alert's incident


def _run_states(monitor: ProductionMonitor, fleet: _Fleet, receiver: Any) -> None:
    healthy, degraded, down = md.SystemState.HEALTHY, md.SystemState.DEGRADED, md.SystemState.DOWN
    n = len(md.SERVICES)

    def health_is(status: str, healthy_count: int):
        def probe():
            h = monitor.check_health()
            return (
                h if (h.status, h.healthy_services, h.total_services) == (status, healthy_count, n) else None
            )

        return probe

    def firing(name: str) -> list[dict[str, Any]]:
        return [
            a for a in monitor.active_alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"
        ]

    _until(health_is("healthy", n), "every service healthy")
    monitor.add_alert_rule("ServiceErrors", "error_rate > 0.05", "warning")
    monitor.add_alert_rule("EnhancerDown", 'absent(latency{service="enhancer"}, 3s)', "critical")
    assert not firing("ServiceErrors") and not firing("EnhancerDown")

    degraded_at = fleet.set(enhancer=degraded)
    # The alerting processor sees a batch before the store holds it, so one health check can find
    # the alert firing while the latest stored ratio is still the healthy one: wait for both.
    h = _until(
        lambda: (
            (h := health_is("degraded", n - 1)())
            and h.services["enhancer"].error_ratio == pytest.approx(md.DEGRADED_ERROR_RATE)
            and h
        ),
        "the enhancer degraded, with its error ratio",
    )
    assert h.services["enhancer"].status == "degraded"
    (alert,) = _until(lambda: firing("ServiceErrors"), "ServiceErrors firing")
    assert alert["labels"]["service"] == "enhancer"
    _until(
        lambda: "ServiceErrors" in monitor.check_health().services["enhancer"].firing_alerts,
        "health to see it",
    )
    # long enough (12 reports, 3 s) that a whole dashboard bucket (2 s) holds only degraded reports
    _until(lambda: fleet.sends_since(degraded_at) >= 12 * n, "twelve degraded reports")

    down_at = fleet.set(**dict.fromkeys(md.SERVICES, down))
    h = _until(health_is("down", 0), "every service down")
    assert all(s.status == "down" for s in h.services.values())
    (alert,) = _until(lambda: firing("EnhancerDown"), "EnhancerDown firing")
    assert alert["labels"] == {"alertname": "EnhancerDown", "service": "enhancer", "severity": "critical"}
    _until(lambda: fleet.sends_since(down_at) >= 8 * n, "probes failing while down")

    fleet.set(**dict.fromkeys(md.SERVICES, healthy))
    _until(health_is("healthy", n), "every service healthy again")
    assert not firing("ServiceErrors") and not firing("EnhancerDown")
    history = _get(receiver, "/api/v1/alerts/history", rule="EnhancerDown", since=f"{down_at / 1e9:.3f}")
    assert [t["state"] for t in history["transitions"][::-1]] == ["firing", "resolved"]
