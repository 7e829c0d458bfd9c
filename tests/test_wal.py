"""The write-ahead log's contract: an acknowledged record survives, a failed one never appears.

Disk faults are simulated by injecting the ``pwrite``/``fsync`` functions; concurrency is made
deterministic with events and gates, never with sleeps or timing thresholds.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store.wal import WalCorrupt, WalOverloaded, WalUnavailable, WriteAheadLog

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30  # seconds: a guard against hangs, never a measurement


def no_fsync(fd: int) -> None:
    """For tests about framing and order, where durability is not the point."""


class CountingFsync:
    """Counts fsyncs and does them for real."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.called.set()
        os.fsync(fd)


class GatedFsync:
    """Once armed, the next fsync blocks until released: the writer is then busy, on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.armed and not self.release.is_set():
            self.entered.set()
            assert self.release.wait(WAIT), "the test never released the fsync gate"


def payloads(wal: WriteAheadLog) -> list[bytes]:
    return [record.payload for record in wal.replay()]


def only_segment(directory: Path) -> Path:
    (segment,) = directory.glob("wal-*.log")
    return segment


def wait_until(condition: Callable[[], bool]) -> None:
    """Spin (yielding the CPU) until ``condition`` holds; for states that have no event to wait on."""
    deadline = WAIT / 1e-6
    spins = 0
    while not condition():
        os.sched_yield()
        spins += 1
        assert spins < deadline, "condition never held"


def start(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


# -- round trip and order -------------------------------------------------------------------------


def test_replay_returns_each_record_with_its_lsn_kind_and_payload(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        lsns = [wal.append_durable(1, b"metrics"), wal.append_durable(2, b""), wal.append(3, b"logs")]

    with WriteAheadLog(tmp_path) as wal:
        assert list(wal.replay()) == [(lsns[0], 1, b"metrics"), (lsns[1], 2, b""), (lsns[2], 3, b"logs")]
    assert lsns == [1, 2, 3]


def test_lsns_continue_after_reopening(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        wal.append_durable(1, b"a")

    with WriteAheadLog(tmp_path) as wal:
        assert wal.append_durable(1, b"b") == 2


def test_replay_from_an_lsn_skips_older_records(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        for i in range(5):
            wal.append_durable(1, b"%d" % i)

        assert [record.lsn for record in wal.replay(from_lsn=4)] == [4, 5]


def test_concurrent_appenders_are_each_replayed_once_in_lsn_order(tmp_path: Path) -> None:
    acknowledged: dict[int, bytes] = {}
    per_thread: dict[int, list[int]] = {}

    def appender(thread: int) -> None:
        lsns = per_thread.setdefault(thread, [])
        for i in range(100):
            payload = f"{thread}:{i}".encode()
            lsn = wal.append_durable(1, payload)
            acknowledged[lsn] = payload
            lsns.append(lsn)

    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        threads = [start(lambda t=t: appender(t)) for t in range(8)]
        for thread in threads:
            thread.join()

    with WriteAheadLog(tmp_path) as wal:
        replayed = list(wal.replay())
    assert len(acknowledged) == 800  # every LSN handed out once
    assert [record.lsn for record in replayed] == sorted(acknowledged)
    assert {record.lsn: record.payload for record in replayed} == acknowledged
    assert all(lsns == sorted(lsns) for lsns in per_thread.values())


# -- group commit and fsync policies --------------------------------------------------------------


def test_appenders_waiting_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    gate = GatedFsync()
    wal = WriteAheadLog(tmp_path, fsync_fn=gate)
    gate.armed, before = True, gate.calls
    threads = [start(lambda: wal.append_durable(1, b"first"))]
    assert gate.entered.wait(WAIT)  # the writer now holds "first" in an fsync

    threads += [start(lambda i=i: wal.append_durable(1, b"%d" % i)) for i in range(49)]
    wait_until(lambda: wal.stats()["pending_records"] == 50)
    gate.release.set()
    for thread in threads:
        thread.join()
    wal.close()

    assert gate.calls - before == 2  # "first", then the other 49 together
    assert gate.calls - before < 50


def test_append_durable_returns_only_after_its_group_is_fsynced(tmp_path: Path) -> None:
    gate = GatedFsync()
    returned = threading.Event()
    with WriteAheadLog(tmp_path, fsync_fn=gate) as wal:
        gate.armed = True
        thread = start(lambda: (wal.append_durable(1, b"x"), returned.set()))
        assert gate.entered.wait(WAIT)

        assert not returned.is_set()
        assert wal.stats()["durable_lsn"] == 0
        gate.release.set()
        thread.join()
        assert returned.is_set()
        assert wal.stats()["durable_lsn"] == 1


def test_interval_policy_acknowledges_after_the_write_and_before_the_fsync(tmp_path: Path) -> None:
    fsync = CountingFsync()
    wal = WriteAheadLog(tmp_path, fsync="interval", fsync_interval_ms=3_600_000, fsync_fn=fsync)
    before = fsync.calls

    lsn = wal.append_durable(1, b"x")

    assert fsync.calls == before
    assert (wal.stats()["written_lsn"], wal.stats()["durable_lsn"]) == (lsn, lsn - 1)
    wal.close()
    assert fsync.calls == before + 1
    assert wal.stats()["durable_lsn"] == lsn


def test_interval_policy_fsyncs_without_another_append(tmp_path: Path) -> None:
    fsync = CountingFsync()
    with WriteAheadLog(tmp_path, fsync="interval", fsync_interval_ms=20, fsync_fn=fsync) as wal:
        fsync.called.clear()
        wal.append_durable(1, b"x")

        assert fsync.called.wait(WAIT)


def test_never_policy_leaves_the_fsync_to_close(tmp_path: Path) -> None:
    fsync = CountingFsync()
    wal = WriteAheadLog(tmp_path, fsync="never", fsync_fn=fsync)
    before = fsync.calls

    for i in range(10):
        wal.append_durable(1, b"%d" % i)

    assert fsync.calls == before
    wal.close()
    assert fsync.calls == before + 1


# -- recovery -------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    records=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_torn_tail_is_cut_off_and_new_records_follow_the_good_prefix(
    records: list[bytes], data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ends = []
        with WriteAheadLog(directory, fsync_fn=no_fsync) as wal:
            for payload in records:
                wal.append_durable(1, payload)
                ends.append(wal.stats()["total_bytes"])
        segment = only_segment(directory)
        written = segment.read_bytes()
        cut = data.draw(st.integers(0, len(written)), label="cut")
        garbage = data.draw(st.binary(max_size=40), label="garbage after the cut")
        torn = written[:cut] + garbage
        segment.write_bytes(torn)
        # A record is intact when all its bytes are (the garbage may happen to restore some).
        intact = [end for end in ends if torn[:end] == written[:end]]
        kept = records[: len(intact)]

        with WriteAheadLog(directory, fsync_fn=no_fsync) as wal:
            assert segment.stat().st_size == (intact[-1] if intact else 0)
            assert payloads(wal) == kept
            assert wal.append_durable(2, b"after") == len(kept) + 1
        with WriteAheadLog(directory, fsync_fn=no_fsync) as wal:
            assert payloads(wal) == [*kept, b"after"]


def test_a_corrupt_byte_between_good_records_is_reported_with_segment_and_offset(tmp_path: Path) -> None:
    ends = []
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        for i in range(5):
            wal.append_durable(1, bytes([i]) * 100)
            ends.append(wal.stats()["total_bytes"])
    segment = only_segment(tmp_path)
    damaged = bytearray(segment.read_bytes())
    damaged[ends[0] + 50] ^= 0xFF  # inside the second record's payload
    segment.write_bytes(damaged)

    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal, pytest.raises(WalCorrupt) as caught:
        list(wal.replay())

    assert (caught.value.segment, caught.value.offset) == (segment, ends[0])
    assert f"{segment} is corrupt at byte offset {ends[0]}" in str(caught.value)


def test_damage_at_the_end_of_an_older_segment_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync, segment_bytes=300) as wal:
        for i in range(6):
            wal.append_durable(1, bytes([i]) * 100)
    oldest = sorted(tmp_path.glob("wal-*.log"))[0]
    damaged = bytearray(oldest.read_bytes())
    damaged[-1] ^= 0xFF
    oldest.write_bytes(damaged)

    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal, pytest.raises(WalCorrupt) as caught:
        list(wal.replay())

    assert caught.value.segment == oldest


def test_skip_corrupt_logs_the_damage_and_resumes_at_the_next_good_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        first_end = 0
        for i in range(4):
            wal.append_durable(1, bytes([i]) * 100)
            first_end = first_end or wal.stats()["total_bytes"]
    segment = only_segment(tmp_path)
    damaged = bytearray(segment.read_bytes())
    damaged[first_end + 2] ^= 0xFF  # the second record's marker
    segment.write_bytes(damaged)

    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        assert [record.lsn for record in wal.replay(skip_corrupt=True)] == [1, 3, 4]
    assert f"{segment}: skipping corrupt bytes {first_end}.." in caplog.text


# -- segments -------------------------------------------------------------------------------------


def test_segments_roll_before_a_record_would_take_them_past_segment_bytes(tmp_path: Path) -> None:
    record_bytes = 22 + 100  # header + payload
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync, segment_bytes=3 * record_bytes) as wal:
        for i in range(10):
            wal.append_durable(1, bytes([i]) * 100)
        assert wal.stats()["segments"] == 4

    names = sorted(path.name for path in tmp_path.glob("wal-*.log"))
    assert names == [f"wal-{first_lsn:016d}.log" for first_lsn in (1, 4, 7, 10)]
    assert [path.stat().st_size for path in sorted(tmp_path.glob("wal-*.log"))] == [366, 366, 366, 122]
    with WriteAheadLog(tmp_path) as wal:
        assert payloads(wal) == [bytes([i]) * 100 for i in range(10)]


def test_truncate_before_deletes_only_segments_whose_records_are_all_older(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync, segment_bytes=3 * 122) as wal:
        for i in range(10):
            wal.append_durable(1, bytes([i]) * 100)

        assert wal.truncate_before(6) == 1  # segment 1..3 goes; 4..6 still holds 5 and 6

        assert [record.lsn for record in wal.replay()] == list(range(4, 11))
        assert wal.stats()["segments"] == 3


def test_truncate_before_keeps_the_active_segment(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync) as wal:
        wal.append_durable(1, b"x")

        assert wal.truncate_before(100) == 0
        assert wal.append_durable(1, b"y") == 2
    with WriteAheadLog(tmp_path) as wal:
        assert payloads(wal) == [b"x", b"y"]


# -- failures -------------------------------------------------------------------------------------


class FullDisk:
    """``pwrite`` that, while ``full``, writes half the data and then fails like a full disk."""

    def __init__(self) -> None:
        self.full = False

    def __call__(self, fd: int, data: memoryview, offset: int) -> int:
        if self.full:
            os.pwrite(fd, data[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, data, offset)


def test_a_full_disk_fails_the_callers_then_the_log_recovers(tmp_path: Path) -> None:
    disk = FullDisk()
    with WriteAheadLog(tmp_path, fsync_fn=no_fsync, pwrite_fn=disk) as wal:
        wal.append_durable(1, b"before")
        disk.full = True
        with pytest.raises(WalUnavailable, match="No space left on device"):
            wal.append_durable(1, b"lost" * 100)
        assert only_segment(tmp_path).stat().st_size == wal.stats()["total_bytes"]  # half-write cut off
        disk.full = False
        wal.append_durable(1, b"after")
        assert wal.stats()["failed_records"] == 1

    with WriteAheadLog(tmp_path) as wal:
        assert payloads(wal) == [b"before", b"after"]


def test_a_failed_fsync_drops_the_group_then_the_log_recovers(tmp_path: Path) -> None:
    failing = threading.Event()

    def fsync(fd: int) -> None:
        if failing.is_set():
            failing.clear()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    with WriteAheadLog(tmp_path, fsync_fn=fsync) as wal:
        wal.append_durable(1, b"before")
        failing.set()
        with pytest.raises(WalUnavailable, match="Read-only file system"):
            wal.append_durable(1, b"lost")
        wal.append_durable(1, b"after")

    with WriteAheadLog(tmp_path) as wal:
        assert payloads(wal) == [b"before", b"after"]


def test_appends_beyond_the_pending_limit_raise_overloaded_without_queueing(tmp_path: Path) -> None:
    gate = GatedFsync()
    record_bytes = 22 + 100
    wal = WriteAheadLog(tmp_path, fsync_fn=gate, max_pending_bytes=3 * record_bytes)
    gate.armed = True
    first = start(lambda: wal.append_durable(1, b"1" * 100))
    assert gate.entered.wait(WAIT)
    wal.append(1, b"2" * 100)
    wal.append(1, b"3" * 100)

    with pytest.raises(WalOverloaded, match="retry later"):
        wal.append_durable(1, b"4" * 100)

    gate.release.set()
    first.join()
    wal.close()
    with WriteAheadLog(tmp_path) as wal:
        assert payloads(wal) == [b"1" * 100, b"2" * 100, b"3" * 100]


def test_appending_to_a_closed_log_raises_unavailable(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    wal.close()

    with pytest.raises(WalUnavailable, match="closed"):
        wal.append_durable(1, b"x")


def test_an_unknown_fsync_policy_is_refused_with_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="always, interval, never"):
        WriteAheadLog(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


# -- the core promise -----------------------------------------------------------------------------

CRASH_WORKER = """
import sys, threading
from otel_audio.store.wal import WriteAheadLog

