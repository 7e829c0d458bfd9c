"""Durations and timestamps as users write them in configs, queries and CSV files.

One grammar for the whole receiver, so ``15m`` means the same in a query, a processor option
and a command's flag: a number (decimals allowed) and an optional unit ``ms``, ``s``, ``m``,
``h``, ``d`` or ``w`` (plain numbers are seconds); timestamps are Unix seconds or ISO-8601
(naive times are UTC).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

DURATION_UNITS_NS = {
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def duration_ns(text: str, name: str) -> int:
    """``250ms``, ``15s``, ``5m``, ``2h``, ``7d``, ``1w`` or plain seconds, as nanoseconds.

    Raises:
        ValueError: naming ``name`` and the accepted forms.
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{name}: expected a duration like 250ms, 15s, 5m, 2h, 7d or seconds, got {text!r}")
    number, unit = match.groups()
    return int(float(number) * DURATION_UNITS_NS[unit or "s"])


def timestamp_ns(text: str) -> int:
    """Nanoseconds since the epoch from Unix seconds or ISO-8601 (naive times are UTC).

    Raises:
        ValueError: neither form, or not finite.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"timestamp {text!r} is not finite")
        return round(seconds * 1e9)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither unix seconds nor ISO-8601 (e.g. 2024-05-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
