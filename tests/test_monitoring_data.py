"""The test-data generators say what they make: reproducible by seed, seasonal where they claim,
incidents inside their stated intervals, scenario outcomes consistent with their streams."""

from __future__ import annotations

import numpy as np
import pytest

from tests import monitoring_data as md

END = 1_795_000_000 // 86400 * 86400 * md.SECOND  # a UTC midnight


def test_every_generator_is_reproducible_by_seed_and_varies_with_it():
    times = np.arange(10, dtype=np.int64) * md.SECOND
    a, b, c = (md.simulated_metrics(times, seed=s) for s in (1, 1, 2))
    assert a.monitor_dict("enhancer", 3) == b.monitor_dict("enhancer", 3) != c.monitor_dict("enhancer", 3)
    h1, h2, h3 = (md.historical_data(weeks=2, end_ns=END, seed=s) for s in (4, 4, 5))
    assert np.array_equal(h1.latency["enhancer"], h2.latency["enhancer"], equal_nan=True)
    assert not np.array_equal(h1.latency["enhancer"], h3.latency["enhancer"], equal_nan=True)
    s1, s2 = md.alert_scenarios(seed=0), md.alert_scenarios(seed=0)
    assert all(np.array_equal(x.values, y.values) for x, y in zip(s1, s2, strict=True))
    r1, r2 = (md.service_report("enhancer", md.SystemState.DEGRADED, np.random.default_rng(9)) for _ in "ab")
    assert r1 == r2


def test_simulated_metrics_are_plausible_and_the_stages_add_up_to_the_pipeline():
    data = md.simulated_metrics(np.arange(200, dtype=np.int64) * md.SECOND, seed=0)
    for service in md.SERVICES:
        values = data.values[service]
        assert set(values) == set(md.MONITOR_METRICS)
        assert values["latency"] == pytest.approx(data.stage_ms[service].sum(axis=0), abs=0.01)
        assert 1.0 <= values["pesq"].min() and values["pesq"].max() <= 4.5
        assert 0.0 <= values["stoi"].min() and values["stoi"].max() <= 1.0
        assert np.median(values["latency"]) == pytest.approx(md.PROFILES[service].latency_ms, rel=0.1)
    request = data.request("enhancer", indices=[0, 1])
    (resource,) = request.resource_metrics
    metrics = {m.name: m for m in resource.scope_metrics[0].metrics}
    assert set(metrics) == set(md.MONITOR_METRICS) | {md.STAGE_LATENCY}
    sent = [p.as_double for p in metrics["latency"].gauge.data_points]
    assert sent == data.values["enhancer"]["latency"][:2].tolist()
    assert len(metrics[md.STAGE_LATENCY].gauge.data_points) == 2 * len(md.STAGES)


def test_each_scenario_stream_agrees_with_its_stated_outcome():
    scenarios = {s.name: s for s in md.alert_scenarios()}
    assert set(scenarios) == {"latency_spike", "quality_drop", "error_burst", "memory_leak",
                              "flapping_signal", "absent_data"}  # fmt: skip
    assert len({s.service for s in scenarios.values()}) == len(scenarios)
    spike = scenarios["latency_spike"].values
    assert np.flatnonzero(spike > 200).tolist() == list(range(30, 40))
    leak = scenarios["memory_leak"].values
    assert (np.diff(leak[20:]) > 0).all()  # monotonic: crosses 75 once
    assert scenarios["memory_leak"].expected == (("firing", int(np.argmax(leak > 75)) + 6),)
    assert np.flatnonzero(~scenarios["absent_data"].present).tolist() == list(range(40, 60))
    flap = scenarios["flapping_signal"]
    assert np.flatnonzero(flap.values > 100).tolist() == list(range(30, 60, 2))
    for s in scenarios.values():
        steps = [i for _, i in s.expected]
        assert steps == sorted(steps) and steps[-1] < len(s.values)
    requests = list(md.scenario_requests(list(scenarios.values()), t0_ns=0))
    assert len(requests) == 120
    services = {r.resource.attributes[0].value.string_value for r in requests[45][1].resource_metrics}
    assert "scn-heartbeat" not in services and md.SCENARIO_CANARY in services


def test_too_short_a_scenario_stream_is_refused():
    with pytest.raises(ValueError, match="at least 120"):
        md.alert_scenarios(steps=60)


def test_history_has_daily_and_weekly_seasonality_and_a_trend():
    h = md.historical_data(weeks=3, end_ns=END, seed=1)
    requests = h.requests["enhancer"]
    hours = (h.times_ns % md.DAY) // md.HOUR
    assert requests[hours == 14].mean() > 2 * requests[hours == 2].mean()
    weekday = ((h.times_ns // md.DAY) + 3) % 7
    assert requests[weekday >= 5].mean() < 0.7 * requests[weekday < 5].mean()
    weeks = requests.reshape(3, -1).mean(axis=1)
    assert weeks[0] < weeks[1] < weeks[2]
    latency = h.baseline_latency["enhancer"]  # queueing: slower when busy
    assert latency[hours == 14].mean() > 1.2 * latency[hours == 2].mean()


def test_history_incidents_are_exactly_where_they_say():
    h = md.historical_data(weeks=3, end_ns=END, seed=2)
    assert h.times_ns[-1] == END - h.step_ns and len(h.times_ns) == 3 * 7 * 288
    outage, regression, drop = h.incidents
    assert [i.kind for i in h.incidents] == ["outage", "latency_regression", "quality_drop"]
    inside = (h.times_ns >= outage.start_ns) & (h.times_ns < outage.end_ns)
    assert np.array_equal(~h.up(outage.service), inside)
    assert (h.requests[outage.service][inside] == 0).all()
    inside = (h.times_ns >= regression.start_ns) & (h.times_ns < regression.end_ns)
    ratio = h.latency[regression.service] / h.baseline_latency[regression.service]
    assert ratio[inside] == pytest.approx(2.5, rel=1e-3) and ratio[~inside] == pytest.approx(1.0)
    inside = (h.times_ns >= drop.start_ns) & (h.times_ns < drop.end_ns)
    pesq = h.pesq[drop.service]
    assert pesq[inside].max() < np.nanmin(pesq[~inside]) - 0.5
    total = h.requests_total("enhancer")
    assert total[0] == 0 and (np.diff(total) >= 0).all()


def test_system_states_change_what_a_service_reports():
    rng = np.random.default_rng(0)
    healthy = md.service_report("enhancer", md.SystemState.HEALTHY, rng)
    degraded = md.service_report("enhancer", md.SystemState.DEGRADED, rng)
    down = md.service_report("enhancer", md.SystemState.DOWN, rng)
    assert healthy.metrics is not None and degraded.metrics is not None
    assert healthy.metrics["error_rate"] <= 0.05 < degraded.metrics["error_rate"]
    assert degraded.metrics["latency"] > 2 * healthy.metrics["latency"]
    assert (down.metrics, down.probes, down.probes_ok) == (None, md.PROBES_PER_STEP, 0)
    oks = [md.service_report("enhancer", md.SystemState.DEGRADED, rng).probes_ok for _ in range(400)]
    assert np.mean(oks) / md.PROBES_PER_STEP == pytest.approx(1 - md.DEGRADED_ERROR_RATE, abs=0.02)
