"""otel-audio's SLO numbers checked against a real Prometheus on the same counter samples.

Three and a half days of an availability SLI (files finished, files failed) at 30 s resolution: a
daily traffic cycle, a degraded stretch, a 30-minute outage, a process restart that resets one
pipeline's counters, and two pipelines whose samples are 14.25 s apart, so Prometheus extrapolates
each series differently. The same samples go

- to Prometheus 2.42 as TSDB blocks (``promtool tsdb create-blocks-from openmetrics``), under the
  names the OpenTelemetry Collector's Prometheus exporter gives otel-audio's OTLP metrics
  (``audio.pipeline.files`` -> ``audio_pipeline_files_total``, ``error.type`` -> ``error_type``,
  ``service.name`` -> ``job``), asked the expressions of ``collector-config/prometheus/slo-rules.yml``
  at several evaluation times;
- to a real otel-audio receiver over OTLP/gRPC with the ``slo`` processor, whose clock the test
  drives to the same evaluation times.

The windowed error ratios are defined as Prometheus's ``sum(rate(bad[W])) / sum(rate(total[W]))``
including its extrapolation, so the burn rate of every window, the SLI and the budget remaining
agree to 1e-6 relative, both as stored ``slo.*`` series and from ``GET /api/v1/slos/{name}``.
Sloth's own ``slo:period_error_budget_remaining:ratio`` averages 5m ratios instead of counting
events; a test shows by hand that this, and nothing else, is where it differs.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tests.external import Prometheus, require_external
from tests.receiver_helpers import api, grpc_export_metrics, kv, metrics_request

S = 10**9
STEP_S = 30  # export interval of the simulated SDKs
DAY_S = 86400
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
OBJECTIVE = 0.999
TOTAL = "audio_pipeline_files_total"
RULES = Path(__file__).parent.parent / "collector-config" / "prometheus" / "slo-rules.yml"


@dataclass(frozen=True)
class Series:
    """One cumulative counter series: OTLP attributes, sample times (ms), values and start times (ms)."""

    attributes: dict[str, str]
    times_ms: np.ndarray
    values: np.ndarray
    starts_ms: np.ndarray  # the OTLP start time of each point: moves on a counter reset


@dataclass(frozen=True)
class History:
    start_s: int  # the first 30 s grid time; every sample is at or after it
    end_s: int  # the last 30 s grid time; every sample is before it
    series: tuple[Series, ...]
    outage_s: tuple[int, int]
    reset_s: int


def make_history(end_s: int) -> History:
    """The simulated samples; deterministic for a given ``end_s``."""
    rng = np.random.default_rng(7)
    start_s = end_s - int(3.5 * DAY_S)
    outage = (end_s - 10 * 3600, end_s - 10 * 3600 + 30 * 60)
    degraded = (end_s - int(2.5 * DAY_S), end_s - int(2.25 * DAY_S))
    reset_s = end_s - 8 * 3600
    series = []
    # (pipeline, offset of its samples on the 30 s grid in ms, requests/s, value before the first sample)
    for pipeline, offset_ms, base_rate, ok0, err0 in (
        ("speech", 3000, 20.0, 1_250_000.0, 517.0),
        ("music", 17250, 5.0, 40.0, 0.0),  # started just before the history: extrapolation stops at 0
    ):
        grid_s = np.arange(start_s, end_s, STEP_S, dtype=np.int64)
        times_ms = grid_s * 1000 + offset_ms
        mid_s = grid_s + offset_ms / 1000 - STEP_S / 2
        rate = base_rate * (1 + 0.5 * np.sin(2 * np.pi * (mid_s - end_s) / DAY_S))  # quiet at the outage
        requests = rng.poisson(rate * STEP_S).astype(float)
        p_error = np.full(len(grid_s), 0.0002)
        p_error[(mid_s >= degraded[0]) & (mid_s < degraded[1])] = 0.002
        in_outage = (mid_s >= outage[0]) & (mid_s < outage[1])
        p_error[in_outage] = 0.1 if pipeline == "speech" else 0.05
        errors = rng.binomial(requests.astype(np.int64), p_error).astype(float)
        ok = np.cumsum(requests - errors) + ok0
        err = np.cumsum(errors) + err0
        starts_ms = np.full(len(grid_s), (start_s - 3600) * 1000, dtype=np.int64)
        if pipeline == "music":  # the process restarts: counters begin again from what came after
            after = times_ms >= reset_s * 1000
            first = int(np.argmax(after))
            ok[after] -= ok[first - 1]
            err[after] -= err[first - 1]
            starts_ms[after] = reset_s * 1000
        attributes = {"audio.pipeline": pipeline}
        series.append(Series(attributes, times_ms, ok, starts_ms))
        series.append(Series({**attributes, "error.type": "TimeoutError"}, times_ms, err, starts_ms))
    return History(start_s, end_s, tuple(series), outage, reset_s)


def openmetrics(history: History, job: str) -> str:
    """The samples as the Collector's Prometheus exporter would name them, in OpenMetrics text."""
    lines = ["# TYPE audio_pipeline_files counter", "# UNIT audio_pipeline_files files"]
    for s in history.series:
        labels = {"job": job, **{k.replace(".", "_"): v for k, v in s.attributes.items()}}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        lines += [
            f"audio_pipeline_files_total{{{text}}} {v:.1f} {t // 1000}.{t % 1000:03d}"
            for t, v in zip(s.times_ms.tolist(), s.values.tolist(), strict=True)
        ]
    return "\n".join([*lines, "# EOF", ""])


