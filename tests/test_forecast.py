"""Capacity forecasts: accuracy, interval coverage, limit crossings, the processor, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricBatch,
    canonical_json,
    series_id,
)
from otel_audio.processors.forecast import (
    ForecastProcessor,
    SeriesSpec,
    forecast,
    from_options,
    parse_duration_ns,
    time_to_limit,
)
from otel_audio.processors.forecast_cli import forecast_main
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import Matcher, QueryEngine, RangeQuery

H = 3600 * 10**9
T0 = 1_800_000_000 * 10**9
ROOT = Path(__file__).resolve().parents[1]


def seasonal(hours: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hourly points: 50 + 0.1/h trend + a daily sine of amplitude 5, plus Gaussian noise."""
    h = np.arange(hours)
    clean = 50 + 0.1 * h + 5 * np.sin(2 * np.pi * h / 24)
    return T0 + h * H, clean + np.random.default_rng(seed).normal(0, noise, hours), clean


def test_forecast_tracks_a_known_trend_and_daily_season():
    times, values, _ = seasonal(24 * 14 + 24, noise=0.5)
    fc = forecast(times[:-24], values[:-24], horizon_ns=24 * H)
    _, _, clean = seasonal(24 * 14 + 24, noise=0.5)
    assert fc.season_ns == 24 * H and fc.method.startswith("stl(24)+")
    assert np.array_equal(fc.timestamps_ns, times[-24:])
    assert np.abs(fc.mean - clean[-24:]).mean() < 0.6
    assert np.all(fc.lower < fc.mean) and np.all(fc.mean < fc.upper)


def test_intervals_contain_the_truth_at_about_their_nominal_rate():
    times, values, _ = seasonal(24 * 30, noise=2.0, seed=7)
    inside = []
    for origin in range(24 * 10, 24 * 30 - 12, 13):
        fc = forecast(times[:origin], values[:origin], 12 * H, season_ns=24 * H, level=0.95)
        truth = values[origin : origin + 12]
        inside.extend((truth >= fc.lower) & (truth <= fc.upper))
    assert 0.88 <= np.mean(inside) <= 0.99


def test_arima_and_no_season_are_available():
    times, values, _ = seasonal(24 * 5, noise=0.5)
    fc = forecast(times, values, 6 * H, season_ns=0, method="arima")
    assert fc.season_ns is None and fc.method.startswith("arima")
    assert len(fc.mean) == 6


def test_irregular_input_is_put_on_its_median_step():
    times, values, _ = seasonal(24 * 7, noise=0.1)
    keep = np.random.default_rng(3).random(len(times)) > 0.2
    jitter = np.random.default_rng(4).integers(-60, 60, len(times)) * 10**9
    fc = forecast(times[keep] + jitter[keep], values[keep], 5 * H, step_ns=H, season_ns=24 * H)
    assert fc.step_ns == H and len(fc.mean) == 5
    assert fc.timestamps_ns[0] == times[keep][-1] + jitter[keep][-1] + H


def test_time_to_limit_on_a_linear_ramp_is_right_within_a_step():
    times = T0 + np.arange(100) * 60 * 10**9
    values = 10.0 + 0.5 * np.arange(100)  # crosses 100 at minute 180
    fc = forecast(
        times, values + np.random.default_rng(1).normal(0, 0.05, 100), 200 * 60 * 10**9, season_ns=0
    )
    t_mean, t_earliest = time_to_limit(fc, 100.0)
    assert abs(t_mean - (T0 + 180 * 60 * 10**9)) <= 60 * 10**9
    assert t_earliest <= t_mean
    assert time_to_limit(fc, 1e6) == (None, None)
    assert time_to_limit(fc, 0.0, direction="below") == (None, None)
    assert time_to_limit(fc, 5.0)[0] == fc.origin_ns  # already past the limit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "prophet"}, "method"),
        ({"level": 1.5}, "level"),
        ({"horizon_ns": 0}, "horizon_ns"),
        ({"values": [1.0, 2.0]}, "one length"),
    ],
)
def test_bad_arguments_say_what_is_accepted(kwargs, message):
    args = {"times_ns": np.arange(20) * H, "values": np.arange(20.0), "horizon_ns": H, **kwargs}
    with pytest.raises(ValueError, match=message):
        forecast(**args)


