"""SLA reports: one calendar month of each SLO's event counts, summed up for people and contracts.

A report is a pure function of numbers: per SLO, the good and total event counts at 1-minute
steps over a UTC calendar month (``SLOInput``), plus the incidents of the alerting pipeline.
Nothing here reads a clock or a store; the API (``otel_audio/api/reports.py``) gathers the
counts from the ``slo`` processor and calls :func:`sla_report`::

    report = sla_report([SLOInput("availability", 0.999, t, good, total)], "2026-10", incidents)
    report.to_json()   # also to_dict(), to_csv(), to_html()

Per SLO the report gives (``docs/sla-reports.md`` has the exact definitions):

- ``compliance_pct``: 100 * sum(good) / sum(total) over the month. For a timeslice SLO the
  counts are slices, so this is good slices / slices. Never an average of daily ratios.
- ``target_pct`` and ``status``: ``met`` when compliance >= target, ``missed`` when below,
  ``no data`` when the month holds no events.
- ``budget_consumed_pct``: bad events over the month's error budget, (1 - objective) * sum(total).
- ``worst_days``: up to 3 days with bad events, lowest daily SLI first.
- ``downtime_minutes``: 1-minute steps holding events whose ratio good/total is below the objective;
  for a timeslice SLO, its bad slices times the slice length.
- ``incidents``: incidents labelled ``slo=<name>`` or of the SLO's service, overlapping the month,
  each with its duration clipped to the month (ongoing ones end at the month's end, or at ``now``).
- ``burn_down``: the budget remaining (% of the month's budget) at the end of each day.

The HTML page is self-contained (inline CSS and SVG, no script) and prints on A4/Letter.
"""

from __future__ import annotations

import calendar
import csv
import html
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

MINUTE_NS = 60 * 10**9
DAY_NS = 86_400 * 10**9
WORST_DAYS = 3
MET = "met"  # compliance at or above the target
MISSED = "missed"  # compliance below the target
NO_DATA = "no data"  # no events in the month: neither met nor missed
CSV_COLUMNS = (
    "month", "slo", "service", "budgeting", "target_pct", "compliance_pct", "status", "good", "total",
    "bad", "budget_consumed_pct", "budget_remaining_pct", "downtime_minutes", "incidents",
    "incident_minutes", "worst_day", "worst_day_sli_pct",
)  # fmt: skip
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_EPS = 1e-12  # ratios equal to the objective up to float rounding count as meeting it


class IncidentLike(Protocol):
    """What the report reads of an incident (``processors/alerting/incidents.py:Incident``)."""

    id: int
    title: str
    labels: dict[str, str]
    status: str
    opened_at: int  # ns since the epoch
    resolved_at: int  # ns since the epoch; 0 while ongoing


@dataclass(frozen=True)
class SLOInput:
    """One SLO's spec fields and its counts over the month.

    Args:
        name: the SLO's name.
        objective: the target as a fraction in (0, 1), e.g. 0.999.
        t: start of each step, ns since the epoch (int64); steps outside the month are ignored.
        good: good events (or good slices) per step.
        total: all events (or slices) per step.
        budgeting: ``occurrences`` or ``timeslices`` (only a label here: both count the same way).
        service: the service the SLO is about; incidents of this service belong to the SLO.
        window: the spec's window as text, e.g. ``30d`` or ``calendar month`` (shown, not used).
        step_ns: the spacing of ``t``; downtime is counted in steps of this length.
        timeslice_ns: for ``timeslices`` budgeting, the slice length: downtime is then the bad
            slices times this length (a bad 5-minute slice is 5 minutes down). 0: count steps.
    """

    name: str
    objective: float
    t: np.ndarray
    good: np.ndarray
    total: np.ndarray
    budgeting: str = "occurrences"
    service: str = ""
    window: str = ""
    description: str = ""
    step_ns: int = MINUTE_NS
    timeslice_ns: int = 0


@dataclass(frozen=True)
class DayFigure:
    """One day of an SLO: its SLI (None without events), bad and total events."""

    date: str
    sli_pct: float | None
    bad: float
    total: float

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date, "sli_pct": self.sli_pct, "bad": self.bad, "total": self.total}


