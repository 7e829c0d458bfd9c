"""Under five times its measured capacity the receiver refuses with retry information, loses
nothing it acknowledged, stays under its memory bound, keeps answering health and dashboard
probes, and acknowledges again once the load drops.

The harness is ``benchmarks/overload.py`` at a small scale: a real receiver subprocess, one
OTLP/gRPC and one OTLP/HTTP sender process, every request tagged with a unique id that the
store is asked for afterwards. Behaviour only: no latency or throughput threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "overload.py"
MAX_MEMORY_MB = 1024
SMALL = [
    "--senders", "2",
    "--points-per-request", "2048",
    "--series", "500",
    "--capacity-seconds", "3",
    "--overload-seconds", "8",
    "--recovery-seconds", "8",
    "--factor", "5",
    "--max-memory-mb", str(MAX_MEMORY_MB),
    "--max-inflight-mb", "32",
    "--head-max-mb", "32",
]  # fmt: skip


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *SMALL], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_overload_is_refused_over_both_transports_and_every_refusal_carries_retry_information(run):
    codes = run["refusal_codes"]
    assert codes.get("grpc_RESOURCE_EXHAUSTED", 0) > 0, run["outcomes"]
    assert codes.get("http_429", 0) > 0, run["outcomes"]
    assert set(codes) <= {"grpc_RESOURCE_EXHAUSTED", "grpc_UNAVAILABLE", "http_429", "http_503"}, codes
    assert run["refused_with_retry_info"] == run["refused"]


def test_nothing_acknowledged_is_lost_or_stored_twice(run):
    assert run["acked"] > 0
    assert run["lost_acked"] == 0
    assert run["duplicated"] == 0


def test_resident_memory_stays_under_the_configured_bound(run):
    assert run["max_memory_mb"] == MAX_MEMORY_MB
    assert 0 < run["peak_rss_mb"] < MAX_MEMORY_MB


def test_health_dashboard_and_api_answer_every_probe_during_overload(run):
    assert run["probes_answered"] > 0
    assert run["probe_failures"] == {}
    assert run["stream_error"] == ""
    assert run["stream_events"].get("points", 0) > 0  # the live stream went on delivering


def test_ingest_acknowledges_again_after_the_load_drops(run):
    assert run["recovery_s"] is not None, run["outcomes"]
    assert run["outcomes"].get("recovery:ok", 0) > 0
