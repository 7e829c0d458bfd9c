"""Histogram columns of rollup rows, computed over flattened list columns without per-row Python.

:mod:`otel_audio.store.rollup` keeps the list columns of its rows (explicit bounds and bucket
counts) as :class:`Lists`: one flat numpy array of all the values and the offsets where each row's
list starts, as Arrow stores them. Exponential histograms are kept as sparse entries ``(owner row,
scale, category, index, count)`` (the form of :func:`otel_audio.store.histograms.grouped_merge_exponential`).
The functions here work on those forms for all rows at once:

- :func:`explicit_increments` and :func:`exponential_increments`: each histogram point's
  increment against the point before it, under the reset rule of the query engine;
- :func:`merge_explicit`: the explicit histogram of each group of rows (the newest row's bounds,
  the summed counts of the rows with those bounds, and whether other bounds were seen);
- :func:`exponential_entries_of_table` and :func:`dense_exponential`: between Arrow's dense
  exponential columns and the sparse entries.

Two bounds lists are equal when they have the same length and their values compare equal as
floats (so ``-0.0`` equals ``0.0`` and a NaN equals nothing), as Python tuples of them compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.store import histograms as hist

_EXP_SIDES = ((hist.POSITIVE, "positive"), (hist.NEGATIVE, "negative"))


@dataclass
class Lists:
    """One list per row: row ``r`` holds ``values[offsets[r]:offsets[r + 1]]``."""

    offsets: np.ndarray  # int64, n + 1
    values: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @cached_property
    def row_of(self) -> np.ndarray:
        """The row of each value."""
        return np.repeat(np.arange(self.offsets.size - 1), self.lengths)

    @classmethod
    def empty(cls, n: int, dtype) -> Lists:
        """``n`` empty lists."""
        return cls(np.zeros(n + 1, np.int64), np.zeros(0, dtype))

    @classmethod
    def of_column(cls, column: pa.ChunkedArray | pa.Array, keep: np.ndarray, dtype) -> Lists:
        """The lists of an Arrow list column; rows not in ``keep`` (and nulls) get empty lists."""
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
        values = pc.list_flatten(column).to_numpy().astype(dtype)
        return cls(_offsets(lengths), values).keep_only(keep)

    def keep_only(self, keep: np.ndarray) -> Lists:
        """These lists with the rows not in ``keep`` emptied."""
        lengths = self.lengths
        if not lengths[~keep].any():
            return self
        rows = np.flatnonzero(keep)
        return self.take(rows, rows, keep.size)

    def take(self, rows: np.ndarray, into: np.ndarray | None = None, size: int = 0) -> Lists:
        """The lists of ``rows``; with ``into`` (ascending), put at those of ``size`` rows (others empty)."""
        lengths = self.lengths[rows]
        values = self.values[_positions(self.offsets[rows], lengths)]
        if into is None:
            return Lists(_offsets(lengths), values)
        all_lengths = np.zeros(size, np.int64)
        all_lengths[into] = lengths
        return Lists(_offsets(all_lengths), values)

    def to_arrow(self, valid: np.ndarray, typ: pa.DataType) -> pa.Array:
        offsets = pa.array(self.offsets, pa.int32())
        return pa.ListArray.from_arrays(
            offsets, pa.array(self.values, typ.value_type), type=typ, mask=pa.array(~valid)
        )


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(lengths.size + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])``."""
    total = int(lengths.sum())
    return np.repeat(starts - _offsets(lengths)[:-1], lengths) + np.arange(total, dtype=np.int64)


def _matching(lists: Lists, ref: np.ndarray, op) -> tuple[np.ndarray, np.ndarray]:
    """Per row ``r``: whether ``op`` holds between every value of it and of row ``ref[r]``.

    Returns ``(holds, source)``: rows of different lengths do not hold; ``source`` is, for each
    value, the position of its counterpart in row ``ref`` (itself where the lengths differ).
    """
    lengths = lists.lengths
    same_length = lengths == lengths[ref]
    shift = np.where(same_length, lists.offsets[:-1][ref] - lists.offsets[:-1], 0)
    row = lists.row_of
    source = np.arange(row.size) + shift[row]
    failed = np.bincount(row[~op(lists.values, lists.values[source])], minlength=lengths.size)
    return same_length & (failed == 0), source


# -- explicit histograms ---------------------------------------------------------------------------


