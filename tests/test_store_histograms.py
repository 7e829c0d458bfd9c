"""Histogram maths: explicit-bucket quantiles and merges, exponential merges and quantile error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store.histograms import (
    NEGATIVE,
    POSITIVE,
    ZERO,
    ExponentialHistogram,
    exponential_histogram,
    exponential_index,
    grouped_quantile_exponential,
    merge_explicit,
    merge_exponential,
    quantile_explicit,
    quantile_exponential,
    relative_error,
)

positive_values = st.lists(
    st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False), min_size=1, max_size=200
)
scales = st.integers(min_value=-3, max_value=8)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0])


def assert_same_histogram(a: ExponentialHistogram, b: ExponentialHistogram) -> None:
    assert a.scale == b.scale
    assert a.zero_count == b.zero_count
    for sign in ("positive", "negative"):
        ca, cb = getattr(a, f"{sign}_counts"), getattr(b, f"{sign}_counts")
        nz_a, nz_b = np.flatnonzero(ca), np.flatnonzero(cb)
        assert list(nz_a + getattr(a, f"{sign}_offset")) == list(nz_b + getattr(b, f"{sign}_offset"))
        assert list(ca[nz_a]) == list(cb[nz_b])


# -- explicit ----------------------------------------------------------------------------------------


def test_explicit_quantile_interpolates_inside_the_bucket():
    assert quantile_explicit([1.0, 2.0, 4.0], [0, 10, 0, 0], 0.5) == pytest.approx(1.5)


def test_explicit_first_bucket_starts_at_zero():
    assert quantile_explicit([10.0, 20.0], [4, 0, 0], 0.25) == pytest.approx(2.5)


def test_explicit_overflow_bucket_returns_its_lower_bound():
    assert quantile_explicit([1.0, 2.0], [0, 1, 9], 0.99) == 2.0


def test_explicit_first_bucket_with_non_positive_bound_returns_that_bound():
    assert quantile_explicit([-1.0, 0.0], [5, 0, 0], 0.5) == -1.0


def test_explicit_empty_histogram_is_nan():
    assert math.isnan(quantile_explicit([1.0], [0, 0], 0.5))


def test_explicit_quantile_of_rows_is_per_row():
    out = quantile_explicit([1.0, 2.0], np.array([[0, 2, 0], [2, 0, 0]]), 0.5)
    assert out == pytest.approx([1.5, 0.5])


def test_explicit_merge_adds_counts_of_equal_bounds():
    bounds, counts = merge_explicit([[1.0, 2.0], [1.0, 2.0]], [[1, 2, 3], [4, 5, 6]])
    assert list(bounds) == [1.0, 2.0]
    assert list(counts) == [5, 7, 9]


def test_explicit_merge_rejects_different_bounds_naming_them():
    with pytest.raises(ValueError, match=r"bounds differ: \[1.0, 2.0\] vs \[1.0, 5.0\]"):
        merge_explicit([[1.0, 2.0], [1.0, 5.0]], [[1, 2, 3], [4, 5, 6]])


def test_explicit_quantile_is_within_the_bucket_of_the_true_quantile():
    rng = np.random.default_rng(7)
    samples = rng.lognormal(3, 1, 5000)
    bounds = np.array([5, 10, 25, 50, 75, 100, 250, 500, 1000], dtype=float)
    counts = np.bincount(np.searchsorted(bounds, samples, side="left"), minlength=bounds.size + 1)
    for q in (0.5, 0.95):
        true = np.quantile(samples, q)
        b = np.searchsorted(bounds, true)
        width = bounds[b] - (bounds[b - 1] if b else 0)
        assert abs(quantile_explicit(bounds, counts, q) - true) <= width


# -- exponential -------------------------------------------------------------------------------------


def test_exponential_index_puts_powers_of_two_on_their_upper_bound():
    assert list(exponential_index(np.array([1.0, 2.0, 3.0, 4.0]), 0)) == [-1, 0, 1, 1]


def test_exponential_index_of_one_scale_lower_is_a_shift():
    values = np.array([0.3, 1.0, 1.5, 7.0, 1e6])
    assert list(exponential_index(values, 5) >> 3) == list(exponential_index(values, 2))


def test_relative_error_at_scale_zero_is_one_third():
    assert relative_error(0) == pytest.approx(1 / 3)


def test_lowest_scale_does_not_overflow():
    h = exponential_histogram(np.array([3.0, 1e300]), scale=-10)
    assert relative_error(-10) == pytest.approx(1.0)
    assert np.isfinite(quantile_exponential(h, 0.5))


def test_histogram_from_values_lowers_the_scale_to_fit_max_buckets():
    h = exponential_histogram(np.array([1.0, 1e6]), scale=8, max_buckets=100)
    assert h.scale < 8
    assert h.positive_counts.size <= 100
    assert h.count == 2


def test_exponential_quantile_of_a_single_value_is_within_the_bound():
    h = exponential_histogram(np.array([100.0]), scale=3)
    assert abs(quantile_exponential(h, 0.5) - 100.0) <= relative_error(3) * 100.0


def test_exponential_zero_bucket_reports_zero():
    h = exponential_histogram(np.array([0.0, 0.0, 0.0, 5.0]), scale=2)
    assert quantile_exponential(h, 0.5) == 0.0


def test_exponential_negative_values_come_first():
    h = exponential_histogram(np.array([-8.0, -1.0, 2.0, 4.0]), scale=4)
    bound = relative_error(4) * 1.000001
    assert quantile_exponential(h, 0.25) == pytest.approx(-8.0, rel=bound)
    assert quantile_exponential(h, 0.5) == pytest.approx(-1.0, rel=bound)
    assert quantile_exponential(h, 1.0) == pytest.approx(4.0, rel=bound)


def test_exponential_empty_histogram_is_nan():
    assert math.isnan(quantile_exponential(ExponentialHistogram(scale=3), 0.5))


def test_merge_lowers_to_the_smallest_scale():
    merged = merge_exponential(
        [exponential_histogram(np.array([3.0]), 6), exponential_histogram(np.array([5.0]), 1)]
    )
    assert merged.scale == 1
    assert merged.count == 2


def test_merge_respects_max_buckets_by_lowering_the_scale_further():
    merged = merge_exponential([exponential_histogram(np.array([1e-3, 1e3]), 8)], max_buckets=64)
    assert merged.positive_counts.size <= 64
    assert merged.scale < 8
    assert merged.count == 2


def test_grouped_quantile_matches_each_group_alone():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([10.0, 20.0, 30.0, 40.0])
    out = grouped_quantile_exponential(
        group=np.array([0, 0, 0, 1, 1, 1, 1]),
        scale=np.full(7, 4),
        category=np.full(7, POSITIVE),
        index=np.concatenate([exponential_index(a, 4), exponential_index(b, 4)]),
        counts=np.ones(7, dtype=np.int64),
        n_groups=3,
        q=0.5,
    )
    assert out[0] == quantile_exponential(exponential_histogram(a, 4), 0.5)
    assert out[1] == quantile_exponential(exponential_histogram(b, 4), 0.5)
    assert math.isnan(out[2])


def test_categories_order_negative_zero_positive():
    assert NEGATIVE < ZERO < POSITIVE


@settings(max_examples=200, deadline=None)
@given(values=positive_values, split=st.integers(min_value=0, max_value=200), s1=scales, s2=scales)
def test_merge_across_scales_equals_bucketing_the_union_at_the_lower_scale(values, split, s1, s2):
    values = np.array(values)
    first, second = values[:split], values[split:]
    merged = merge_exponential([exponential_histogram(first, s1), exponential_histogram(second, s2)])
    assert_same_histogram(merged, exponential_histogram(values, min(s1, s2)))


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-9),
        min_size=1,
        max_size=200,
    ),
    scale=scales,
    q=quantiles,
)
def test_quantile_is_within_the_stated_relative_error_of_the_true_quantile(values, scale, q):
    values = np.array(values)
    true = float(np.quantile(values, q, method="inverted_cdf"))
    h = exponential_histogram(values, scale)
    # the bound at the histogram's scale, plus a few ulps for values exactly on a bucket boundary
    assert abs(quantile_exponential(h, q) - true) <= relative_error(h.scale) * abs(true) * (1 + 1e-9)