@dataclass(frozen=True)
class IncidentFigure:
    """An incident as far as it lies in the month; ``end_ns`` is clipped, ``resolved_at_ns`` is not."""

    id: int
    title: str
    status: str
    matched_by: str  # "slo" (labelled slo=<name>) or "service"
    opened_at_ns: int
    resolved_at_ns: int | None
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "matched_by": self.matched_by,
            "opened_at": _iso(self.opened_at_ns),
            "resolved_at": _iso(self.resolved_at_ns) if self.resolved_at_ns else None,
            "ongoing": self.resolved_at_ns is None,
            "start": _iso(self.start_ns),
            "end": _iso(self.end_ns),
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class SLOReport:
    """The month of one SLO; see the module docstring for each figure."""

    name: str
    service: str
    budgeting: str
    window: str
    description: str
    objective: float
    good: float
    total: float
    compliance_pct: float | None
    budget_consumed_pct: float | None
    downtime_minutes: float
    days: tuple[DayFigure, ...]
    worst_days: tuple[DayFigure, ...]
    burn_down: tuple[float | None, ...]  # budget remaining (%) at each day's end; None: no budget or future
    incidents: tuple[IncidentFigure, ...]

    @property
    def target_pct(self) -> float:
        return self.objective * 100.0

    @property
    def bad(self) -> float:
        return self.total - self.good

    @property
    def status(self) -> str:
        if self.compliance_pct is None:
            return NO_DATA
        return MET if self.good >= self.objective * self.total * (1 - _EPS) else MISSED

    @property
    def budget_remaining_pct(self) -> float | None:
        return None if self.budget_consumed_pct is None else 100.0 - self.budget_consumed_pct

    @property
    def incident_minutes(self) -> float:
        """Minutes covered by at least one incident (overlapping incidents count once)."""
        covered, reach = 0, None
        for start, end in sorted((i.start_ns, i.end_ns) for i in self.incidents):
            if reach is None or start > reach:
                covered, reach = covered + end - start, end
            elif end > reach:
                covered, reach = covered + end - reach, end
        return covered / MINUTE_NS

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "service": self.service,
            "budgeting": self.budgeting,
            "window": self.window,
            "description": self.description,
            "objective": self.objective,
            "target_pct": self.target_pct,
            "compliance_pct": self.compliance_pct,
            "status": self.status,
            "good": self.good,
            "total": self.total,
            "bad": self.bad,
            "budget_consumed_pct": self.budget_consumed_pct,
            "budget_remaining_pct": self.budget_remaining_pct,
            "downtime_minutes": self.downtime_minutes,
            "worst_days": [d.to_dict() for d in self.worst_days],
            "incidents": [i.to_dict() for i in self.incidents],
            "incident_minutes": self.incident_minutes,
            "days": [d.to_dict() for d in self.days],
            "burn_down": list(self.burn_down),
        }

    def csv_row(self, month: str) -> list[Any]:
        worst = self.worst_days[0] if self.worst_days else None
        return [
            month, self.name, self.service, self.budgeting, _num(self.target_pct),
            _num(self.compliance_pct), self.status, _num(self.good), _num(self.total), _num(self.bad),
            _num(self.budget_consumed_pct), _num(self.budget_remaining_pct), _num(self.downtime_minutes),
            len(self.incidents), _num(self.incident_minutes), worst.date if worst else "",
            _num(worst.sli_pct) if worst else "",
        ]  # fmt: skip


