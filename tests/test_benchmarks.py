"""The benchmark scripts run and print one JSON line of the documented shape.

Only the shape is checked, with tiny iteration counts: speed is measured by the benchmarks,
never asserted here, so these tests do not depend on the machine's load.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

DECORATOR_KEYS = {
    "baseline_call_us",
    "decorator_sampled_us",
    "decorator_unsampled_us",
    "bare_span_sampled_us",
    "bare_span_unsampled_us",
    "span_plus_metrics_sampled_us",
    "span_plus_metrics_unsampled_us",
    "ratio_sampled_vs_bare_span",
    "ratio_unsampled_vs_bare_span",
    "ratio_sampled_vs_span_plus_metrics",
    "ratio_unsampled_vs_span_plus_metrics",
}
SIGNAL_LAYOUTS = {"mono_16k_float32", "mono_16k_int16", "stereo_48k_float32"}


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def one_json_line(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one line of output, got {len(lines)}: {stdout!r}"
    return json.loads(lines[0])


def is_positive_finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def test_decorator_overhead_prints_one_json_line_of_positive_timings_and_ratios() -> None:
    result = one_json_line(run("decorator_overhead.py", "--iterations", "2000", "--repeats", "3"))

    assert DECORATOR_KEYS <= result.keys()
    assert {key: result[key] for key in DECORATOR_KEYS if not is_positive_finite(result[key])} == {}
    assert (result["iterations"], result["repeats"]) == (2000, 3)
    assert {"python", "opentelemetry_sdk", "numpy"} <= result.keys()


def test_decorator_overhead_profile_lists_the_decorator() -> None:
    table = run(
        "decorator_overhead.py", "--profile", "--iterations", "200", "--sort", "cumulative", "--top", "5"
    )

    assert "Ordered by: cumulative time" in table
    assert "otel_audio/decorators.py" in table


def test_signal_cost_prints_one_json_line_per_layout_and_duration() -> None:
    result = one_json_line(run("signal_cost.py", "--repeats", "2", "--durations", "0.5,2"))

    for section in ("us_per_audio_second", "realtime_fraction"):
        assert result[section].keys() == SIGNAL_LAYOUTS
        for layout, by_duration in result[section].items():
            assert by_duration.keys() == {"0.5s", "2s"}, layout
            assert all(is_positive_finite(v) for v in by_duration.values()), (section, layout, by_duration)
    assert result["repeats"] == 2


def test_storage_benchmark_prints_bytes_per_sample_beside_the_entropy_bound():
    result = one_json_line(run("storage.py", "--series", "8", "--points", "2000", "--block-hours", "24"))
    for key in ("bytes_per_sample", "entropy_bound_bytes_per_sample", "samples", "blocks"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert result["samples"] == 16_000


def test_storage_benchmark_scales_measured_tier_sizes_to_a_day_at_10k_points_per_second():
    result = one_json_line(run("storage.py", "--series", "8", "--points", "2000", "--block-hours", "24"))
    per_day = ("raw", "rollup_1m", "rollup_1h")
    for key in (*(f"{tier}_gb_per_day_at_10k" for tier in per_day), "rollup_1m_bytes_per_row"):
        assert is_positive_finite(result[key]), key
    # 2,000 points at 10 s: 333.3 minutes and 5.6 hours per series, each window with points a row
    assert (result["rollup_1m_rows"], result["rollup_1h_rows"]) == (8 * 334, 8 * 6)
    assert result["series_at_10k"] == 100_000  # 10,000 points/s at a 10 s interval
    raw_gb = result["bytes_per_sample"] * 10_000 * 86_400 / 1e9
    assert math.isclose(result["raw_gb_per_day_at_10k"], raw_gb, abs_tol=1e-3)
    minute_gb = result["rollup_1m_bytes_per_row"] * 100_000 * 1_440 / 1e9
    assert math.isclose(result["rollup_1m_gb_per_day_at_10k"], minute_gb, abs_tol=1e-3)
    total = sum(result[f"{tier}_gb_per_day_at_10k"] for tier in per_day)
    assert math.isclose(result["total_gb_per_day_at_10k"], total, abs_tol=3e-3)
    held = sum(result[f"{t}_gb_per_day_at_10k"] * days for t, days in zip(per_day, (7, 30, 90), strict=True))
    assert math.isclose(result["steady_state_gb_at_10k"], held, abs_tol=0.5)


QUERIES = ("gauge_avg", "counter_rate", "histogram_p95", "gauge_avg_matcher")


def test_query_benchmark_over_blocks_times_every_query_at_a_raw_a_minute_and_an_hour_step(tmp_path):
    args = ("--store", "blocks", "--dir", str(tmp_path), "--hours", "5", "--series", "5", "--repeats", "2")
    result = one_json_line(run("query.py", *args))

    steps = ("15s", "1m", "1h")
    assert result["tiers"] == {"15s": "raw", "1m": "1m", "1h": "1h"}
    timings = {f"{q}_{s}_{p}_ms" for q in QUERIES for s in steps for p in ("p50", "p95")}
    assert {key for key in timings if not is_positive_finite(result.get(key))} == set()
    assert result["groups"] == {s: dict.fromkeys(QUERIES, 5) for s in steps}  # one group per stage
    assert result["buckets"] == {"15s": 1200, "1m": 300, "1h": 5}
    # flushed after 2 h and 4 h of data; the last hour is still in the head
    assert (result["flushes"], result["head_hours"]) == (2, 1.0)
    assert result["head_points"] > 0 and result["block_files"] > 0
    assert list(tmp_path.iterdir()) == []  # the store's directory is removed afterwards


def test_trace_lookup_benchmark_prints_pruned_and_full_scan_latencies():
    result = one_json_line(run("trace_lookup.py", "--traces", "2000", "--blocks", "3", "--lookups", "10"))
    for key in ("bytes_per_span", "pruned_p50_ms", "full_scan_p50_ms"):
        assert math.isfinite(result[key]) and result[key] > 0, key


SYNTH_SHA256 = "791701877c0577d653f3875a8ab85559b9a11ed5c23c7432c9a4e5dc2cc5a123"


def test_vendored_synthetic_data_set_is_the_standard_one():
    vendored = (BENCHMARKS / "synth_metrics.py").read_bytes()
    assert hashlib.sha256(vendored).hexdigest() == SYNTH_SHA256
    shared = BENCHMARKS.parents[1] / "shared" / "bench" / "synth_metrics.py"
    if shared.exists():  # beside the shared folder, the copy must still match it
        assert shared.read_bytes() == vendored


def test_flush_benchmark_writes_blocks_and_reports_its_speed(tmp_path):
    out = one_json_line(run("flush.py", "--hours", "0.2", "--series", "20", "--dir", str(tmp_path)))
    assert out["points"] == 20 * 720  # 0.2 h at 1 s
    assert out["files"] == 3  # raw block, 1m and 1h rollup files of one day
    assert out["bytes_written"] > 0 and out["flush_points_per_s"] > 0 and out["rollup_points_per_s"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary data directory is removed


AGGREGATION_RULES = (
    "gauge_1m",
    "gauge_5m_sliding",
    "counter_rate_1m",
    "histogram_p95_1m",
    "gauge_1m_by_device",
)


def test_aggregation_benchmark_prints_points_per_second_per_rule_and_for_the_chain():
    args = ("--series", "10", "--minutes", "3", "--batch-points", "500", "--repeats", "1")
    result = one_json_line(run("aggregation.py", *args))

    rates = [f"{rule}_points_per_s" for rule in AGGREGATION_RULES] + ["chain_points_per_s"]
    assert {key for key in rates if not is_positive_finite(result.get(key))} == set()
    assert result["points"] == 3 * 10 * 180  # three metrics, ten series, a point a second
    # 1 m windows ending at minutes 1..3 and 5 m sliding ones ending at minutes 1..7
    assert (result["windows"], result["late_points"]) == (7, 0)
    assert result["results"] > 0 and 0 < result["max_held_points"] <= result["points"]


def test_alert_latency_benchmark_measures_export_to_webhook():
    result = one_json_line(run("alert_latency.py", "--probes", "3", "--warmup", "1", "--interval", "0"))
    assert result["probes"] == 3  # each probe's alert reached the benchmark's webhook
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
