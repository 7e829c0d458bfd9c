"""The store: an in-memory head over Parquet blocks, with rollups, retention and compaction.

:class:`TieredStore` is the ``store`` stage of the receiver's chain. Batches land in the head (a
:class:`~otel_audio.store.memory.MemoryStore`, Arrow tables). On ``tick(now)``:

- **flush** when ``flush_interval`` has passed since the last one, or the head holds more than
  ``head_max_bytes``: the head is cut (its rows move to a frozen list that queries still read)
  and a background thread writes the cut as blocks (:func:`~otel_audio.store.flush.write_flush`),
  commits it with the checkpoint, swaps the frozen rows for the new blocks in one step, and lets
  the write-ahead log drop what the blocks now hold (``on_checkpoint(lsn)``);
- **maintenance** every ``maintenance_interval``: retention drops expired day partitions, then
  finished days with several blocks are compacted.

A flush that fails (disk full) keeps its rows in memory, still queryable, and is retried on the
next tick; the log is not truncated past it. Batches carry their WAL LSN and arrive in LSN order
(the ingest sequencer), so the head holds exactly the records after the last checkpoint, and
after a restart the log is replayed from ``checkpoint.lsn + 1``.

Threads: one writer calls ``process``/``tick``/``close`` (the chain's lock); one background
thread writes blocks; any number of readers call ``view``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import Batch
from otel_audio.store import catalog as cat
from otel_audio.store.blocks import read_metric_block
from otel_audio.store.compaction import (
    DEFAULT_MIN_AGE_NS,
    compact_log_partition,
    compact_metric_partition,
    compact_span_partition,
    partitions_to_compact,
)
from otel_audio.store.flush import flush_wal_range, index_files, load_series, write_flush
from otel_audio.store.memory import MemoryStore, Snapshot
from otel_audio.store.retention import RetentionConfig, drop_expired
from otel_audio.store.rollup_blocks import compact_rollup_partition, rollup_block_files
from otel_audio.store.view import StoreView

_log = logging.getLogger(__name__)

HOUR_NS = 3600 * 10**9
EARLY_ROLLUP_FILES = 4  # a rollup day partition with this many files is merged before the day ends


@dataclass(frozen=True)
class _Cut:
    seq: int
    lsns: tuple[int, int]  # the WAL records in the cut, first and last
    rows: Snapshot
    new_series: pa.Table
    extras: list[Batch]  # batches that did not come through the WAL
    bytes: int  # Arrow buffers held until the flush is committed

    @property
    def lsn(self) -> int:
        return self.lsns[1]


class TieredStore:
    """Processor that keeps recent data in memory and history in Parquet blocks under ``root``.

    Args:
        root: the data directory (``blocks/`` and ``index/`` are made inside it).
        retention: per tier (``RetentionConfig``); defaults raw 7 d, 1m 30 d, 1h 90 d.
        flush_interval_ns: the longest time rows stay only in the head (and the log).
        head_max_bytes: flush early when the head holds more Arrow memory than this.
        maintenance_interval_ns: how often retention and compaction run.
        compact_min_age_ns: a day partition is compacted once its day ended this long ago.
        on_checkpoint: called with the LSN of the last record a committed flush holds; the
            receiver truncates its write-ahead log there.
        background: write blocks on a thread (the receiver); False writes them inside ``tick``
            (deterministic tests).
        wal_dir: the write-ahead log every batch with an LSN came through. Given (the
            receiver), blocks are written by a separate flush process that reads the cut's
            records from the log's files: the receiver's own process, bound by the GIL, spends
            nothing on compression and rollups. Without it, a thread writes the head's rows.
        flush_process: False writes blocks on the thread even with ``wal_dir`` (an embedded
            receiver: spawning the flush process re-imports the embedding script).
    """

    name = "store"

    def __init__(
        self,
        root: Path,
        *,
        retention: RetentionConfig | None = None,
        flush_interval_ns: int = 2 * HOUR_NS,
        head_max_bytes: int = 128 * 1024 * 1024,
        maintenance_interval_ns: int = 60 * 10**9,
        compact_min_age_ns: int = DEFAULT_MIN_AGE_NS,
        on_checkpoint: Callable[[int], object] | None = None,
        background: bool = True,
        wal_dir: Path | None = None,
        flush_process: bool = True,
    ) -> None:
        self.root = Path(root)
        self.retention = retention or RetentionConfig()
        self._flush_interval = flush_interval_ns
        self._head_max_bytes = head_max_bytes
        self._maintenance_interval = maintenance_interval_ns
        self._compact_min_age = compact_min_age_ns
        self._on_checkpoint = on_checkpoint
        self._background = background
        self._wal_dir = wal_dir
        # blocks are written by a spawned process (off the GIL) only with background work and
        # the WAL to read from; spawning re-imports ``__main__``, which an embedding script may
        # not guard, so embedders turn it off
        self._in_process = not (background and flush_process and wal_dir is not None)
        self._pool: ProcessPoolExecutor | None = None
        self._extras: list[Batch] = []

        self.checkpoint = cat.read_checkpoint(self.root)
        cat.remove_unfinished(self.root, self.checkpoint)
        self._catalog = cat.scan(self.root)
        self._head = MemoryStore()
        self._head.add_series(load_series(self.root))
        self._series_flushed = self._head.series_count()
        self._lsn = self._cut_lsn = self.checkpoint.lsn
        self._seq = self.checkpoint.seq
        self._lock = threading.Lock()  # guards _frozen and _catalog against readers
        self._committed = threading.Condition()  # notified after each flush's checkpoint
        self._frozen: list[_Cut] = []
        self._worker: threading.Thread | None = None
        self._last_flush_ns: int | None = None
        self._last_maintenance_ns: int | None = None
        self.flush_failures = 0
        self._flush_first = False
        if not self._in_process:  # spawned now: its imports take seconds, which the receiver's
            self._flush_process()  # start and WAL replay cover, so the first flush need not wait

    # -- writer side ---------------------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        """Add the batch to the head; remember its LSN for the next checkpoint."""
        self._head.process(batch)
        if batch.lsn:
            self._lsn = batch.lsn
        elif self._wal_dir is not None:
            self._extras.append(batch)

    def tick(self, now_unix_nano: int) -> None:
        """Cut the head into a flush when due, and run retention and compaction when due."""
        if self._worker is not None and self._worker.is_alive():
            return
        now = now_unix_nano
        if self._last_flush_ns is None:
            self._last_flush_ns = self._last_maintenance_ns = now
            if self._flush_first:
                self._last_flush_ns -= self._flush_interval
        full = self._head.nbytes() >= self._head_max_bytes
        if (full or now - self._last_flush_ns >= self._flush_interval) and self._head_has_rows():
            self._cut()
            self._last_flush_ns = now
        maintain = now - self._last_maintenance_ns >= self._maintenance_interval
        if maintain:
            self._last_maintenance_ns = now
        if not (maintain or self._frozen):
            return
        if self._background:
            self._worker = threading.Thread(
                target=self._work, args=(now, maintain), name="store-flush", daemon=True
            )
            self._worker.start()
        else:
            self._work(now, maintain)

    def flush_at_first_tick(self) -> None:
        """Cut the head at the first tick rather than a flush interval after it.

        The receiver calls this after replaying its write-ahead log: the head then holds
        everything since the last checkpoint, and a receiver that crashes again before its flush
        interval ends (2 hours by default) would never checkpoint, replaying a longer log at
        every start.
        """
        self._flush_first = True

    def flush(self) -> None:
        """Write everything the head holds as blocks now (on the writer thread); waits for it."""
        self.wait()
        if self._head_has_rows():
            self._cut()
        self._work(None, False)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for the background flush or maintenance, if one is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout_s)

    def wait_checkpoint(self, lsn: int, timeout_s: float) -> bool:
        """Wait until a committed flush holds every WAL record up to ``lsn``; False on timeout."""
        with self._committed:
            return self._committed.wait_for(lambda: self.checkpoint.lsn >= lsn, timeout_s)

    def close(self) -> None:
        """Flush the head, so the next start replays an (almost) empty log."""
        try:
            self.flush()
        except OSError:
            _log.exception("could not flush the head on close; the write-ahead log still holds it")
        if self._pool is not None:
            self._pool.shutdown()

    def _head_has_rows(self) -> bool:
        snap = self._head.snapshot()
        return any(t.num_rows for t in (snap.points, snap.exemplars, snap.spans, snap.logs))

    def _cut(self) -> None:
        self._seq += 1
        with self._lock:
            rows = self._head.detach()
            new_series = rows.series.slice(self._series_flushed)
            self._series_flushed = rows.series.num_rows
            size = sum(
                getattr(rows, kind).get_total_buffer_size()
                for kind in ("points", "exemplars", "spans", "logs")
            )
            lsns = (self._cut_lsn + 1, self._lsn)
            self._frozen.append(_Cut(self._seq, lsns, rows, new_series, self._extras, size))
            self._cut_lsn, self._extras = self._lsn, []

    # -- background work -----------------------------------------------------------------------

    def _work(self, now: int | None, maintain: bool) -> None:
        for cut in list(self._frozen):
            try:
                self._write(cut)
            except Exception:
                self.flush_failures += 1
                _log.exception("flush %d failed; its rows stay in memory and are retried", cut.seq)
                return
        if maintain and now is not None:
            try:
                self._maintain(now)
            except Exception:
                _log.exception("retention or compaction failed; retried at the next interval")

    def _write(self, cut: _Cut) -> None:
        cat.remove_unfinished(self.root, self.checkpoint)  # what an earlier failed try left
        name = cat.flush_name(cut.seq)
        prior = self.checkpoint.seq
        carry = cat.index_dir(self.root) / "carry" / f"{cat.flush_name(prior)}.parquet" if prior else None
        if not self._in_process:
            args = (self.root, name, self._wal_dir, cut.lsns, cut.extras, cut.new_series, carry)
            try:
                entries = self._flush_process().submit(flush_wal_range, *args).result()
            except BrokenProcessPool:
                self._pool = None  # started again at the retry
                raise
        else:
            entries = write_flush(self.root, name, cut.rows, cut.new_series, carry)
        checkpoint = cat.Checkpoint(cut.seq, cut.lsn)
        cat.write_checkpoint(self.root, checkpoint)
        with self._lock:
            self._catalog = self._catalog.plus(entries)
            self._frozen.remove(cut)
        for old in index_files(self.root, "carry")[:-1]:
            old.unlink(missing_ok=True)
        if self._on_checkpoint is not None:
            self._on_checkpoint(cut.lsn)
        with self._committed:
            self.checkpoint = checkpoint
            self._committed.notify_all()

    def _maintain(self, now: int) -> None:
        args = (self.root, now, self.retention, self._compact_min_age)
        if not self._in_process:  # in the flush process, off the GIL
            dropped, compacted = self._flush_process().submit(maintain, *args).result()
        else:
            dropped, compacted = maintain(*args)
        if dropped or compacted:
            catalog = cat.scan(self.root)
            with self._lock:
                self._catalog = catalog
            _log.info("retention dropped %d partitions; compacted %d", dropped, compacted)

    def _flush_process(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
            # Spawned here, with SIGINT blocked: the worker inherits the mask, so a Ctrl-C during
            # its seconds of imports does not interrupt them (exit_with_parent then ignores it).
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                self._pool.submit(os.getpid)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return self._pool

    # -- reader side ---------------------------------------------------------------------------

    def view(self) -> StoreView:
        """The head (with rows being flushed) and the blocks, as of now."""
        with self._lock:
            head = self._head.snapshot()
            frozen = [cut.rows for cut in self._frozen]
            catalog = self._catalog
        if frozen:
            head = Snapshot(
                series=head.series,
                **{
                    kind: pa.concat_tables([getattr(f, kind) for f in frozen] + [getattr(head, kind)])
                    for kind in ("points", "exemplars", "spans", "logs")
                },
            )
        return StoreView(head, catalog, self.retention)

    def snapshot(self) -> Snapshot:
        """The head's rows (including those being flushed); blocks are read through ``view``."""
        return self.view().head

    def pressure(self) -> str | None:
        """Why the store cannot take more now, or None: the head and the rows still being
        flushed hold over four times ``head_max_bytes`` (a flush is behind ingest); memory
        stays bounded and senders are told to retry, as OTLP exporters do."""
        with self._lock:
            frozen = sum(cut.bytes for cut in self._frozen)
        held, limit = frozen + self._head.nbytes(), 4 * self._head_max_bytes
        if held > limit:
            return f"the store holds {held} bytes in memory while blocks are written (limit {limit})"
        return None

    def recent_series(self, since_ns: int) -> pa.Table:
        """Series rows with a point at or after ``since_ns`` (head or raw blocks).

        After a restart the receiver re-admits these into the cardinality budgets: series that
        were active stay admitted, long-silent ones do not take a slot.
        """
        view = self.view()
        ids = [pc.unique(view.head.points.column("series_id"))]
        for path in view.catalog.select("metrics", "raw", since_ns, None):
            points = read_metric_block(path, start_ns=since_ns)[0]
            ids.append(pc.unique(points.column("series_id")))
        recent = pa.chunked_array(ids, pa.uint64()).unique()
        series = view.head.series
        return series.filter(pc.is_in(series.column("series_id"), recent))

    def stats(self) -> dict[str, object]:
        """The head's rows and bytes per kind, series count, and the blocks on disk."""
        out = self._head.stats()
        with self._lock:
            catalog = self._catalog
            out["frozen_cuts"] = len(self._frozen)
        out["blocks"] = {"files": len(catalog.entries), "bytes": catalog.bytes_on_disk()}
        out["checkpoint_lsn"] = self.checkpoint.lsn
        return out