def shipped_rules(slo: str) -> dict[str, str]:
    """``record name -> expression`` of one SLO in the shipped rules file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {
        rule["record"]: rule["expr"]
        for group in groups
        for rule in group["rules"]
        if "record" in rule and rule["labels"].get("sloth_slo") == slo
    }


AVAILABILITY = shipped_rules("availability")


def error_ratio(window: str) -> str:
    """The availability error ratio over ``window``: the shipped ``slo:sli_error:ratio_rate<window>``."""
    if window == "30d":  # events over the period; Sloth's own 30d rule averages the recorded 5m ratios
        return AVAILABILITY["slo:sli_error:ratio_rate5m"].replace("[5m]", "[30d]")
    return AVAILABILITY[f"slo:sli_error:ratio_rate{window}"]


def sloth_period_budget_remaining() -> str:
    """The shipped ``slo:period_error_budget_remaining:ratio`` as one expression over the raw counters.

    Sloth's period ratio averages the *recorded* 5m ratios; a subquery at 30 s steps stands in for
    a rule group evaluated every 30 s (Prometheus offsets a group's evaluations, a subquery aligns
    them to multiples of the step).
    """
    five = AVAILABILITY["slo:sli_error:ratio_rate5m"].strip()
    recorded = re.compile(r"slo:sli_error:ratio_rate5m\{[^}]*\}\[30d\]")
    period = recorded.sub(lambda _: f"({five})[30d:{STEP_S}s]", AVAILABILITY["slo:sli_error:ratio_rate30d"])
    budget = re.fullmatch(r"vector\((.*)\)", AVAILABILITY["slo:error_budget:ratio"].strip()).group(1)
    return f"1 - ({period.strip()}) / ({budget})"


def test_the_shipped_rules_pass_promtool_check_rules():
    promtool = require_external("promtool", "apt-get install prometheus")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 68 rules found" in done.stdout


def test_the_shipped_availability_alerts_page_on_a_burst_and_leave_a_ticket_after_it(tmp_path):
    """``promtool test rules``: 2% of files failing for 20 minutes pages (14.4x over 1h and 5m) and
    tickets (3x over 1d and 2h); 50 minutes after it ends the short windows are clean and only the
    ticket remains; 0.05% failing never alerts."""
    promtool = require_external("promtool", "apt-get install prometheus")
    slo = {"sloth_id": "otel-audio-availability", "sloth_service": "otel-audio", "sloth_slo": "availability"}
    what = "otel-audio availability SLO error budget burn rate"

    def alert(severity: str) -> dict:
        notes = {"summary": f"{what} is over expected.", "title": f"({severity}) {what} is too fast."}
        return {"exp_labels": {**slo, "sloth_severity": severity}, "exp_annotations": notes}

    def case(errors: str, expected: list[tuple[str, list[dict]]]) -> dict:
        files = 'audio_pipeline_files_total{job="enhancer",audio_pipeline="speech"'
        return {
            "interval": "1m",
            "input_series": [
                {"series": files + "}", "values": "0+1000x120"},
                {"series": files + ',error_type="TimeoutError"}', "values": errors},
            ],
            "alert_rule_test": [
                {"eval_time": at, "alertname": "AvailabilitySLOBurnRate", "exp_alerts": alerts}
                for at, alerts in expected
            ],
        }

    burst = case("0+20x20 400+0x100", [("10m", [alert("page"), alert("ticket")]), ("70m", [alert("ticket")])])
    quiet = case("0+0.5x120", [("10m", []), ("70m", [])])
    spec = tmp_path / "slo-rules.test.yml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [burst, quiet]})
    )
    done = subprocess.run([promtool, "test", "rules", str(spec)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def evaluation_times(history: History) -> list[int]:
    end = history.end_s
    return [
        end - int(3.3 * DAY_S),  # every window but 5m..2h reaches back before the first sample
        end - int(2.4 * DAY_S),  # in the degraded stretch
        history.outage_s[0] + 10 * 60,  # ten minutes into the outage
        history.outage_s[1] + 20 * 60,  # twenty minutes after it
        history.reset_s + 2 * 60,  # two minutes after the counter reset
        end - 3600,
        end - 1800 + 3,  # on a speech sample: so is every window's start, which 2.x includes
        end,
    ]


@pytest.fixture(scope="module")
def history() -> History:
    end_s = (int(time.time()) // STEP_S) * STEP_S - 600  # recent: inside the receiver's raw retention
    return make_history(end_s)


@pytest.fixture(scope="module")
def prometheus(history, tmp_path_factory):
    server = Prometheus(tmp_path_factory.mktemp("prometheus"))
    server.backfill(openmetrics(history, job="enhancer"))
    server.start()
    yield server
    server.stop()


def test_prometheus_holds_the_backfilled_history(prometheus, history):
    samples = sum(len(s.times_ms) for s in history.series)
    stored = prometheus.value(f"sum(count_over_time({TOTAL}[4d]))", history.end_s)
    assert stored == samples
    # the reset is seen as one, and the outage shows as a burn far beyond 14.4x
    assert prometheus.value(f"sum(resets({TOTAL}[1h]))", history.reset_s + 1800) == 2
    burn = prometheus.value(error_ratio("1h"), history.outage_s[1]) / (1 - OBJECTIVE)
    assert burn > 14.4


def test_prometheus_ratios_match_a_hand_computation_of_extrapolated_rate(prometheus, history):
    for at in evaluation_times(history):
        for window in (*WINDOWS, "30d"):
            expected = _ratio_by_hand(history, at, _seconds(window))
            got = prometheus.value(error_ratio(window), at)
            assert math.isclose(got, expected, rel_tol=1e-9), (at, window, got, expected)


# -- otel-audio: the same samples over OTLP, its clock driven to the same times ---------------------

SLO = {
    "name": "availability",  # the default SLO of that name, which the shipped rules mirror
    "objective": OBJECTIVE,
    "window": "30d",
    "budgeting": "occurrences",
    "sli": {"ratio": {"good": 'audio.pipeline.files{error.type=""}', "total": "audio.pipeline.files"}},
}
READ = (
    "slo.sli",
    "slo.error_ratio",
    "slo.burn_rate",
    "slo.error_budget.remaining",
    "slo.time_to_exhaustion_seconds",
)


def _points(series: Series, lo_ms: int, hi_ms: int) -> metrics_pb2.Metric:
    """The points of ``series`` with time in ``(lo_ms, hi_ms]`` as one cumulative sum."""
    keep = (series.times_ms > lo_ms) & (series.times_ms <= hi_ms)
    attributes = [kv(k, v) for k, v in series.attributes.items()]
    starts, times, values = series.starts_ms[keep], series.times_ms[keep], series.values[keep]
    points = [
        metrics_pb2.NumberDataPoint(start_time_unix_nano=a * 10**6, time_unix_nano=t * 10**6, as_double=v)
        for a, t, v in zip(starts.tolist(), times.tolist(), values.tolist(), strict=True)
    ]
    for point in points:
        point.attributes.extend(attributes)
    cumulative = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    return metrics_pb2.Metric(
        name="audio.pipeline.files",
        unit="{file}",
        sum=metrics_pb2.Sum(aggregation_temporality=cumulative, is_monotonic=True, data_points=points),
    )


def _otel_audio_at(receiver, at: int) -> dict[str, float]:
    """otel-audio's numbers at ``at`` from its stored slo.* series: ``"metric window" -> value``."""
    out = {}
    for metric in READ:
        span = {"start": at, "end": at + STEP_S, "step": f"{STEP_S}s"}
        reply = api(receiver, "/api/v1/query_range", metric=metric, agg="last", group_by="window",
                    match='slo="availability"', **span)  # fmt: skip
        assert reply.status_code == 200, reply.text
        for one in reply.json()["series"]:
            (point,) = one["points"]
            out[f"{metric} {one['labels'].get('window', '')}".strip()] = point[1]
    status = api(receiver, "/api/v1/slos/availability", time=at).json()["status"]
    out |= {f"api burn_rate {w}": v for w, v in status["burn_rates"].items()}
    out["api sli"] = status["sli"]
    out["api error_budget.remaining_ratio"] = status["error_budget"]["remaining_ratio"]
    return out