def test_too_few_points_are_refused():
    with pytest.raises(ValueError, match="at least 8"):
        forecast(np.arange(5) * H, np.arange(5.0), H)


def test_durations_parse_and_bad_ones_name_the_field():
    assert parse_duration_ns("24h") == 24 * H
    assert parse_duration_ns(90) == 90 * 10**9
    with pytest.raises(ValueError, match="--horizon: expected a duration"):
        parse_duration_ns("tomorrow", "--horizon")


# -- the processor ------------------------------------------------------------------------------

RESOURCE = canonical_json({"host.name": "db-1", "service.name": "storage"})
ATTRS = canonical_json({"device": "sda"})
SID = series_id("disk.used", RESOURCE, "{}", ATTRS)


def disk_batch(times: np.ndarray, values: np.ndarray) -> MetricBatch:
    series = {
        "series_id": SID,
        "metric": "disk.used",
        "type": "gauge",
        "unit": "By",
        "description": "",
        "temporality": "unspecified",
        "monotonic": False,
        "service": "storage",
        "resource": RESOURCE,
        "scope": "",
        "scope_version": "",
        "attributes": ATTRS,
    }
    points = [
        {"series_id": SID, "time_unix_nano": int(t), "value": float(v)}
        for t, v in zip(times, values, strict=True)
    ]
    return MetricBatch(
        points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
        series=pa.Table.from_pylist([series], schema=SERIES_SCHEMA),
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )


def test_processor_emits_forecast_series_that_the_store_can_query():
    store = MemoryStore()
    processor = from_options(
        {
            "series": [{"metric": "disk.used", "limit": 65, "horizon": "12h", "refresh": "1h", "season": 0}],
            "workers": 0,
        }
    )
    processor.bind_emit(store.process)
    times = T0 + np.arange(48) * H
    batch = disk_batch(times, 10 + np.arange(48) + np.random.default_rng(2).normal(0, 0.1, 48))
    store.process(batch)
    processor.process(batch)
    now = int(times[-1])
    processor.tick(now)
    engine = QueryEngine(store)
    start, end = now + H, now + 13 * H
    by_metric = {}
    for metric in ("forecast.value", "forecast.lower", "forecast.upper"):
        [result] = engine.query_range(
            RangeQuery(metric, start, end, H, matchers=(Matcher("device", "=", "sda"),))
        )
        assert result.labels == {}
        by_metric[metric] = result.values
    assert np.all(by_metric["forecast.lower"] < by_metric["forecast.value"])
    assert np.all(by_metric["forecast.value"] < by_metric["forecast.upper"])
    assert by_metric["forecast.value"][0] == pytest.approx(58, abs=1)
    [ttl] = engine.query_range(
        RangeQuery(
            "forecast.time_to_limit_seconds", now, now + 1, 1, agg="last", group_by=("forecast.metric",)
        )
    )
    assert ttl.labels == {"forecast.metric": "disk.used"}
    assert ttl.values[0] == pytest.approx(8 * 3600, abs=3600)
    [series] = engine.list_series("forecast.value")
    assert series["resource"]["host.name"] == "db-1" and series["attributes"]["device"] == "sda"


def test_processor_refits_only_after_its_refresh_interval():
    emitted = []
    processor = from_options(
        {"series": [{"metric": "disk.used", "refresh": "10m", "season": 0}], "workers": 0}
    )
    processor.bind_emit(emitted.append)
    times = T0 + np.arange(20) * H
    processor.process(disk_batch(times, np.arange(20.0) + np.sin(np.arange(20))))
    processor.tick(int(times[-1]))
    processor.tick(int(times[-1]) + 5 * 60 * 10**9)
    assert len(emitted) == 1
    processor.tick(int(times[-1]) + 10 * 60 * 10**9)
    assert len(emitted) == 2