def explicit_increments(pts: pa.Table, mask: np.ndarray, diff: np.ndarray):
    """Per point: ``(has_bounds, bounds, has_counts, counts)``, counts being bucket increments.

    A point of ``mask`` has bounds (``[]`` when null); its counts are unusable when their length is
    not ``len(bounds) + 1``. A ``diff`` point's increment is ``counts - previous counts`` when the
    previous point has usable counts, the same bounds and no bucket went down; else (as the query
    engine: a reset) its own counts.
    """
    bounds = Lists.of_column(pts.column("bounds"), mask, np.float64)
    counts_col = pts.column("bucket_counts")
    has_counts = mask & pc.is_valid(counts_col).to_numpy(zero_copy_only=False)
    counts = Lists.of_column(counts_col, has_counts, np.int64)
    has_counts &= counts.lengths == bounds.lengths + 1
    counts = counts.keep_only(has_counts)
    prev = np.maximum(np.arange(mask.size) - 1, 0)
    same_bounds, _ = _matching(bounds, prev, np.equal)
    not_lower, source = _matching(counts, prev, np.greater_equal)
    subtract = has_counts & diff & has_counts[prev] & same_bounds & not_lower
    values = np.where(subtract[counts.row_of], counts.values - counts.values[source], counts.values)
    return mask.copy(), bounds, has_counts, Lists(counts.offsets, values)


def merge_explicit(order, starts, has_bounds, bounds, has_counts, counts, mixed):
    """The explicit histogram of each group of rows.

    Args:
        order: row positions sorted by group and, within one, oldest to newest (rows not in it are
            left out).
        starts: where each group begins in ``order``.
        has_bounds, bounds, has_counts, counts, mixed: the rows' explicit histograms.

    Returns:
        ``(has_bounds, bounds, has_counts, counts, mixed)`` per group: the newest member's bounds,
        the summed counts of the members with those bounds (unusable when none has usable
        counts), and ``mixed`` when a member had other bounds or was mixed itself.
    """
    n = starts.size
    sorted_group = np.repeat(np.arange(n), np.diff(np.r_[starts, order.size]))
    group = np.full(has_bounds.size, -1)
    group[order] = sorted_group
    member = has_bounds & (group >= 0)
    newest_pos = np.maximum.reduceat(np.where(member[order], np.arange(order.size), -1), starts)
    out_has_bounds = newest_pos >= 0
    out_bounds = bounds.take(order[newest_pos[out_has_bounds]], np.flatnonzero(out_has_bounds), n)
    newest = np.arange(member.size)
    newest[member] = order[newest_pos[group[member]]]
    # a row matches itself even with NaN bounds (as tuples: by identity)
    same = member & ((newest == np.arange(member.size)) | _matching(bounds, newest, np.equal)[0])
    g = group[member]
    mixed_out = out_has_bounds & (
        (np.bincount(group[same], minlength=n) < np.bincount(g, minlength=n))
        | (np.bincount(group[member & mixed], minlength=n) > 0)
    )
    usable = same & has_counts
    g = group[usable]
    lengths = counts.lengths
    out_lengths = np.zeros(n, np.int64)
    np.maximum.at(out_lengths, g, lengths[usable])
    shortest = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(shortest, g, lengths[usable])
    if (shortest < out_lengths).any():
        raise ValueError(
            "explicit histogram rows with the same bounds have bucket_counts of different lengths"
        )
    out_offsets = _offsets(out_lengths)
    values = np.zeros(int(out_offsets[-1]), np.int64)
    shift = np.where(usable, out_offsets[:-1][group] - counts.offsets[:-1], 0)
    row = counts.row_of
    take = usable[row]
    np.add.at(values, np.flatnonzero(take) + shift[row[take]], counts.values[take])
    return out_has_bounds, out_bounds, np.bincount(g, minlength=n) > 0, Lists(out_offsets, values), mixed_out


# -- exponential histograms ------------------------------------------------------------------------


def _exp_columns(table: pa.Table, mask: np.ndarray):
    """(scale, zero count, {category: (offsets, Lists)}) of the rows, nulls as 0 and empty."""
    scale = _ints(table, "exp_scale")
    zero = _ints(table, "exp_zero_count")
    sides = {
        cat: (
            _ints(table, f"exp_{side}_offset"),
            Lists.of_column(table.column(f"exp_{side}_counts"), mask, np.int64),
        )
        for cat, side in _EXP_SIDES
    }
    return scale, zero, sides


def _own_entries(rows, scale, zero, sides) -> list[tuple[np.ndarray, ...]]:
    """Sparse entries of the histograms of ``rows`` as they are, at their own scales."""
    parts = [(rows, scale[rows], np.full(rows.size, hist.ZERO), np.zeros(rows.size, np.int64), zero[rows])]
    for cat, (offset, lists) in sides.items():
        lengths = lists.lengths[rows]
        owner = np.repeat(rows, lengths)
        within = np.arange(owner.size) - np.repeat(_offsets(lengths)[:-1], lengths)
        values = lists.values[_positions(lists.offsets[rows], lengths)]
        parts.append((owner, scale[owner], np.full(owner.size, cat), offset[owner] + within, values))
    return parts


