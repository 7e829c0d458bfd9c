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
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests

from tests.receiver_helpers import api, gauge, grpc_export_metrics, metrics_request

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


def test_past_the_memory_bound_both_transports_refuse_with_retry_information(start_receiver):
    """A bound below the process's resident memory: every export is refused, retryably."""
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status

    receiver = start_receiver(limits__max_memory_bytes=1024 * 1024)
    request = metrics_request("s", [gauge("g", [(time.time_ns(), 1.0, {})])])
    with pytest.raises(grpc.RpcError) as refused:
        grpc_export_metrics(receiver.grpc_port, request)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limits.max_memory_bytes" in refused.value.details()
    details = rpc_status.from_call(refused.value).details
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in details)

    reply = requests.post(
        f"http://127.0.0.1:{receiver.http_port}/v1/metrics",
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert reply.status_code == 429
    assert reply.headers["Retry-After"].isdigit()
    status = status_pb2.Status.FromString(reply.content)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED and "limits.max_memory_bytes" in status.message
    assert "g" not in {m["name"] for m in api(receiver, "/api/v1/metrics").json()["metrics"]}
