"""The receiver flushes what arrives over OTLP into blocks, truncates its WAL, and restarts from both."""

from __future__ import annotations

import time

from tests.receiver_helpers import SECOND, api, gauge, grpc_export_metrics, metrics_request

NOW = time.time_ns() // SECOND * SECOND
SETTINGS = {
    "storage__blocks__flush_interval_s": 1,
    "storage__wal__segment_bytes": 4096,  # every request rolls a segment: truncation is visible
    "tick_interval_s": 0.05,
}


def _send(receiver, first: int, count: int) -> None:
    for i in range(first, first + count):
        points = [(NOW - (100 - i) * SECOND, float(i), {"file": f"f{i % 3}"})]
        reply = grpc_export_metrics(
            receiver.grpc_port, metrics_request("enh", [gauge("blocks_test", points)])
        )
        assert not reply.partial_success.rejected_data_points


def _counts(receiver) -> dict[str, float]:
    series = api(
        receiver,
        "/api/v1/query_range",
        metric="blocks_test",
        agg="count",
        group_by="file",
        step="1h",
        start=str((NOW - 200 * SECOND) / 1e9),
        end=str((NOW + 10 * SECOND) / 1e9),
    ).json()["series"]
    return {s["labels"]["file"]: sum(v for _, v in s["points"]) for s in series}


def test_acknowledged_points_reach_blocks_and_the_wal_is_truncated_behind_them(start_receiver, tmp_path):
    receiver = start_receiver(**SETTINGS)
    _send(receiver, 0, 30)
    last = int(receiver.wal.stats()["last_lsn"])
    assert receiver.store.wait_checkpoint(last, timeout_s=30), "no flush committed the acknowledged data"
    assert list((tmp_path / "data" / "blocks" / "raw").glob("*/f*/points.parquet"))
    assert list((tmp_path / "data" / "blocks" / "1m").glob("*/f*.parquet"))
    # Segments holding only flushed records are gone; what is left replays nothing old.
    left = [lsn for lsn, _, _ in receiver.wal.replay()]
    assert len(left) < 30 and all(lsn >= last - 1 for lsn in left)
    assert _counts(receiver) == {"f0": 10.0, "f1": 10.0, "f2": 10.0}


def test_restart_reads_blocks_and_replays_only_the_log_after_the_checkpoint(start_receiver, tmp_path):
    data = tmp_path / "data"
    first = start_receiver(data_dir=data, **SETTINGS)
    _send(first, 0, 30)
    assert first.store.wait_checkpoint(int(first.wal.stats()["last_lsn"]), timeout_s=30)
    first.stop()  # flushes the rest

    second = start_receiver(data_dir=data, **SETTINGS)
    assert second.store.snapshot().points.num_rows == 0  # nothing replayed twice into the head
    _send(second, 30, 9)
    assert _counts(second) == {"f0": 13.0, "f1": 13.0, "f2": 13.0}  # each point exactly once


def test_series_budgets_survive_a_restart_through_the_blocks(start_receiver, tmp_path):
    data = tmp_path / "data"
    settings = {**SETTINGS, "limits__max_series_per_metric": 2}
    first = start_receiver(data_dir=data, **settings)
    points = [(NOW, float(i), {"file": f"f{i}"}) for i in range(3)]
    reply = grpc_export_metrics(first.grpc_port, metrics_request("s", [gauge("per_file", points)]))
    assert reply.partial_success.rejected_data_points == 1
    first.stop()
    assert first.store.checkpoint.lsn == int(first.wal.stats()["last_lsn"])  # all of it in blocks

    second = start_receiver(data_dir=data, **settings)
    again = grpc_export_metrics(second.grpc_port, metrics_request("s", [gauge("per_file", points)]))
    assert again.partial_success.rejected_data_points == 1  # f0 and f1 still hold the budget


def test_a_full_head_refuses_with_retry_info_instead_of_growing(start_receiver):
    import grpc
    import pytest

    receiver = start_receiver(
        storage__blocks__head_max_bytes=1024 * 1024,
        tick_interval_s=3600,  # no flush catches up during the test
    )
    points = [(NOW - i * SECOND, float(i), {"file": f"f{i % 50}"}) for i in range(120_000)]
    grpc_export_metrics(receiver.grpc_port, metrics_request("enh", [gauge("big", points)]))
    assert receiver.store.pressure() is not None
    with pytest.raises(grpc.RpcError) as refused:
        grpc_export_metrics(receiver.grpc_port, metrics_request("enh", [gauge("big", points[:10])]))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "while blocks are written" in refused.value.details()
    receiver.store.flush()  # what the ticker would do
    assert receiver.store.pressure() is None
    grpc_export_metrics(receiver.grpc_port, metrics_request("enh", [gauge("big", points[:10])]))


def test_without_the_flush_process_blocks_are_written_in_the_receivers_own_process(start_receiver, tmp_path):
    import multiprocessing

    before = set(multiprocessing.active_children())
    receiver = start_receiver(**SETTINGS, storage__blocks__flush_process=False)
    _send(receiver, 0, 30)
    last = int(receiver.wal.stats()["last_lsn"])
    assert receiver.store.wait_checkpoint(last, timeout_s=30), "no flush committed the acknowledged data"
    assert list((tmp_path / "data" / "blocks" / "raw").glob("*/f*/points.parquet"))
    assert set(multiprocessing.active_children()) <= before  # nothing spawned (it re-imports __main__)
    assert _counts(receiver) == {"f0": 10.0, "f1": 10.0, "f2": 10.0}