def exponential_increments(pts: pa.Table, mask: np.ndarray, diff: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sparse (owner, scale, category, index, count) entries of every point's increment.

    A diffed point's increment is ``own - previous`` with both at the smaller of their scales; if the
    zero count or any bucket went down it is the point's own histogram instead (a reset). Entries
    may have a zero count (merges drop them).
    """
    scale, zero, sides = _exp_columns(pts, mask)
    rows = np.flatnonzero(mask & diff)
    prev = rows - 1
    low = np.minimum(scale[rows], scale[prev])
    zero_diff = zero[rows] - zero[prev]
    reset = zero_diff < 0
    dense = {}
    for cat, (offset, lists) in sides.items():
        cells = _bucket_difference(rows, prev, low, scale, offset, lists)
        reset |= np.bincount(cells[0][cells[1] < 0], minlength=rows.size) > 0
        dense[cat] = cells
    ok = ~reset
    parts = [
        (
            rows[ok],
            low[ok],
            np.full(int(ok.sum()), hist.ZERO),
            np.zeros(int(ok.sum()), np.int64),
            zero_diff[ok],
        )
    ]
    for cat, (owner, count, index) in dense.items():
        keep = ok[owner] & (count != 0)
        owner = owner[keep]
        parts.append((rows[owner], low[owner], np.full(owner.size, cat), index[keep], count[keep]))
    own = mask.copy()
    own[rows[ok]] = False
    parts += _own_entries(np.flatnonzero(own), scale, zero, sides)
    return tuple(np.concatenate(p).astype(np.int64) for p in zip(*parts, strict=True))


def _bucket_difference(rows, prev, low, scale, offset, lists):
    """(pair, count, index) cells of ``rows[k]``'s buckets minus ``prev[k]``'s at scale ``low[k]``.

    Each pair gets a dense window from the lowest to the highest index of either side.
    """
    spans = []
    for r in (rows, prev):
        shift = scale[r] - low
        lengths = lists.lengths[r]
        spans.append((shift, lengths, offset[r] >> shift, (offset[r] + lengths - 1) >> shift))
    (_, len_c, lo_c, hi_c), (_, len_p, lo_p, hi_p) = spans
    big = np.iinfo(np.int64).max
    lo = np.minimum(np.where(len_c > 0, lo_c, big), np.where(len_p > 0, lo_p, big))
    hi = np.maximum(np.where(len_c > 0, hi_c, -big), np.where(len_p > 0, hi_p, -big))
    width = np.where((len_c > 0) | (len_p > 0), hi - lo + 1, 0)
    base = _offsets(width)
    cells = np.zeros(int(base[-1]), np.int64)
    for r, (shift, lengths, _, _), sign in ((rows, spans[0], 1), (prev, spans[1], -1)):
        pair = np.repeat(np.arange(r.size), lengths)
        within = np.arange(pair.size) - np.repeat(_offsets(lengths)[:-1], lengths)
        index = (offset[r][pair] + within) >> shift[pair]
        values = lists.values[_positions(lists.offsets[r], lengths)]
        np.add.at(cells, base[pair] + index - lo[pair], sign * values)
    pair = np.repeat(np.arange(rows.size), width)
    index = lo[pair] + np.arange(pair.size) - base[pair]
    return pair, cells, index


def exponential_entries_of_table(table: pa.Table, is_exp: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sparse (owner, scale, category, index, count) entries of rollup rows' exponential columns.

    Rows without a scale have no zero entry, but their bucket lists (if any) count, at scale 0.
    """
    scale, zero, sides = _exp_columns(table, np.ones(table.num_rows, bool))
    parts = _own_entries(np.arange(table.num_rows), scale, zero, sides)
    parts[0] = tuple(a[is_exp] for a in parts[0])
    return tuple(np.concatenate(p).astype(np.int64) for p in zip(*parts, strict=True))


def dense_exponential(n: int, is_exp: np.ndarray, exp: tuple[np.ndarray, ...]):
    """Arrow-ready dense form of merged entries: (scale, zero count, {category: (offsets, Lists, valid)})."""
    owner, scale, cat, index, count = exp
    exp_scale = np.zeros(n, np.int64)
    exp_scale[owner] = scale
    zero = np.zeros(n, np.int64)
    np.add.at(zero, owner[cat == hist.ZERO], count[cat == hist.ZERO])
    sides = {}
    for c in (hist.POSITIVE, hist.NEGATIVE):
        sel = cat == c
        o, idx, cnt = owner[sel], index[sel], count[sel]
        lo = np.full(n, np.iinfo(np.int64).max)
        hi = np.full(n, np.iinfo(np.int64).min)
        np.minimum.at(lo, o, idx)
        np.maximum.at(hi, o, idx)
        has = np.bincount(o, minlength=n) > 0
        lo, width = np.where(has, lo, 0), np.where(has, hi - lo + 1, 0)
        offsets = _offsets(width)
        values = np.zeros(int(offsets[-1]), np.int64)
        np.add.at(values, offsets[:-1][o] + idx - lo[o], cnt)
        sides[c] = (lo, Lists(offsets, values), is_exp | has)
    return exp_scale, zero, sides


def _ints(table: pa.Table, name: str) -> np.ndarray:
    return pc.fill_null(table.column(name), 0).to_numpy().astype(np.int64)
