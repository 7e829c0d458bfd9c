"""Streaming anomaly detectors, the anomaly processor, ``otel-audio detect`` and the benchmark's shape.

Series are seeded: a daily-like season of ``P`` points, amplitude 10 sigma, unit noise.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from otel_audio.processors.anomaly import DETECTORS, OUTPUTS, AnomalyProcessor, from_options, make_detector
from otel_audio.processors.anomaly.cli import detect_main
from otel_audio.processors.anomaly.esd import esd_critical_values, generalized_esd
from otel_audio.processors.anomaly.score import score_of, z_of
from otel_audio.processors.anomaly.window import RollingWindow
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import QueryEngine, RangeQuery
from tests.test_store_memory import S, metric_batch, series

P = 48
N = 12 * P
SPIKE_AT = 9 * P + 7
SHIFT_AT = 10 * P + 11
PARAMS = {
    "robust_z": {"period": P},
    "ewma": {},
    "holt_winters": {"period": P},
    "stl_esd": {"period": P},
    "cusum": {"period": P},
    "ensemble": {"period": P},
}


def seasonal(seed: int = 0, amplitude: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(N)
    return 100.0 + amplitude * np.sin(2 * np.pi * t / P) + rng.normal(size=N)


def series_for(name: str, seed: int) -> np.ndarray:
    """EWMA models no season, so it is specified on a level series; the others on the seasonal one."""
    return seasonal(seed, amplitude=0.0 if name == "ewma" else 10.0)


def flagged(name: str, values: np.ndarray) -> list[int]:
    detector = make_detector(name, **PARAMS[name])
    out = [detector.update(i * S, float(v)) for i, v in enumerate(values)]
    for score in out:
        if score is not None:
            assert 0.0 <= score.score <= 1.0
    return [i for i, s in enumerate(out) if s is not None and s.is_anomaly]


def test_rolling_window_median_and_mad_are_exact():
    rng = np.random.default_rng(3)
    window = RollingWindow(16)
    for i in range(200):
        window.push(float(rng.integers(0, 6)) if i % 3 else float(rng.normal()))
        values = np.array(window._fifo)
        median = window.median()
        assert median == np.median(values)
        assert window.mad(median) == pytest.approx(np.median(np.abs(values - median)), abs=1e-12)


def test_score_is_monotone_in_the_statistic_and_half_at_four():
    zs = [0, 1, 2, 3, 4, 5, 8, 100, 1e6]
    scores = [score_of(z) for z in zs]
    assert scores == sorted(scores)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert score_of(4) == 0.5 and score_of(-4) == 0.5
    assert z_of(score_of(5.5)) == pytest.approx(5.5)


@pytest.mark.parametrize("name", [n for n in DETECTORS if n != "cusum"])
def test_detector_flags_an_8_sigma_spike(name):
    values = series_for(name, 1)
    values[SPIKE_AT] += 8.0
    assert SPIKE_AT in flagged(name, values)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_flags_a_5_sigma_level_shift_within_three_points(name):
    values = series_for(name, 2)
    values[SHIFT_AT:] += 5.0
    hits = flagged(name, values)
    assert any(SHIFT_AT <= i < SHIFT_AT + 3 for i in hits), hits


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_stays_quiet_on_clean_seasonal_noise(name):
    total = sum(len(flagged(name, series_for(name, seed))) for seed in (10, 11, 12))
    assert total <= 3  # of about 3 * 576 points


def test_cusum_reports_the_level_shift_and_its_size():
    values = seasonal(2)
    values[SHIFT_AT:] += 5.0
    detector = make_detector("cusum", period=P)
    out = [detector.update(i * S, float(v)) for i, v in enumerate(values)]
    first = next(s for s in out[SHIFT_AT:] if s is not None and s.is_anomaly)
    assert first.explanation.startswith("level shift of +")
    assert 3.0 < first.detail < 7.0


def test_explanation_names_the_distance_and_the_expected_value():
    values = seasonal(1)
    values[SPIKE_AT] += 8.0
    detector = make_detector("robust_z", period=P)
    out = [detector.update(i * S, float(v)) for i, v in enumerate(values)]
    text = out[SPIKE_AT].explanation
    assert "above the rolling median" in text and "robust sigmas" in text


def test_band_contains_normal_points_and_excludes_flagged_ones():
    values = seasonal(1)
    values[SPIKE_AT] += 8.0
    detector = make_detector("holt_winters", period=P)
    for i, v in enumerate(values):
        score = detector.update(i * S, float(v))
        if score is not None:
            assert score.is_anomaly == (not score.lower < v < score.upper)


def test_generalized_esd_finds_planted_outliers():
    rng = np.random.default_rng(5)
    x = rng.normal(size=300)
    x[[20, 150]] = [9.0, -8.0]
    assert sorted(generalized_esd(x, 10).tolist()) == [20, 150]


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nope", {}, "unknown detector 'nope'; known: robust_z"),
        ("robust_z", {"windw": 10}, "has no parameter 'windw'; accepted: window"),
        ("robust_z", {"window": 0}, "window must be an integer >= 3"),
        ("ewma", {"alpha": 2}, "alpha must be in (0, 1]"),
        ("holt_winters", {"period": 1}, "period must be an integer >= 2"),
        ("ensemble", {"votes": 5}, "votes (5) exceeds the number of members"),
        ("cusum", {"threshold": 1.5}, "threshold must be in (0, 1)"),
    ],
)
def test_bad_detector_names_and_params_are_clear_errors(name, params, message):
    with pytest.raises(ValueError) as info:
        make_detector(name, **params)
    assert message in str(info.value)


# -- processor -------------------------------------------------------------------------------------


def test_processor_emits_score_series_that_the_store_answers():
    src = series("latency", attributes={"stage": "denoise"})
    other = series("queue.depth")
    values = seasonal(1)
    values[SPIKE_AT] += 8.0
    proc = from_options({"metrics": ["latency"], "detector": "robust_z", "params": {"period": P}})
    store = MemoryStore()
    proc.bind_emit(store.process)
    for start in range(0, N, 50):
        stop = min(start + 50, N)
        rows = [{"s": src, "time_unix_nano": i * S, "value": float(values[i])} for i in range(start, stop)]
        rows.append({"s": other, "time_unix_nano": start * S, "value": 1.0})
        proc.process(metric_batch([src, other], rows))
    engine = QueryEngine(store)
    assert {m["name"] for m in engine.list_metrics()} == set(OUTPUTS)
    result = engine.query_range(RangeQuery("anomaly.score", 0, N * S, S, agg="max"))
    (only,) = result
    assert only.values[SPIKE_AT] >= 0.5
    assert np.nanmedian(only.values) < 0.1
    (listed,) = engine.list_series("anomaly.expected")
    assert listed["attributes"] == {
        "stage": "denoise",
        "anomaly.metric": "latency",
        "anomaly.detector": "robust_z",
    }
    events = proc.events()
    assert any(e["time_unix_nano"] == SPIKE_AT * S for e in events)
    assert all({"score", "expected", "lower", "upper", "explanation"} <= set(e) for e in events)


def test_processor_keeps_a_bounded_list_of_events():
    src = series("latency")
    proc = AnomalyProcessor(
        ["latency"], detector="robust_z", params={"min_points": 5, "window": 5}, max_events=3
    )
    values = [1.0, 2.0, 1.0, 2.0, 1.0] + [1000.0 * (k + 1) for k in range(10)]
    proc.process(
        metric_batch([src], [{"s": src, "time_unix_nano": i * S, "value": v} for i, v in enumerate(values)])
    )
    assert len(proc.events()) == 3


def test_processor_tick_drops_idle_series():
    src = series("latency")
    proc = AnomalyProcessor(["latency"], detector="ewma", idle_seconds=10)
    proc.process(metric_batch([src], [{"s": src, "time_unix_nano": 5 * S, "value": 1.0}]))
    proc.tick(10 * S)
    assert len(proc._series) == 1
    proc.tick(16 * S)
    assert len(proc._series) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "anomaly.metrics must be a non-empty list"),
        ({"metrics": ["x"], "detecter": "ewma"}, "unknown option(s) detecter; accepted: metrics"),
        ({"metrics": ["x"], "detector": "zz"}, "unknown detector 'zz'"),
        ({"metrics": ["x"], "detector": "ewma", "params": {"alpha": 0}}, "alpha must be in (0, 1]"),
        ({"metrics": ["x"], "max_events": 0}, "max_events must be an integer >= 1"),
    ],
)
def test_from_options_rejects_bad_options(options, message):
    with pytest.raises(ValueError) as info:
        from_options(options)
    assert message in str(info.value)


# -- CLI ---------------------------------------------------------------------------------------------


def test_detect_writes_one_scored_row_per_input_row(tmp_path: Path):
    values = seasonal(1)
    values[SPIKE_AT] += 8.0
    source = tmp_path / "data.csv"
    lines = ["timestamp,value"] + [f"{1_700_000_000 + 60 * i},{v}" for i, v in enumerate(values)]
    lines[1] = f"2023-11-14T22:13:20Z,{values[0]}"  # ISO-8601 is accepted too
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.csv"
    status = detect_main(
        ["--detector", "robust_z", "--input", str(source), "--output", str(out), "--param", f"period={P}"]
    )
    assert status == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "timestamp,value,anomaly_score"
    assert len(rows) == N + 1
    scores = [float(r.split(",")[2]) for r in rows[1:]]
    assert scores[0] == 0.0 and scores[SPIKE_AT] >= 0.5
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_detect_names_the_bad_csv_line(tmp_path: Path, capsys):
    source = tmp_path / "data.csv"
    source.write_text("timestamp,value\n1,2\n2,abc\n")
    status = detect_main(["--detector", "ewma", "--input", str(source), "--output", str(tmp_path / "o.csv")])
    assert status == 2
    assert "line 3: value 'abc' is not a number" in capsys.readouterr().err


def test_detect_rejects_a_bad_param(tmp_path: Path, capsys):
    source = tmp_path / "data.csv"
    source.write_text("1,2\n")
    argv = [
        "--detector",
        "ewma",
        "--input",
        str(source),
        "--output",
        str(tmp_path / "o.csv"),
        "--param",
        "x=1",
    ]
    assert detect_main(argv) == 2
    assert "has no parameter 'x'" in capsys.readouterr().err


# -- benchmark -------------------------------------------------------------------------------------


def test_benchmark_prints_one_json_line_with_metrics_per_detector_and_type():
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "anomaly.py"
    argv = ["--days", "5", "--warmup-days", "4", "--period", "24", "--series", "1", "--noise", "1"]
    argv += ["--events", "1", "--throughput-points", "500"]
    done = subprocess.run(
        [sys.executable, str(script), *argv], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    assert set(result["detectors"]) == set(DETECTORS)
    for figures in result["detectors"].values():
        assert figures["points_per_s"] > 0
        assert set(figures["types"]) == {"spike", "level_shift", "trend_change", "dropout"}
        for row in figures["types"].values():
            assert {"precision", "recall", "f1", "mean_delay_points"} <= set(row)


# -- generalised ESD against the textbook procedure -------------------------------------------------


def _textbook_esd(x: np.ndarray, max_outliers: int, alpha: float = 0.05) -> list[int]:
    """Rosner's procedure as written: remove the farthest value from the mean of the rest, repeat."""
    n = x.size
    count = min(max_outliers, n - 3)
    if count < 1:
        return []
    lam = esd_critical_values(n, count, alpha)
    keep = np.ones(n, dtype=bool)
    removed, found = [], 0
    for step in range(count):
        rest = x[keep]
        sd = rest.std(ddof=1)
        if sd == 0.0:
            break
        dev = np.where(keep, np.abs(x - rest.mean()), -1.0)
        worst = int(dev.argmax())
        removed.append(worst)
        keep[worst] = False
        if dev[worst] / sd > lam[step]:
            found = step + 1
    return removed[:found]


