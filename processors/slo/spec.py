"""SLO definitions, close to OpenSLO: parsed from YAML/JSON maps, validated with errors naming the field.

An SLO says which events are good (the SLI), what share of them must be good (``objective``), over
which period (a rolling ``window`` or a ``calendar`` month), and how the error budget is counted
(``budgeting``: ``occurrences`` of events, or ``timeslices`` of fixed length). ``docs/slo.md`` is
the reference. Example::

    spec = slo_from_dict({"name": "availability", "objective": 0.999, "window": "30d",
                          "sli": {"ratio": {"good": 'audio.pipeline.files{error.type=""}',
                                            "total": "audio.pipeline.files"}}}, "slos[0]")

SLI kinds (one key under ``sli``):

- ``ratio``: ``good`` (or ``bad``) and ``total`` selectors of counters or histograms (a histogram
  counts observations);
- ``histogram``: good = observations ``<= le`` of one histogram metric;
- ``spans``: spans of a service (and name), good by status, duration and attribute conditions,
  weighted by their adjusted count;
- ``threshold``: per timeslice, ``agg(metric) op value`` (only with ``budgeting: timeslices``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from otel_audio.processors.alerting.grammar import Absent, Selector, parse
from otel_audio.processors.units import duration_ns

DAY_NS = 86400 * 10**9
_NAME = re.compile(r"[a-z0-9_-]{1,100}")
_KEYS = ("name", "service", "description", "objective", "window", "calendar", "budgeting", "timeslice",
         "timeslice_target", "sli")  # fmt: skip
BUDGETING = ("occurrences", "timeslices")
SPAN_STATUS = ("ok", "not_error", "any")
THRESHOLD_AGGS = ("rate", "increase", "avg", "min", "max", "sum", "count", "last")
OPS = (">", ">=", "<", "<=")
_CONDITION = re.compile(r"\s*(>=|<=|>|<|==|!=)\s*(-?[0-9.]+(?:[eE][-+]?\d+)?)\s*")

# The four SLOs of an audio service (docs/slo.md); names from otel_audio.semconv.
DEFAULT_SLOS: list[dict[str, Any]] = [
    {
        "name": "availability",
        "description": "Files that finish the pipeline without an error (error.type unset).",
        "objective": 0.999,
        "window": "30d",
        "sli": {"ratio": {"good": 'audio.pipeline.files{error.type=""}', "total": "audio.pipeline.files"}},
    },
    {
        "name": "latency",
        "description": "Files through the whole pipeline in 100 ms or less.",
        "objective": 0.95,
        "window": "7d",
        "sli": {"histogram": {"metric": "audio.pipeline.duration", "le": 0.1}},
    },
    {
        "name": "quality",
        "description": "Scored files with PESQ > 3.5 and STOI > 0.8 (validation spans' attributes).",
        "objective": 0.99,
        "window": "7d",
        "sli": {
            "spans": {"good": {"attributes": {"audio.quality.pesq": "> 3.5", "audio.quality.stoi": "> 0.8"}}}
        },
    },
    {
        "name": "throughput",
        "description": "At least 100 files per minute (1.6667/s) in 99.5% of minutes.",
        "objective": 0.995,
        "window": "1d",
        "budgeting": "timeslices",
        "timeslice": "1m",
        "sli": {"threshold": {"metric": "audio.pipeline.files", "agg": "rate", "op": ">=", "value": 1.6667}},
    },
]


@dataclass(frozen=True)
class SpanGood:
    """What makes a span good: its status, a duration limit, attribute conditions (all must hold)."""

    status: str = "any"  # "ok": status OK; "not_error": OK or unset; "any": no condition
    max_duration_ns: int | None = None
    attributes: tuple[tuple[str, str, float], ...] = ()  # (key, op, number)


@dataclass(frozen=True)
class SLI:
    """One SLI; ``kind`` is ``ratio``, ``histogram``, ``spans`` or ``threshold``."""

    kind: str
    good: Selector | None = None  # ratio
    bad: Selector | None = None  # ratio, instead of good
    total: Selector | None = None  # ratio
    histogram: Selector | None = None  # histogram
    le: float = math.nan  # histogram
    span_service: str = ""  # spans
    span_name: str = ""  # spans
    span_good: SpanGood = field(default_factory=SpanGood)
    metric: Selector | None = None  # threshold
    agg: str = "rate"
    op: str = ">="
    value: float = 0.0


@dataclass(frozen=True)
class SLOSpec:
    """One validated SLO. ``source`` is ``config``/``default`` (read-only) or ``api`` (runtime)."""

    name: str
    objective: float
    sli: SLI
    raw: dict[str, Any] = field(compare=False, repr=False)  # the map it was read from
    service: str = ""
    description: str = ""
    window_ns: int = 30 * DAY_NS  # rolling window; for calendar months, 30 days (alert scaling)
    calendar: str = ""  # "month" or ""
    budgeting: str = "occurrences"
    timeslice_ns: int = 60 * 10**9
    timeslice_target: float = math.nan
    source: str = "config"

    @property
    def window_label(self) -> str:
        return "month" if self.calendar else _label(self.window_ns)

    def to_dict(self) -> dict[str, Any]:
        """The definition as given (normalised keys), ready for YAML/JSON and ``slo_from_dict``."""
        return dict(self.raw)


def slo_from_dict(item: Any, where: str = "slo", source: str = "config") -> SLOSpec:
    """Validate one SLO map into an :class:`SLOSpec`.

    Raises:
        ValueError: ``slos[1].objective: expected a number in (0, 1), got 1.5``.
    """
    _require(isinstance(item, dict), where, item, f"a map with the keys {', '.join(_KEYS)}")
    extra = sorted(set(item) - set(_KEYS))
    _require(not extra, f"{where}.{extra[0] if extra else ''}", "(unknown key)", f"only {', '.join(_KEYS)}")
    name = item.get("name")
    _require(isinstance(name, str) and _NAME.fullmatch(name) is not None, f"{where}.name", name,
             "a name of a-z, 0-9, _ and - (at most 100 characters)")  # fmt: skip
    service = item.get("service", "")
    _require(isinstance(service, str), f"{where}.service", service, "a service name")
    description = item.get("description", "")
    _require(isinstance(description, str), f"{where}.description", description, "text")
    objective = item.get("objective")
    _require(_number(objective) and 0 < objective < 1, f"{where}.objective", objective, "a number in (0, 1)")
    calendar = item.get("calendar", "")
    _require(calendar in ("", "month"), f"{where}.calendar", calendar, "month")
    if calendar:
        _require("window" not in item, f"{where}.window", item.get("window"), "no window with calendar")
        window_ns = 30 * DAY_NS
    else:
        window_ns = _duration(item.get("window", "30d"), f"{where}.window")
        _require(window_ns >= 3600 * 10**9, f"{where}.window", item.get("window"), "a window of 1h or more")
    budgeting = item.get("budgeting", "occurrences")
    _require(budgeting in BUDGETING, f"{where}.budgeting", budgeting, " or ".join(BUDGETING))
    timeslice_ns = _duration(item.get("timeslice", "1m"), f"{where}.timeslice")
    _require(0 < timeslice_ns <= window_ns // 2, f"{where}.timeslice", item.get("timeslice"),
             "a duration shorter than half the window")  # fmt: skip
    target = item.get("timeslice_target", math.nan)
    if "timeslice_target" in item:
        _require(
            _number(target) and 0 < target <= 1, f"{where}.timeslice_target", target, "a number in (0, 1]"
        )
    sli = _sli(item.get("sli"), f"{where}.sli")
    if sli.kind == "threshold":
        _require(budgeting == "timeslices", f"{where}.budgeting", budgeting,
                 "timeslices (a threshold SLI is judged per timeslice)")  # fmt: skip
    if budgeting == "timeslices" and sli.kind != "threshold":
        _require("timeslice_target" in item, f"{where}.timeslice_target", None,
                 "a number in (0, 1]: the good share that makes a ratio timeslice good")  # fmt: skip
    raw = {k: item[k] for k in _KEYS if k in item}
    return SLOSpec(name=name, objective=float(objective), sli=sli, raw=raw, service=service,
                   description=description, window_ns=window_ns, calendar=calendar, budgeting=budgeting,
                   timeslice_ns=timeslice_ns, timeslice_target=float(target), source=source)  # fmt: skip


def slos_from_list(items: Any, where: str = "slos", source: str = "config") -> list[SLOSpec]:
    """A list of SLO maps; names must be unique."""
    _require(isinstance(items, list), where, items, "a list of SLO maps")
    specs = [slo_from_dict(item, f"{where}[{i}]", source) for i, item in enumerate(items)]
    names = [s.name for s in specs]
    for i, name in enumerate(names):
        _require(name not in names[:i], f"{where}[{i}].name", name, "a name not used by an earlier SLO")
    return specs


def parse_selector(text: Any, where: str) -> Selector:
    """``metric{label="value",...}`` in the alert grammar's selector syntax."""
    _require(isinstance(text, str) and text.strip() != "", where, text, 'a selector like m{label="v"}')
    try:
        parsed = parse(f"absent({text})")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc.args[0].split(': ', 1)[-1]} in selector {text!r}") from None
    if not isinstance(parsed, Absent):
        raise ValueError(f'{where}: expected one selector like m{{label="v"}}, got {text!r}')
    return parsed.selector


