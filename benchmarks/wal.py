"""Write-ahead log throughput with group commit: appends/s, MB/s and fsyncs per payload and thread count.

For each payload size (1 KiB, 64 KiB, 1 MiB by default) and appender thread count (1, 4, 16),
a fresh log in a temporary directory takes ``append_durable`` calls from every thread for
``--seconds``. Under the default policy ``always`` each call returns only after its group is
fsynced, so appends/s is bounded by the disk's fsync rate times the group size: more threads mean
bigger groups, not more fsyncs. ``appends_per_fsync`` shows how well that works, and ``ack_ms_p50``
/ ``ack_ms_p99`` are what a caller waits. MB/s counts payload bytes (10^6 bytes per MB).

Run it on the filesystem that will hold the data (``--dir``): on tmpfs fsync costs nothing.

Usage::

    python benchmarks/wal.py [--seconds 2] [--sizes 1024,65536,1048576] [--threads 1,4,16]
                             [--policy always] [--dir PATH]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from otel_audio.store.wal import WriteAheadLog


def size_label(size: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def run(directory: Path, size: int, threads: int, seconds: float, policy: str) -> dict[str, Any]:
    """Appenders on ``threads`` threads for ``seconds``; figures for that one log."""
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wal = WriteAheadLog(directory, fsync=policy)  # type: ignore[arg-type]
    fsyncs_before = wal.stats()["fsyncs"]
    barrier = threading.Barrier(threads + 1)
    latencies: list[list[int]] = [[] for _ in range(threads)]
    deadline = 0.0

    def appender(mine: list[int]) -> None:
        barrier.wait()
        while (began := time.perf_counter_ns()) < deadline:
            wal.append_durable(1, payload)
            mine.append(time.perf_counter_ns() - began)

    workers = [threading.Thread(target=appender, args=(mine,)) for mine in latencies]
    for worker in workers:
        worker.start()
    start = time.perf_counter()
    deadline = (start + seconds) * 1e9
    barrier.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    fsyncs = int(wal.stats()["fsyncs"]) - int(fsyncs_before)
    wal.close()

    all_latencies = sorted(latency for mine in latencies for latency in mine)
    appends = len(all_latencies)
    return {
        "appends": appends,
        "appends_per_s": round(appends / elapsed, 1),
        "mb_per_s": round(appends * size / elapsed / 1e6, 2),
        "fsyncs": fsyncs,
        "appends_per_fsync": round(appends / fsyncs, 2) if fsyncs else None,
        "ack_ms_p50": round(statistics.median(all_latencies) / 1e6, 3) if all_latencies else None,
        "ack_ms_p99": round(all_latencies[int(0.99 * (appends - 1))] / 1e6, 3) if all_latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each run")
    parser.add_argument("--sizes", default="1024,65536,1048576", help="payload sizes in bytes")
    parser.add_argument("--threads", default="1,4,16", help="appender thread counts")
    parser.add_argument("--policy", default="always", choices=("always", "interval", "never"))
    parser.add_argument("--dir", default=None, help="where the temporary logs go (default: system temp)")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    thread_counts = [int(count) for count in args.threads.split(",")]

    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        for threads in thread_counts:
            directory = Path(tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir))
            try:
                figures = run(directory, size, threads, args.seconds, args.policy)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
            results.setdefault(size_label(size), {})[str(threads)] = figures

    print(
        json.dumps(
            {
                "policy": args.policy,
                "seconds_per_run": args.seconds,
                "results": results,
                "python": platform.python_version(),
                "platform": sys.platform,
            }
        )
    )


if __name__ == "__main__":
    main()
