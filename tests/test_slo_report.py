"""SLA reports: the numbers of a constructed month with known answers, the formats, the API and CLI.

The month is October 2026 (31 days, 44,640 minutes) with three SLOs:

- ``availability`` (99.9%, occurrences, service ``enhancer``): 100 requests a minute; a 30-minute
  outage on the 10th (all bad: 3,000), a degraded stretch on the 20th (120 minutes with 5 bad
  each: 600) and one minute with 1 bad on the 25th. 3,601 bad of 4,464,000: met.
- ``quality`` (99%, occurrences): 10 files a minute, all good: met, nothing consumed.
- ``throughput`` (99.5%, timeslices): one slice a minute, 240 bad slices on the 5th: missed.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np
import pytest

from otel_audio.processors.slo.report import (
    CSV_COLUMNS,
    DAY_NS,
    MINUTE_NS,
    SLOInput,
    month_bounds,
    sla_report,
)
from otel_audio.processors.slo.report_cli import report_main

MONTH = "2026-10"
START, END = month_bounds(MONTH)
MINUTES = (END - START) // MINUTE_NS
T = START + np.arange(MINUTES, dtype=np.int64) * MINUTE_NS
HOUR_NS = 60 * MINUTE_NS
SVG = "{http://www.w3.org/2000/svg}svg"
XHTML = "{http://www.w3.org/1999/xhtml}"


def at(day: int, hour: int = 0, minute: int = 0) -> int:
    """A time in October 2026 (``day`` from 1)."""
    return START + (day - 1) * DAY_NS + hour * HOUR_NS + minute * MINUTE_NS


def minutes(start_ns: int, count: int) -> slice:
    first = (start_ns - START) // MINUTE_NS
    return slice(first, first + count)


def availability() -> SLOInput:
    total = np.full(MINUTES, 100.0)
    bad = np.zeros(MINUTES)
    bad[minutes(at(10, 12), 30)] = 100  # outage
    bad[minutes(at(20, 10), 120)] = 5  # degraded
    bad[minutes(at(25, 8), 1)] = 1
    return SLOInput("availability", 0.999, T, total - bad, total, service="enhancer", window="month")


def quality() -> SLOInput:
    return SLOInput("quality", 0.99, T, np.full(MINUTES, 10.0), np.full(MINUTES, 10.0))


def throughput() -> SLOInput:
    good = np.ones(MINUTES)
    good[minutes(at(5), 240)] = 0
    return SLOInput("throughput", 0.995, T, good, np.ones(MINUTES), budgeting="timeslices")


@dataclass
class FakeIncident:
    id: int
    opened_at: int
    resolved_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    title: str = "incident"
    status: str = "resolved"


INCIDENTS = [
    FakeIncident(1, at(10, 12), at(10, 12, 35), {"slo": "availability"}),
    FakeIncident(2, at(1) - HOUR_NS, at(1, 1), {"service": "enhancer"}),  # began in September
    FakeIncident(3, at(31, 23, 30), 0, {"slo": "availability"}, status="open"),  # still open
    FakeIncident(4, at(12), at(12, 1), {"slo": "other"}),
    FakeIncident(5, at(1) - 30 * DAY_NS, at(1) - 29 * DAY_NS, {"slo": "availability"}),  # September
    FakeIncident(6, at(5), at(5, 4), {"slo": "throughput"}),
]


@pytest.fixture(scope="module")
def report():
    return sla_report([availability(), quality(), throughput()], MONTH, INCIDENTS)


def test_compliance_is_good_events_over_all_events_of_the_month(report):
    avail, clean, slices = report.slos
    assert avail.good == 4_464_000 - 3_601 and avail.total == 4_464_000
    assert avail.compliance_pct == pytest.approx(100 * (1 - 3_601 / 4_464_000))
    assert clean.compliance_pct == 100.0
    assert slices.compliance_pct == pytest.approx(100 * 44_400 / 44_640)  # good slices / slices


def test_met_or_missed_against_the_target(report):
    assert [(s.target_pct, s.status) for s in report.slos] == [
        (pytest.approx(99.9), "met"),
        (pytest.approx(99.0), "met"),
        (pytest.approx(99.5), "missed"),
    ]


def test_budget_consumed_is_bad_events_over_the_months_allowance(report):
    avail, clean, slices = report.slos
    assert avail.budget_consumed_pct == pytest.approx(100 * 3_601 / 4_464)
    assert clean.budget_consumed_pct == 0.0
    assert slices.budget_consumed_pct == pytest.approx(100 * 240 / 223.2)
    assert slices.budget_remaining_pct == pytest.approx(100 - 100 * 240 / 223.2)


def test_worst_days_are_the_lowest_daily_slis_with_bad_events(report):
    avail, clean, slices = report.slos
    assert [(d.date, d.bad) for d in avail.worst_days] == [
        ("2026-10-10", 3_000),
        ("2026-10-20", 600),
        ("2026-10-25", 1),
    ]
    assert avail.worst_days[0].sli_pct == pytest.approx(100 * (144_000 - 3_000) / 144_000)
    assert clean.worst_days == ()
    assert [d.date for d in slices.worst_days] == ["2026-10-05"]


def test_downtime_counts_minutes_whose_ratio_is_below_the_objective(report):
    avail, clean, slices = report.slos
    assert avail.downtime_minutes == 30 + 120 + 1  # 95% and 99% minutes are below 99.9%
    assert clean.downtime_minutes == 0
    assert slices.downtime_minutes == 240


def test_timeslice_downtime_is_bad_slices_times_their_length():
    good, total = np.array([1.0, 0.0, 0.0, 1.0]), np.ones(4)
    slo = SLOInput("slices", 0.99, T[:20:5], good, total, budgeting="timeslices", timeslice_ns=5 * MINUTE_NS)
    assert sla_report([slo], MONTH).slos[0].downtime_minutes == 10


def test_a_minute_exactly_at_the_objective_is_not_downtime():
    good = np.array([999.0, 998.0])
    slo = SLOInput("edge", 0.999, T[:2], good, np.full(2, 1000.0))
    assert sla_report([slo], MONTH).slos[0].downtime_minutes == 1


def test_incidents_of_the_slo_or_its_service_clipped_to_the_month(report):
    avail, clean, slices = report.slos
    assert [(i.id, i.matched_by, i.duration_s / 60) for i in avail.incidents] == [
        (2, "service", 60.0),  # opened an hour before the month
        (1, "slo", 35.0),
        (3, "slo", 30.0),  # ongoing: until the month's end
    ]
    assert avail.incidents[2].resolved_at_ns is None
    assert avail.incident_minutes == 125
    assert clean.incidents == ()
    assert [(i.id, i.duration_s) for i in slices.incidents] == [(6, 4 * 3600)]


def test_incidents_from_the_alerting_store_of_a_burn_rate_alert_are_read_as_they_are():
    from otel_audio.processors.alerting.incidents import Incidents
    from otel_audio.processors.alerting.model import Alert, AlertState, Notification

    labels = {"alertname": "SLOBurnRate:availability:1h", "slo": "availability", "severity": "critical"}
    store = Incidents(":memory:")
    try:
        for state, when in ((AlertState.FIRING, at(10, 12)), (AlertState.RESOLVED, at(10, 12, 35))):
            alert = Alert(labels, {"summary": "burning"}, state, at(10, 12), 0, 14.4)
            status = "firing" if state is AlertState.FIRING else "resolved"
            store.observe(Notification("pager", "g", {"slo": "availability"}, (alert,), status, when), when)
        (incident,) = sla_report([availability()], MONTH, store.list()).slos[0].incidents
    finally:
        store.close()
    assert (incident.title, incident.matched_by, incident.duration_s) == ("burning", "slo", 35 * 60)


def test_ongoing_incidents_end_at_now_inside_the_month():
    now = at(31, 23, 40)
    report = sla_report([availability()], MONTH, INCIDENTS, now=now)
    assert report.partial
    assert report.slos[0].incidents[-1].duration_s == 10 * 60


def test_burn_down_stops_at_now_inside_the_month():
    burn_down = sla_report([availability()], MONTH, now=at(20, 6)).slos[0].burn_down
    assert burn_down[19] is not None and burn_down[20:] == (None,) * 11


def test_burn_down_is_the_budget_left_at_each_days_end(report):
    avail, clean, slices = report.slos
    assert len(avail.burn_down) == 31
    assert avail.burn_down[8] == 100.0  # the 9th: nothing spent yet
    assert avail.burn_down[9] == pytest.approx(100 * (1 - 3_000 / 4_464))
    assert avail.burn_down[-1] == pytest.approx(avail.budget_remaining_pct)
    assert set(clean.burn_down) == {100.0}
    assert slices.burn_down[3] == 100.0 and slices.burn_down[4] == pytest.approx(100 - 100 * 240 / 223.2)


def test_a_month_without_events_is_no_data():
    slo = SLOInput("silent", 0.99, np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    result = sla_report([slo], MONTH).slos[0]
    assert (result.status, result.compliance_pct, result.budget_consumed_pct) == ("no data", None, None)


def test_steps_outside_the_month_are_ignored():
    t = np.array([START - MINUTE_NS, START, END], np.int64)
    slo = SLOInput("edges", 0.99, t, np.array([0.0, 1.0, 0.0]), np.ones(3))
    assert sla_report([slo], MONTH).slos[0].compliance_pct == 100.0


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "10-2026", "October", "", "2026-10-01"])
def test_a_month_not_written_yyyy_mm_is_refused(month):
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        sla_report([], month)


def test_months_have_their_calendar_length():
    start, end = month_bounds("2028-02")
    assert (end - start) // DAY_NS == 29


def test_csv_has_one_row_per_slo_under_the_documented_columns(report):
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["slo"], r["status"], r["downtime_minutes"], r["incidents"]) for r in rows] == [
        ("availability", "met", "151", "3"),
        ("quality", "met", "0", "0"),
        ("throughput", "missed", "240", "1"),
    ]
    assert float(rows[0]["compliance_pct"]) == pytest.approx(100 * (1 - 3_601 / 4_464_000), abs=1e-6)
    assert (rows[0]["worst_day"], rows[1]["worst_day"]) == ("2026-10-10", "")


def test_json_carries_the_same_figures(report):
    import json

    document = json.loads(report.to_json())
    assert document["month"] == MONTH and document["partial"] is False
    assert document["slos"][2]["status"] == "missed"
    assert document["slos"][0]["incidents"][0]["start"] == "2026-10-01T00:00:00Z"


def test_html_is_well_formed_with_two_charts_per_slo(report):
    root = ET.fromstring(report.to_html())
    assert len(list(root.iter(SVG))) == 2 * len(report.slos)
    assert "@media print" in root.find(f"{XHTML}head/{XHTML}style").text
    assert not list(root.iter(f"{XHTML}script")) and "http" not in "".join(
        v for e in root.iter() for k, v in e.attrib.items() if k != "xmlns"
    )


def test_html_escapes_a_hostile_slo_name():
    name = '<script>alert("x")</script>&'
    page = sla_report([SLOInput(name, 0.99, T[:1], np.ones(1), np.ones(1))], MONTH).to_html()
    root = ET.fromstring(page)
    assert "<script" not in page
    assert [h.text for h in root.iter(f"{XHTML}h2")] == [name]


def test_cli_refuses_a_bad_month_in_one_line(capsys):
    assert report_main(["sla", "--month", "2026-13"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_cli_says_when_the_api_is_unreachable(capsys):
    assert report_main(["sla", "--month", MONTH, "--api", "http://127.0.0.1:9"]) == 2
    assert "cannot reach the receiver API" in capsys.readouterr().err


def test_api_answers_404_without_an_slo_processor(start_receiver, capsys):
    receiver = start_receiver()
    api = f"http://127.0.0.1:{receiver.api_port}"
    assert report_main(["sla", "--month", MONTH, "--api", api]) == 2
    assert "slo processor" in capsys.readouterr().err


def _recent_minutes(now_ns: int, count: int) -> tuple[str, int]:
    """A month and the first of ``count`` whole minutes inside it that ended before ``now_ns``."""
    last = now_ns // MINUTE_NS * MINUTE_NS - 5 * MINUTE_NS
    first = last - count * MINUTE_NS
    month_start = month_bounds(_month_of(last))[0]
    if first < month_start:  # near a month's start: use the end of the month before
        first = month_start - (count + 5) * MINUTE_NS
    return _month_of(first), first


def _month_of(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m")


def test_the_cli_reports_a_receivers_slo_as_computed_by_hand(start_receiver, tmp_path):
    import json
    import time

    from tests.receiver_helpers import cumulative_counter, grpc_export_metrics, metrics_request

    slo = {
        "name": "requests",
        "service": "svc",
        "objective": 0.99,
        "calendar": "month",
        "sli": {"ratio": {"good": "report.requests.good", "total": "report.requests.total"}},
    }
    receiver = start_receiver(processors=["selfmon", {"slo": {"defaults": False, "slos": [slo]}}, "store"])
    month, first = _recent_minutes(time.time_ns(), 60)
    # A sample in the middle of each minute; 100 requests a minute, 50 of them bad in minutes 20-24.
    times = [first + k * MINUTE_NS + MINUTE_NS // 2 for k in range(61)]
    good_per_minute = [0] + [50 if 20 <= k < 25 else 100 for k in range(1, 61)]
    good = np.cumsum(good_per_minute).tolist()
    total = [100 * k for k in range(61)]
    metrics = [
        cumulative_counter(
            "report.requests.good", [(first, t, float(v)) for t, v in zip(times, good, strict=True)]
        ),
        cumulative_counter(
            "report.requests.total", [(first, t, float(v)) for t, v in zip(times, total, strict=True)]
        ),
    ]
    grpc_export_metrics(receiver.grpc_port, metrics_request("svc", metrics))

    out = tmp_path / "sla.json"
    api = f"http://127.0.0.1:{receiver.api_port}"
    assert report_main(["sla", "--month", month, "--api", api, "--output", str(out)]) == 0
    (result,) = json.loads(out.read_text())["slos"]
    # The first sample's increment is unknown (nothing before it): 60 minutes of 100, 5 x 50 bad.
    assert (result["good"], result["total"]) == (5_750, 6_000)
    assert result["compliance_pct"] == pytest.approx(100 * 5_750 / 6_000)
    assert (result["status"], result["downtime_minutes"]) == ("missed", 5)
    assert result["budget_consumed_pct"] == pytest.approx(100 * 250 / 60)


def test_the_api_answers_each_format_with_its_content_type_and_400_for_a_bad_month(start_receiver):
    from tests.receiver_helpers import api

    # The four default SLOs; alerting holds their burn-rate rules and (no) incidents.
    receiver = start_receiver(processors=["selfmon", {"slo": {}}, {"alerting": {}}, "store"])
    types = {f: api(receiver, "/api/v1/reports/sla", month=MONTH, format=f) for f in ("json", "csv", "html")}
    assert {f: r.headers["content-type"].split(";")[0] for f, r in types.items()} == {
        "json": "application/json",
        "csv": "text/csv",
        "html": "text/html",
    }
    assert len(types["csv"].text.splitlines()) == 1 + 4
    bad = api(receiver, "/api/v1/reports/sla", month="2026-13")
    assert bad.status_code == 400 and "YYYY-MM" in bad.json()["error"]


def test_the_cli_sends_the_bearer_token(start_receiver, capsys):
    receiver = start_receiver(processors=["selfmon", {"slo": {}}, "store"], server__auth__tokens=["s3cret"])
    args = ["sla", "--month", MONTH, "--format", "csv", "--api", f"http://127.0.0.1:{receiver.api_port}"]
    assert report_main(args) == 2
    assert "bearer token" in capsys.readouterr().err
    assert report_main([*args, "--token", "s3cret"]) == 0
    assert capsys.readouterr().out.startswith(",".join(CSV_COLUMNS) + "\n")
