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
including its extrapolation, so burn rates and the SLI agree to 1e-6 relative.
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.external import Prometheus, require_external

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
    end_s: int  # the last 30 s grid time; every sample is at or before it
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
        rate = base_rate * (1 + 0.5 * np.sin(2 * np.pi * mid_s / DAY_S))
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
    return History(end_s, tuple(series), outage, reset_s)


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
    if window == "30d":  # Sloth's period ratio averages recorded 5m ratios: the event ratio is this
        return AVAILABILITY["slo:sli_error:ratio_rate5m"].replace("[5m]", "[30d]")
    return AVAILABILITY[f"slo:sli_error:ratio_rate{window}"]


def test_the_shipped_rules_pass_promtool_check_rules():
    promtool = require_external("promtool", "apt-get install prometheus")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 68 rules found" in done.stdout


def evaluation_times(history: History) -> list[int]:
    end = history.end_s
    return [
        end - int(3.3 * DAY_S),  # every window but 5m..2h reaches back before the first sample
        end - int(2.4 * DAY_S),  # in the degraded stretch
        history.outage_s[0] + 10 * 60,  # ten minutes into the outage
        history.outage_s[1] + 20 * 60,  # twenty minutes after it
        history.reset_s + 2 * 60,  # two minutes after the counter reset
        end - 3600,
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


# -- Prometheus's extrapolatedRate (promql/functions.go, v2.42), written out for one check -------


def _seconds(window: str) -> int:
    return int(window[:-1]) * {"m": 60, "h": 3600, "d": DAY_S}[window[-1]]


def _extrapolated_increase(
    times_ms: np.ndarray, values: np.ndarray, at_ms: int, range_ms: int
) -> float | None:
    start_ms = at_ms - range_ms
    inside = (times_ms >= start_ms) & (times_ms <= at_ms)  # both ends closed before Prometheus 3
    t, v = times_ms[inside], values[inside]
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
    return bad / total  # rate = increase / window, and the window cancels
