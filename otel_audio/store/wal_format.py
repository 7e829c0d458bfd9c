"""The write-ahead log's on-disk record format, and the scanner that finds records and damage.

A record is a 22-byte header followed by its payload::

    magic b"OAW\\x01" | crc32 (uint32) | payload length (uint32) | kind (uint16) | LSN (uint64) | payload

all little-endian. The crc covers the payload, then length, kind and LSN, so a torn or
bit-flipped record is never taken for a good one. :func:`scan` walks a segment's bytes and
yields every good record and every damaged range between them, with where scanning resumes.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

MAGIC = b"OAW\x01"  # "otel-audio WAL", format version 1
HEADER = struct.Struct("<4sIIHQ")  # magic, crc32, payload length, kind, LSN
CHECKED = struct.Struct("<IHQ")  # the header fields the crc covers after the payload
MAX_KIND = 0xFFFF
MAX_PAYLOAD = 0xFFFFFFFF


class Frame(NamedTuple):
    offset: int
    lsn: int
    kind: int
    start: int  # payload
    end: int


class Damage(NamedTuple):
    offset: int
    resume: int | None  # offset of the next good record, or None when nothing good follows
    reason: str


def scan(data: bytes, base: int, following: int | None) -> Iterator[Frame | Damage]:
    """The records of one segment in order, and every damaged range between them."""
    view = memoryview(data)
    offset, floor = 0, base
    while offset < len(data):
        frame = _frame_at(data, view, offset, floor, following)
        if isinstance(frame, str):
            resume = _next_frame(data, view, offset + 1, floor, following)
            yield Damage(offset, resume, frame)
            if resume is None:
                return
            offset = resume
            continue
        yield frame
        offset, floor = frame.end, frame.lsn + 1


def _frame_at(data: bytes, view: memoryview, offset: int, floor: int, following: int | None) -> Frame | str:
    """The record at ``offset``, or why there is none."""
    if offset + HEADER.size > len(data):
        return "partial record header"
    magic, crc, length, kind, lsn = HEADER.unpack_from(data, offset)
    if magic != MAGIC:
        return "no record marker"
    start = offset + HEADER.size
    end = start + length
    if end > len(data):
        return f"record of {length} bytes runs past the end of the segment"
    if zlib.crc32(view[offset + 8 : start], zlib.crc32(view[start:end])) != crc:
        return "checksum mismatch"
    if lsn < floor or (following is not None and lsn >= following):
        return f"LSN {lsn} out of order (expected at least {floor})"
    return Frame(offset, lsn, kind, start, end)


def _next_frame(data: bytes, view: memoryview, offset: int, floor: int, following: int | None) -> int | None:
    while (offset := data.find(MAGIC, offset)) >= 0:
        if isinstance(_frame_at(data, view, offset, floor, following), Frame):
            return offset
        offset += 1
    return None


SEGMENT_NAME = re.compile(r"wal-(\d{16})\.log")


def read_range(directory: Path, from_lsn: int, to_lsn: int) -> Iterator[tuple[int, int, bytes]]:
    """``(lsn, kind, payload)`` of the records with ``from_lsn <= lsn <= to_lsn``, read from the files.

    For a reader in another process than the log's writer (the store's flush process): it reads
    the segment files directly and stops at ``to_lsn``, so a record being appended after it (a
    torn tail, for now) is never looked at. Damage inside the range raises ``ValueError``.
    """
    segments = sorted(
        (int(m[1]), p) for p in Path(directory).iterdir() if (m := SEGMENT_NAME.fullmatch(p.name))
    )
    for i, (base, path) in enumerate(segments):
        following = segments[i + 1][0] if i + 1 < len(segments) else None
        if base > to_lsn:
            return
        if following is not None and following <= from_lsn:
            continue
        data = path.read_bytes()
        for item in scan(data, base, following):
            if isinstance(item, Damage):
                raise ValueError(f"{path}: damaged record at byte {item.offset}: {item.reason}")
            if item.lsn > to_lsn:
                return
            if item.lsn >= from_lsn:
                yield item.lsn, item.kind, data[item.start : item.end]
            if item.lsn == to_lsn:  # what follows may be a record still being written
                return
