"""The value codec of metric blocks: decimal-scaled integers, raw or as deltas, floats otherwise.

Most metric values are decimals in disguise: a latency of 148.3 ms, a CPU share of 45.1 %, a
request count of 1234. As float64 each costs 8 bytes of noisy mantissa; as the integer 1483 with
the scale 1 it costs a byte or two, and the difference from the previous value of a counter or a
random walk costs even less. This module turns a column of float64 values into that form and back,
bit-exactly.

The scale (as in ALP, "Adaptive Lossless floating-Point compression", SIGMOD 2024) is found per
series per block: the smallest ``d`` in ``0..MAX_SCALE`` at which the most values ``v`` satisfy

    n = round(v * 10**d),  |n| <= 2**53,  float(n) / 10**d == v  (same bits, so -0.0 fails)

Values that do not round-trip at the series' scale (NaN, infinities, -0.0, 0.1 + 0.2, a second point
at the same timestamp) are *exceptions* and stay float64. A series where nothing round-trips is all
exceptions. Each series is then coded raw (``n`` as is) or as deltas (``n`` minus the previous
integer of the same chain), whichever an estimate of the bits says is smaller: random walks and
counters take deltas, noisy gauges around a level stay raw.

Per row, four columns (``encode`` returns them, ``decode`` takes them back):

- ``value_scale`` int8: ``d``; null for exceptions and null values;
- ``value_int`` int64: ``n``, or ``n`` minus the previous integer of the chain when ``value_delta``;
- ``value_delta`` bool: false where a chain starts, true where the row continues one, null where
  ``value_int`` is null;
- ``value_float`` float64: the value of exceptions (null otherwise, and for null values).

A chain is a run of integer rows of one series that starts at a row with ``value_delta`` false; the
encoder starts one at the first integer row of each series and of each ``restarts`` segment (the
blocks' row groups, so each row group decodes alone). Decoding: within each chain the integer is the
running sum of ``value_int``; the value is that integer divided by ``10**value_scale``.

**Residuals** (``encode(..., residuals=True)``, used by rollup files, not by metric blocks). A sum
of decimals is often not a decimal itself: ``0.1 + 0.2`` is ``0.30000000000000004``, one unit in
the last place (ulp) above ``0.3``. With residuals, a value within :data:`MAX_RESIDUAL_ULPS` ulps of
``n / 10**d`` is an integer row too, with a fifth column:

- ``value_residual`` float64: ``v - n / 10**d`` (exact, as both are within a factor of two), null
  where ``n / 10**d`` is already ``v``.

The value is then ``n / 10**d + value_residual``: IEEE addition returns the exact sum when it is
representable, which ``v`` is, so any IEEE double arithmetic (numpy, DuckDB) decodes bit for bit;
the encoder checks it row by row all the same. Residuals are a few ulps, so their mantissas are
nearly all zero bits and cost little. The scale is then the smallest one with the most values
exact or within reach of a residual.

**Bases** (``encode(..., base=(scale, n))``, rollup files). Columns of one row often move
together: the max of a window is near its last value, and a counter's max is its last. A base is
the integer ``n`` and scale of another column of the same row (:func:`decode_integers`); where the
row's scale equals the base's, ``value_int`` stores ``n`` minus the base's integer, before the
raw-or-delta choice, and zigzag-encoded where it starts a chain too (a min is below its base).
The decoder adds the base back after the running sum.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

MAX_SCALE = 6  # 10**6: micro-units; beyond that values are rarely decimals
_POW10 = np.array([10.0**d for d in range(MAX_SCALE + 1)])  # exact doubles
_MAX_EXACT = 2**53  # integers up to this are exact in float64
MAX_RESIDUAL_ULPS = 256  # sums of decimals are measured within 3 ulps of their decimal


def detect_scale(values: np.ndarray) -> int | None:
    """The scale the encoder would choose for one series: smallest d with the most exact values."""
    values = np.asarray(values, dtype=np.float64)
    counts = _exact_counts(values, np.zeros(1, dtype=np.int64))[:, 0]
    if len(values) == 0 or counts.max() == 0:
        return None
    return int(np.argmax(counts == counts.max()))


def encode(
    values: pa.Array | np.ndarray,
    series_starts: np.ndarray,
    times: np.ndarray | None = None,
    restarts: np.ndarray | None = None,
    *,
    residuals: bool = False,
    base: tuple[np.ndarray, np.ndarray] | None = None,
    deltas: bool = True,
) -> dict[str, pa.Array]:
    """Encode ``values`` (float64, nulls allowed) of rows sorted by series then time.

    Args:
        values: the column to encode.
        series_starts: row index where each series begins (ascending, starting with 0).
        times: the rows' timestamps; a row with the same timestamp as the previous row of its series
            is stored as an exception, so ordering rows by (series, time) decodes unambiguously.
        restarts: more row indices where every chain restarts (row-group starts).
        residuals: also store values near a decimal as integers, with ``value_residual``.
        base: ``(scale, n)`` per row, as :func:`decode_integers` gives them (scale -1: none); a row
            at the base's scale stores its integer minus the base's.
        deltas: False: every series raw, no estimate (differences from a base are small already).

    Returns the columns ``value_scale``, ``value_int``, ``value_delta``, ``value_float`` (and
    ``value_residual`` with ``residuals``).
    """
    arr = pa.array(values, type=pa.float64()) if not isinstance(values, pa.Array) else values
    rows = len(arr)
    valid = (
        np.ones(rows, dtype=bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    )
    v = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    series_starts = np.asarray(series_starts, dtype=np.int64)
    if rows == 0:
        return _columns(
            np.zeros(0, bool),
            np.zeros(0, np.int8),
            np.zeros(0, np.int64),
            np.zeros(0, bool),
            arr,
            np.zeros(0) if residuals else None,
        )
    lengths = np.diff(np.append(series_starts, rows))
    series_of_row = np.repeat(np.arange(len(series_starts)), lengths)

    scaled = _near if residuals else _scaled
    counts = _exact_counts(np.where(valid, v, np.nan), series_starts, scaled)  # (scales, series)
    best = counts.max(axis=0)
    scale_of_series = np.argmax(counts == best, axis=0).astype(np.int8)
    scale = scale_of_series[series_of_row]
    n, exact = scaled(v, _POW10[scale])
    exact &= valid & (best > 0)[series_of_row]
    if times is not None:
        times = np.asarray(times)
        repeated = np.zeros(rows, dtype=bool)
        repeated[1:] = times[1:] == times[:-1]
        repeated[series_starts] = False
        exact &= ~repeated

    # Chains: integer rows of one series within one restart segment.
    bounds = np.zeros(rows, dtype=bool)
    bounds[series_starts] = True
    if restarts is not None:
        bounds[np.asarray(restarts, dtype=np.int64)] = True
    segment = np.cumsum(bounds)
    idx = np.flatnonzero(exact)
    x = n[idx]
    based = np.zeros(len(idx), dtype=bool)
    if base is not None:
        based = (np.asarray(base[0]) == scale)[idx]
        x = x - np.where(based, np.asarray(base[1], dtype=np.int64)[idx], 0)
    chain_start = np.ones(len(idx), dtype=bool)
    chain_start[1:] = segment[idx[1:]] != segment[idx[:-1]]
    step = np.zeros(len(idx), dtype=np.int64)
    step[1:] = x[1:] - x[:-1]

    if deltas:
        use_delta = _delta_is_smaller(x, step, chain_start, series_of_row[idx], len(series_starts))
    else:
        use_delta = np.zeros(len(series_starts), dtype=bool)
    delta = use_delta[series_of_row[idx]] & ~chain_start
    ints = np.zeros(rows, dtype=np.int64)
    # deltas zigzag-encoded, and the differences from a base that start a chain (of either sign)
    ints[idx] = np.where(delta, (step << 1) ^ (step >> 63), np.where(based, (x << 1) ^ (x >> 63), x))
    delta_col = np.zeros(rows, dtype=bool)
    delta_col[idx] = delta
    residual = None
    if residuals:
        with np.errstate(invalid="ignore"):
            residual = np.where(exact, v - n.astype(np.float64) / _POW10[scale], 0.0)
    return _columns(exact, scale, ints, delta_col, arr, residual)


def decode(
    value_scale: pa.Array,
    value_int: pa.Array,
    value_delta: pa.Array,
    value_float: pa.Array,
    value_residual: pa.Array | None = None,
    base: tuple[np.ndarray, np.ndarray] | None = None,
    integers: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Array:
    """The float64 values back from the four (or five, with residuals) columns, rows in the order
    they were encoded; ``base`` as given to :func:`encode`, ``integers`` what
    :func:`decode_integers` gave for these columns (computed when not given)."""
    rows = len(value_scale)
    if rows == 0:
        return pa.array([], type=pa.float64())
    if value_scale.null_count == rows and value_float.null_count == rows:
        return pa.nulls(rows, pa.float64())
    scale, ints = integers or decode_integers(value_scale, value_int, value_delta, base)
    is_int = scale >= 0
    floats = value_float.fill_null(0.0).to_numpy(zero_copy_only=False)
    decimal = ints.astype(np.float64) / _POW10[np.maximum(scale, 0)]
    if value_residual is not None and value_residual.null_count < rows:
        # Only rows with a residual: adding 0.0 would turn a -0.0 into 0.0.
        has = value_residual.is_valid().to_numpy(zero_copy_only=False)
        residual = value_residual.fill_null(0.0).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            decimal = np.where(has, decimal + residual, decimal)
    out = np.where(is_int, decimal, floats)
    missing = ~is_int & ~value_float.is_valid().to_numpy(zero_copy_only=False)
    return pa.array(out, type=pa.float64(), mask=missing if missing.any() else None)


def decode_integers(
    value_scale: pa.Array,
    value_int: pa.Array,
    value_delta: pa.Array,
    base: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, n)`` per row: the scale (int8, -1 for exceptions and nulls) and the decoded integer
    ``n`` (0 where there is none), so that the value is ``n / 10**scale`` (plus any residual)."""
    rows = len(value_scale)
    if value_scale.null_count == rows:
        return np.full(rows, -1, dtype=np.int8), np.zeros(rows, dtype=np.int64)
    is_int = value_scale.is_valid().to_numpy(zero_copy_only=False)
    scale = np.where(is_int, value_scale.fill_null(0).to_numpy(zero_copy_only=False), -1).astype(np.int8)
    x = value_int.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    continues = value_delta.fill_null(False).to_numpy(zero_copy_only=False)
    starts = (value_delta.fill_null(True).to_numpy(zero_copy_only=False) == 0) & is_int
    zigzag = continues
    if base is not None:
        zigzag = continues | (starts & (np.asarray(base[0]) == scale))
    x = np.where(zigzag, (x >> 1) ^ -(x & 1), x)  # undo the zigzag of deltas and based starts
    # Running sum within chains; int64 arithmetic wraps, but every true result fits, so it is exact.
    start_rows = np.flatnonzero(starts)
    if not continues.any():  # every integer row starts its own chain: nothing to sum
        ints = x
    elif len(start_rows):
        total = np.cumsum(x)
        chain = np.maximum(np.cumsum(starts) - 1, 0)  # rows before the first start are exceptions
        ints = total - (total[start_rows] - x[start_rows])[chain]
    else:
        ints = x
    if base is not None:
        ints = ints + _offset(base, is_int, scale)
    return scale, np.where(is_int, ints, 0)