# -- SLIs ------------------------------------------------------------------------------------------


def _sli(value: Any, where: str) -> SLI:
    kinds = ("ratio", "histogram", "spans", "threshold")
    ok = isinstance(value, dict) and len(value) == 1 and next(iter(value)) in kinds
    _require(ok, where, value, f"a map with exactly one of {', '.join(kinds)}")
    kind, body = next(iter(value.items()))
    where = f"{where}.{kind}"
    _require(isinstance(body, dict), where, body, "a map")
    if kind == "ratio":
        _keys(body, ("good", "bad", "total"), where)
        _require(("good" in body) != ("bad" in body), where, body, "exactly one of good or bad, and total")
        which = "good" if "good" in body else "bad"
        selector = parse_selector(body[which], f"{where}.{which}")
        total = parse_selector(body.get("total"), f"{where}.total")
        return SLI(kind, total=total, **{which: selector})
    if kind == "histogram":
        _keys(body, ("histogram", "le", "metric"), where)
        metric = body.get("metric", body.get("histogram"))
        le = body.get("le")
        _require(_number(le), f"{where}.le", le, "a number: the upper bound of a good observation")
        return SLI(kind, histogram=parse_selector(metric, f"{where}.metric"), le=float(le))
    if kind == "spans":
        _keys(body, ("service", "name", "good"), where)
        service = body.get("service", "")  # "" : the SLO's service, or every service
        _require(isinstance(service, str), f"{where}.service", service, "a service name")
        name = body.get("name", "")
        _require(isinstance(name, str), f"{where}.name", name, "a span name")
        return SLI(kind, span_service=service, span_name=name, span_good=_span_good(body.get("good"), where))
    _keys(body, ("metric", "agg", "op", "value"), where)
    agg = body.get("agg", "rate")
    _require(agg in THRESHOLD_AGGS, f"{where}.agg", agg, ", ".join(THRESHOLD_AGGS))
    op = body.get("op", ">=")
    _require(op in OPS, f"{where}.op", op, " ".join(OPS))
    number = body.get("value")
    _require(_number(number), f"{where}.value", number, "a number")
    return SLI(kind, metric=parse_selector(body.get("metric"), f"{where}.metric"), agg=agg, op=op,
               value=float(number))  # fmt: skip