def test_processor_with_too_little_data_emits_nothing():
    emitted = []
    processor = from_options({"series": [{"metric": "disk.used"}], "workers": 0})
    processor.bind_emit(emitted.append)
    processor.process(disk_batch(T0 + np.arange(3) * H, np.arange(3.0)))
    processor.tick(T0 + 3 * H)
    assert emitted == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "forecast.series: expected a non-empty list"),
        ({"series": [{"limit": 3}]}, r"forecast.series\[0\].metric"),
        ({"series": [{"metric": "m", "horizon": "soon"}]}, r"series\[0\].horizon: expected a duration"),
        ({"series": [{"metric": "m", "direction": "up"}]}, "direction"),
        ({"series": [{"metric": "m", "colour": 1}]}, "unknown key"),
        ({"series": [{"metric": "m"}], "max_points": 0}, "max_points"),
        ({"series": [{"metric": "m"}], "speed": 1}, "unknown option"),
        ({"series": [{"metric": "m"}], "workers": -1}, r"forecast.workers: expected 0 \(fit inline\)"),
    ],
)
def test_from_options_errors_name_the_key(options, message):
    with pytest.raises(ValueError, match=message):
        from_options(options)


# -- refits in worker processes ----------------------------------------------------------------
# The fit functions below run in spawned workers, which find them by module and name; the files
# they use are named by environment variables, which a spawned worker inherits.

DISK = SeriesSpec("disk.used", limit=65, horizon_ns=12 * H, refresh_ns=H, season_ns=0)


def gated_forecast(*args, **kwargs):
    """forecast() once the file named by FORECAST_TEST_GATE exists; each call appends a line to
    FORECAST_TEST_CALLS first."""
    with open(os.environ["FORECAST_TEST_CALLS"], "a") as calls:
        calls.write("call\n")
    while not os.path.exists(os.environ["FORECAST_TEST_GATE"]):
        time.sleep(0.01)
    return forecast(*args, **kwargs)


def crash_once_forecast(*args, **kwargs):
    """The first call kills its worker process (as the OOM killer would); later calls forecast."""
    marker = Path(os.environ["FORECAST_TEST_CRASHED"])
    if not marker.exists():
        marker.touch()
        os._exit(1)
    return forecast(*args, **kwargs)


def raising_forecast(*args, **kwargs):
    raise RuntimeError("statsmodels blew up")


def disk_processor(emitted: list, **kwargs) -> ForecastProcessor:
    processor = ForecastProcessor([DISK], **kwargs)
    processor.bind_emit(emitted.append)
    times = T0 + np.arange(48) * H
    processor.process(disk_batch(times, 10 + np.arange(48) + np.random.default_rng(2).normal(0, 0.1, 48)))
    return processor


NOW = T0 + 47 * H


def test_a_worker_emits_exactly_what_an_inline_fit_emits():
    inline, pooled = [], []
    disk_processor(inline, workers=0).tick(NOW)
    processor = disk_processor(pooled, workers=1)
    try:
        processor.tick(NOW)
        assert processor.wait(120)
        processor.tick(NOW + 1)  # not due again: only collects
    finally:
        processor.close()
    [expected], [got] = inline, pooled
    assert got.series.equals(expected.series)
    assert got.points.equals(expected.points)


def test_tick_returns_while_a_refit_runs_and_a_running_series_is_not_resubmitted(tmp_path, monkeypatch):
    gate, calls = tmp_path / "gate", tmp_path / "calls"
    monkeypatch.setenv("FORECAST_TEST_GATE", str(gate))
    monkeypatch.setenv("FORECAST_TEST_CALLS", str(calls))
    emitted = []
    processor = disk_processor(emitted, workers=1, fit=gated_forecast)
    try:
        processor.tick(NOW)
        assert processor.in_flight == 1 and not processor.wait(0)  # the fit cannot have finished
        processor.tick(NOW + H)  # due again, but its refit still runs
        assert emitted == [] and processor.in_flight == 1
        gate.touch()
        assert processor.wait(120)
        processor.tick(NOW + H)
    finally:
        processor.close()
    assert len(emitted) == 1 and processor.in_flight == 0
    assert calls.read_text().splitlines() == ["call"]


