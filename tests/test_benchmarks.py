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
