"""The demo's progress display: a status line redrawn in place on a terminal, plain lines in a log.

Lines that must stay (a fault started or ended, a notification arrived) are printed above the
status line as events. When stdout is not a terminal the status is a plain line every few
seconds instead, so a log of the demo stays readable.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from dataclasses import dataclass
from typing import TextIO

RATE_WINDOW_S = 10.0  # files/s is measured over the last ten seconds


@dataclass
class Counts:
    """What the status shows; the demo's pipeline loop keeps it up to date."""

    files: int = 0
    failed: int = 0
    fault: str | None = None
    change_in_s: float = float("inf")  # until the current fault ends, or the next one starts
    next_fault: str | None = None
    firing: tuple[str, ...] = ()
    notifications: int = 0


class Progress:
    """The status display: ``files 32 (1.9/s), 2 failed | fault errors (4 s left) | notifications 1 |
    firing: StageErrors``.

    Args:
        out: where to write.
        tty: redraw one line in place (default: ``out.isatty()``).
        every_s: seconds between status lines when not on a terminal (a terminal: every second).
    """

    def __init__(self, out: TextIO, tty: bool | None = None, every_s: float = 10.0) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every_s = 1.0 if self.tty else every_s
        self._last = -float("inf")
        self._drawn = False
        self._files: deque[tuple[float, int]] = deque()

    def status(self, counts: Counts, now: float | None = None) -> None:
        """Show ``counts`` when a refresh is due."""
        now = time.monotonic() if now is None else now
        self._files.append((now, counts.files))
        while now - self._files[0][0] > RATE_WINDOW_S:
            self._files.popleft()
        if now - self._last < self.every_s:
            return
        self._last = now
        line = self.line(counts, self._rate())
        if self.tty:  # one line, cut to the terminal's width so that \r goes back to its start
            width = shutil.get_terminal_size().columns - 1
            self.out.write("\r" + line[:width] + "\x1b[K")
            self._drawn = True
        else:
            self.out.write(f"[{_clock()}] {line}\n")
        self.out.flush()

    def event(self, text: str) -> None:
        """A line that stays; on a terminal the status line is drawn again below it."""
        if self._drawn:
            self.out.write("\r\x1b[K")
            self._drawn = False
        self.out.write(f"[{_clock()}] {text}\n")
        self.out.flush()
        if self.tty:
            self._last = -float("inf")

    def end(self) -> None:
        """Leave a terminal on a fresh line."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False

    def _rate(self) -> float:
        (t0, n0), (t1, n1) = self._files[0], self._files[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    @staticmethod
    def line(counts: Counts, rate: float) -> str:
        """The status text; the list of firing alerts goes last, where a narrow terminal cuts it."""
        if counts.fault:
            fault = f"fault {counts.fault} ({counts.change_in_s:.0f} s left)"
        elif counts.next_fault:
            fault = f"next fault {counts.next_fault} in {counts.change_in_s:.0f} s"
        else:
            fault = "no faults"
        return (
            f"files {counts.files} ({rate:.1f}/s), {counts.failed} failed | {fault} | "
            f"notifications {counts.notifications} | firing: {_alerts(counts.firing)}"
        )


def _alerts(names: tuple[str, ...]) -> str:
    """Alert names, the burn-rate alerts of each SLO folded into one entry (they come in fours)."""
    if not names:
        return "none"
    shown: dict[str, int] = {}
    for name in names:
        parts = name.split(":")
        key = f"{parts[0]}:{parts[1]}" if parts[0] == "SLOBurnRate" and len(parts) == 3 else name
        shown[key] = shown.get(key, 0) + 1
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in shown.items())


def _clock() -> str:
    return time.strftime("%H:%M:%S")