def maintain(root: Path, now: int, retention: RetentionConfig, compact_min_age_ns: int) -> tuple[int, int]:
    """Retention, then compaction of finished days; (partitions dropped, partitions compacted).

    Runs in the flush process when there is one: merging a day of blocks is the heaviest work
    the store does, and it must not take the receiver's GIL.
    """
    dropped = drop_expired(root, now, retention)
    compacted = 0
    for partition in partitions_to_compact(root, now, min_age_ns=compact_min_age_ns):
        if partition.parent.name == "raw":
            compact_metric_partition(partition, tier="raw")
            compact_span_partition(partition)
            compact_log_partition(partition)
        else:
            compact_rollup_partition(partition)
        compacted += 1
    # Rollup days are merged while they fill, too: a day of 1-minute rows read from a dozen flush
    # files costs a dozen footers and row-group decodes per query. Safe at any age, because
    # flushes and this run one after the other in the same (flush) process; raw blocks wait for
    # their day to end, since merging them at zstd 19 over and over would cost too much.
    for tier in ("1m", "1h"):
        for partition in sorted((Path(root) / "blocks" / tier).glob("????-??-??")):
            if len(rollup_block_files(partition)) >= EARLY_ROLLUP_FILES:
                compact_rollup_partition(partition)
                compacted += 1
    return len(dropped), compacted


def exit_with_parent(parent_pid: int, poll_s: float = 0.2) -> None:
    """In the flush process: end it as soon as the receiver that spawned it is gone.

    A receiver killed with SIGKILL cannot shut its pool down, and the pool's worker does not
    notice on its own: it would live on, idle, holding its memory, after every crash, or, worse,
    finish a flush into a data directory a restarted receiver already owns. Polling the parent
    id is portable and costs nothing noticeable (``PR_SET_PDEATHSIG`` would fire when the
    *thread* that started the pool ends, which here is each flush's short-lived thread).

    It also ignores SIGINT: Ctrl-C in a terminal goes to the whole process group, and the worker,
    interrupted mid-flush, would print a traceback and break the pool (the flush then fails with
    ``BrokenProcessPool``) while the receiver is shutting down cleanly on the same signal. (It
    was spawned with SIGINT blocked, which covers the imports before this runs.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
