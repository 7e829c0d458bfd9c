"""The value codec: decimal-scaled integers, raw or zigzag deltas, float exceptions; bit-exact."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.store import value_codec


def round_trip(values: list[float | None], starts: list[int], **kwargs: object) -> pa.Array:
    encoded = value_codec.encode(pa.array(values, pa.float64()), np.array(starts), **kwargs)
    return value_codec.decode(**encoded)


def same_bits(got: pa.Array, want: list[float | None]) -> bool:
    """Equal as stored: nulls in the same places, every other value with the same 64 bits."""
    want_arr = pa.array(want, pa.float64())
    if got.is_null().to_pylist() != want_arr.is_null().to_pylist():
        return False
    a = got.fill_null(0.0).to_numpy(zero_copy_only=False).view(np.int64)
    b = want_arr.fill_null(0.0).to_numpy(zero_copy_only=False).view(np.int64)
    return bool(np.array_equal(a, b))


def test_scale_detection_picks_the_smallest_exact_scale() -> None:
    assert value_codec.detect_scale(np.array([1.5, 2.25])) == 2
    assert value_codec.detect_scale(np.array([3.0, -4.0])) == 0
    assert value_codec.detect_scale(np.array([0.1, 148.3])) == 1
    assert value_codec.detect_scale(np.array([3.814697, 1e-6])) == 6


def test_no_scale_when_nothing_is_a_short_decimal() -> None:
    assert value_codec.detect_scale(np.array([np.nan, np.inf])) is None
    assert value_codec.detect_scale(np.array([1e-7, np.pi])) is None
    assert value_codec.detect_scale(np.array([2.0**60])) is None  # beyond 2**53: not exact as an integer


def test_values_that_do_not_round_trip_are_float_exceptions() -> None:
    values = [0.1, 0.1 + 0.2, float("nan"), float("inf"), -0.0, 0.4]
    encoded = value_codec.encode(pa.array(values), np.array([0]))
    assert encoded["value_scale"].to_pylist() == [1, None, None, None, None, 1]
    assert encoded["value_float"].is_valid().to_pylist() == [False, True, True, True, True, False]
    assert same_bits(value_codec.decode(**encoded), values)


def test_counters_take_zigzag_deltas_and_noisy_gauges_stay_raw() -> None:
    rng = np.random.default_rng(1)
    counter = np.cumsum(rng.poisson(20, 200)).astype(float)
    gauge = np.round(rng.normal(3.8, 0.2, 200), 2)
    encoded = value_codec.encode(pa.array(np.concatenate([counter, gauge])), np.array([0, 200]))
    delta = encoded["value_delta"].to_pylist()
    assert delta[0] is False and all(delta[1:200])  # a chain starts each series
    assert not any(delta[200:])
    step = int(counter[1] - counter[0])
    assert encoded["value_int"][1].as_py() == 2 * step  # zigzag of a positive step
    assert encoded["value_int"][200].as_py() == round(gauge[0] * 100)


def test_a_second_point_at_the_same_time_is_an_exception() -> None:
    encoded = value_codec.encode(
        pa.array([1.0, 2.0, 2.5, 3.0]), np.array([0]), times=np.array([10, 20, 20, 30])
    )
    assert encoded["value_scale"].is_valid().to_pylist() == [True, True, False, True]


def test_restarts_start_new_chains() -> None:
    values = [float(v) for v in range(0, 100, 10)]
    encoded = value_codec.encode(pa.array(values), np.array([0]), restarts=np.array([4, 7]))
    assert [i for i, d in enumerate(encoded["value_delta"].to_pylist()) if d is False] == [0, 4, 7]
    assert same_bits(value_codec.decode(**encoded), values)


def test_nulls_stay_null() -> None:
    values = [None, 1.5, None, 2.5]
    encoded = value_codec.encode(pa.array(values, pa.float64()), np.array([0]))
    assert encoded["value_float"].null_count == 4
    assert same_bits(value_codec.decode(**encoded), values)


def test_empty_column() -> None:
    assert len(round_trip([], [])) == 0


special = st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), -0.0, 1e300, -1e-300, 2.0**53, 0.1 + 0.2]
)


@st.composite
def one_series(draw: st.DrawFn) -> list[float | None]:
    n = draw(st.integers(1, 60))
    scale = draw(st.integers(0, 8))  # 7 and 8 are beyond MAX_SCALE: exceptions or floats
    kind = draw(st.sampled_from(["gauge", "counter", "walk", "floats"]))
    if kind == "floats":
        values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=n, max_size=n))
    else:
        ints = draw(st.lists(st.integers(-(10**12), 10**12), min_size=n, max_size=n))
        if kind == "counter":
            ints = np.cumsum(np.abs(ints)).tolist()
        elif kind == "walk":
            ints = np.cumsum(ints).tolist()
        values = [i / 10**scale for i in ints]
    for _ in range(draw(st.integers(0, 3))):
        values[draw(st.integers(0, n - 1))] = draw(st.one_of(special, st.none()))
    return values


@settings(max_examples=300, deadline=None)
@given(st.lists(one_series(), min_size=1, max_size=6), st.data())
def test_round_trip_is_bit_exact(series: list[list[float | None]], data: st.DataObject) -> None:
    values = [v for s in series for v in s]
    starts = np.cumsum([0] + [len(s) for s in series[:-1]])
    rows = len(values)
    restarts = np.array(sorted(data.draw(st.sets(st.integers(0, rows - 1), max_size=3))), dtype=np.int64)
    times = np.concatenate(
        [np.cumsum(data.draw(st.lists(st.integers(0, 2), min_size=len(s), max_size=len(s)))) for s in series]
    )
    assert same_bits(round_trip(values, starts.tolist(), times=times, restarts=restarts), values)