def _span_good(value: Any, where: str) -> SpanGood:
    where = f"{where}.good"
    _require(isinstance(value, dict) and value, where, value, "a map of status, max_duration, attributes")
    _keys(value, ("status", "max_duration", "attributes"), where)
    status = value.get("status", "any")
    _require(status in SPAN_STATUS, f"{where}.status", status, ", ".join(SPAN_STATUS))
    limit = value.get("max_duration")
    limit_ns = None if limit is None else _duration(limit, f"{where}.max_duration")
    attributes = value.get("attributes", {})
    _require(isinstance(attributes, dict), f"{where}.attributes", attributes, "a map of key: '> number'")
    conditions = []
    for key, text in attributes.items():
        match = _CONDITION.fullmatch(str(text))
        _require(match is not None and match.group(1) in OPS, f"{where}.attributes.{key}", text,
                 "a condition like '> 3.5' (ops > >= < <=)")  # fmt: skip
        conditions.append((str(key), match.group(1), float(match.group(2))))
    return SpanGood(status=status, max_duration_ns=limit_ns, attributes=tuple(conditions))


# -- helpers ---------------------------------------------------------------------------------------


def _keys(body: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(set(body) - set(allowed))
    _require(not extra, f"{where}.{extra[0] if extra else ''}", "(unknown key)", f"only {', '.join(allowed)}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _duration(value: Any, where: str) -> int:
    _require(isinstance(value, str), where, value, "a duration like 1m, 7d, 30d")
    ns = duration_ns(value, where)
    _require(ns > 0, where, value, "a positive duration")
    return ns


def _label(ns: int) -> str:
    for unit, size in (("d", DAY_NS), ("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns // 10**6}ms"


def _require(ok: bool, where: str, value: object, accepted: str) -> None:
    if not ok:
        raise ValueError(f"{where}: expected {accepted}, got {value!r}")
