"""CardinalityLimiter: series budgets per metric."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from otel_audio.receiver.cardinality import CardinalityLimiter


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_new_series_are_admitted_until_the_budget_is_full() -> None:
    limiter = CardinalityLimiter(2)
    assert limiter.admit("m", ids(1, 2, 3)).tolist() == [True, True, False]


def test_known_series_are_always_admitted() -> None:
    limiter = CardinalityLimiter(2)
    limiter.admit("m", ids(1, 2))
    assert limiter.admit("m", ids(3, 2, 1, 4)).tolist() == [False, True, True, False]


def test_every_point_of_an_admitted_new_series_is_kept() -> None:
    limiter = CardinalityLimiter(1)
    assert limiter.admit("m", ids(7, 8, 7, 7)).tolist() == [True, False, True, True]


def test_new_series_are_taken_in_order_of_first_point() -> None:
    limiter = CardinalityLimiter(1)
    assert limiter.admit("m", ids(9, 1)).tolist() == [True, False]


def test_budgets_are_per_metric() -> None:
    limiter = CardinalityLimiter(1)
    limiter.admit("a", ids(1))
    assert limiter.admit("b", ids(2)).tolist() == [True]
    assert limiter.series_count("a") == limiter.series_count("b") == 1


def test_refused_points_are_counted_per_metric() -> None:
    limiter = CardinalityLimiter(1)
    limiter.admit("a", ids(1, 2, 2, 3))
    limiter.admit("b", ids(5, 6))
    assert limiter.rejected_points("a") == 3
    assert limiter.rejected_by_metric() == {"a": 3, "b": 1}
    assert limiter.rejected_points() == 4


def test_restore_readmits_series_beyond_the_budget() -> None:
    limiter = CardinalityLimiter(1)
    limiter.restore("m", [1, 2, 3])
    assert limiter.admit("m", ids(3, 4)).tolist() == [True, False]


def test_largest_uint64_ids_are_kept_exact() -> None:
    limiter = CardinalityLimiter(1)
    big = 2**64 - 1
    limiter.restore("m", np.array([big], dtype=np.uint64))
    assert limiter.admit("m", ids(big, big - 1)).tolist() == [True, False]


def test_an_empty_array_admits_nothing_and_counts_nothing() -> None:
    limiter = CardinalityLimiter(1)
    assert limiter.admit("m", ids()).size == 0
    assert limiter.rejected_points("m") == 0


def test_a_budget_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_series_per_metric"):
        CardinalityLimiter(0)


def test_concurrent_admission_never_exceeds_the_budget() -> None:
    limiter = CardinalityLimiter(100)
    admitted: list[int] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        for start in range(0, 1000, 50):
            keep = limiter.admit("m", np.arange(start + offset, start + offset + 50, dtype=np.uint64))
            with lock:
                admitted.append(int(keep.sum()))

    threads = [threading.Thread(target=worker, args=(n * 10_000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 100
    assert limiter.series_count("m") == 100
    assert limiter.rejected_points("m") == 8 * 1000 - 100


def test_idle_series_free_their_slot_after_the_idle_timeout():
    second = 10**9
    limiter = CardinalityLimiter(max_series_per_metric=2, idle_ns=60 * second)
    limiter.tick(1_000 * second)
    assert limiter.admit("m", np.array([1, 2], dtype=np.uint64)).all()
    assert not limiter.admit("m", np.array([3], dtype=np.uint64)).any()
    limiter.tick(1_030 * second)
    assert limiter.admit("m", np.array([2], dtype=np.uint64)).all()  # series 2 is still active
    assert limiter.tick(1_070 * second) == 1  # series 1 was last seen at 1000 s: freed
    assert limiter.admit("m", np.array([3], dtype=np.uint64)).all()
    assert limiter.series_count("m") == 2


def test_restored_series_count_as_seen_at_the_first_tick():
    second = 10**9
    limiter = CardinalityLimiter(max_series_per_metric=1, idle_ns=60 * second)
    limiter.restore("m", [7])
    assert limiter.tick(5_000 * second) == 0
    assert not limiter.admit("m", np.array([8], dtype=np.uint64)).any()
    assert limiter.tick(5_061 * second) == 1
    assert limiter.admit("m", np.array([8], dtype=np.uint64)).all()
