"""The receiver benchmarks run and print one JSON line of the documented shape.

Tiny settings only; speed is measured by the benchmarks, never asserted here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

INGEST_KEYS = {
    "points_per_s",
    "spans_per_s",
    "ack_p50_ms",
    "ack_p99_ms",
    "spans_ack_p50_ms",
    "spans_ack_p99_ms",
    "ingest_to_queryable_p50_ms",
    "ingest_to_queryable_p99_ms",
    "receiver_rss_mb",
    "senders",
    "duration_s",
    "points_per_request",
    "spans_per_request",
}
TINY_INGEST = "--duration 1 --senders 1 --probes 2 --points-per-request 50 --spans-per-request 20".split()
QUERY_KEYS = {
    f"{query}_{quantile}_ms"
    for query in ("gauge_avg", "counter_rate", "histogram_p95", "gauge_avg_matcher")
    for quantile in ("p50", "p95")
}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def one_json_line(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected one line of output, got {len(lines)}: {stdout!r}"
    return json.loads(lines[0])


def not_positive_finite(result: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    def ok(value: Any) -> bool:
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        )

    return {key: result[key] for key in keys if not ok(result[key])}


def test_ingest_prints_one_json_line_of_positive_throughputs_and_latencies() -> None:
    done = run("ingest.py", *TINY_INGEST)
    result = one_json_line(done.stdout)

    assert INGEST_KEYS <= result.keys()
    assert not_positive_finite(result, INGEST_KEYS) == {}
    assert (result["senders"], result["points_per_request"], result["spans_per_request"]) == (1, 50, 20)
    assert result["refused_requests"] == 0


def test_ingest_profile_prints_the_receivers_stages_and_tables_to_stderr() -> None:
    done = run("ingest.py", "--profile", *TINY_INGEST)

    assert one_json_line(done.stdout)["profiled"] is True
    assert "decode to Arrow" in done.stderr
    assert "Ordered by: cumulative time" in done.stderr and "Ordered by: internal time" in done.stderr
    assert "decode_metrics" in done.stderr


def test_query_prints_one_json_line_of_positive_latencies_per_query() -> None:
    result = one_json_line(run("query.py", "--hours", "1", "--series", "10", "--repeats", "2").stdout)

    assert QUERY_KEYS <= result.keys()
    assert not_positive_finite(result, QUERY_KEYS) == {}
    assert result["points"] == 3 * 10 * 240
    assert all(groups == 5 for groups in result["groups"].values())
