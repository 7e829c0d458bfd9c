"""Test data for the monitoring system tests: the seed's four kinds, generated, never recorded.

Every generator takes a ``seed`` and draws from its own ``numpy.random.default_rng(seed)``, so a
failing test reproduces bit for bit, and returns the ground truth next to the data (what a rule
must do, where the incidents are), so a test compares the product with a fact of the data and not
with a number copied from an earlier run.

- :func:`simulated_metrics`: what audio-enhancement services report at one moment, per service
  and stage: latency, quality (PESQ, STOI, SNR), throughput, error rate, CPU and memory; as
  :meth:`ProductionMonitor.collect_metrics <otel_audio.monitor.ProductionMonitor.collect_metrics>`
  dicts and as OTLP requests.
- :func:`alert_scenarios`: named metric streams with the rule that should catch them (a condition
  in the rule language, ``docs/alerting-rules.md``) and the transitions it must make, at which
  point: latency spike, quality drop, error burst, slow memory leak, flapping signal, absent data.
- :func:`historical_data`: weeks of a few services at a fixed step with daily and weekly
  seasonality, noise, a trend, and injected incidents (outage, latency regression, quality drop)
  whose intervals are returned alongside.
- :class:`SystemState` and :func:`service_report`: what "healthy", "degraded" and "down" mean for
  the numbers a service reports (down: nothing at all; its prober sees only failures).

Times are integer nanoseconds since the Unix epoch, as in OTLP.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY

SERVICES = ("denoiser", "dereverb", "enhancer")
STAGES = ("decode", "denoise", "enhance", "encode")
ExportRequest = metrics_service_pb2.ExportMetricsServiceRequest


# -- simulated metrics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceProfile:
    """A service's normal operating point, around which its reports vary.

    The stage shares split the pipeline latency the way enhancement pipelines spend it (the model
    stages dominate, decoding and encoding are cheap), so per-stage series differ in scale.
    """

    latency_ms: float  # whole pipeline, per file
    stage_share: tuple[float, ...]  # of latency_ms, one per STAGES entry, summing to 1
    pesq: float  # 1 (bad) .. 4.5 (transparent)
    stoi: float  # 0 .. 1 intelligibility
    snr_db: float
    throughput: float  # files per minute
    error_rate: float  # failed files / files
    cpu_usage: float  # percent
    memory_usage: float  # percent


PROFILES: dict[str, ServiceProfile] = {
    "denoiser": ServiceProfile(38.0, (0.1, 0.6, 0.2, 0.1), 3.6, 0.91, 18.0, 140.0, 0.002, 55.0, 61.0),
    "dereverb": ServiceProfile(52.0, (0.1, 0.2, 0.6, 0.1), 3.3, 0.88, 15.0, 95.0, 0.004, 68.0, 70.0),
    "enhancer": ServiceProfile(45.2, (0.1, 0.4, 0.4, 0.1), 4.1, 0.93, 21.0, 120.0, 0.002, 65.3, 72.1),
}
MONITOR_METRICS = ("latency", "quality_score", "pesq", "stoi", "snr", "throughput", "error_rate",
                   "cpu_usage", "memory_usage")  # fmt: skip
STAGE_LATENCY = "audio.stage.latency"  # gauge, milliseconds, with the attribute audio.stage


@dataclass(frozen=True)
class SimulatedMetrics:
    """Reports of ``services`` at ``times_ns``: ``values[service][metric]`` and ``stage_ms[service]``
    (stages x times) are arrays with one entry per time."""

    times_ns: np.ndarray
    values: dict[str, dict[str, np.ndarray]]
    stage_ms: dict[str, np.ndarray]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.values)

    def monitor_dict(self, service: str, i: int) -> dict[str, float]:
        """Report ``i`` of ``service`` as ``collect_metrics`` takes it (the seed's metric names)."""
        return {name: float(series[i]) for name, series in self.values[service].items()}

    def request(
        self, service: str, indices: range | list[int] | None = None, names: tuple[str, ...] | None = None
    ) -> ExportRequest:
        """Reports of ``service`` (all, or ``indices``) as one OTLP request: the seed's metrics as
        gauges and the per-stage latency as ``audio.stage.latency{audio.stage=...}``; only the
        metrics ``names`` when given."""
        picked = range(len(self.times_ns)) if indices is None else indices
        metrics = [
            gauge(name, [(int(self.times_ns[i]), float(series[i]), {}) for i in picked])
            for name, series in self.values[service].items()
            if names is None or name in names
        ]
        if names is None or STAGE_LATENCY in names:
            stage_points = [
                (int(self.times_ns[i]), float(self.stage_ms[service][s, i]), {"audio.stage": stage})
                for s, stage in enumerate(STAGES)
                for i in picked
            ]
            metrics.append(gauge(STAGE_LATENCY, stage_points, unit="ms"))
        return metrics_request(service, metrics)


def simulated_metrics(
    times_ns: np.ndarray | list[int], services: tuple[str, ...] = SERVICES, seed: int = 0
) -> SimulatedMetrics:
    """Reports of each service at each time, scattered around its :data:`PROFILES` entry.

    Latency is log-normal (a long right tail, as request latencies have) and equals the sum of the
    stage latencies, so a per-stage query adds up to the pipeline's. PESQ and STOI are clipped to
    their scales, and ``quality_score`` is PESQ, the seed's name for it. Values are rounded to 3
    decimals, as a sender formatting milliseconds would, so that equality checks are exact.
    """
    rng = np.random.default_rng(seed)
    times = np.asarray(times_ns, dtype=np.int64)
    n = len(times)
    values: dict[str, dict[str, np.ndarray]] = {}
    stages: dict[str, np.ndarray] = {}
    for service in services:
        p = PROFILES[service]
        share = np.asarray(p.stage_share)[:, None]
        stage_ms = np.round(p.latency_ms * share * rng.lognormal(0.0, 0.15, (len(STAGES), n)), 3)
        pesq = np.round(np.clip(rng.normal(p.pesq, 0.08, n), 1.0, 4.5), 3)
        values[service] = {
            "latency": np.round(stage_ms.sum(axis=0), 3),
            "quality_score": pesq,
            "pesq": pesq,
            "stoi": np.round(np.clip(rng.normal(p.stoi, 0.01, n), 0.0, 1.0), 3),
            "snr": np.round(rng.normal(p.snr_db, 0.5, n), 3),
            "throughput": np.round(rng.normal(p.throughput, p.throughput * 0.05, n), 3),
            "error_rate": np.round(np.abs(rng.normal(p.error_rate, p.error_rate / 4, n)), 5),
            "cpu_usage": np.round(np.clip(rng.normal(p.cpu_usage, 2.0, n), 0, 100), 3),
            "memory_usage": np.round(np.clip(rng.normal(p.memory_usage, 0.5, n), 0, 100), 3),
        }
        stages[service] = stage_ms
    return SimulatedMetrics(times, values, stages)


# -- alert scenarios -------------------------------------------------------------------------------

SCENARIO_STEP = 10 * SECOND
# The damping the scenarios assume: the receiver's documented defaults (docs/alerting.md).
FLAP_STARTS, FLAP_WINDOW, FLAP_HOLD = 3, 15 * MINUTE, 5 * MINUTE


@dataclass(frozen=True)
class AlertScenario:
    """One metric stream and what its rule must do with it.

    ``values[i]`` is reported at step ``i`` (``SCENARIO_STEP`` apart) unless ``present[i]`` is
    False. ``expected`` lists the rule's transitions to ``firing`` and ``resolved`` as
    ``(state, step index)``: what a rule evaluated on every step must record, by the documented
    semantics of ``for``, ``keep_firing_for``, windows and flap damping.
    """

    name: str  # the rule's name
    service: str  # the stream's own service, so no other scenario's series can match its rule
    metric: str
    values: np.ndarray
    present: np.ndarray  # bool per step
    condition: str
    severity: str
    for_: str
    keep_firing_for: str
    expected: tuple[tuple[str, int], ...]
    why: str

    @property
    def rule(self) -> dict[str, str]:
        """The rule as ``POST /api/v1/rules`` and ``ProductionMonitor.add_alert_rule`` take it."""
        return {"name": self.name, "condition": self.condition, "severity": self.severity,
                "for": self.for_, "keep_firing_for": self.keep_firing_for}  # fmt: skip


def _holds_at(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in ``mask`` as (first, end) index pairs, end exclusive."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _window_mean(values: np.ndarray, points: int) -> np.ndarray:
    """Mean of the last ``points`` values at each index (fewer at the start), as ``avg(x, w)``
    reads a window of ``points`` steps: ``now - w < t <= now``."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo = np.maximum(0, idx + 1 - points)
    return (csum[idx + 1] - csum[lo]) / (idx + 1 - lo)


def alert_scenarios(steps: int = 120, seed: int = 0) -> list[AlertScenario]:
    """The six scenarios, ``steps`` points each (at least 120: the flapping one needs its 5-minute
    hold to run out inside the stream). Each scenario's shape is chosen so its expected outcome
    follows from the data by construction (noise never crosses a threshold by accident)."""
    if steps < 120:
        raise ValueError(f"steps: at least 120 are needed for the flapping scenario, got {steps}")
    rng = np.random.default_rng(seed)
    n = steps
    every = np.ones(n, dtype=bool)
    out = []

    # Latency spike: 45 ms +- 3 jumps to ~300 ms for 10 steps. A `for` of 20 s (two steps) keeps a
    # single slow file from paging: pending at the first spike point, firing two steps later.
    latency = 45.0 + rng.uniform(-3, 3, n)
    latency[30:40] = 300.0 + rng.uniform(-20, 20, 10)
    out.append(AlertScenario(
        "latency_spike", "scn-latency", "latency", np.round(latency, 3), every,
        'latency{service="scn-latency"} > 200', "critical", "20s", "0s",
        (("firing", 32), ("resolved", 40)),
        "a sustained spike pages after its `for`; it resolves at the first normal point",
    ))  # fmt: skip

    # Quality drop: PESQ 3.8 falls to 2.4 from step 40 to 69. The rule averages a minute (six
    # points), so it fires once the window's mean is below 3.0 and resolves once it recovers.
    pesq = 3.8 + rng.uniform(-0.05, 0.05, n)
    pesq[40:70] = 2.4 + rng.uniform(-0.05, 0.05, 30)
    pesq = np.round(pesq, 3)
    (first, end), *_ = _holds_at(_window_mean(pesq, 6) < 3.0)
    out.append(AlertScenario(
        "quality_drop", "scn-quality", "pesq", pesq, every,
        'avg(pesq{service="scn-quality"}, 1m) < 3.0', "warning", "0s", "0s",
        (("firing", first), ("resolved", end)),
        "a windowed average ignores one bad file but follows a lasting drop, with a lag both ways",
    ))  # fmt: skip

    # Error burst: 0.2% errors, 20% for six steps. keep_firing_for 1m holds the alert through
    # the minute after the burst, so a burst that pauses briefly does not page twice.
    errors = np.abs(0.002 + rng.uniform(-0.001, 0.001, n))
    errors[20:26] = 0.2 + rng.uniform(-0.02, 0.02, 6)
    out.append(AlertScenario(
        "error_burst", "scn-errors", "error_rate", np.round(errors, 5), every,
        'error_rate{service="scn-errors"} > 0.05', "critical", "0s", "1m",
        (("firing", 20), ("resolved", 31)),
        "fires on the first bad point; resolves keep_firing_for (six steps) after the last one",
    ))  # fmt: skip

    # Slow memory leak: memory holds at 50% and from step 20 grows 0.5 points a step, with noise
    # smaller than the slope so the series is monotonic and crosses 75% exactly once. A `for` of
    # 1m asks for six steps above: a leak is slow, one high reading is not news.
    memory = np.full(n, 50.0)
    memory[20:] += 0.5 * np.arange(1, n - 19)
    memory += rng.uniform(-0.2, 0.2, n)
    memory = np.round(memory, 3)
    cross = int(np.flatnonzero(memory > 75.0)[0])
    out.append(AlertScenario(
        "memory_leak", "scn-memory", "memory_usage", memory, every,
        'memory_usage{service="scn-memory"} > 75', "warning", "1m", "0s",
        (("firing", cross + 6),),
        "a monotonic leak fires six steps after crossing and is still firing at the end",
    ))  # fmt: skip

    # Flapping: a value hovering at 100, alternately 5 above and below, from step 30 to 59, then
    # settling at 90. The rule starts firing at 30, 32 and 34; the third start within 15 minutes
    # marks it flapping, so it keeps firing until 5 minutes (30 steps) after it last held (58).
    flap = np.full(n, 90.0) + rng.uniform(-1, 1, n)
    hover = np.arange(30, 60)
    flap[hover] = np.where(hover % 2 == 0, 105.0, 95.0) + rng.uniform(-1, 1, len(hover))
    flap = np.round(flap, 3)
    last_held = int(np.flatnonzero(flap > 100)[-1])
    hold = FLAP_HOLD // SCENARIO_STEP
    out.append(AlertScenario(
        "flapping_signal", "scn-flapping", "queue_depth", flap, every,
        'queue_depth{service="scn-flapping"} > 100', "warning", "0s", "0s",
        (("firing", 30), ("resolved", 31), ("firing", 32), ("resolved", 33), ("firing", 34),
         ("resolved", last_held + hold)),
        "flap damping turns a value hovering at the threshold into one long alert",
    ))  # fmt: skip

    # Absent data: the heartbeat stops from step 40 to 59. absent(..., 1m) holds once a whole
    # minute (steps i-5..i) has no point: from 45 until the heartbeat is back at 60. A second
    # service keeps sending the metric, so every step still evaluates the rule.
    present = np.ones(n, dtype=bool)
    present[40:60] = False
    out.append(AlertScenario(
        "absent_data", "scn-heartbeat", "heartbeat", np.ones(n), present,
        'absent(heartbeat{service="scn-heartbeat"}, 1m)', "critical", "0s", "0s",
        (("firing", 45), ("resolved", 60)),
        "silence is an alert too: a service that stops reporting is noticed a window later",
    ))  # fmt: skip
    return out


SCENARIO_CANARY = "scn-canary"  # always reports every scenario metric, so each step touches all


def scenario_requests(scenarios: list[AlertScenario], t0_ns: int) -> Iterator[tuple[int, ExportRequest]]:
    """``(step index, OTLP request)`` per step: every scenario's point at ``t0 + i * step`` (those
    present), and the canary's, in one request, so every rule is evaluated once per step."""
    n = len(scenarios[0].values)
    metrics = sorted({s.metric for s in scenarios})
    for i in range(n):
        t = t0_ns + i * SCENARIO_STEP
        resources = [
            (s.service, [gauge(s.metric, [(t, float(s.values[i]), {})])]) for s in scenarios if s.present[i]
        ]
        resources.append((SCENARIO_CANARY, [gauge(m, [(t, 0.0, {})]) for m in metrics]))
        yield i, multi_request(resources)


# -- historical data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incident:
    """An injected incident and its ground-truth interval ``[start_ns, end_ns)``."""

    kind: str  # "outage" | "latency_regression" | "quality_drop"
    service: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class History:
    """Weeks of reports: per service, ``latency`` (ms) and ``pesq`` gauges and ``requests`` (files
    served per step) at ``times_ns``; NaN (latency, pesq) and 0 (requests) while down. The
    ``requests`` counter as sent is its running total (:meth:`requests_total`)."""

    times_ns: np.ndarray
    step_ns: int
    latency: dict[str, np.ndarray]
    pesq: dict[str, np.ndarray]
    requests: dict[str, np.ndarray]
    incidents: tuple[Incident, ...]
    baseline_latency: dict[str, np.ndarray] = field(repr=False)  # before incidents, for checks

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.latency)

    def up(self, service: str) -> np.ndarray:
        """Whether the service reported at each step (False inside its outages)."""
        return ~np.isnan(self.latency[service])

    def requests_total(self, service: str) -> np.ndarray:
        """The cumulative counter as the service sends it: 0 at the first step (it starts there)."""
        return np.cumsum(self.requests[service]) - self.requests[service][0]

    def requests_for(self, days: range | list[int]) -> Iterator[ExportRequest]:
        """One OTLP request per day index: every service's three series for that day."""
        per_day = DAY // self.step_ns
        for day in days:
            picked = range(day * per_day, min((day + 1) * per_day, len(self.times_ns)))
            resources = []
            for svc in self.services:
                up = [i for i in picked if self.up(svc)[i]]
                if not up:
                    continue
                t = self.times_ns
                total = self.requests_total(svc)
                resources.append((svc, [
                    gauge("latency", [(int(t[i]), float(self.latency[svc][i]), {}) for i in up], unit="ms"),
                    gauge("pesq", [(int(t[i]), float(self.pesq[svc][i]), {}) for i in up]),
                    cumulative_counter("requests", int(t[0]), [(int(t[i]), float(total[i])) for i in up]),
                ]))  # fmt: skip
            if resources:
                yield multi_request(resources)