@pytest.mark.parametrize("seed", range(40))
def test_generalized_esd_removes_what_the_textbook_procedure_removes_in_its_order(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 300))
    x = rng.standard_t(3, size=n) * rng.uniform(0.1, 100) + rng.uniform(-1e3, 1e3)
    if seed % 4 == 0:
        x = np.round(x)  # ties: the first of equal values in the input is removed first
    max_outliers = int(rng.integers(0, 30))
    assert generalized_esd(x, max_outliers).tolist() == _textbook_esd(x, max_outliers)


@pytest.mark.parametrize("size", [2, 3, 16, 17])
def test_rolling_window_median_mad_is_median_then_mad_of_it(size):
    rng = np.random.default_rng(size)
    window = RollingWindow(size)
    for i in range(300):
        window.push(float(rng.integers(0, 6)) if i % 3 else float(rng.normal()))
        median = window.median()
        assert window.median_mad() == (median, window.mad(median))


def test_stl_esd_fits_the_last_window_points_every_refit(monkeypatch):
    from otel_audio.processors.anomaly import esd

    fitted = []
    real_stl = esd.STL

    def recording_stl(y, **kwargs):
        fitted.append(np.array(y))
        return real_stl(y, **kwargs)

    monkeypatch.setattr(esd, "STL", recording_stl)
    values = seasonal(4)
    detector = make_detector("stl_esd", period=P, window=4 * P, refit_every=7)
    for i, v in enumerate(values):
        detector.update(i * S, float(v))
    seen = 3 * P + 7 * np.arange(len(fitted))  # points seen at each fit: the first after 3 periods
    assert len(fitted) > 20
    for count, y in zip(seen, fitted, strict=True):
        assert np.array_equal(y, values[max(0, count - 4 * P) : count])


def test_processor_emits_points_and_events_in_time_order_across_series():
    """Series are scored one after another, but what comes out is in time order, as it went in."""
    sources = [series("latency", attributes={"stage": stage}) for stage in ("a", "b", "c")]
    proc = AnomalyProcessor(["latency"], detector="robust_z", params={"min_points": 5, "window": 5})
    emitted = []
    proc.bind_emit(emitted.append)
    rows = []
    for i in range(40):
        for k, src in enumerate(sources):
            spike = 1000.0 if i in (20 + k, 30 - k) else 0.0
            rows.append({"s": src, "time_unix_nano": (i * 3 + k) * S, "value": float(i % 3) + spike})
    proc.process(metric_batch(sources, rows[::-1]))  # arrival order does not matter
    times = emitted[0].points.column("time_unix_nano").to_pylist()
    assert times == sorted(times)
    event_times = [e["time_unix_nano"] for e in proc.events()]
    assert len(event_times) >= 6 and event_times == sorted(event_times)