@pytest.fixture
def otel_audio(history, start_receiver) -> dict[int, dict[str, float]]:
    """otel-audio's numbers at every evaluation time, from a receiver fed the history as it happened."""
    slo = {"slo": {"defaults": False, "evaluation_interval": f"{STEP_S}s", "slos": [SLO]}}
    # the test drives the clock: no tick on the wall clock meanwhile
    receiver = start_receiver(processors=["selfmon", slo, "store"], tick_interval_s=3600)
    numbers, sent_ms = {}, 0
    for at in evaluation_times(history):
        metrics = [_points(s, sent_ms, at * 1000) for s in history.series]
        grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", metrics), timeout=60)
        sent_ms = at * 1000
        receiver.chain.tick(at * S)
        numbers[at] = _otel_audio_at(receiver, at)
    return numbers


def _close(got: float, expected: float) -> bool:
    return math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-15)


def test_burn_rates_sli_and_budget_agree_with_prometheus_to_1e_6(prometheus, otel_audio, history):
    budget = 1 - OBJECTIVE
    worst, rows = 0.0, []
    for at, ours in otel_audio.items():
        expected = {f"slo.error_ratio {w}": prometheus.value(error_ratio(w), at) for w in WINDOWS}
        expected |= {f"slo.burn_rate {w}": expected[f"slo.error_ratio {w}"] / budget for w in WINDOWS}
        period = prometheus.value(error_ratio("30d"), at)
        expected["slo.sli 30d"] = 1 - period
        expected["slo.error_budget.remaining"] = 1 - period / budget
        # the budget left, spent at the 1h burn rate (the fast page's long window)
        expected["slo.time_to_exhaustion_seconds"] = (
            (1 - period / budget) * 30 * DAY_S / expected["slo.burn_rate 1h"]
        )
        expected |= {f"api burn_rate {w}": expected[f"slo.burn_rate {w}"] for w in WINDOWS}
        expected["api sli"] = expected["slo.sli 30d"]
        expected["api error_budget.remaining_ratio"] = expected["slo.error_budget.remaining"]
        for key, want in expected.items():
            got = ours.get(key, math.nan)
            worst = max(worst, abs(got - want) / abs(want) if want else abs(got))
            if not _close(got, want):
                rows.append(f"t={at} {key}: otel-audio {got!r}, Prometheus {want!r}")
    assert not rows, "\n".join(rows)
    assert worst < 1e-6


