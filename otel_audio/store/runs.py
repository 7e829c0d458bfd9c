"""Which blocks one compaction merges: consecutive runs bounded by their total rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class _HasRows(Protocol):
    @property
    def rows(self) -> int: ...


T = TypeVar("T", bound=_HasRows)


def bounded_runs(blocks: Sequence[T], max_rows: int) -> list[list[T]]:
    """Consecutive blocks whose rows add up to at most ``max_rows``; only runs of two or more.

    A merge holds its run in memory, so this bounds the memory of compacting a busy day: it
    becomes a few large blocks instead of one. A block alone over the bound is left as it is.
    """
    runs: list[list[T]] = [[]]
    for block in blocks:
        if runs[-1] and sum(b.rows for b in runs[-1]) + block.rows > max_rows:
            runs.append([])
        runs[-1].append(block)
    return [run for run in runs if len(run) > 1]
