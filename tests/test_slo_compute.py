"""SLO maths: Prometheus's extrapolated increase, windowed ratios, error budgets, histogram ``le`` counts.

Every expected number is worked out by hand in the test's comment, from the definitions in
``processors/slo/compute.py`` (Prometheus 2.42 ``extrapolatedRate``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from otel_audio.processors.slo.compute import (
    burn_rate,
    calculate_error_budget,
    explicit_good_count,
    exponential_good_count,
    extrapolated_increase,
    step_increases,
    sum_increase,
    threshold_verdicts,
    timeslice_verdicts,
    window_ratio,
)

S = 10**9
DAY_S = 86400


def secs(*values: float) -> np.ndarray:
    return (np.array(values, dtype=float) * S).astype(np.int64)


def test_samples_on_the_window_edges_need_no_extrapolation():
    # 0, 10, ..., 190 at 0 s, 15 s, ..., 285 s; the window [0, 285] holds all 20 of them
    t = secs(*range(0, 300, 15))
    v = np.arange(20) * 10.0
    assert extrapolated_increase(t, v, 0, 285 * S) == pytest.approx(190)


def test_a_gap_shorter_than_1_1_intervals_is_extrapolated_to_the_edge():
    # 100 + 10k at 15 s .. 300 s, window [0, 300]: 190 over 285 s, 15 s to the start (< 16.5),
    # the zero point is 150 s back (beyond): 190 * 300 / 285 = 200
    t = secs(*range(15, 301, 15))
    v = 100 + np.arange(20) * 10.0
    assert extrapolated_increase(t, v, 0, 300 * S) == pytest.approx(200)


def test_a_long_gap_is_extrapolated_by_half_an_interval():
    # 50 + 5k at 100 s .. 300 s every 20 s: 50 over 200 s; 100 s to the start (> 22 s): + 10 s
    t = secs(*range(100, 301, 20))
    v = 50 + np.arange(11) * 5.0
    assert extrapolated_increase(t, v, 0, 300 * S) == pytest.approx(50 * 210 / 200)


def test_extrapolation_stops_at_the_counters_zero_point():
    # 1, 3, 5 at 100, 200, 300 s, window [0, 300]: 4 over 200 s; zero is 50 s before the first
    # sample (< 100 s to the start, and < 110 s threshold): 4 * 250 / 200 = 5
    t = secs(100, 200, 300)
    assert extrapolated_increase(t, np.array([1.0, 3.0, 5.0]), 0, 300 * S) == pytest.approx(5)


def test_a_counter_reset_adds_the_value_before_the_drop():
    # 10, 20, 5, 15 at 10..40 s, window [5, 45]: 15 - 10 + 20 = 25 over 30 s; 5 s to either edge
    # (zero point 12 s back): 25 * 40 / 30
    t = secs(10, 20, 30, 40)
    got = extrapolated_increase(t, np.array([10.0, 20.0, 5.0, 15.0]), 5 * S, 45 * S)
    assert got == pytest.approx(25 * 40 / 30)


def test_fewer_than_two_samples_give_no_increase_and_drop_out_of_the_sum():
    one = (secs(10), np.array([5.0]))
    two = (secs(10, 20), np.array([5.0, 7.0]))
    assert math.isnan(extrapolated_increase(*one, 0, 20 * S))
    assert sum_increase([one, two], 10 * S, 20 * S) == pytest.approx(2)
    assert math.isnan(sum_increase([one], 0, 20 * S))


def test_both_window_ends_are_closed_as_in_prometheus_2():
    t, v = secs(0, 10, 20), np.array([0.0, 1.0, 2.0])
    assert extrapolated_increase(t, v, 0, 20 * S) == pytest.approx(2)
    assert extrapolated_increase(t, v, 0, 20 * S, left_open=True) == pytest.approx(1 * 20 / 10)


def test_unaligned_series_give_prometheus_ratio_not_the_plain_ratio_of_increases():
    # bad 0..3 at 60..240 s: 3 over 180 s, zero at the first sample, 60 s to the end (< 66): 3*240/180 = 4
    # total 0..40 at 30..270 s: 40 over 240 s, 30 s to the end: 40 * 270 / 240 = 45
    bad = (secs(60, 120, 180, 240), np.array([0.0, 1.0, 2.0, 3.0]))
    total = (secs(30, 90, 150, 210, 270), np.array([0.0, 10.0, 20.0, 30.0, 40.0]))
    assert window_ratio([bad], [total], 0, 300 * S) == pytest.approx(4 / 45)
    assert 4 / 45 != pytest.approx(3 / 40)


def test_a_ratio_sums_events_over_series_never_averages_ratios():
    # a: 1 bad of 10; b: 0 bad of 990 (samples on the edges): 1 / 1000, not (0.1 + 0) / 2
    t = secs(0, 60)
    bad = [(t, np.array([0.0, 1.0])), (t, np.array([0.0, 0.0]))]
    total = [(t, np.array([0.0, 10.0])), (t, np.array([0.0, 990.0]))]
    assert window_ratio(bad, total, 0, 60 * S) == pytest.approx(0.001)


def test_no_total_events_give_no_ratio():
    t = secs(0, 60)
    assert math.isnan(window_ratio([], [(t, np.array([5.0, 5.0]))], 0, 60 * S))
    assert math.isnan(window_ratio([], [], 0, 60 * S))


def test_step_increases_count_each_increment_in_its_bucket_with_resets():
    # 0 @0, 5 @30, 8 @70, 2 @90 (reset: +2), 6 @130; 60 s buckets from 0
    t, v = secs(0, 30, 70, 90, 130), np.array([0.0, 5.0, 8.0, 2.0, 6.0])
    assert step_increases([(t, v)], 0, 180 * S, 60 * S).tolist() == [5, 5, 4]


# -- budgets --------------------------------------------------------------------------------------


def test_occurrence_budget_of_a_million_requests_with_400_bad():
    budget = calculate_error_budget(0.999, 1_000_000 - 400, 1_000_000, period_s=30 * DAY_S)
    assert budget.total == pytest.approx(1000)
    assert budget.consumed == pytest.approx(400)
    assert budget.remaining == pytest.approx(600)
    assert (budget.consumed_ratio, budget.remaining_ratio) == pytest.approx((0.4, 0.6))
    assert budget.sli == pytest.approx(0.9996)
    assert budget.burn_rate == pytest.approx(0.4)  # 0.0004 / 0.001
    assert budget.time_to_exhaustion_s == pytest.approx(0.6 * 30 * DAY_S / 0.4)  # 45 days


def test_time_to_exhaustion_at_a_given_burn_rate():
    budget = calculate_error_budget(0.999, 999_600, 1_000_000, period_s=30 * DAY_S, current_burn_rate=2.0)
    assert budget.time_to_exhaustion_s == pytest.approx(9 * DAY_S)
    idle = calculate_error_budget(0.999, 999_600, 1_000_000, period_s=30 * DAY_S, current_burn_rate=0.0)
    assert idle.time_to_exhaustion_s == math.inf


def test_an_overspent_budget_is_negative_and_exhausted():
    budget = calculate_error_budget(0.99, 970, 1000, period_s=DAY_S)
    assert budget.remaining == pytest.approx(-20)  # 10 allowed, 30 bad
    assert budget.remaining_ratio == pytest.approx(-2)
    assert budget.time_to_exhaustion_s == 0


def test_timeslice_budget_counts_slices():
    # a day of 1-minute slices, 99.5 %: 7.2 bad slices allowed; 3 bad
    budget = calculate_error_budget(0.995, 1437, 1440, period_s=DAY_S)
    assert budget.total == pytest.approx(7.2)
    assert budget.consumed_ratio == pytest.approx(3 / 7.2)


def test_burn_rate_is_error_ratio_over_the_allowed_ratio():
    assert burn_rate(0.0144, 0.999) == pytest.approx(14.4)


def test_timeslice_and_threshold_verdicts():
    got = timeslice_verdicts(np.array([99, 97, 0]), np.array([100, 100, 0]), 0.98)
    assert got[:2].tolist() == [1, 0] and math.isnan(got[2])
    got = threshold_verdicts(np.array([2.0, 1.0, np.nan]), ">=", 1.6667)
    assert got[:2].tolist() == [1, 0] and math.isnan(got[2])


# -- histogram le ---------------------------------------------------------------------------------


def test_explicit_histogram_good_count_sums_buckets_up_to_le():
    assert explicit_good_count([0.05, 0.1, 0.5], [3, 4, 5, 6], 0.1) == 7
    with pytest.raises(ValueError, match=r"le 0.2 is not a bucket bound.*\[0.05, 0.1, 0.5\]"):
        explicit_good_count([0.05, 0.1, 0.5], [3, 4, 5, 6], 0.2)


def test_exponential_histogram_good_count_interpolates_the_bucket_holding_le():
    # scale 0: buckets (2^i, 2^(i+1)]; offset -4: (1/16, 1/8], (1/8, 1/4]; zero bucket 2
    # le 0.1 lies in (0.0625, 0.125] at (0.1 - 0.0625) / 0.0625 = 0.6 of it: 2 + 10 * 0.6 = 8
    assert exponential_good_count(0, 2, -4, np.array([10.0, 5.0]), 0.1) == pytest.approx(8)
    assert exponential_good_count(0, 2, -4, np.array([10.0, 5.0]), 0.25) == pytest.approx(17)


def test_calculate_error_budget_takes_an_slo_spec_and_its_window_as_the_period():
    from otel_audio.processors.slo.spec import slo_from_dict

    spec = slo_from_dict(
        {"name": "a", "objective": 0.999, "window": "30d", "sli": {"ratio": {"good": "g", "total": "t"}}}
    )
    assert calculate_error_budget(spec, 999_600, 1_000_000) == calculate_error_budget(
        0.999, 999_600, 1_000_000, period_s=30 * DAY_S
    )
