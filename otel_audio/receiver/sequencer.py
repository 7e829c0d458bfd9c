"""Runs work in log-sequence-number order, whatever order the threads holding the LSNs arrive in.

Ingest threads get their LSNs from the write-ahead log in one order but become durable, wake up
and reach the processor chain in another. The store's flush relies on its head holding exactly
the records up to some LSN (so the log can be truncated there, and replayed from there after a
crash), so batches must reach the chain in LSN order. Every LSN handed out must be passed to
:meth:`Sequencer.run` or :meth:`Sequencer.skip` exactly once, or later LSNs wait forever.

Group commit makes the waiting short: records become durable in LSN order, a group at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Sequencer:
    """Lets ``run(lsn, fn)`` calls through one at a time, in increasing LSN order.

    Args:
        next_lsn: the first LSN that will be handed out (the log's last LSN + 1).
    """

    def __init__(self, next_lsn: int) -> None:
        self._next = next_lsn
        self._finished: set[int] = set()
        self._turn = threading.Condition()

    def run(self, lsn: int, fn: Callable[[], None]) -> None:
        """Wait for ``lsn``'s turn, call ``fn``, then let the next LSN through (even if fn raised)."""
        with self._turn:
            while self._next < lsn:
                self._turn.wait()
        try:
            fn()
        finally:
            self.skip(lsn)

    def skip(self, lsn: int) -> None:
        """``lsn`` will never run (its record failed): later LSNs need not wait for it."""
        with self._turn:
            self._finished.add(lsn)
            while self._next in self._finished:
                self._finished.discard(self._next)
                self._next += 1
            self._turn.notify_all()
