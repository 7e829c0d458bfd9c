"""A full disk, with a real receiver process: ingest refuses with retry information instead of
acknowledging what it cannot keep, keeps running, and acknowledges again once space returns.

How the disk is made full: ``RLIMIT_FSIZE`` set to 0 on the receiver and its flush process with
``prlimit`` (``resource.prlimit``), and set back to unlimited to "return the space". Every write
that would make a file longer then fails with ``EFBIG``, the way a full disk fails it with
``ENOSPC``: the WAL append, a block file, a SQLite page. Python ignores ``SIGXFSZ``, so the
process gets the error instead of dying. Unlike ``chmod`` it binds root too (CI runs as root),
and unlike a small mounted filesystem it needs no privileges and no mount, and it can be turned
off without a restart. What it does not cover: a write within a file's existing length still
succeeds (a full disk fails those too only for sparse files), and it is per process, so both the
receiver and its flush process are limited.

A data directory turned read-only under a running receiver is not tested here because Linux does
not allow it: remounting a (bind) mount read-only fails with EBUSY while a file on it is open for
writing, and the WAL's active segment always is (checked with ``unshare -rm`` and ``mount -o
remount,bind,ro``). ``chmod`` does not bind root. The WAL's handling of EROFS is
tested with the error injected (``tests/test_wal.py``); it is the same path as EFBIG here.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import grpc
import psutil
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import crash  # benchmarks/ is not a package: found through sys.path

BUILD = {"metrics": crash.metrics_request, "spans": crash.spans_request, "logs": crash.logs_request}


def _limit_file_size(serve: crash.Serve, limit: int) -> None:
    """Set RLIMIT_FSIZE (soft) of the receiver and its children; the hard limit stays."""
    receiver = psutil.Process(serve.process.pid)
    for process in [receiver, *receiver.children(recursive=True)]:
        hard = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (limit, hard))


def _export_grpc(serve: crash.Serve, kind: str, rid: int, base_ns: int) -> grpc.RpcError | None:
    with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
        try:
            channel.unary_unary(crash.EXPORT[kind])(BUILD[kind](rid, base_ns), timeout=30)
        except grpc.RpcError as exc:
            return exc
    return None


def _export_http(serve: crash.Serve, rid: int, base_ns: int) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{serve.http_port}/v1/metrics",
        data=crash.metrics_request(rid, base_ns),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=30,
    )


def _retry_delay_s(error: grpc.RpcError) -> int:
    status = rpc_status.from_call(error)
    assert status is not None, "UNAVAILABLE without a google.rpc.Status"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds
    raise AssertionError("UNAVAILABLE without RetryInfo")


def _stored(serve: crash.Serve, ledger: crash.Ledger, base_ns: int) -> dict[str, dict[int, list[int]]]:
    counts = {kind: ledger.next_id[kind] for kind in BUILD}
    return {
        "metrics": crash.stored_metrics(serve, base_ns, counts["metrics"]),
        "spans": crash._items_by_request(crash.stored_spans(serve, base_ns, counts["spans"])),
        "logs": crash._items_by_request(crash.stored_logs(serve, base_ns, counts["logs"])),
    }


@pytest.fixture
def serve(tmp_path):
    webhook = crash.Webhook()
    server = crash.Serve(tmp_path, webhook.url(), flip_s=0.6)
    yield server
    if server.process is not None and server.process.poll() is None:
        _limit_file_size(server, resource.RLIM_INFINITY)
    server.stop()
    webhook.stop()


def _send_all(serve: crash.Serve, ledger: crash.Ledger, base_ns: int, refused: dict[str, set[int]]) -> None:
    """One request of each signal over gRPC and one of metrics over HTTP; refusals noted."""
    for kind in BUILD:
        rid = ledger.take(kind)
        error = _export_grpc(serve, kind, rid, base_ns)
        if error is None:
            ledger.ack(kind, rid)
        else:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            assert _retry_delay_s(error) >= 1
            refused[kind].add(rid)
    rid = ledger.take("metrics")
    reply = _export_http(serve, rid, base_ns)
    if reply.status_code == 200:
        ledger.ack("metrics", rid)
    else:
        assert reply.status_code == 503, reply.text
        assert int(reply.headers["Retry-After"]) >= 1
        refused["metrics"].add(rid)


def test_a_full_disk_refuses_with_retry_info_keeps_what_was_acked_and_recovers_without_restart(serve):
    ledger = crash.Ledger()
    refused: dict[str, set[int]] = {kind: set() for kind in BUILD}
    base_ns = (time.time_ns() // 10**9 - 3600) * 10**9
    serve.start()
    for _ in range(3):
        _send_all(serve, ledger, base_ns, refused)
    assert not any(refused.values()), "refused before the disk was full"
    flushes_before = crash._checkpoint_seq(serve.data)

    _limit_file_size(serve, 0)  # the disk is full
    for _ in range(3):
        _send_all(serve, ledger, base_ns, refused)
    assert all(len(refused[kind]) == 3 for kind in ("spans", "logs")), refused
    assert len(refused["metrics"]) == 6, refused
    # the flush of what was acknowledged before fails too, and is retried: wait for a failure
    deadline = time.monotonic() + 60
    while not any("failed; its rows stay in memory" in line for line in serve.output):
        assert time.monotonic() < deadline, "no flush was tried while the disk was full"
        time.sleep(0.05)
    assert serve.process.poll() is None, "the receiver died of the full disk"

    _limit_file_size(serve, resource.RLIM_INFINITY)  # space returns
    before = {kind: set(ids) for kind, ids in ledger.acked.items()}
    for _ in range(2):
        _send_all(serve, ledger, base_ns, refused)
    assert all(len(ledger.acked[kind]) > len(before[kind]) for kind in BUILD), "not acknowledging again"
    assert len(refused["metrics"]) == 6, "refused after space returned"
    # the failed flush is retried and commits (the WAL held its rows meanwhile)
    deadline = time.monotonic() + 60
    while crash._checkpoint_seq(serve.data) <= flushes_before:
        assert time.monotonic() < deadline, "no flush committed after space returned"
        time.sleep(0.05)

    serve.kill()  # what is left of the acknowledged data is in blocks and the WAL only
    restarted_at = len(serve.output)
    serve.start()
    for kind, found in _stored(serve, ledger, base_ns).items():
        figures = crash.check_data(kind, ledger, found)
        assert figures[f"{kind}_lost"] == 0, figures
        assert figures[f"{kind}_duplicated"] == 0, figures
        assert not refused[kind] & set(found), f"refused {kind} were stored: {refused[kind] & set(found)}"
    assert not [line for line in serve.output[restarted_at:] if crash.CORRUPTION.search(line)]
