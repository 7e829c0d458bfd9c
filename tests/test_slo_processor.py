"""The slo stage: SLIs and budgets of constructed histories, burn-rate alerts on a driven clock,
runtime definitions, invalid definitions, and a real receiver end to end.

Histories are counters sampled every minute; when a window's edges fall on samples, Prometheus's
extrapolation adds nothing and the numbers are plain sums, worked out in each test's comment.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from otel_audio.processors.alerting.processor import Alerting
from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    SPANS_SCHEMA,
    MetricBatch,
    MetricType,
    SpanBatch,
    series_row,
)
from otel_audio.processors.slo.alerts import alert_rules, windows
from otel_audio.processors.slo.processor import SLOs
from otel_audio.processors.slo.spec import slo_from_dict
from otel_audio.receiver.chain import ProcessorChain
from otel_audio.receiver.selfmon import SelfMetrics
from otel_audio.store.memory import MemoryStore
from tests.receiver_helpers import api, grpc_export_metrics, kv, metrics_request

S = 10**9
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_790_000_000 * S // MIN * MIN  # a minute boundary in 2026
FILES = "audio.pipeline.files"
GOOD = f'{FILES}{{error.type=""}}'


def counter_batch(metric: str, series: dict[str, tuple[np.ndarray, np.ndarray]], service="enhancer"):
    """A cumulative counter per ``error.type`` value ("" for none): ``{error_type: (times, values)}``."""
    rows, points = [], []
    for error_type, (times, values) in series.items():
        attrs = {"error.type": error_type} if error_type else {}
        row = series_row(
            metric, scope="t", attributes=attrs, service=service, kind=MetricType.SUM, monotonic=True
        )
        rows.append(row)
        points += [
            {
                "series_id": row["series_id"],
                "time_unix_nano": int(t),
                "start_time_unix_nano": 0,
                "value": float(v),
                "flags": 0,
            }
            for t, v in zip(times, values, strict=True)
        ]
    return MetricBatch(
        points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
        series=pa.Table.from_pylist(rows, schema=SERIES_SCHEMA),
        exemplars=EXEMPLARS_SCHEMA.empty_table(),
    )


def files(start: int, minutes: int, per_minute: float, bad_minutes: dict[int, float]):
    """Counters ``{"": good, "Timeout": bad}`` sampled each minute from ``start`` (value 0 there);
    minute ``k`` (ending at sample ``k``) has ``bad_minutes.get(k, 0)`` bad of ``per_minute``."""
    t = start + np.arange(minutes + 1, dtype=np.int64) * MIN
    bad = np.zeros(minutes + 1)
    for k, n in bad_minutes.items():
        bad[k] = n
    total = np.full(minutes + 1, per_minute)
    total[0] = bad[0] = 0
    return {"": (t, np.cumsum(total - bad)), "Timeout": (t, np.cumsum(bad))}


def engine(tmp_path, *slos: dict, **options) -> tuple[SLOs, MemoryStore]:
    store = MemoryStore()
    return SLOs({"defaults": False, "slos": list(slos), **options}, store, tmp_path), store


AVAILABILITY = {
    "name": "availability",
    "objective": 0.99,
    "window": "1d",
    "sli": {"ratio": {"good": GOOD, "total": FILES}},
}


# -- SLI and budget on constructed histories ------------------------------------------------------


def test_rolling_window_sli_and_budget_are_sums_of_events(tmp_path):
    # a day of 100 files a minute, 30 minutes all bad: 3,000 bad of 144,000; 99 %: 1,440 allowed
    slo, store = engine(tmp_path, AVAILABILITY)
    store.process(counter_batch(FILES, files(T0, 1440, 100, {k: 100 for k in range(600, 630)})))
    status = slo.status("availability", T0 + DAY)
    assert status["total"] == pytest.approx(144_000)
    assert status["good"] == pytest.approx(141_000)
    assert status["sli"] == pytest.approx(141_000 / 144_000)
    budget = status["budget"]
    assert budget.total == pytest.approx(1440)
    assert budget.consumed == pytest.approx(3000)
    assert budget.remaining_ratio == pytest.approx(1 - 3000 / 1440)
    assert budget.time_to_exhaustion_s == 0


def test_bad_instead_of_good_gives_the_same_numbers(tmp_path):
    spec = {**AVAILABILITY, "sli": {"ratio": {"bad": f'{FILES}{{error.type!=""}}', "total": FILES}}}
    slo, store = engine(tmp_path, spec)
    store.process(counter_batch(FILES, files(T0, 1440, 100, {k: 100 for k in range(600, 630)})))
    status = slo.status("availability", T0 + DAY)
    assert status["sli"] == pytest.approx(141_000 / 144_000)
    assert status["budget"].consumed == pytest.approx(3000)


def test_burn_rate_windows_scale_with_the_slo_period():
    spec = slo_from_dict(AVAILABILITY)  # 1 day: 1/30 of the 30-day base windows
    assert [label for label, _ in windows(spec)] == ["10s", "1m", "2m", "4m", "12m", "48m", "144m"]
    base = slo_from_dict({**AVAILABILITY, "window": "30d"})
    assert [label for label, _ in windows(base)] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]


def test_calendar_month_counts_from_the_first_of_the_month(tmp_path):
    # samples from 2026-10-31 22:00; now 2026-11-10 00:00: 9 days of 10 a minute since Nov 1
    # (129,600), 60 bad on Nov 5; November has 30 days
    start = int(datetime(2026, 10, 31, 22, tzinfo=UTC).timestamp()) * S
    now = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp()) * S
    minutes = (now - start) // MIN
    nov5 = (int(datetime(2026, 11, 5, 12, tzinfo=UTC).timestamp()) * S - start) // MIN
    monthly = {k: v for k, v in AVAILABILITY.items() if k != "window"}
    slo, store = engine(tmp_path, {**monthly, "objective": 0.999, "calendar": "month"})
    store.process(counter_batch(FILES, files(start, minutes, 10, {nov5 + k: 1 for k in range(60)})))
    status = slo.status("availability", now)
    assert status["window"] == "month"
    assert status["total"] == pytest.approx(129_600)
    assert status["good"] == pytest.approx(129_540)
    assert status["budget"].total == pytest.approx(129.6)
    assert status["budget"].consumed_ratio == pytest.approx(60 / 129.6)


def test_timeslices_of_a_ratio_sli_count_bad_minutes(tmp_path):
    # an hour of 1-minute slices, 6 of them half bad (target 0.9): 6 bad of 60; 95 %: 3 allowed
    spec = {
        **AVAILABILITY,
        "objective": 0.95,
        "window": "1h",
        "budgeting": "timeslices",
        "timeslice": "1m",
        "timeslice_target": 0.9,
    }
    slo, store = engine(tmp_path, spec)
    store.process(counter_batch(FILES, files(T0, 120, 100, {k: 50 for k in range(80, 86)})))
    status = slo.status("availability", T0 + 120 * MIN)
    assert status["total"] == 60 and status["good"] == 54
    assert status["budget"].consumed_ratio == pytest.approx(2.0)
    _, good, total = slo.counts("availability", T0 + 60 * MIN, T0 + 120 * MIN, 30 * MIN)
    assert good.tolist() == [24, 30] and total.tolist() == [30, 30]


def test_threshold_timeslices_judge_throughput_per_minute(tmp_path):
    # 120 files a minute (2/s) but 60 (1/s) for 5 minutes: 5 of 60 slices below 1.6667/s
    spec = {
        "name": "throughput",
        "objective": 0.9,
        "window": "1h",
        "budgeting": "timeslices",
        "timeslice": "1m",
        "sli": {"threshold": {"metric": FILES, "agg": "rate", "op": ">=", "value": 1.6667}},
    }
    slo, store = engine(tmp_path, spec)
    t = T0 + np.arange(121, dtype=np.int64) * MIN
    per_minute = np.where((np.arange(121) >= 90) & (np.arange(121) < 95), 60.0, 120.0)
    per_minute[0] = 0
    store.process(counter_batch(FILES, {"": (t, np.cumsum(per_minute))}))
    status = slo.status("throughput", T0 + 120 * MIN)
    assert (status["good"], status["total"]) == (55, 60)
    assert status["budget"].consumed_ratio == pytest.approx(5 / 6)


def test_histogram_le_counts_observations_up_to_the_bound(tmp_path):
    # explicit buckets (<=0.05, <=0.1, <=0.5, >0.5) growing by (3, 4, 2, 1) a minute for an hour:
    # 7 of 10 under 100 ms
    spec = {
        "name": "latency",
        "objective": 0.95,
        "window": "1h",
        "sli": {"histogram": {"metric": "audio.pipeline.duration", "le": 0.1}},
    }
    slo, store = engine(tmp_path, spec)
    row = series_row(
        "audio.pipeline.duration", scope="t", attributes={}, service="enhancer", kind=MetricType.HISTOGRAM
    )
    points = [
        {
            "series_id": row["series_id"],
            "time_unix_nano": T0 + k * MIN,
            "start_time_unix_nano": 0,
            "value": 0.1 * k,
            "count": 10 * k,
            "bounds": [0.05, 0.1, 0.5],
            "bucket_counts": [3 * k, 4 * k, 2 * k, k],
            "flags": 0,
        }
        for k in range(61)
    ]
    store.process(
        MetricBatch(
            pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
            pa.Table.from_pylist([row], schema=SERIES_SCHEMA),
            EXEMPLARS_SCHEMA.empty_table(),
        )
    )
    status = slo.status("latency", T0 + HOUR)
    assert (status["good"], status["total"]) == pytest.approx((420, 600))
    assert status["sli"] == pytest.approx(0.7)


def span_batch(spans: list[dict]) -> SpanBatch:
    base = {name: None for name in SPANS_SCHEMA.names}
    rows = [
        {
            **base,
            "trace_id": "0" * 31 + "1",
            "span_id": "0" * 15 + "1",
            "trace_state": "",
            "name": "validate",
            "kind": 1,
            "start_time_unix_nano": T0,
            "end_time_unix_nano": T0 + S,
            "duration_ns": S,
            "status_code": 0,
            "service": "enhancer",
            "flags": 0,
            **s,
            "attributes": json.dumps(s["attributes"]),
        }
        for s in spans
    ]
    return SpanBatch(pa.Table.from_pylist(rows, schema=SPANS_SCHEMA))


def test_span_sli_weights_spans_by_adjusted_count(tmp_path):
    # good: PESQ 4 / STOI 0.9 sampled at 1/4 (weight 4), bad: PESQ 3 (weight 1), unscored: ignored
    quality = {
        "name": "quality",
        "objective": 0.99,
        "window": "7d",
        "sli": {
            "spans": {
                "service": "enhancer",
                "good": {"attributes": {"audio.quality.pesq": "> 3.5", "audio.quality.stoi": "> 0.8"}},
            }
        },
    }
    store = MemoryStore()
    slo = SLOs({"defaults": False, "slos": [quality]}, store, tmp_path)
    chain = ProcessorChain([slo, store], SelfMetrics())
    chain.tick(T0)  # the span counters start at 0
    chain.process(
        span_batch(
            [
                {
                    "attributes": {
                        "audio.quality.pesq": 4.0,
                        "audio.quality.stoi": 0.9,
                        "sampling.probability": 0.25,
                    }
                },
                {"attributes": {"audio.quality.pesq": 3.0, "audio.quality.stoi": 0.9}},
                {"attributes": {}},
                {"attributes": {"audio.quality.pesq": 4.0, "audio.quality.stoi": 0.9}, "service": "other"},
            ]
        )
    )
    chain.tick(T0 + MIN)
    assert slo.status("quality", T0 + MIN)["sli"] == pytest.approx(4 / 5)
    _, good, total = slo.counts("quality", T0, T0 + 2 * MIN, MIN)
    # events count at the time they are reported: the evaluation at T0 + 1m, in the second step
    assert good.tolist() == [0, 4] and total.tolist() == [0, 5]


def test_emitted_series_carry_slo_window_and_service_labels(tmp_path):
    store = MemoryStore()
    slo = SLOs({"defaults": False, "slos": [{**AVAILABILITY, "service": "enhancer"}]}, store, tmp_path)
    chain = ProcessorChain([slo, store], SelfMetrics())
    store.process(counter_batch(FILES, files(T0, 1440, 100, {})))
    chain.tick(T0 + DAY)
    from otel_audio.store.query import Matcher, QueryEngine, RangeQuery

    query = QueryEngine(store)
    got = query.query_range(
        RangeQuery(
            "slo.burn_rate",
            T0 + DAY,
            T0 + DAY + MIN,
            MIN,
            "last",
            ("window",),
            (Matcher("slo", "=", "availability"), Matcher("service", "=", "enhancer")),
        )
    )
    # a 10 s window holds fewer than two of the 1-minute samples: no ratio there, as in PromQL
    expected = [label for label, _ in windows(slo.get("availability")) if label != "10s"]
    assert sorted(r.labels["window"] for r in got) == sorted(expected)
    assert all(r.values[0] == 0 for r in got)
    (sli,) = query.query_range(RangeQuery("slo.sli", T0 + DAY, T0 + DAY + MIN, MIN, "last", ("window",)))
    assert sli.labels == {"window": "1d"} and sli.values[0] == 1.0


# -- burn-rate alerts -----------------------------------------------------------------------------


def test_burn_rate_rules_are_sloths_for_a_30_day_slo():
    spec = slo_from_dict({**AVAILABILITY, "objective": 0.999, "window": "30d"})
    rules = alert_rules(spec)
    assert [(r["severity"], r["labels"]["long_window"], r["labels"]["short_window"]) for r in rules] == [
        ("critical", "1h", "5m"),
        ("critical", "6h", "30m"),
        ("warning", "1d", "2h"),
        ("warning", "3d", "6h"),
    ]
    assert rules[0]["condition"] == (
        'last(slo.burn_rate{slo="availability",window="1h"}, 5m) > 14.4 and '
        'last(slo.burn_rate.short{slo="availability",short_window="5m"}, 5m) > 14.4'
    )
    assert [r["condition"].rsplit("> ", 1)[1] for r in rules] == ["14.4", "6", "3", "1"]


def test_each_burn_rate_alert_fires_and_resolves_at_the_right_moment(tmp_path):
    # 99.9 % over 30 days, 100 files a minute for 3 days and 7 hours; a 10-minute outage (all bad)
    # starting at O: bad increments at the samples O+1m .. O+10m (1,000 bad files). Windows close on
    # both ends and ticks fall on samples, so each window's ratio is plain bad/total:
    # - 14.4x (1h: 100/6,000 after 1 minute = 16.7x) fires at O+1m; 5m clean again at O+15m
    # - 6x (6h: 300/36,000 = 8.3x) fires at O+3m; 30m clean at O+40m
    # - 3x (1d: 500/144,000 = 3.5x) fires at O+5m; 2h clean at O+130m
    # - 1x (3d: 500/432,000 = 1.16x) fires at O+5m; 6h clean at O+370m
    store = MemoryStore()
    shared: dict = {}
    slo = SLOs(
        {
            "defaults": False,
            "evaluation_interval": "1m",
            "slos": [{**AVAILABILITY, "objective": 0.999, "window": "30d"}],
        },
        store,
        tmp_path,
        shared,
    )
    alerting = Alerting({}, tmp_path, clock=lambda: 0)
    shared["alerting"] = alerting
    alerting.set_source_rules("slo", slo.alert_rules())
    chain = ProcessorChain([slo, store, alerting], SelfMetrics())
    outage = 3 * 24 * 60 + 60  # minutes after T0
    store.process(counter_batch(FILES, files(T0, outage + 400, 100, {outage + k: 100 for k in range(1, 11)})))
    o = T0 + outage * MIN
    fired, resolved = {}, {}
    for minute in range(-2, 372):
        now = o + minute * MIN
        chain.tick(now)
        firing = {a.labels["long_window"] for a in alerting.active_alerts() if a.state.value == "firing"}
        for window in firing:
            fired.setdefault(window, minute)
        for window in set(fired) - firing:
            resolved.setdefault(window, minute)
    alerting.close()
    assert fired == {"1h": 1, "6h": 3, "1d": 5, "3d": 5}
    assert resolved == {"1h": 15, "6h": 40, "1d": 130, "3d": 370}


# -- definitions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objective": 1.5}, r"slos\[0\]\.objective: expected a number in \(0, 1\), got 1\.5"),
        ({"name": "Avail ability"}, r"slos\[0\]\.name: expected a name of a-z"),
        ({"window": "soon"}, r"slos\[0\]\.window: expected a duration"),
        ({"budgeting": "weekly"}, r"slos\[0\]\.budgeting: expected occurrences or timeslices"),
        ({"colour": "red"}, r"slos\[0\]\.colour: expected only"),
        ({"sli": {"ratio": {"good": GOOD}}}, r"slos\[0\]\.sli\.ratio\.total: expected a selector"),
        (
            {"sli": {"ratio": {"good": "m{a=}", "total": FILES}}},
            r"slos\[0\]\.sli\.ratio\.good: .*quoted value",
        ),
        ({"sli": {"histogram": {"metric": FILES}}}, r"slos\[0\]\.sli\.histogram\.le: expected a number"),
        ({"sli": {"threshold": {"metric": FILES, "value": 1}}}, r"slos\[0\]\.budgeting: expected timeslices"),
        ({"budgeting": "timeslices"}, r"slos\[0\]\.timeslice_target: expected a number"),
        (
            {"sli": {"spans": {"good": {"attributes": {"x": "about 3"}}}}},
            r"slos\[0\]\.sli\.spans\.good\.attributes\.x: expected a condition like '> 3\.5'",
        ),
    ],
)
def test_invalid_definitions_are_refused_naming_the_field(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        SLOs({"defaults": False, "slos": [{**AVAILABILITY, **change}]}, MemoryStore(), tmp_path)


def test_the_defaults_are_the_four_slos_of_an_audio_service(tmp_path):
    slo = SLOs({}, MemoryStore(), tmp_path)
    got = {s.name: (s.objective, s.window_label, s.budgeting, s.sli.kind) for s in slo.list()}
    assert got == {
        "availability": (0.999, "30d", "occurrences", "ratio"),
        "latency": (0.95, "7d", "occurrences", "histogram"),
        "quality": (0.99, "7d", "occurrences", "spans"),
        "throughput": (0.995, "1d", "timeslices", "threshold"),
    }


def test_runtime_slos_are_validated_persisted_and_their_rules_reach_alerting(tmp_path):
    shared: dict = {}
    slo = SLOs({}, MemoryStore(), tmp_path, shared)
    alerting = shared["alerting"] = Alerting({}, tmp_path, clock=lambda: 0)
    alerting.set_source_rules("slo", slo.alert_rules())
    slo.add({**AVAILABILITY, "name": "checkout"})
    with pytest.raises(ValueError, match="already exists"):
        slo.add({**AVAILABILITY, "name": "checkout"})
    with pytest.raises(ValueError, match=r"slo\.objective"):
        slo.add({**AVAILABILITY, "name": "x", "objective": 2})
    with pytest.raises(PermissionError):
        slo.remove("availability")
    names = {r.name for r in alerting.rules() if r.source == "slo"}
    assert "SLOBurnRate:checkout:48m" in names and len(names) == 20
    with pytest.raises(PermissionError, match="generated by the slo processor"):
        alerting.delete_rule("SLOBurnRate:checkout:48m")
    again = SLOs({}, MemoryStore(), tmp_path)  # a restart
    assert again.get("checkout").to_dict() == slo.get("checkout").to_dict()
    assert again.get("checkout").source == "api"
    slo.remove("checkout")
    assert not any(r.name.startswith("SLOBurnRate:checkout") for r in alerting.rules())
    assert "checkout" not in {s.name for s in SLOs({}, MemoryStore(), tmp_path).list()}
    alerting.close()


# -- a real receiver ------------------------------------------------------------------------------


def test_a_receiver_serves_slo_status_and_burn_rate_series(start_receiver):
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    slo = {"slo": {"defaults": True, "slos": [{**AVAILABILITY, "objective": 0.999, "window": "30d"}]}}
    receiver = start_receiver(processors=["selfmon", slo, "store", "alerting"], tick_interval_s=3600)
    now = (receiver_now := int(datetime.now(UTC).timestamp()) // 60 * 60) * S
    # 2 hours of samples every minute ending at now; 100 a minute, 2 bad in each of the last 5
    # minutes; the good counter had counted 5,000 before the first sample
    counters = files(now - 2 * HOUR, 120, 100, {k: 2 for k in range(116, 121)})
    counters[""] = (counters[""][0], counters[""][1] + 5000)
    cumulative = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    metrics = []
    for error_type, (times, values) in counters.items():
        attrs = [kv("error.type", error_type)] if error_type else []
        points = [
            metrics_pb2.NumberDataPoint(
                start_time_unix_nano=now - 3 * HOUR,
                time_unix_nano=int(t),
                as_double=float(v),
                attributes=attrs,
            )
            for t, v in zip(times, values, strict=True)
        ]
        metrics.append(
            metrics_pb2.Metric(
                name=FILES,
                sum=metrics_pb2.Sum(
                    aggregation_temporality=cumulative, is_monotonic=True, data_points=points
                ),
            )
        )
    grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", metrics))
    receiver.chain.tick(now)
    body = api(receiver, "/api/v1/slos/availability", time=str(receiver_now)).json()
    status = body["status"]
    # by hand: the 30d window holds every sample; the first is 2 h after the window start, far
    # beyond 1.1 sample intervals, and the good counter's zero point (5,000 / 11,990 * 7,200 s back)
    # is further still, so Prometheus extrapolates it by half an interval (30 s): 11,990 over
    # 7,200 s -> 11,990 * 7,230 / 7,200. The bad counter is 0 at its first sample: its zero point
    # is that sample, so its 10 are not extrapolated.
    bad = 10.0
    total = 11_990 * 7230 / 7200 + bad
    assert status["total"] == pytest.approx(total)
    assert status["sli"] == pytest.approx(1 - bad / total)
    assert status["error_budget"]["consumed"] == pytest.approx(bad)
    assert status["error_budget"]["remaining_ratio"] == pytest.approx(1 - bad / (0.001 * total))
    assert status["error_ratios"]["5m"] == pytest.approx(10 / 500)  # samples on both edges
    assert status["burn_rates"]["1h"] == pytest.approx(10 / 6000 / 0.001)
    assert status["time_to_exhaustion_seconds"] == pytest.approx(
        (1 - bad / (0.001 * total)) * 30 * 86400 / (10 / 6000 / 0.001)
    )
    listed = api(receiver, "/api/v1/slos").json()["slos"]
    assert [s["name"] for s in listed] == ["availability", "latency", "quality", "throughput"]
    series = api(
        receiver,
        "/api/v1/query_range",
        metric="slo.burn_rate",
        agg="last",
        group_by="window",
        match='slo="availability"',
        start=str(receiver_now),
        end=str(receiver_now + 60),
        step="60s",
    ).json()["series"]
    got = {s["labels"]["window"]: s["points"][0][1] for s in series}
    assert got["5m"] == pytest.approx(20) and got["1h"] == pytest.approx(10 / 6000 / 0.001)
    rules = api(receiver, "/api/v1/rules").json()
    assert any(r["name"] == "SLOBurnRate:availability:1h" and r["source"] == "slo" for r in rules["rules"])


def test_slos_are_defined_and_deleted_through_the_api(start_receiver):
    import requests

    receiver = start_receiver(
        processors=["selfmon", {"slo": {"defaults": False}}, "store"], tick_interval_s=3600
    )
    url = f"http://127.0.0.1:{receiver.api_port}/api/v1/slos"
    bad = requests.post(url, json={**AVAILABILITY, "objective": 1.5}, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"].startswith(
        "slo.objective: expected a number in (0, 1)"
    )
    created = requests.post(url, json=AVAILABILITY, timeout=10)
    assert created.status_code == 201 and created.json()["name"] == "availability"
    assert created.json()["status"]["sli"] is None  # no events yet
    assert requests.post(url, json=AVAILABILITY, timeout=10).status_code == 409
    assert requests.delete(f"{url}/availability", timeout=10).status_code == 204
    assert requests.get(f"{url}/availability", timeout=10).status_code == 404


def test_the_slo_stage_must_come_before_alerting(tmp_path):
    from otel_audio.receiver.config import ConfigError, load_config
    from otel_audio.receiver.service import Receiver

    config = load_config(None, storage__data_dir=str(tmp_path / "d"), processors=["alerting", "slo", "store"])
    with pytest.raises(ConfigError, match=r"processors\.slo: must come before alerting"):
        Receiver(config).start()


def test_an_invalid_slo_in_the_config_stops_the_receiver_naming_it(tmp_path):
    from otel_audio.receiver.config import ConfigError, load_config
    from otel_audio.receiver.service import Receiver

    slo = {"slo": {"slos": [{**AVAILABILITY, "objective": 1.5}]}}
    config = load_config(None, storage__data_dir=str(tmp_path / "d"), processors=[slo, "store"])
    with pytest.raises(ConfigError, match=r"processors\.slo: slos\[0\]\.objective: expected a number"):
        Receiver(config).start()


def test_exponential_histogram_le_is_interpolated_inside_its_bucket(tmp_path):
    # scale 0, buckets (1/16, 1/8] and (1/8, 1/4] growing by 10 and 5 a minute, zero bucket by 2:
    # le 0.1 lies 0.6 into (1/16, 1/8], so 2 + 6 of 17 a minute are good
    spec = {"name": "latency", "objective": 0.95, "window": "1h",
            "sli": {"histogram": {"metric": "audio.pipeline.duration", "le": 0.1}}}  # fmt: skip
    slo, store = engine(tmp_path, spec)
    row = series_row("audio.pipeline.duration", scope="t", attributes={}, service="enhancer",
                     kind=MetricType.EXPONENTIAL_HISTOGRAM)  # fmt: skip
    points = [
        {"series_id": row["series_id"], "time_unix_nano": T0 + k * MIN, "start_time_unix_nano": 0,
         "value": 0.1 * k, "count": 17 * k, "exp_scale": 0, "exp_zero_count": 2 * k,
         "exp_zero_threshold": 0.0, "exp_positive_offset": -4, "exp_positive_counts": [10 * k, 5 * k],
         "flags": 0}
        for k in range(61)
    ]  # fmt: skip
    store.process(MetricBatch(pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
                              pa.Table.from_pylist([row], schema=SERIES_SCHEMA),
                              EXEMPLARS_SCHEMA.empty_table()))  # fmt: skip
    status = slo.status("latency", T0 + HOUR)
    assert (status["good"], status["total"]) == pytest.approx((8 * 60, 17 * 60))


def test_ticks_evaluate_once_per_evaluation_interval(tmp_path):
    slo, store = engine(tmp_path, AVAILABILITY, evaluation_interval="30s")
    store.process(counter_batch(FILES, files(T0, 60, 100, {})))
    emitted = []
    slo.bind_emit(emitted.append)
    for offset_s in (0, 10, 29, 30, 45, 61):
        slo.tick(T0 + HOUR + offset_s * S)
    times = sorted({t for b in emitted for t in b.points.column("time_unix_nano").to_pylist()})
    assert times == [T0 + HOUR, T0 + HOUR + 30 * S, T0 + HOUR + 61 * S]


class _ArchivedStore(MemoryStore):
    """A store whose raw points begin late; the older history is in 1-minute rollup rows only,
    as after raw retention dropped it."""

    def __init__(self, rolled: pa.Table) -> None:
        super().__init__()
        self.rolled = rolled

    def view(self):
        inner, rolled = super().view(), self.rolled

        class View:
            head = inner.head
            has_blocks = True

            def points(self, *args, **kwargs):
                return inner.points(*args, **kwargs)

            def rollups(self, tier, series_ids, start_ns, end_ns, histograms=True):
                begins = rolled.column("window_start_ns").to_numpy()
                ids = rolled.column("series_id").to_numpy()
                keep = (begins >= start_ns) & (begins < end_ns) & np.isin(ids, series_ids)
                return rolled.filter(pa.array(keep))

        return View()


def test_a_window_longer_than_raw_retention_adds_the_older_rollup_events(tmp_path):
    # 10 days of 100 files a minute; raw points kept only for the last 2 days (from minute f),
    # the first 8 days as 1-minute rollups. The seam minute (the increment of the first raw point)
    # is in neither; every other minute counts once.
    from otel_audio.store.rollup import rollup

    n, f = 10 * 1440, 8 * 1440
    history = counter_batch(FILES, files(T0, n, 100, {}))
    old = history.points.filter(pa.array(history.points.column("time_unix_nano").to_numpy() < T0 + f * MIN))
    rolled, _ = rollup(old, history.series, MIN)
    store = _ArchivedStore(rolled)
    recent = history.points.filter(
        pa.array(history.points.column("time_unix_nano").to_numpy() >= T0 + f * MIN)
    )
    store.process(MetricBatch(recent, history.series, EXEMPLARS_SCHEMA.empty_table()))
    slo = SLOs({"defaults": False, "slos": [{**AVAILABILITY, "window": "30d"}]}, store, tmp_path)
    _, good, total = slo.counts("availability", T0, T0 + n * MIN, DAY)
    assert total.tolist() == [143_900] + [144_000] * 7 + [143_900, 144_000]
    assert good.tolist() == total.tolist()
    # the whole window: 100 * (f - 1) from rollups, and the raw 2 days as Prometheus extrapolates
    # them (the window starts long before the first raw sample: half an interval, 30 s, added)
    status = slo.status("availability", T0 + n * MIN)
    assert status["total"] == pytest.approx(100 * (f - 1) + 288_000 * (2880 * 60 + 30) / (2880 * 60))


def test_history_flushed_to_blocks_counts_once(tmp_path):
    # two days of 100 a minute with 100 minutes half bad, flushed to raw blocks and 1m rollups:
    # raw points cover the window, so the rollups add nothing (288,000 total, 5,000 bad)
    from otel_audio.store.tiered import TieredStore

    store = TieredStore(tmp_path / "store", background=False)
    store.process(counter_batch(FILES, files(T0, 2 * 1440, 100, {k: 50 for k in range(1000, 1100)})))
    store.flush()
    store.wait(30)
    assert store.view().has_blocks
    slo = SLOs({"defaults": False, "slos": [{**AVAILABILITY, "window": "30d"}]}, store, tmp_path)
    status = slo.status("availability", T0 + 2 * DAY)
    assert (status["total"], status["good"]) == pytest.approx((288_000, 283_000))
    _, good, total = slo.counts("availability", T0, T0 + 2 * DAY, DAY)
    assert total.tolist() == [143_900, 144_000] and good.tolist() == [138_900, 144_000]
    store.close()


def test_an_slo_defined_through_the_api_is_back_with_its_rules_after_a_restart(start_receiver, tmp_path):
    import requests

    processors = ["selfmon", {"slo": {"defaults": False}}, "store", "alerting"]
    first = start_receiver(data_dir=tmp_path / "d", processors=processors, tick_interval_s=3600)
    url = f"http://127.0.0.1:{first.api_port}/api/v1/slos"
    assert requests.post(url, json={**AVAILABILITY, "name": "checkout"}, timeout=10).status_code == 201
    first.stop(grace_s=1)
    again = start_receiver(data_dir=tmp_path / "d", processors=processors, tick_interval_s=3600)
    body = api(again, "/api/v1/slos/checkout").json()
    assert body["source"] == "api" and body["definition"]["objective"] == 0.99
    rules = {r["name"]: r for r in api(again, "/api/v1/rules").json()["rules"]}
    assert rules["SLOBurnRate:checkout:2m"]["source"] == "slo"  # 1h scaled to a 1-day window
    refused = requests.delete(
        f"http://127.0.0.1:{again.api_port}/api/v1/rules/SLOBurnRate:checkout:2m", timeout=10
    )
    assert refused.status_code == 403


def test_a_timeslice_slo_burns_over_windows_of_at_least_two_slices():
    from otel_audio.processors.slo.spec import DEFAULT_SLOS as SHIPPED

    throughput = slo_from_dict(next(s for s in SHIPPED if s["name"] == "throughput"))
    spans = dict(windows(throughput))
    # a 1d SLO scales 5m to 10s and 30m to 1m; with 1m slices neither need hold a whole slice
    assert min(spans.values()) == 2 * 60 * 10**9
    assert sorted(spans.values()) == list(spans.values())  # still ordered short to long


def test_threshold_timeslices_over_a_month_are_read_in_parts(tmp_path):
    # 8 days of 1-minute slices (11,520) are more buckets than one range query may ask for
    spec = {
        "name": "throughput",
        "objective": 0.9,
        "window": "30d",
        "budgeting": "timeslices",
        "timeslice": "1m",
        "sli": {"threshold": {"metric": FILES, "agg": "rate", "op": ">=", "value": 1.6667}},
    }
    slo, store = engine(tmp_path, spec)
    minutes = 8 * 1440
    t = T0 + np.arange(minutes + 1, dtype=np.int64) * MIN
    per_minute = np.full(minutes + 1, 120.0)
    per_minute[0] = 0
    per_minute[-10:] = 60.0  # the last ten minutes run slow
    store.process(counter_batch(FILES, {"": (t, np.cumsum(per_minute))}))
    _, good, total = slo.counts("throughput", T0 + MIN, T0 + (minutes + 1) * MIN, 1440 * MIN)
    assert total.sum() == minutes and good.sum() == minutes - 10