def historical_data(
    weeks: int = 3,
    step_ns: int = 5 * MINUTE,
    end_ns: int | None = None,
    services: tuple[str, ...] = ("denoiser", "enhancer"),
    seed: int = 0,
) -> History:
    """``weeks`` of reports ending at ``end_ns`` (default: the last UTC midnight), one per step.

    Shape, and why:

    - **traffic** (files per step) follows the day, peaking at 14:00 UTC and lowest at 02:00
      (a sine of the hour), and the week: Saturday and Sunday at 60%; it grows 5% a week (a
      trend) and is Poisson, as counts of independent arrivals are;
    - **latency** rises with load (queueing: +30% at the daily peak) on a log-normal spread;
    - **PESQ** is steady with small Gaussian noise: quality does not follow traffic;
    - **incidents**, ground truth returned: a 3-hour outage of the first service in week 1
      (no reports at all, no requests served), a 6-hour latency regression (x2.5) of the last
      service in the second week, a 4-hour quality drop (PESQ -1.2) of the first service in the
      last week. They start on the hour, so hourly buckets hold them whole.
    """
    if weeks < 2:
        raise ValueError(f"weeks: at least 2 (incidents go in different weeks), got {weeks}")
    if DAY % step_ns:
        raise ValueError(f"step_ns: must divide a day, got {step_ns}")
    rng = np.random.default_rng(seed)
    if end_ns is None:
        end_ns = time.time_ns() // DAY * DAY
    start = end_ns - weeks * WEEK
    times = np.arange(start, end_ns, step_ns, dtype=np.int64)
    hours = (times % DAY) / HOUR
    daily = 1.0 + 0.5 * np.sin((hours - 8.0) / 24.0 * 2 * np.pi)  # peak at 14:00, low at 02:00
    weekday = ((times // DAY) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weekly = np.where(weekday >= 5, 0.6, 1.0)
    trend = 1.0 + 0.05 * (times - start) / WEEK
    load = daily * weekly * trend
    incidents = (
        Incident("outage", services[0], start + 3 * DAY + 10 * HOUR, start + 3 * DAY + 13 * HOUR),
        Incident("latency_regression", services[-1], start + WEEK + 2 * DAY + 9 * HOUR,
                 start + WEEK + 2 * DAY + 15 * HOUR),
        Incident("quality_drop", services[0], end_ns - 4 * DAY + 6 * HOUR, end_ns - 4 * DAY + 10 * HOUR),
    )  # fmt: skip
    latency, pesq, requests, baseline = {}, {}, {}, {}
    for k, svc in enumerate(services):
        p = PROFILES[svc]
        base = p.latency_ms * (1.0 + 0.3 * (daily - 0.5)) * rng.lognormal(0.0, 0.1, len(times))
        lat, q = base.copy(), rng.normal(p.pesq, 0.05, len(times))
        req = rng.poisson(p.throughput * (step_ns / MINUTE) * load * (1.0 + 0.1 * k)).astype(float)
        for inc in incidents:
            if inc.service != svc:
                continue
            inside = (times >= inc.start_ns) & (times < inc.end_ns)
            if inc.kind == "outage":
                lat[inside], q[inside], req[inside] = np.nan, np.nan, 0.0
            elif inc.kind == "latency_regression":
                lat[inside] *= 2.5
            else:
                q[inside] -= 1.2
        latency[svc], pesq[svc], requests[svc] = np.round(lat, 3), np.round(q, 3), req
        baseline[svc] = np.round(base, 3)
    return History(times, step_ns, latency, pesq, requests, incidents, baseline)


# -- system states ---------------------------------------------------------------------------------


class SystemState(enum.Enum):
    """What a service is going through, and so what it reports."""

    HEALTHY = "healthy"  # its profile: errors around 0.2%, normal latency and quality
    DEGRADED = "degraded"  # still answering, but 15% of files fail, 3x slower, quality down
    DOWN = "down"  # no reports at all; probes of it fail


@dataclass(frozen=True)
class Report:
    """One step of one service: what it reports itself (None when down) and what its prober saw."""

    metrics: dict[str, float] | None
    probes: int  # attempts
    probes_ok: int


DEGRADED_ERROR_RATE = 0.15
PROBES_PER_STEP = 20


def service_report(service: str, state: SystemState, rng: np.random.Generator) -> Report:
    """One report of ``service`` in ``state``.

    A degraded service keeps reporting, so health checks see it, with an error rate (15%) far
    above the 5% health threshold, latency x3 and PESQ -1: what an overloaded model server does.
    A down service reports nothing, which is how a health check tells down from degraded, while
    its black-box prober (counters of attempts and successes, sent by another process) keeps
    counting, all failures: that is what the SLA counts.
    """
    p = PROFILES[service]
    if state is SystemState.DOWN:
        return Report(None, PROBES_PER_STEP, 0)
    error_rate = DEGRADED_ERROR_RATE if state is SystemState.DEGRADED else p.error_rate
    slow = 3.0 if state is SystemState.DEGRADED else 1.0
    metrics = {
        "latency": round(p.latency_ms * slow * float(rng.lognormal(0.0, 0.05)), 3),
        "quality_score": round(p.pesq - (1.0 if state is SystemState.DEGRADED else 0.0), 3),
        "error_rate": round(error_rate, 5),
        "throughput": round(p.throughput / slow, 3),
    }
    ok = PROBES_PER_STEP - int(rng.binomial(PROBES_PER_STEP, error_rate))
    return Report(metrics, PROBES_PER_STEP, ok)


# -- OTLP building ---------------------------------------------------------------------------------


def _kv(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def gauge(name: str, points: list[tuple[int, float, dict[str, str]]], unit: str = "") -> metrics_pb2.Metric:
    """A gauge from ``(time_ns, value, attributes)``."""
    return metrics_pb2.Metric(
        name=name,
        unit=unit,
        gauge=metrics_pb2.Gauge(
            data_points=[
                metrics_pb2.NumberDataPoint(
                    time_unix_nano=t, as_double=v, attributes=[_kv(k, x) for k, x in attrs.items()]
                )
                for t, v, attrs in points
            ]
        ),
    )


def cumulative_counter(
    name: str, start_ns: int, points: list[tuple[int, float]], attributes: dict[str, str] | None = None
) -> metrics_pb2.Metric:
    """A monotonic cumulative sum counting since ``start_ns``, from ``(time_ns, total)``."""
    attrs = [_kv(k, v) for k, v in (attributes or {}).items()]
    return metrics_pb2.Metric(
        name=name,
        sum=metrics_pb2.Sum(
            aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE,
            is_monotonic=True,
            data_points=[
                metrics_pb2.NumberDataPoint(
                    start_time_unix_nano=start_ns, time_unix_nano=t, as_double=v, attributes=attrs
                )
                for t, v in points
            ],
        ),
    )


def multi_request(
    resources: list[tuple[str, list[metrics_pb2.Metric]]],
) -> ExportRequest:
    """One request holding each ``(service, metrics)`` as its own resource."""
    return metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource_pb2.Resource(attributes=[_kv("service.name", service)]),
                scope_metrics=[
                    metrics_pb2.ScopeMetrics(
                        scope=common_pb2.InstrumentationScope(name="tests.monitoring_data"), metrics=metrics
                    )
                ],
            )
            for service, metrics in resources
        ]
    )


def metrics_request(service: str, metrics: list[metrics_pb2.Metric]) -> ExportRequest:
    """One request from one service."""
    return multi_request([(service, metrics)])