@dataclass(frozen=True)
class SLAReport:
    """The SLA report of a month: one :class:`SLOReport` per SLO, in the order given."""

    month: str
    start_ns: int
    end_ns: int  # exclusive: the first instant of the next month
    until_ns: int  # end of the period reported (end_ns, or ``now`` inside the month)
    slos: tuple[SLOReport, ...] = field(default_factory=tuple)

    @property
    def partial(self) -> bool:
        """True for a month not over yet: figures cover only up to ``until_ns``."""
        return self.until_ns < self.end_ns

    def to_dict(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "start": _iso(self.start_ns),
            "end": _iso(self.end_ns),
            "until": _iso(self.until_ns),
            "partial": self.partial,
            "slos": [s.to_dict() for s in self.slos],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        """One row per SLO under a header of :data:`CSV_COLUMNS` (empty cells where there is no data)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(s.csv_row(self.month) for s in self.slos)
        return out.getvalue()

    def to_html(self) -> str:
        """A self-contained printable page: summary table, then per SLO its two charts and tables."""
        return _html_page(self)


def month_bounds(month: str) -> tuple[int, int]:
    """``'2026-10'`` -> (start, end) of that UTC calendar month in ns, end exclusive.

    Raises:
        ValueError: the text is not a month written YYYY-MM.
    """
    match = _MONTH.fullmatch(month.strip()) if isinstance(month, str) else None
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1970:
        raise ValueError(f"month {month!r}: expected YYYY-MM, e.g. 2026-10")
    year, number = int(match[1]), int(match[2])
    start = datetime(year, number, 1, tzinfo=UTC)
    days = calendar.monthrange(year, number)[1]
    return _ns(start), _ns(start) + days * DAY_NS


def sla_report(
    slos: Sequence[SLOInput], month: str, incidents: Iterable[IncidentLike] = (), now: int | None = None
) -> SLAReport:
    """The report of ``month`` (``YYYY-MM``, UTC) for ``slos``.

    Args:
        slos: each SLO's spec fields and counts; steps outside the month are ignored.
        month: the calendar month, ``YYYY-MM``.
        incidents: the alerting pipeline's incidents, any period; those of each SLO are picked here.
        now: the time of the report (ns); ongoing incidents end at the earlier of it and the month's
            end. ``None`` reports the whole month.

    Raises:
        ValueError: a bad month, an objective outside (0, 1), or count arrays of different lengths.
    """
    start, end = month_bounds(month)
    until = end if now is None else max(start, min(end, now))
    incidents = list(incidents)
    return SLAReport(
        month, start, end, until, tuple(_slo_report(s, start, end, until, incidents) for s in slos)
    )


def _slo_report(slo: SLOInput, start: int, end: int, until: int, incidents: list[Any]) -> SLOReport:
    if not 0.0 < slo.objective < 1.0:
        raise ValueError(f"SLO {slo.name!r}: objective {slo.objective!r}: expected a fraction in (0, 1)")
    t = np.asarray(slo.t, np.int64)
    good = np.nan_to_num(np.asarray(slo.good, np.float64))  # a step without data counts nothing
    total = np.nan_to_num(np.asarray(slo.total, np.float64))
    if not t.shape == good.shape == total.shape:
        raise ValueError(f"SLO {slo.name!r}: t, good and total must have the same length")
    inside = (t >= start) & (t < end)
    t, good, total = t[inside], good[inside], total[inside]
    n_days = (end - start) // DAY_NS
    day = (t - start) // DAY_NS
    day_good = np.bincount(day, good, n_days)
    day_total = np.bincount(day, total, n_days)
    sum_good, sum_total = float(good.sum()), float(total.sum())
    budget = (1.0 - slo.objective) * sum_total  # bad events the month allows
    days = tuple(
        DayFigure(
            _iso(start + d * DAY_NS)[:10],
            100.0 * day_good[d] / day_total[d] if day_total[d] > 0 else None,
            float(day_total[d] - day_good[d]),
            float(day_total[d]),
        )
        for d in range(n_days)
    )
    worst = sorted((d for d in days if d.bad > 0), key=lambda d: (d.sli_pct, -d.bad, d.date))[:WORST_DAYS]
    if slo.budgeting == "timeslices" and slo.timeslice_ns > 0:
        downtime_ns = float((total - good).sum()) * slo.timeslice_ns
    else:
        downtime_ns = int(((total > 0) & (good < slo.objective * total * (1 - _EPS))).sum()) * slo.step_ns
    spent = np.cumsum(day_total - day_good)
    return SLOReport(
        name=slo.name,
        service=slo.service,
        budgeting=slo.budgeting,
        window=slo.window,
        description=slo.description,
        objective=float(slo.objective),
        good=sum_good,
        total=sum_total,
        compliance_pct=100.0 * sum_good / sum_total if sum_total > 0 else None,
        budget_consumed_pct=100.0 * (sum_total - sum_good) / budget if budget > 0 else None,
        downtime_minutes=downtime_ns / MINUTE_NS,
        days=days,
        worst_days=tuple(worst),
        burn_down=tuple(
            float(100.0 * (1 - spent[d] / budget)) if budget > 0 and start + d * DAY_NS < until else None
            for d in range(n_days)
        ),
        incidents=_incidents_of(slo, incidents, start, until),
    )


def _incidents_of(slo: SLOInput, incidents: list[Any], start: int, until: int) -> tuple[IncidentFigure, ...]:
    """Incidents labelled ``slo=<name>`` or of the SLO's service that overlap [start, until)."""
    out = []
    for incident in incidents:
        labels = dict(getattr(incident, "labels", None) or {})
        if labels.get("slo") == slo.name:
            matched = "slo"
        elif slo.service and slo.service in (labels.get("service"), labels.get("service.name")):
            matched = "service"
        else:
            continue
        resolved = int(incident.resolved_at or 0) or None
        begin, finish = max(int(incident.opened_at), start), min(resolved or until, until)
        if begin >= until or finish <= start or finish < begin:
            continue
        figure = IncidentFigure(
            int(incident.id), str(incident.title), str(incident.status), matched,
            int(incident.opened_at), resolved, begin, finish,
        )  # fmt: skip
        out.append(figure)
    return tuple(sorted(out, key=lambda i: (i.start_ns, i.id)))


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9


def _iso(ns: int) -> str:
    seconds, rest = divmod(int(ns), 10**9)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{rest:09d}Z".replace(".000000000Z", "Z")


def _num(value: float | None) -> str:
    """A CSV cell: integers without a decimal point, others to 6 decimals, None empty."""
    if value is None:
        return ""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0")


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body { font: 13px/1.4 system-ui, sans-serif; color: #222; margin: 24px auto; max-width: 720px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 0 0 4px; }
h3 { font-size: 13px; margin: 12px 0 4px; color: #555; }
table { border-collapse: collapse; width: 100%; } th, td { padding: 3px 6px; text-align: left; }
th { border-bottom: 1px solid #999; } td { border-bottom: 1px solid #e4e4e4; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.met { color: #2e7d32; font-weight: 600; } .missed { color: #c62828; font-weight: 600; }
.muted { color: #777; } section.slo { margin-top: 28px; border-top: 2px solid #333; padding-top: 10px; }
svg { display: block; width: 100%; height: auto; } svg text { font-size: 10px; fill: #555; }
@media print {
  body { margin: 0; max-width: none; font-size: 11px; }
  section.slo { page-break-inside: avoid; break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""
_SVG = 'xmlns="http://www.w3.org/2000/svg"'
_W, _LEFT, _RIGHT, _TOP, _BOTTOM = 640, 52, 8, 10, 20


def _html_page(report: SLAReport) -> str:
    e = html.escape
    period = f"{_iso(report.start_ns)[:10]} to {_iso(report.end_ns)[:10]} (UTC, end exclusive)"
    if report.partial:
        period += f"; partial, figures up to {_iso(report.until_ns)}"
    head = "".join(
        f'<th class="n">{h}</th>' if h[0] != "!" else f"<th>{h[1:]}</th>"
        for h in ("!SLO", "Target", "Compliance", "!Status", "Budget used", "Downtime (min)", "Incidents")
    )
    rows = "".join(
        f'<tr><td>{e(s.name)}</td><td class="n">{_pct(s.target_pct)}</td>'
        f'<td class="n">{_pct(s.compliance_pct)}</td><td class="{_cls(s)}">{e(s.status)}</td>'
        f'<td class="n">{_pct(s.budget_consumed_pct)}</td><td class="n">{_num(s.downtime_minutes)}</td>'
        f'<td class="n">{len(s.incidents)}</td></tr>'
        for s in report.slos
    )
    body = "".join(_html_slo(s) for s in report.slos) or '<p class="muted">No SLOs are defined.</p>'
    return (
        '<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml" lang="en">\n'
        '<head><meta charset="utf-8"/>'
        f"<title>SLA report {e(report.month)}</title><style>{_CSS}</style></head>\n<body>\n"
        f'<h1>SLA report {e(report.month)}</h1><p class="muted">{e(period)}</p>\n'
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>\n{body}</body>\n</html>\n"
    )


def _html_slo(s: SLOReport) -> str:
    e = html.escape
    facts = " · ".join(e(x) for x in (s.service and f"service {s.service}", s.budgeting, s.window) if x)
    worst = "".join(
        f'<tr><td>{d.date}</td><td class="n">{_pct(d.sli_pct)}</td><td class="n">{_num(d.bad)}</td>'
        f'<td class="n">{_num(d.total)}</td></tr>'
        for d in s.worst_days
    )
    incidents = "".join(
        f"<tr><td>{i.id}</td><td>{e(i.title)}</td><td>{e(i.status)}</td><td>{_iso(i.start_ns)[:16]}</td>"
        f'<td class="n">{_duration(i.duration_s)}{" (ongoing)" if i.resolved_at_ns is None else ""}</td></tr>'
        for i in s.incidents
    )
    return (
        f'<section class="slo"><h2>{e(s.name)}</h2><p class="muted">{facts}'
        f"{'<br/>' + e(s.description) if s.description else ''}</p>"
        f"<p>Compliance <b>{_pct(s.compliance_pct)}</b> against a target of {_pct(s.target_pct)}: "
        f'<span class="{_cls(s)}">{e(s.status)}</span>. Good {_num(s.good)} of {_num(s.total)} '
        f"({_num(s.bad)} bad); error budget used {_pct(s.budget_consumed_pct)}; "
        f"downtime {_num(s.downtime_minutes)} min; incidents {len(s.incidents)} "
        f"({_num(round(s.incident_minutes, 1))} min).</p>\n"
        f"<h3>Error budget remaining at the end of each day</h3>{_svg_burn_down(s)}\n"
        f"<h3>Daily SLI (red: below the target)</h3>{_svg_daily(s)}\n<h3>Worst days</h3>"
        + (
            '<table><thead><tr><th>Day</th><th class="n">SLI</th><th class="n">Bad</th>'
            f'<th class="n">Total</th></tr></thead><tbody>{worst}</tbody></table>'
            if worst
            else '<p class="muted">No day had bad events.</p>'
        )
        + "<h3>Incidents</h3>"
        + (
            "<table><thead><tr><th>#</th><th>Title</th><th>Status</th><th>From (UTC)</th>"
            f'<th class="n">In month</th></tr></thead><tbody>{incidents}</tbody></table>'
            if incidents
            else '<p class="muted">None in this month.</p>'
        )
        + "</section>\n"
    )


def _svg_burn_down(s: SLOReport) -> str:
    """The budget remaining as a line from 100% at the month's start to each day's end."""
    height, n = 170, len(s.days)
    values = [100.0] + [v for v in s.burn_down if v is not None]
    lo = min(0.0, min(values))
    y = _scale(lo, 100.0, height)
    x = _xscale(n)
    grid = "".join(
        f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
        f'<text x="{_LEFT - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{v:g}%</text>'
        for v in sorted({100.0, 50.0, 0.0} | ({round(lo)} if lo < -10 else set()))
    )
    if len(values) > 1:
        points = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in enumerate(values))
        line = f'<polyline points="{points}" fill="none" stroke="#1565c0" stroke-width="2"/>'
    else:
        line = f'<text x="{_W / 2}" y="{height / 2}" text-anchor="middle">no data</text>'
    title = f"Error budget remaining of {s.name}, % per day"
    return (
        f'<svg {_SVG} viewBox="0 0 {_W} {height}" role="img"><title>{html.escape(title)}</title>'
        f"{grid}{_day_ticks(n, x, height)}{line}</svg>"
    )


def _svg_daily(s: SLOReport) -> str:
    """One bar per day, its height the day's SLI on a scale from just below the target to 100%."""
    height, n = 120, len(s.days)
    slis = [d.sli_pct for d in s.days if d.sli_pct is not None]
    lo = min([s.target_pct - 2 * (100.0 - s.target_pct), *slis])
    lo = max(0.0, lo - 0.1 * (100.0 - lo))  # the worst day keeps a visible bar
    y, x = _scale(lo, 100.0, height), _xscale(n)
    width = (x(1) - x(0)) * 0.8
    bars = []
    for d, day in enumerate(s.days):
        if day.sli_pct is None:
            top, colour, label = y(lo) - 2, "#bbb", "no events"
        else:
            top = y(day.sli_pct)
            colour = "#2e7d32" if day.sli_pct >= s.target_pct * (1 - _EPS) else "#c62828"
            label = _pct(day.sli_pct)
        bars.append(
            f'<rect x="{x(d):.1f}" y="{top:.1f}" width="{width:.1f}" height="{max(y(lo) - top, 1):.1f}" '
            f'fill="{colour}"><title>{day.date}: {label}</title></rect>'
        )
    target = (
        f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(s.target_pct):.1f}" y2="{y(s.target_pct):.1f}" '
        f'stroke="#333" stroke-dasharray="4 3"/>'
        f'<text x="{_LEFT - 4}" y="{y(s.target_pct) + 3:.1f}" text-anchor="end">{s.target_pct:g}%</text>'
        f'<text x="{_LEFT - 4}" y="{y(lo) + 3:.1f}" text-anchor="end">{lo:.4g}%</text>'
    )
    title = f"Daily SLI of {s.name}"
    return (
        f'<svg {_SVG} viewBox="0 0 {_W} {height}" role="img"><title>{html.escape(title)}</title>'
        f"{''.join(bars)}{target}{_day_ticks(n, x, height)}</svg>"
    )


def _scale(lo: float, hi: float, height: int):
    span = (hi - lo) or 1.0
    return lambda v: _TOP + (hi - v) / span * (height - _TOP - _BOTTOM)


def _xscale(n: int):
    return lambda d: _LEFT + d / max(n, 1) * (_W - _LEFT - _RIGHT)


def _day_ticks(n: int, x, height: int) -> str:
    return "".join(f'<text x="{x(d):.1f}" y="{height - 6}">{d + 1}</text>' for d in range(0, n, 7))


def _cls(s: SLOReport) -> str:
    return {MET: "met", MISSED: "missed"}.get(s.status, "muted")


def _pct(value: float | None) -> str:
    return "no data" if value is None else f"{value:.3f}%"


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return " ".join(f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v) or "0m"
