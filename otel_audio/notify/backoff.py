"""Retry timing: exponential backoff with equal jitter, capped, configurable per channel.

The wait before retry ``n`` (1 for the first retry) is drawn from
``uniform(c / 2, c)`` with ``c = min(cap, base * 2**(n-1))`` ("equal jitter" in the AWS
architecture blog's comparison). Half of each step is fixed, half random:

- the waits never shrink while the ceiling grows (retry ``n+1`` waits at least ``c_n``, retry ``n``
  at most ``c_n``), so a dead target sees growing gaps, never a burst;
- no wait is longer than ``cap``, so a target that comes back is tried again within ``cap``;
- outboxes that lost the same target at the same moment still spread their retries.

Full jitter (``uniform(0, c)``) spreads load slightly better but can retry a dead target a few
milliseconds after the last failure, however long the outage has lasted.

A channel's config takes ``min_backoff`` (the base) and ``max_backoff`` (the cap) as seconds or
durations (``100ms``, ``1s``, ``1m``); :func:`otel_audio.notify.channels.channel_from_config`
reads them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_BASE_S = 1.0
# Alertmanager's own notification retries stop growing at 1 minute (cenkalti/backoff's
# MaxInterval); a longer cap only delays delivery after a target recovers.
DEFAULT_CAP_S = 60.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with equal jitter (see the module docstring).

    Args:
        base_s: the first retry waits between half of this and this.
        cap_s: no wait is longer.
        max_retry_after_s: a receiver's ``Retry-After`` is honoured up to this long.
    """

    base_s: float = DEFAULT_BASE_S
    cap_s: float = DEFAULT_CAP_S
    max_retry_after_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"backoff: expected 0 < base ({self.base_s} s) <= cap ({self.cap_s} s)")

    def ceiling(self, attempt: int) -> float:
        """The longest wait before retry number ``attempt``."""
        return min(self.cap_s, self.base_s * 2.0 ** min(max(attempt, 1) - 1, 60))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        ceiling = self.ceiling(attempt)
        return rng.uniform(ceiling / 2.0, ceiling)
