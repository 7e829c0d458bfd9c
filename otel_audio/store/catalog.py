"""The block catalog: which block files exist and what time they cover, and the flush checkpoint.

Every flush of the head writes its files under names starting ``f<seq>`` (ten digits): metric
blocks ``blocks/raw/<day>/f<seq>/``, span and log blocks ``blocks/raw/<day>/f<seq>-spans.parquet``
and ``-logs.parquet``, rollups ``blocks/1m/<day>/f<seq>.parquet`` and ``blocks/1h/...``, the
series first seen since the previous flush ``index/series/f<seq>.parquet`` and the rollup carry
``index/carry/f<seq>.parquet``. Only then is ``index/checkpoint.json`` replaced (atomically) by
``{"seq": <seq>, "lsn": <last WAL record the flush holds>}``.

So the checkpoint is the commit point of a flush: on open, :func:`remove_unfinished` deletes
every ``f<seq>`` file with a sequence number above the checkpoint's (a flush the process did not
finish), and the write-ahead log is replayed from ``lsn + 1``. Nothing is held twice and nothing
acknowledged is missing, whatever moment a crash hits. Compaction output (``compacted-*``) only
ever merges files of finished flushes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from otel_audio.store.blocks import META_FILE, open_block_meta
from otel_audio.store.durable import fsync_path
from otel_audio.store.rollup_blocks import read_rollup_meta, rollup_block_files
from otel_audio.store.trace_blocks import LogBlockMeta, SpanBlockMeta, read_block_meta

_log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.json"
TIER_NAMES = ("raw", "1m", "1h")
_FLUSH_NAME = re.compile(r"f(\d{10})(?:-(?:spans|logs))?(?:\.parquet)?")
_DAY_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")


def flush_name(seq: int) -> str:
    """The name prefix of everything flush ``seq`` writes."""
    return f"f{seq:010d}"


@dataclass(frozen=True)
class Checkpoint:
    """The last finished flush: its sequence number and the last WAL record its blocks hold."""

    seq: int = 0
    lsn: int = 0


@dataclass(frozen=True)
class Entry:
    """One block file (or metric block directory) and the times it covers, inclusive."""

    kind: str  # "metrics", "spans", "logs" or "rollups"
    tier: str  # "raw", "1m" or "1h"
    path: Path
    min_ns: int
    max_ns: int  # spans: the latest end, so a time-range overlap check is right


class Catalog:
    """An immutable list of block entries with the selections queries need."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries: tuple[Entry, ...] = tuple(entries)

    def select(self, kind: str, tier: str = "raw", start_ns: int | None = None, end_ns: int | None = None):
        """Paths of ``kind``/``tier`` entries overlapping ``[start_ns, end_ns)`` (None: open)."""
        lo = -(2**63) if start_ns is None else start_ns
        hi = 2**63 - 1 if end_ns is None else end_ns
        return [
            e.path
            for e in self.entries
            if e.kind == kind and e.tier == tier and e.max_ns >= lo and e.min_ns < hi
        ]

    def plus(self, entries: Sequence[Entry]) -> Catalog:
        return Catalog((*self.entries, *entries))

    def bytes_on_disk(self) -> int:
        """Total size of the listed files and block directories."""
        total = 0
        for e in self.entries:
            paths = e.path.iterdir() if e.path.is_dir() else [e.path]
            total += sum(p.stat().st_size for p in paths if p.exists())
        return total


# -- checkpoint ------------------------------------------------------------------------------------


def index_dir(root: Path) -> Path:
    return Path(root) / "index"


def read_checkpoint(root: Path) -> Checkpoint:
    """The checkpoint of ``root`` (a data directory); zeros when no flush has finished yet."""
    path = index_dir(root) / CHECKPOINT_FILE
    try:
        fields = json.loads(path.read_text())
    except FileNotFoundError:
        return Checkpoint()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable checkpoint ({exc}); cannot tell what the blocks hold") from exc
    return Checkpoint(seq=int(fields["seq"]), lsn=int(fields["lsn"]))


def write_checkpoint(root: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably: the commit point of a flush."""
    directory = index_dir(root)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CHECKPOINT_FILE}.tmp"
    with open(tmp, "w") as file:
        json.dump({"seq": checkpoint.seq, "lsn": checkpoint.lsn}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, directory / CHECKPOINT_FILE)
    fsync_path(directory)


# -- opening ---------------------------------------------------------------------------------------


def remove_unfinished(root: Path, checkpoint: Checkpoint) -> list[Path]:
    """Delete what unfinished flushes and interrupted writes left behind; return what went.

    That is: every ``f<seq>`` file or block above the checkpoint's sequence number, and the
    temporary names block writers use (``*.tmp`` directories, ``.*.tmp`` files).
    """
    removed = []
    for path in _candidates(Path(root)):
        name = path.name
        match = _FLUSH_NAME.fullmatch(name)
        unfinished = match is not None and int(match.group(1)) > checkpoint.seq
        if unfinished or name.endswith(".tmp"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        _log.warning("removed %d leftovers of an interrupted flush or write: %s", len(removed), removed[:5])
    return removed


def scan(root: Path) -> Catalog:
    """Every complete block under ``root/blocks``, read from the files' own metadata."""
    entries = []
    base = Path(root) / "blocks"
    for tier in TIER_NAMES:
        tier_dir = base / tier
        if not tier_dir.is_dir():
            continue
        for partition in sorted(tier_dir.iterdir()):
            if not _DAY_NAME.fullmatch(partition.name) or not partition.is_dir():
                continue
            if tier != "raw":  # rollup_block_files leaves out sources a crashed compaction replaced
                for path in rollup_block_files(partition):
                    meta = read_rollup_meta(path)
                    end = meta.max_window_start_ns + meta.window_ns - 1
                    entries.append(Entry("rollups", tier, path, meta.min_window_start_ns, end))
                continue
            for path in sorted(partition.iterdir()):
                entry = _entry(path)
                if entry is not None:
                    entries.append(entry)
    return Catalog(entries)


def _entry(path: Path) -> Entry | None:
    name = path.name
    if name.startswith(".") or name.endswith(".tmp") or path.is_symlink():
        return None
    if path.is_dir():
        if not (path / META_FILE).is_file():
            return None
        meta = open_block_meta(path)
        return Entry("metrics", "raw", path, meta.min_time_ns, meta.max_time_ns)
    if not name.endswith(".parquet"):
        return None
    meta = read_block_meta(path)
    if isinstance(meta, SpanBlockMeta):
        return Entry("spans", "raw", path, meta.min_start_ns, meta.max_end_ns)
    if isinstance(meta, LogBlockMeta):
        return Entry("logs", "raw", path, meta.min_time_ns, meta.max_time_ns)
    return None


def _candidates(root: Path) -> list[Path]:
    out: list[Path] = []
    for tier in TIER_NAMES:
        tier_dir = root / "blocks" / tier
        if tier_dir.is_dir():
            for partition in tier_dir.iterdir():
                if partition.is_dir() and not partition.is_symlink():
                    out.extend(partition.iterdir())
    for sub in ("series", "carry"):
        directory = index_dir(root) / sub
        if directory.is_dir():
            out.extend(directory.iterdir())
    return out