def test_sloths_period_budget_weighs_minutes_where_otel_audio_weighs_events(prometheus, history):
    """Sloth's ``slo:period_error_budget_remaining:ratio`` differs from otel-audio's budget by design.

    Sloth divides the mean of the 5m error ratios over the period by the budget: every 5 minutes
    weighs the same. otel-audio counts events over the period (the issue: never an average of
    averages), which the test above matched with ``sum(rate(x[30d]))`` ratios. The outage falls
    in the quietest hour of the day, so per minute it weighs more than per file, and Sloth's
    number shows less budget left.
    """
    budget = 1 - OBJECTIVE
    for at in (history.outage_s[1] + 20 * 60, history.end_s):
        sloth = prometheus.value(sloth_period_budget_remaining(), at)
        steps = range(history.start_s, at + 1, STEP_S)  # the subquery's steps that see any sample
        ratios = [_ratio_by_hand(history, step, 300) for step in steps]
        by_hand = 1 - float(np.nanmean(ratios)) / budget
        assert math.isclose(sloth, by_hand, rel_tol=1e-9), (at, sloth, by_hand)
        events = 1 - prometheus.value(error_ratio("30d"), at) / budget
        assert events - sloth > 0.1, (at, events, sloth)


# -- Prometheus's extrapolatedRate (promql/functions.go, v2.42), written out for one check -------


def _seconds(window: str) -> int:
    return int(window[:-1]) * {"m": 60, "h": 3600, "d": DAY_S}[window[-1]]


def _extrapolated_increase(
    times_ms: np.ndarray, values: np.ndarray, at_ms: int, range_ms: int
) -> float | None:
    start_ms = at_ms - range_ms
    lo = np.searchsorted(times_ms, start_ms, side="left")  # both ends closed before Prometheus 3
    hi = np.searchsorted(times_ms, at_ms, side="right")
    t, v = times_ms[lo:hi], values[lo:hi]
    if len(t) < 2:
        return math.nan
    drops = v[1:] < v[:-1]
    result = v[-1] - v[0] + float(np.sum(v[:-1][drops]))
    sampled = (t[-1] - t[0]) / 1000
    to_start = (t[0] - start_ms) / 1000
    to_end = (at_ms - t[-1]) / 1000
    average = sampled / (len(t) - 1)
    if result > 0 and v[0] >= 0:
        to_zero = sampled * (v[0] / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    return result * (interval / sampled)


def _ratio_by_hand(history: History, at_s: int, window_s: int) -> float:
    bad = total = 0.0
    for s in history.series:
        increase = _extrapolated_increase(s.times_ms, s.values, at_s * 1000, window_s * 1000)
        if math.isnan(increase):
            continue
        total += increase
        if "error.type" in s.attributes:
            bad += increase
    return bad / total if total else math.nan  # rate = increase / window, and the window cancels