wal = WriteAheadLog(sys.argv[1], segment_bytes=16 * 1024)
printing = threading.Lock()

def appender(thread):
    i = 0
    while True:
        lsn = wal.append_durable(1 + thread % 3, f"{thread}:{i};".encode() * 20)
        with printing:
            print(lsn, thread, i, flush=True)
        i += 1

for thread in range(4):
    threading.Thread(target=appender, args=(thread,)).start()
"""


def test_every_acknowledged_record_survives_a_sigkill(tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", CRASH_WORKER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert worker.stdout is not None
    lines = []
    try:
        while len(lines) < 300:
            line = worker.stdout.readline()
            assert line, f"the worker stopped early: {worker.stderr.read() if worker.stderr else ''}"
            lines.append(line)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    lines += worker.stdout.readlines()  # acknowledged before the kill, still in the pipe
    worker.stdout.close()
    assert worker.stderr is not None
    worker.stderr.close()

    acknowledged = {}
    for line in lines:
        if line.endswith("\n"):
            lsn, thread, i = map(int, line.split())
            acknowledged[lsn] = (1 + thread % 3, f"{thread}:{i};".encode() * 20)
    with WriteAheadLog(tmp_path) as wal:
        replayed = {record.lsn: (record.kind, record.payload) for record in wal.replay()}

    assert {lsn: replayed.get(lsn) for lsn in acknowledged} == acknowledged
    assert len(list(tmp_path.glob("wal-*.log"))) > 1  # the crash test also crossed segment rolls


# -- benchmark ------------------------------------------------------------------------------------


def test_the_benchmark_prints_one_json_line_per_size_and_thread_count(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "wal.py"),
            *("--seconds", "0.05", "--sizes", "1024,65536", "--threads", "1,2", "--dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    result = json.loads(line)

    assert result["results"].keys() == {"1KiB", "64KiB"}
    for by_threads in result["results"].values():
        assert by_threads.keys() == {"1", "2"}
        for figures in by_threads.values():
            assert figures["appends"] > 0 and figures["fsyncs"] > 0
            assert figures["appends_per_s"] > 0 and figures["mb_per_s"] > 0
