"""Parsing of query-string values shared by the API routes: times, durations, label matchers.

Times accept what Prometheus' HTTP API accepts, plus relative forms for people typing URLs:
RFC 3339 (``2026-11-27T10:00:00Z``), Unix seconds (``1795000000.5``), ``now``,
``now-1h`` and ``now+5m``. Durations: ``250ms``, ``15s``, ``5m``, ``2h``, ``7d``, or plain seconds. Matchers
use PromQL's label-matcher syntax: ``stage="enhancement"``, ``stage!="load"``,
``service=~"denoiser-.*"``, ``stage!~"out.*"`` (quotes optional).
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from otel_audio.processors import units
from otel_audio.store.query import Matcher

_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


class ParamError(ValueError):
    """A query parameter could not be understood; the message names it and the accepted forms."""


_I64 = 2**63 - 1  # times and durations are int64 nanoseconds in the store: years 1678 to 2262


def duration_ns(text: str, name: str) -> int:
    """``15s``, ``5m``, ``250ms`` or plain seconds, as nanoseconds (:mod:`otel_audio.processors.units`)."""
    try:
        ns = units.duration_ns(text, name)
    except (ValueError, OverflowError) as exc:
        raise ParamError(str(exc)) from None
    if abs(ns) > _I64:
        raise ParamError(f"{name}: {text!r} is out of range (at most about 292 years)")
    return ns


def time_ns(text: str | None, name: str, default_ns: int | None = None, now_ns: int | None = None) -> int:
    """RFC 3339, Unix seconds, ``now``, ``now-<duration>`` or ``now+<duration>``, as Unix nanoseconds."""
    ns = _time_ns(text, name, default_ns, now_ns)
    if not -_I64 <= ns <= _I64:
        raise ParamError(f"{name}: {text!r} is out of range (years 1678 to 2262)")
    return ns


def _time_ns(text: str | None, name: str, default_ns: int | None, now_ns: int | None) -> int:
    now = time.time_ns() if now_ns is None else now_ns
    if text is None or text == "":
        if default_ns is None:
            raise ParamError(f"{name}: required")
        return default_ns
    value = text.strip()
    if value == "now":
        return now
    if value.startswith("now-"):
        return now - duration_ns(value[4:], name)
    if value.startswith("now+"):
        return now + duration_ns(value[4:], name)
    try:
        return int(float(value) * 1e9)
    except (ValueError, OverflowError):  # not a number; inf
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ParamError(
            f"{name}: expected RFC 3339 (2026-11-27T10:00:00Z), Unix seconds, now or now-1h, got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        raise ParamError(f"{name}: RFC 3339 time needs a zone (Z or +00:00), got {text!r}")
    return int(parsed.timestamp() * 1e9)


def matchers(values: list[str] | None) -> tuple[Matcher, ...]:
    """``match`` parameters as :class:`Matcher` objects."""
    parsed = []
    for text in values or []:
        match = _MATCHER.match(text)
        if not match:
            raise ParamError(f'match: expected key="value" (or !=, =~, !~), got {text!r}')
        key, op, value = match.groups()
        parsed.append(Matcher(key, op, value))
    return tuple(parsed)


def key_values(values: list[str] | None, name: str) -> dict[str, str]:
    """``k=v`` parameters (span and log attribute filters) as a dict."""
    out: dict[str, str] = {}
    for text in values or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"{name}: expected key=value, got {text!r}")
        out[key.strip()] = value.strip().strip('"')
    return out
