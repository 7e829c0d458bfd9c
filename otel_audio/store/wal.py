"""Append-only write-ahead log: what makes "acknowledged" mean "durable".

The receiver answers an OTLP export only after the batch is in this log, so a crash after the
answer loses nothing: on restart the log is replayed into the in-memory head. Records are opaque
``(kind, payload)`` pairs (the receiver passes Arrow IPC bytes); each gets a log sequence number
(LSN), strictly increasing, which later tells :meth:`WriteAheadLog.truncate_before` what the
Parquet blocks already hold.

On disk, a directory of segment files ``wal-<first LSN, 16 digits>.log``. Each record is framed as::

    magic "OAW\\x01" | crc32 (u32) | payload length (u32) | kind (u16) | LSN (u64) | payload

little-endian; the crc covers the payload, then length, kind and LSN, so a damaged length or a
record written to the wrong place is caught too. A segment rolls before a write would take it past
``segment_bytes`` (only a single record larger than that makes a bigger segment).

Group commit: any number of threads call :meth:`~WriteAheadLog.append_durable`; one writer
thread takes every record waiting, writes them with one ``pwrite`` and makes them durable with one
``fsync``, then wakes all their callers. Under load the cost of an fsync is shared by everyone
who arrived while the previous one ran. The ``fsync`` policy says what a returned call promises:

- ``always`` (default): the record and everything before it were fsynced. Survives a crash of the
  process, the OS or the power.
- ``interval``: the record was written (it is in the OS page cache); the writer fsyncs at most
  ``fsync_interval_ms`` later. Survives a crash of the process; an OS crash, a power loss or a
  failed fsync can lose the last interval of acknowledged records (a failed fsync is logged with
  the LSNs it dropped).
- ``never``: as ``interval``, but the OS decides when to write back; only sealed segments and
  :meth:`close` are fsynced. For benchmarks and throwaway data.

Failures are answers, not hangs: when more than ``max_pending_bytes`` wait to be written,
:exc:`WalOverloaded` is raised before anything is queued (the server answers RESOURCE_EXHAUSTED);
when a write or fsync fails (disk full, read-only, I/O error), the group's bytes are cut off the
file again and every caller in the group gets :exc:`WalUnavailable` (the server answers
UNAVAILABLE). A record that failed is never reported durable and never replayed, and the log
takes new records as soon as the disk does. LSNs of failed records are not reused while the log is
open, so the LSNs in the log may have gaps.

Recovery: a crash in the middle of a write leaves a torn tail (a partial record, or bytes whose crc
does not match) at the end of the newest segment. Opening the log cuts it off, with a warning, so
new records follow the last good one; those torn records were never acknowledged (under ``always``)
and their LSNs are given out again. Damage anywhere else, followed by good records or in an older
segment, is corruption: :meth:`~WriteAheadLog.replay` raises :exc:`WalCorrupt` naming the segment and
byte offset, or with ``skip_corrupt=True`` logs it and resumes at the next good record.

Usage::

    wal = WriteAheadLog("data/wal")                  # recovers the tail, starts the writer
    for lsn, kind, payload in wal.replay():          # what survived the last run
        ...
    lsn = wal.append_durable(KIND_METRICS, payload)  # on disk when this returns
    wal.truncate_before(oldest_lsn_not_in_a_block)   # drop segments the blocks already hold
    wal.close()
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, TypeAlias

from otel_audio.store.wal_format import (
    CHECKED,
    HEADER,
    MAGIC,
    MAX_KIND,
    MAX_PAYLOAD,
    SEGMENT_NAME,
    Damage,
    scan,
)

__all__ = [
    "Pending",
    "WalCorrupt",
    "WalError",
    "WalOverloaded",
    "WalRecord",
    "WalUnavailable",
    "WriteAheadLog",
]

_log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
BytesLike: TypeAlias = bytes | bytearray | memoryview
_POLICIES = ("always", "interval", "never")


class WalError(Exception):
    """Base class of the write-ahead log's errors."""


class WalOverloaded(WalError):
    """Too many bytes already wait to be written; the record was not queued. Retry later."""


class WalUnavailable(WalError):
    """The record could not be made durable (disk full, read-only, I/O error, log closed).

    The record is not in the log and never will be; retrying later is safe.
    """


class WalCorrupt(WalError):
    """Damaged bytes that are not a torn tail, so records may be missing from the middle of the log."""

    def __init__(self, segment: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"write-ahead log segment {segment} is corrupt at byte offset {offset}: {reason}. "
            "Replay with skip_corrupt=True to skip the damaged bytes, or move the segment away."
        )
        self.segment = segment
        self.offset = offset