def _offset(base: tuple[np.ndarray, np.ndarray], is_int: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The base's integer where the row is an integer row at the base's scale, else 0."""
    base_scale, base_int = base
    return np.where(is_int & (np.asarray(base_scale) == scale), np.asarray(base_int, dtype=np.int64), 0)


def _scaled(v: np.ndarray, power: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``round(v * power)`` as int64, and whether it decodes to exactly the bits of ``v``."""
    with np.errstate(invalid="ignore", over="ignore"):
        rounded = np.rint(v * power)
        fits = np.abs(rounded) <= _MAX_EXACT
    n = np.where(fits, rounded, 0.0).astype(np.int64)
    back = n.astype(np.float64) / power
    return n, fits & (back.view(np.int64) == v.view(np.int64))


def _near(v: np.ndarray, power: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """``round(v * power)`` as int64, and whether it decodes to ``v`` with a residual: ``v`` is
    within MAX_RESIDUAL_ULPS of ``n / power`` and ``n / power + (v - n / power)`` has ``v``'s bits."""
    n, exact = _scaled(v, power)
    with np.errstate(invalid="ignore", over="ignore"):
        fits = np.abs(np.rint(v * power)) <= _MAX_EXACT
        back = n.astype(np.float64) / power
        again = back + (v - back)
    ulps = v.view(np.int64) - back.view(np.int64)  # of opposite signs: huge, or caught by ``again``
    near = fits & (np.abs(ulps) <= MAX_RESIDUAL_ULPS) & (ulps > -MAX_RESIDUAL_ULPS - 1)
    return n, exact | (near & (again.view(np.int64) == v.view(np.int64)))


def _exact_counts(v: np.ndarray, series_starts: np.ndarray, scaled=_scaled) -> np.ndarray:
    """For each scale (rows) and series (columns): how many values round-trip at that scale."""
    out = np.zeros((MAX_SCALE + 1, len(series_starts)), dtype=np.int64)
    if len(v) == 0:
        return out
    for d in range(MAX_SCALE + 1):
        _, exact = scaled(v, _POW10[d])
        out[d] = np.add.reduceat(exact.astype(np.int64), series_starts)
    return out


def _delta_is_smaller(
    x: np.ndarray, step: np.ndarray, chain_start: np.ndarray, series: np.ndarray, nseries: int
) -> np.ndarray:
    """Per series: would deltas take fewer bits than raw integers? Estimated, not tried.

    The estimate of a sequence's size is the sum of log2(1 + |value - mean|): about the bits each
    value needs around its mean, which is what the byte-plane split and zstd exploit.
    """
    if len(x) == 0:
        return np.zeros(nseries, dtype=bool)
    xf = x.astype(np.float64)
    sf = np.where(chain_start, 0, step).astype(np.float64)
    cont = ~chain_start
    n_all = np.bincount(series, minlength=nseries)
    n_cont = np.bincount(series, weights=cont, minlength=nseries)
    mean_x = np.bincount(series, weights=xf, minlength=nseries) / np.maximum(n_all, 1)
    mean_s = np.bincount(series, weights=sf, minlength=nseries) / np.maximum(n_cont, 1)
    raw_bits = np.log2(1 + np.abs(xf - mean_x[series]))
    step_bits = np.where(cont, np.log2(1 + np.abs(sf - mean_s[series])), raw_bits)
    raw = np.bincount(series, weights=raw_bits, minlength=nseries)
    deltas = np.bincount(series, weights=step_bits, minlength=nseries)
    return deltas < raw


def _columns(
    exact: np.ndarray,
    scale: np.ndarray,
    ints: np.ndarray,
    delta: np.ndarray,
    values: pa.Array,
    residual: np.ndarray | None = None,
) -> dict[str, pa.Array]:
    mask = ~exact
    columns = {
        "value_scale": pa.array(scale.astype(np.int8), type=pa.int8(), mask=mask),
        "value_int": pa.array(ints, type=pa.int64(), mask=mask),
        "value_delta": pa.array(delta, type=pa.bool_(), mask=mask),
        "value_float": pa.array(values.to_numpy(zero_copy_only=False), type=pa.float64(), mask=exact)
        if values.null_count == 0
        else _float_exceptions(values, exact),
    }
    if residual is not None:
        # null where the integer alone is exact; -0.0 residuals (v == n / 10**d) are such rows too
        columns["value_residual"] = pa.array(residual, type=pa.float64(), mask=~exact | (residual == 0.0))
    return columns


def _float_exceptions(values: pa.Array, exact: np.ndarray) -> pa.Array:
    keep = ~exact & values.is_valid().to_numpy(zero_copy_only=False)
    v = values.fill_null(0.0).to_numpy(zero_copy_only=False)
    return pa.array(v, type=pa.float64(), mask=~keep)