def test_a_crashed_worker_is_counted_and_the_series_is_refitted_at_the_next_refresh(tmp_path, monkeypatch):
    monkeypatch.setenv("FORECAST_TEST_CRASHED", str(tmp_path / "crashed"))
    emitted = []
    processor = disk_processor(emitted, workers=1, fit=crash_once_forecast)
    try:
        processor.tick(NOW)
        assert processor.wait(120)
        processor.tick(NOW + 1)
        assert emitted == [] and processor.failures == 1
        assert processor.errors[SID].startswith("refit failed: BrokenProcessPool")
        processor.tick(NOW + H)  # a new pool
        assert processor.wait(120)
        processor.tick(NOW + H + 1)
    finally:
        processor.close()
    assert len(emitted) == 1 and processor.errors == {} and processor.failures == 1


def test_a_fit_that_raises_is_counted_and_tick_goes_on():
    emitted = []
    processor = disk_processor(emitted, workers=0, fit=raising_forecast)
    processor.tick(NOW)
    assert emitted == [] and processor.failures == 1
    assert processor.errors == {SID: "refit failed: RuntimeError('statsmodels blew up')"}


def test_close_does_not_wait_for_a_stuck_refit(tmp_path, monkeypatch):
    monkeypatch.setenv("FORECAST_TEST_GATE", str(tmp_path / "never"))
    monkeypatch.setenv("FORECAST_TEST_CALLS", str(tmp_path / "calls"))
    processor = disk_processor([], workers=1, fit=gated_forecast, close_timeout_s=0.1)
    processor.tick(NOW)
    processor.close()  # returns: the worker is stopped, not awaited
    assert processor.in_flight == 0


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_writes_the_forecast_csv_and_reports_the_limit(tmp_path, capsys):
    source = tmp_path / "disk.csv"
    rows = ["timestamp,value"]
    for i in range(72):
        stamp = f"2027-01-0{1 + i // 24}T{i % 24:02d}:00:00Z" if i % 2 else str(1798761600 + i * 3600)
        rows.append(f"{stamp},{100 + 2 * i + 3 * np.sin(2 * np.pi * i / 24):.3f}")
    source.write_text("\n".join(rows) + "\n")
    out = tmp_path / "fc.csv"
    code = forecast_main(
        ["--input", str(source), "--horizon", "24h", "--output", str(out), "--season", "1d", "--limit", "280"]
    )
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,forecast,lower,upper" and len(lines) == 25
    assert lines[1].startswith("2027-01-04T00:00:00")
    printed = capsys.readouterr().out
    assert "limit 280: the forecast rises above it at 2027-01-04T" in printed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,value\n1,2\n", ":1: expected the header"),
        ("timestamp,value\n1798761600,1\nyesterday,2\n", ":3: timestamp 'yesterday'"),
        ("timestamp,value\n1798761600,lots\n", ":2: value 'lots' is not a number"),
        ("timestamp,value\n", "no data rows"),
    ],
)
def test_cli_bad_input_names_the_line(tmp_path, capsys, content, message):
    source = tmp_path / "in.csv"
    source.write_text(content)
    code = forecast_main(["--input", str(source), "--horizon", "1h", "--output", str(tmp_path / "o.csv")])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_bad_duration_is_an_error(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("timestamp,value\n" + "".join(f"{1798761600 + i * 60},{i}\n" for i in range(20)))
    code = forecast_main(
        ["--input", str(source), "--horizon", "a while", "--output", str(tmp_path / "o.csv")]
    )
    assert code == 2
    assert "--horizon: expected a duration" in capsys.readouterr().err


# -- the benchmark ------------------------------------------------------------------------------


def test_benchmark_prints_one_json_line_with_accuracy_and_coverage():
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "forecast.py"),
            "--weeks",
            "3",
            "--origins",
            "2",
            "--noise",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    result = json.loads(line)
    assert {"mase", "mase_vs_seasonal_naive", "coverage", "nominal", "fit_seconds_median", "by_noise"} <= set(
        result
    )
    assert 0 <= result["coverage"] <= 1


def test_tick_benchmark_prints_one_json_line_with_inline_and_pool_tick_times():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "forecast_tick.py"), "--series", "2", "--weeks", "1"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    result = json.loads(line)
    assert {"inline_tick_seconds", "pool_max_tick_seconds", "cold", "warm"} <= set(result)
    assert result["identical"] is True and result["cold"]["collect_ticks"] >= 1