class WalRecord(NamedTuple):
    """One record as replayed: unpacks as ``lsn, kind, payload``."""

    lsn: int
    kind: int
    payload: bytes


class WriteAheadLog:
    """A directory of segment files with group commit; see the module docstring for the contract.

    Args:
        directory: where the segments live; created if missing.
        fsync: ``"always"``, ``"interval"`` or ``"never"``: what a returned
            :meth:`append_durable` promises (module docstring).
        fsync_interval_ms: the longest time written records stay unsynced under ``"interval"``.
        segment_bytes: a segment rolls before a write would take it past this size.
        max_pending_bytes: above this many bytes queued or being written, appends raise
            :exc:`WalOverloaded`; bounds the memory a slow disk can make the receiver hold.
        fsync_fn: called with a file descriptor to make it durable (``os.fsync``); injectable so
            tests can count fsyncs or make them fail.
        pwrite_fn: ``os.pwrite``-compatible ``(fd, data, offset) -> bytes written``; injectable
            so tests can make writes fail like a full disk.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy = "always",
        fsync_interval_ms: int = 100,
        segment_bytes: int = 64 * 1024 * 1024,
        max_pending_bytes: int = 64 * 1024 * 1024,
        fsync_fn: Callable[[int], None] = os.fsync,
        pwrite_fn: Callable[[int, memoryview, int], int] = os.pwrite,
    ) -> None:
        if fsync not in _POLICIES:
            raise ValueError(f"fsync policy {fsync!r} is not one of {', '.join(_POLICIES)}")
        for name, value in (
            ("fsync_interval_ms", fsync_interval_ms),
            ("segment_bytes", segment_bytes),
            ("max_pending_bytes", max_pending_bytes),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self._dir = Path(directory)
        self._policy = fsync
        self._interval = fsync_interval_ms / 1000
        self._segment_bytes = segment_bytes
        self._max_pending = max_pending_bytes
        self._fsync_fn = fsync_fn
        self._pwrite = pwrite_fn

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here for records
        self._done = threading.Condition(self._lock)  # appenders wait here for their group
        # Shared state, guarded by the lock.
        self._queue: deque[_Entry] = deque()
        self._inflight: list[_Entry] = []
        self._pending_bytes = 0
        self._closing = False
        self._broken = False
        self._failed_records = 0
        self._other_fsyncs = 0  # by callers' threads (truncate_before), not the writer
        # Writer state: touched only by the writer thread (and __init__ before it starts);
        # published to the shared copies below, under the lock, after each step.
        self._fd = -1
        self._size = 0  # end of the last good record in the active segment
        self._synced = 0  # how much of the active segment is known to be fsynced
        self._tail_dirty = False  # a failed write left bytes after _size that ftruncate could not cut
        self._failing = False
        self._sync_at = 0.0  # monotonic time by which written records must be fsynced (interval)
        self._w_written = self._w_durable = self._w_fsyncs = 0

        self._segments = self._recover()
        last = self._segments[-1]
        self._fd = os.open(last.path, os.O_WRONLY)
        self._size = last.size
        try:
            self._sync_active()  # whatever the last run left in the page cache is durable from here on
        except OSError:
            os.close(self._fd)
            raise
        self._next_lsn = self._w_written + 1
        self._written_lsn, self._durable_lsn, self._fsyncs = self._w_written, self._w_durable, self._w_fsyncs
        self._writer = threading.Thread(target=self._run, name=f"wal-writer {self._dir}", daemon=True)
        self._writer.start()

    # -- appending ---------------------------------------------------------------------------

    def append(self, kind: int, payload: BytesLike) -> int:
        """Queue a record and return its LSN without waiting; it is written with the next group.

        Raises:
            WalOverloaded: too many bytes wait to be written.
            WalUnavailable: the log is closed.
        """
        return self._enqueue(kind, payload).lsn

    def append_durable(self, kind: int, payload: BytesLike) -> int:
        """Append a record and return its LSN once the fsync policy's promise holds for it.

        Raises:
            WalOverloaded: too many bytes wait to be written; nothing was queued.
            WalUnavailable: the write or fsync failed, or the log is closed; the record is not in
                the log.
        """
        return self.submit(kind, payload).wait()

    def submit(self, kind: int, payload: BytesLike) -> Pending:
        """Queue a record; the returned :class:`Pending` has its LSN now and waits for durability.

        Callers that must know a record's LSN before it is durable (to process records in LSN
        order, as the ingest path does) use this; ``append_durable`` is ``submit(...).wait()``.

        Raises:
            WalOverloaded: too many bytes wait to be written; nothing was queued.
            WalUnavailable: the log is closed.
        """
        return Pending(self, self._enqueue(kind, payload))

    def skip_to(self, lsn: int) -> None:
        """Give out LSNs above ``lsn`` from now on.

        After an OS crash under ``interval`` or ``never`` the log can end below what the blocks
        already hold (their checkpoint); new records must not reuse those LSNs, or a replay from
        the checkpoint would skip them.
        """
        with self._lock:
            self._next_lsn = max(self._next_lsn, lsn + 1)

    def _wait(self, entry: _Entry) -> int:
        with self._lock:
            while not entry.done:
                self._done.wait()
        if entry.error is not None:
            raise WalUnavailable(entry.error)
        return entry.lsn

    def _enqueue(self, kind: int, payload: BytesLike) -> _Entry:
        if not 0 <= kind <= MAX_KIND:
            raise ValueError(f"record kind must be in 0..{MAX_KIND}, got {kind}")
        size = memoryview(payload).nbytes
        if size > MAX_PAYLOAD:
            raise ValueError(f"payload of {size} bytes is over the {MAX_PAYLOAD}-byte record limit")
        payload_crc = zlib.crc32(payload)  # outside the lock: large payloads are checksummed in parallel
        entry = _Entry(payload, HEADER.size + size)
        with self._lock:
            if self._closing or self._broken:
                raise WalUnavailable(f"write-ahead log {self._dir} is closed")
            if self._pending_bytes and self._pending_bytes + entry.size > self._max_pending:
                raise WalOverloaded(
                    f"{self._pending_bytes} bytes wait to be written to {self._dir} "
                    f"(limit {self._max_pending}); retry later"
                )
            entry.lsn = lsn = self._next_lsn
            self._next_lsn += 1
            crc = zlib.crc32(CHECKED.pack(size, kind, lsn), payload_crc)
            entry.header = HEADER.pack(MAGIC, crc, size, kind, lsn)
            self._queue.append(entry)
            self._pending_bytes += entry.size
            self._work.notify()
        return entry

    # -- reading and maintenance -------------------------------------------------------------

    def replay(self, from_lsn: int = 0, *, skip_corrupt: bool = False) -> Iterator[WalRecord]:
        """Yield the records with LSN >= ``from_lsn``, in LSN order across segments.

        Records appended after the call starts are not included. Segments deleted by a
        concurrent :meth:`truncate_before` are skipped.

        Raises:
            WalCorrupt: damaged bytes (other than the torn tail cut off at open), unless
                ``skip_corrupt``, which logs each damaged range and resumes after it.
        """
        with self._lock:
            segments = [(s.base, s.path, s.size) for s in self._segments]
        for i, (base, path, size) in enumerate(segments):
            following = segments[i + 1][0] if i + 1 < len(segments) else None
            if following is not None and following <= from_lsn:
                continue
            data = self._read_segment(path, size)
            if data is None:
                continue
            view = memoryview(data)
            for item in scan(data, base, following):
                if isinstance(item, Damage):
                    if not skip_corrupt:
                        raise WalCorrupt(path, item.offset, item.reason)
                    end = len(data) if item.resume is None else item.resume
                    _log.error("%s: skipping corrupt bytes %d..%d (%s)", path, item.offset, end, item.reason)
                elif item.lsn >= from_lsn:
                    yield WalRecord(item.lsn, item.kind, bytes(view[item.start : item.end]))

    def _read_segment(self, path: Path, size: int) -> bytes | None:
        try:
            with open(path, "rb") as file:
                data = file.read(size)
        except FileNotFoundError:
            with self._lock:
                if all(s.path != path for s in self._segments):
                    return None  # truncated while we were replaying
            raise WalCorrupt(path, 0, "the segment file is missing") from None
        if len(data) < size:
            raise WalCorrupt(path, len(data), f"the segment is shorter than the {size} bytes written")
        return data

    def truncate_before(self, lsn: int) -> int:
        """Delete whole segments whose records all have LSN < ``lsn``; return how many.

        The active segment is never deleted, so the log always knows its last LSN.
        """
        deleted = 0
        with self._lock:
            while len(self._segments) > 1 and self._segments[1].base <= lsn:
                try:
                    self._segments[0].path.unlink(missing_ok=True)
                except OSError as exc:
                    _log.error("cannot delete write-ahead log segment %s: %s", self._segments[0].path, exc)
                    break
                self._segments.pop(0)
                deleted += 1
        if deleted:
            try:  # not _sync_dir: that counts fsyncs in the writer's own counter
                fd = os.open(self._dir, os.O_RDONLY)
                try:
                    self._fsync_fn(fd)
                finally:
                    os.close(fd)
                    with self._lock:
                        self._other_fsyncs += 1
            except OSError as exc:  # a deletion that does not stick only means a longer replay
                _log.warning("cannot fsync %s after deleting segments: %s", self._dir, exc)
        return deleted

    def stats(self) -> dict[str, int | str]:
        """Figures for self-monitoring; ``last_lsn - durable_lsn`` is how far fsync lags."""
        with self._lock:
            return {
                "last_lsn": self._next_lsn - 1,
                "written_lsn": self._written_lsn,
                "durable_lsn": self._durable_lsn,
                "pending_bytes": self._pending_bytes,
                "pending_records": len(self._queue) + len(self._inflight),
                "failed_records": self._failed_records,
                "fsyncs": self._fsyncs + self._other_fsyncs,
                "segments": len(self._segments),
                "total_bytes": sum(s.size for s in self._segments),
                "fsync_policy": self._policy,
            }

    def close(self) -> None:
        """Write what is queued, fsync (under every policy), and stop the writer. Idempotent."""
        with self._lock:
            self._closing = True
            self._work.notify()
        self._writer.join()

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening -----------------------------------------------------------------------------

    def _recover(self) -> list[_Segment]:
        """List the segments and cut a torn tail off the newest one."""
        if not self._dir.is_dir():
            self._dir.mkdir(parents=True)
            self._sync_dir(self._dir.parent)  # the new directory's entry must survive a crash too
        segments = []
        for path in self._dir.iterdir():
            match = SEGMENT_NAME.fullmatch(path.name)
            if match:
                segments.append(_Segment(int(match[1]), path, path.stat().st_size))
        segments.sort(key=lambda s: s.base)
        if not segments:
            segments.append(self._create_segment(1))
        last = segments[-1]
        self._w_written = last.base - 1
        data = last.path.read_bytes()
        for item in scan(data, last.base, None):
            if isinstance(item, Damage) and item.resume is None:
                _log.warning(
                    "%s: cutting off a torn tail of %d bytes at offset %d (%s); "
                    "a write was interrupted and never acknowledged",
                    last.path,
                    len(data) - item.offset,
                    item.offset,
                    item.reason,
                )
                os.truncate(last.path, item.offset)
                last.size = item.offset
            elif isinstance(item, Damage):
                _log.error(
                    "%s: corrupt bytes %d..%d (%s); replay will report them",
                    last.path,
                    item.offset,
                    item.resume,
                    item.reason,
                )
            else:
                self._w_written = item.lsn
        self._w_durable = self._w_written
        return segments

    def _create_segment(self, base: int) -> _Segment:
        path = self._dir / f"wal-{base:016d}.log"
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        self._sync_dir(self._dir)
        return _Segment(base, path, 0)

    def _sync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _fsync(self, fd: int) -> None:
        self._w_fsyncs += 1
        self._fsync_fn(fd)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while self._step():
                pass
        except BaseException:  # a bug here must not leave appenders waiting forever
            _log.exception("write-ahead log writer for %s stopped", self._dir)
            with self._lock:
                self._broken = True
                for entry in [*self._inflight, *self._queue]:
                    entry.done, entry.error = True, "the write-ahead log writer stopped"
                self._queue.clear()
                self._inflight = []
                self._done.notify_all()

    def _step(self) -> bool:
        """Write one group, or fsync when the interval is due; False once closed and drained."""
        with self._lock:
            while not self._queue and not self._closing and not self._sync_due():
                self._work.wait(self._sync_wait())
            group, roll = self._take_group()
            self._inflight = group
        if group:
            error = None
            try:
                if roll:
                    self._roll(group[0].lsn)
                self._write(group)
                if self._policy == "always" or self._sync_due():
                    self._sync_active()
            except OSError as exc:
                error = f"cannot make records durable in {self._dir}: {exc}"
            self._finish(group, error)
            return True
        if self._closing:
            if self._size > self._synced:
                self._try_sync()
            os.close(self._fd)
            self._finish([], None)
            return False
        self._try_sync()
        self._finish([], None)
        return True

    def _sync_due(self) -> bool:
        return self._policy == "interval" and self._size > self._synced and time.monotonic() >= self._sync_at

    def _sync_wait(self) -> float | None:
        if self._policy != "interval" or self._size <= self._synced:
            return None
        return max(0.0, self._sync_at - time.monotonic())

    def _take_group(self) -> tuple[list[_Entry], bool]:
        """Everything queued that fits in the active segment (or a new one, if the first does not)."""
        if not self._queue:
            return [], False
        roll = self._size > 0 and self._size + self._queue[0].size > self._segment_bytes
        room = self._segment_bytes - (0 if roll else self._size)
        group = [self._queue.popleft()]
        used = group[0].size
        while self._queue and used + self._queue[0].size <= room:
            used += self._queue[0].size
            group.append(self._queue.popleft())
        return group, roll

    def _roll(self, base: int) -> None:
        """Seal the active segment and start one whose records begin at ``base``.

        Sealed segments are fsynced under every policy (once per segment is cheap), so
        ``durable_lsn`` only ever has to account for the active one.
        """
        self._restore_tail()
        if self._size > self._synced:
            self._sync_active()
        path = self._dir / f"wal-{base:016d}.log"
        # O_TRUNC: a file of that name can only be left over from a roll that failed, so it is empty.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._sync_dir(self._dir)
        except OSError:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd, self._size, self._synced = fd, 0, 0
        with self._lock:
            self._segments.append(_Segment(base, path, 0))

    def _write(self, group: list[_Entry]) -> None:
        data = memoryview(b"".join([part for entry in group for part in (entry.header, entry.payload)]))
        offset = self._size
        try:
            self._restore_tail()
            done = 0
            while done < len(data):
                written = self._pwrite(self._fd, data[done:], offset + done)
                if written <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                done += written
        except OSError:
            self._cut(offset)
            raise
        self._size = offset + len(data)
        self._w_written = group[-1].lsn

    def _sync_active(self) -> None:
        """fsync the active segment; on failure cut it back to what is known to be durable.

        After a failed fsync the kernel may have dropped the dirty pages, so a retry could report
        success for data that is gone; the unsynced bytes are cut off and rewritten never.
        """
        try:
            self._fsync(self._fd)
        except OSError as exc:
            if self._w_written > self._w_durable:
                _log.error(
                    "fsync of %s failed (%s): records with LSN %d..%d are dropped from the log",
                    self._dir,
                    exc,
                    self._w_durable + 1,
                    self._w_written,
                )
            self._cut(self._synced)
            self._w_written = self._w_durable
            raise
        self._synced = self._size
        self._w_durable = self._w_written
        self._sync_at = time.monotonic() + self._interval

    def _try_sync(self) -> None:
        try:
            self._sync_active()
        except OSError:
            pass  # _sync_active logged what was lost; the next group tries again

    def _cut(self, offset: int) -> None:
        """Make ``offset`` the end of the active segment, so failed bytes never precede good ones."""
        self._size = min(self._size, offset)
        try:
            os.ftruncate(self._fd, offset)
            self._tail_dirty = False
        except OSError as exc:
            self._tail_dirty = True
            _log.error("cannot cut failed bytes off %s at %d: %s", self._dir, offset, exc)

    def _restore_tail(self) -> None:
        if self._tail_dirty:
            os.ftruncate(self._fd, self._size)
            self._tail_dirty = False

    def _finish(self, group: list[_Entry], error: str | None) -> None:
        """Publish the writer's state and wake the group's callers."""
        if error is not None and not self._failing:
            _log.error("%s; appends fail until the disk accepts writes again", error)
        elif error is None and group and self._failing:
            _log.warning("write-ahead log %s accepts writes again", self._dir)
        if group:
            self._failing = error is not None
        with self._lock:
            self._segments[-1].size = self._size
            self._written_lsn, self._durable_lsn = self._w_written, self._w_durable
            self._fsyncs = self._w_fsyncs
            for entry in group:
                entry.done, entry.error = True, error
                self._pending_bytes -= entry.size
            if error is not None:
                self._failed_records += len(group)
            self._inflight = []
            self._done.notify_all()


class _Entry:
    """A queued record; ``done`` and ``error`` are set by the writer under the lock."""

    __slots__ = ("done", "error", "header", "lsn", "payload", "size")

    def __init__(self, payload: BytesLike, size: int) -> None:
        self.payload = payload
        self.size = size
        self.header = b""
        self.lsn = 0
        self.done = False
        self.error: str | None = None


class Pending:
    """A queued record: ``lsn`` is final; :meth:`wait` returns once the record is durable."""

    __slots__ = ("_entry", "_wal", "lsn")

    def __init__(self, wal: WriteAheadLog, entry: _Entry) -> None:
        self._wal = wal
        self._entry = entry
        self.lsn = entry.lsn

    def wait(self) -> int:
        """The LSN, once the fsync policy's promise holds for the record.

        Raises:
            WalUnavailable: the write or fsync failed; the record is not in the log.
        """
        return self._wal._wait(self._entry)


@dataclass
class _Segment:
    base: int  # LSN of its first record: every record in it is >= base and < the next segment's base
    path: Path
    size: int
