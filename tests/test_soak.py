"""``benchmarks/soak.py`` runs end to end and prints its one JSON line with every figure.

Twenty seconds prove the script (receiver subprocess, steady sender, /proc sampling, windows,
slopes), not the receiver: growth is judged by ``make soak``, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"
SHORT = "--minutes 0.3 --rate 5 --points-per-request 200 --warmup 5 --window 6 --query-interval 2".split()
FIELDS = {
    "duration_s",
    "rate_requests_per_s",
    "requests",
    "failures",
    "rss_slope_mb_per_h",
    "fd_slope_per_h",
    "rss_mb_max",
    "fds_max",
    "threads_max",
    "ack_p50_ms",
    "ack_p99_ms",
    "query_p50_ms",
    "query_p99_ms",
    "windows",
    "verdict",
}


def test_a_short_soak_prints_slopes_latency_windows_and_a_verdict():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *SHORT], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert FIELDS <= set(result)
    assert result["verdict"] == "too_short"  # 20 s say nothing about a leak, and the script knows it
    assert result["requests"] > 0 and result["failures"] == 0
    assert result["rss_mb_max"] > 0 and result["fds_max"] > 0 and result["threads_max"] > 0
    windows = result["windows"]
    assert len(windows) >= 3
    assert all(w["requests"] > 0 and w["ack_p50_ms"] is not None for w in windows[:-1])
    assert any(w["query_p50_ms"] is not None for w in windows)
