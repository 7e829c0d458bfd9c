"""Acknowledged means durable: data survives a clean restart and a kill -9 during ingest."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests

from tests.receiver_helpers import SECOND, api, gauge, grpc_export_metrics, metrics_request

ROOT = Path(__file__).resolve().parents[1]
NOW = time.time_ns() // SECOND * SECOND


def test_clean_restart_replays_metrics_spans_logs_and_series_budgets(start_receiver, tmp_path):
    data = tmp_path / "data"
    first = start_receiver(data_dir=data, limits__max_series_per_metric=2)
    points = [(NOW, float(i), {"file": f"f{i}"}) for i in range(3)]
    reply = grpc_export_metrics(first.grpc_port, metrics_request("s", [gauge("per_file", points)]))
    assert reply.partial_success.rejected_data_points == 1
    first.stop()

    second = start_receiver(data_dir=data, limits__max_series_per_metric=2)
    series = api(second, "/api/v1/series", metric="per_file").json()["series"]
    assert sorted(s["attributes"]["file"] for s in series) == ["f0", "f1"]
    # The budget was restored from the log: the third series is still over it, the first two fit.
    again = grpc_export_metrics(second.grpc_port, metrics_request("s", [gauge("per_file", points)]))
    assert again.partial_success.rejected_data_points == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``otel-audio serve`` in a subprocess, on fixed free ports and a given data dir."""

    def __init__(self, tmp_path: Path, data: Path) -> None:
        self.grpc_port, self.http_port, self.api_port = _free_port(), _free_port(), _free_port()
        self.config = tmp_path / "serve.yaml"
        self.config.write_text(
            f"server:\n  grpc_port: {self.grpc_port}\n  http_port: {self.http_port}\n"
            f"  api_port: {self.api_port}\nstorage:\n  data_dir: {data}\n"
            # Flush to blocks every second and keep WAL segments small, so kills also land
            # during flushes and checkpoints and after WAL truncations.
            "  blocks:\n    flush_interval_s: 1\n  wal:\n    segment_bytes: 65536\n"
            "tick_interval_s: 0.05\n"
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "otel_audio.cli", "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # The receiver prints its addresses once every port accepts; log lines may come first.
        seen = []
        for line in self.process.stdout:
            seen.append(line)
            if "otel-audio receiver" in line:
                break
        else:
            raise AssertionError("receiver exited before listening:\n" + "".join(seen))
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def cleanup(self) -> None:
        """Never leave a receiver running after the test, whatever failed."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def serve_process(tmp_path):
    server = ServeProcess(tmp_path, tmp_path / "data")
    yield server
    server.cleanup()


class Acks:
    """Acknowledged request keys, with a condition to wait on their number (no polling)."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.changed = threading.Condition()

    def add(self, key: int) -> None:
        with self.changed:
            self.keys.append(key)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: len(self.keys) >= count, timeout)


def _load(port: int, worker: int, acked: Acks, stop: threading.Event) -> None:
    """Send one new series per request; remember the requests the receiver acknowledged."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

        stub = metrics_service_pb2_grpc.MetricsServiceStub(channel)
        seq = 0
        while not stop.is_set():
            key = worker * 1_000_000 + seq
            request = metrics_request("load", [gauge("kill_test", [(NOW, float(key), {"seq": key})])])
            try:
                stub.Export(request, timeout=5)
            except grpc.RpcError:
                return  # the receiver died mid-request: this one was not acknowledged
            acked.add(key)
            seq += 1


def test_kill_9_during_ingest_loses_no_acknowledged_point(serve_process, tmp_path):
    server, data = serve_process, tmp_path / "data"
    all_acked: list[int] = []
    for round_ in range(3):
        server.start()
        acked = Acks()
        stop = threading.Event()
        workers = [
            threading.Thread(target=_load, args=(server.grpc_port, round_ * 10 + w, acked, stop))
            for w in range(4)
        ]
        for w in workers:
            w.start()
        acked.wait_for(150 * (round_ + 1), timeout=30)
        server.kill()
        stop.set()
        for w in workers:
            w.join(30)
        assert acked.keys, "the load generator never got an acknowledgement"
        all_acked += acked.keys

    server.start()
    try:
        series = requests.get(
            f"http://127.0.0.1:{server.api_port}/api/v1/series", params={"metric": "kill_test"}, timeout=60
        ).json()["series"]
        stored = [int(s["attributes"]["seq"]) for s in series]
        assert set(all_acked) <= set(stored), f"lost {len(set(all_acked) - set(stored))} acknowledged points"
        counts = requests.get(
            f"http://127.0.0.1:{server.api_port}/api/v1/query_range",
            params={
                "metric": "kill_test",
                "agg": "count",
                "group_by": "seq",
                "step": "1h",
                "start": str((NOW - 60 * SECOND) / 1e9),
                "end": str((NOW + 60 * SECOND) / 1e9),
            },
            timeout=60,
        ).json()["series"]
        assert all(s["points"][0][1] == 1.0 for s in counts), "a point was stored twice"
    finally:
        assert server.terminate() == 0
    assert len(all_acked) >= 300
    assert os.listdir(data / "wal")
