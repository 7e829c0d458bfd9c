"""A bound on the receiver's resident memory, the one number an operator sizes a container by."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

import pyarrow as pa


class MemoryGuard:
    """Says when the process's resident memory has passed ``max_bytes`` (read from /proc).

    The in-flight, WAL and head budgets each bound one kind of memory; this bounds what they
    cannot see (decoded batches, allocator slack, buffers of calls being refused) with the one
    number an operator sizes a container by. Requests are refused from 80% of the limit on, so
    the ones already admitted can finish under it (``benchmarks/overload.py`` at 5x capacity
    measured RSS climbing 12% of a 1.5 GB limit past a 90% mark). Past that mark the allocators are first
    asked to hand freed memory back (glibc ``malloc_trim``, Arrow's pool), at most once a
    second: without that, RSS measured after a burst stays high on freed but unreturned
    pages, and the receiver would go on refusing long after the load dropped. RSS is read at
    most every 50 ms (a few µs each). Without /proc (not Linux) there is no guard.
    """

    SOFT = 0.8
    READ_EVERY_S = 0.05
    TRIM_EVERY_S = 1.0

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._enabled = max_bytes > 0 and os.path.exists("/proc/self/statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if self._enabled else 4096
        self._read_at = self._trimmed_at = 0.0
        self._rss = 0
        self._lock = threading.Lock()
        self._libc = _glibc()

    def rss(self, fresh: bool = False) -> int:
        """The resident set size in bytes, at most ``READ_EVERY_S`` old unless ``fresh``."""
        now = time.monotonic()
        if fresh or now - self._read_at >= self.READ_EVERY_S:
            with open("/proc/self/statm", "rb") as statm:
                self._rss = int(statm.read().split()[1]) * self._page
            self._read_at = now
        return self._rss

    def over(self) -> str | None:
        """Why no more requests fit in memory now, or None."""
        if not self._enabled or self.rss() < self.SOFT * self._max:
            return None
        with self._lock:
            now = time.monotonic()
            if now - self._trimmed_at >= self.TRIM_EVERY_S:
                self._trimmed_at = now
                pa.default_memory_pool().release_unused()
                if self._libc is not None:
                    self._libc.malloc_trim(0)
                rss = self.rss(fresh=True)
            else:
                rss = self._rss
        if rss < self.SOFT * self._max:
            return None
        return f"resident memory {rss} bytes is near limits.max_memory_bytes ({self._max})"


def _glibc() -> Any:
    """glibc through ctypes (for ``malloc_trim``), or None on other C libraries."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  # musl has no malloc_trim
    except (OSError, AttributeError):
        return None
    return libc
