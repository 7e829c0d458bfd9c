"""Bytes per sample of metric blocks on the standard synthetic data set, and how fast they go.

The data set is ``../shared/bench/synth_metrics.py``, copied verbatim to ``benchmarks/`` (100
series x 20,000 points at 10 s: stage latency, CPU percent, a request counter, a quality score;
2,000,000 samples, entropy bound about 0.78 bytes/sample). Each synthetic series becomes one
gauge series with its own ``series_id`` and attribute set; points are cut into blocks of
``--block-hours`` by time, the way the receiver's block manager cuts its head, and each is
written with ``write_metric_block`` into a temporary
directory. ``bytes_per_sample`` is the size of every file of every block (Parquet files and
meta.json) divided by the samples; ``read_s`` reads every block back in full and checks that
every value is bit-exact.

**Disk use per day at 10,000 points/s**, from measured sizes. The same points are rolled up as a
flush does (``rollup(points, series, MINUTE_NS)``, then ``rollup_rollups(rows, HOUR_NS)``; the
``requests_total`` series as a monotonic cumulative sum, the others as gauges) and written with
``write_rollup_block`` one file per tier and UTC day, as a compacted day partition holds them;
``rollup_1m_bytes_per_row`` and ``rollup_1h_bytes_per_row`` are every file's bytes over the rows
(Parquet footers included, so small runs overstate them a little). Scaling assumes what
10,000 points/s means at the data's own interval (10 s): 100,000 series, each with one raw
sample per interval, one 1-minute row per minute (1,440 a day; an interval over a minute gives
one row per point instead) and 24 one-hour rows a day. Per day of data, in GB (10^9 bytes):

- ``raw_gb_per_day_at_10k``: ``bytes_per_sample`` x 10,000 x 86,400 (at ``--zstd-level``:
  compacted day blocks are written at the default, 19);
- ``rollup_1m_gb_per_day_at_10k``: ``rollup_1m_bytes_per_row`` x 100,000 x 1,440;
- ``rollup_1h_gb_per_day_at_10k``: ``rollup_1h_bytes_per_row`` x 100,000 x 24;
- ``total_gb_per_day_at_10k``: the three together, what one day of data costs across tiers;
- ``steady_state_gb_at_10k``: what the default retention holds on disk, 7 days of raw, 30 of
  1-minute and 90 of 1-hour rows (``RetentionConfig()``).

Usage::

    python benchmarks/storage.py [--block-hours 24] [--series 100] [--points 20000] [--dir PATH]
                                  [--zstd-level 19]

Prints one JSON line. Exit status 2 when the synthetic data set is not found.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    MetricType,
    Temporality,
    canonical_json,
    series_id,
)
from otel_audio.store.blocks import (
    FLUSH_ZSTD_LEVEL,
    ZSTD_LEVEL,
    read_metric_block,
    write_metric_block,
)
from otel_audio.store.retention import RetentionConfig
from otel_audio.store.rollup import HOUR_NS, MINUTE_NS, rollup, rollup_rollups
from otel_audio.store.rollup_blocks import write_rollup_block
from otel_audio.store.tiers import DAY_NS

POINTS_PER_S = 10_000  # the ingest rate the per-day figures are scaled to
GB = 10**9

# The standard set lives in ../shared/bench; benchmarks/synth_metrics.py is a verbatim copy (a test
# keeps them equal where both exist) so a clone on its own can run this benchmark.
SYNTH_DIR = Path(__file__).resolve().parent


def load_synth(nser: int, npts: int) -> tuple[np.ndarray, list[tuple[str, int, np.ndarray]], float]:
    """Timestamps (ms), the series, and the entropy bound, from the shared synthetic data set."""
    if not (SYNTH_DIR / "synth_metrics.py").exists():
        print(f"synthetic data set not found: {SYNTH_DIR / 'synth_metrics.py'}", file=sys.stderr)
        raise SystemExit(2)
    sys.path.insert(0, str(SYNTH_DIR))
    import synth_metrics  # found at run time, next to this script

    ts_ms, out = synth_metrics.series(nser=nser, npts=npts)
    return ts_ms, out, synth_metrics.entropy_bound_bytes_per_sample(ts_ms, out)


def build_tables(ts_ms: np.ndarray, out: list[tuple[str, int, np.ndarray]]) -> tuple[pa.Table, pa.Table]:
    """POINTS_SCHEMA and SERIES_SCHEMA tables: one gauge series per synthetic series."""
    resource = canonical_json({"service.name": "enhancer"})
    rows = []
    ids = []
    for name, index, _ in out:
        attributes = canonical_json({"series": str(index)})
        sid = series_id(name, resource, "synth", attributes)
        ids.append(sid)
        rows.append(
            {
                "series_id": sid,
                "metric": name,
                "type": MetricType.GAUGE.value,
                "unit": "",
                "description": "",
                "temporality": Temporality.UNSPECIFIED.value,
                "monotonic": False,
                "service": "enhancer",
                "resource": resource,
                "scope": "synth",
                "scope_version": "",
                "attributes": attributes,
            }
        )
    series = pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)
    npts = len(ts_ms)
    columns: dict[str, Any] = {
        "series_id": pa.array(np.repeat(np.array(ids, dtype=np.uint64), npts)),
        "time_unix_nano": pa.array(np.tile(ts_ms * 1_000_000, len(out))),
        "value": pa.array(np.concatenate([values for _, _, values in out])),
    }
    total = npts * len(out)
    points = pa.Table.from_arrays(
        [columns.get(f.name, pa.nulls(total, f.type)) for f in POINTS_SCHEMA], schema=POINTS_SCHEMA
    )
    return points, series


def as_counters(series: pa.Table, counter_metric: str = "requests_total") -> pa.Table:
    """The series table with ``counter_metric`` as a monotonic cumulative sum (the others unchanged)."""
    rows = series.to_pylist()
    for row in rows:
        if row["metric"] == counter_metric:
            row.update(type=MetricType.SUM.value, temporality=Temporality.CUMULATIVE.value, monotonic=True)
    return pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)


def rollup_sizes(points: pa.Table, series: pa.Table, root: Path) -> dict[str, dict[str, int]]:
    """Roll ``points`` up into 1-minute and 1-hour rows, write one file per tier and UTC day.

    Returns ``{tier: {"rows": ..., "bytes": ..., "files": ...}}`` for ``1m`` and ``1h``.
    """
    minute, _ = rollup(points, series, MINUTE_NS)
    hour = rollup_rollups(minute, HOUR_NS)
    sizes = {}
    for tier, rows in (("1m", minute), ("1h", hour)):
        day = rows.column("window_start_ns").to_numpy() // DAY_NS
        metas = [
            write_rollup_block(root / f"{tier}-{d}.parquet", rows.filter(pa.array(day == d)), tier=tier)
            for d in np.unique(day)
        ]
        sizes[tier] = {"rows": rows.num_rows, "bytes": sum(m.bytes for m in metas), "files": len(metas)}
    return sizes


def per_day_at_10k(
    bytes_per_sample: float, bytes_per_row: dict[str, float], interval_s: float
) -> dict[str, Any]:
    """GB per day of each tier at 10,000 points/s, their total, and what the default retention holds.

    Args:
        bytes_per_row: measured rollup bytes per row, by tier (``1m``, ``1h``).
        interval_s: seconds between a series' points: 10,000 points/s is 10,000 x interval series.
    """
    series = POINTS_PER_S * interval_s
    rows_per_series_day = {"1m": DAY_NS / max(MINUTE_NS, interval_s * 1e9), "1h": DAY_NS / HOUR_NS}
    gb = {
        "raw": bytes_per_sample * POINTS_PER_S * (DAY_NS / 1e9) / GB,
        **{tier: bytes_per_row[tier] * series * rows_per_series_day[tier] / GB for tier in ("1m", "1h")},
    }
    retention = RetentionConfig()
    kept_days = {tier: retention[tier] / DAY_NS for tier in gb}
    return {
        "series_at_10k": round(series),
        "rollup_1m_rows_per_day_at_10k": round(series * rows_per_series_day["1m"]),
        "rollup_1h_rows_per_day_at_10k": round(series * rows_per_series_day["1h"]),
        "raw_gb_per_day_at_10k": round(gb["raw"], 3),
        "rollup_1m_gb_per_day_at_10k": round(gb["1m"], 3),
        "rollup_1h_gb_per_day_at_10k": round(gb["1h"], 3),
        "total_gb_per_day_at_10k": round(sum(gb.values()), 3),
        "retention_days": {tier: round(days, 3) for tier, days in kept_days.items()},
        "steady_state_gb_at_10k": round(sum(gb[tier] * kept_days[tier] for tier in gb), 1),
    }


def same_points(got: pa.Table, want: pa.Table) -> bool:
    """Same (series_id, time, value bits) rows, whatever the order."""

    def key(table: pa.Table) -> np.ndarray:
        sid, t = table.column("series_id").to_numpy(), table.column("time_unix_nano").to_numpy()
        bits = table.column("value").to_numpy().view(np.int64)
        order = np.lexsort((t, sid))
        return np.stack([sid.view(np.int64)[order], t[order], bits[order]])

    return got.num_rows == want.num_rows and bool(np.array_equal(key(got), key(want)))


def run(block_hours: float, nser: int, npts: int, root: Path, level: int = ZSTD_LEVEL) -> dict[str, Any]:
    ts_ms, out, bound = load_synth(nser, npts)
    points, series = build_tables(ts_ms, out)
    times = points.column("time_unix_nano").to_numpy()
    width = int(block_hours * 3600 * 10**9)
    first = int(times.min()) // width * width
    block_of = (times - first) // width
    exemplars = EXEMPLARS_SCHEMA.empty_table()

    parts = {block: points.filter(pa.array(block_of == block)) for block in np.unique(block_of)}

    began = time.perf_counter()
    metas = [
        write_metric_block(root / f"block-{block:05d}", part, series, exemplars, compression_level=level)
        for block, part in parts.items()
    ]
    write_s = time.perf_counter() - began

    began = time.perf_counter()
    decoded = [read_metric_block(meta.path)[0] for meta in metas]
    read_s = time.perf_counter() - began
    exact = same_points(pa.concat_tables(decoded), points)
    files = sum(f.stat().st_size for meta in metas for f in meta.path.iterdir())
    samples = points.num_rows

    began = time.perf_counter()
    rollup_root = root / "rollups"
    rollup_root.mkdir()
    sizes = rollup_sizes(points, as_counters(series), rollup_root)
    rollup_s = time.perf_counter() - began
    per_row = {tier: size["bytes"] / size["rows"] for tier, size in sizes.items()}
    interval_s = float(np.median(np.diff(ts_ms))) / 1e3 if len(ts_ms) > 1 else 10.0
    return {
        "bytes_per_sample": round(files / samples, 4),
        "entropy_bound_bytes_per_sample": round(bound, 4),
        "samples": samples,
        "series": len(out),
        "blocks": len(metas),
        "block_hours": block_hours,
        "zstd_level": level,
        "bytes": files,
        "points_parquet_bytes": sum((m.path / "points.parquet").stat().st_size for m in metas),
        "write_s": round(write_s, 3),
        "read_s": round(read_s, 3),
        "write_samples_per_s": round(samples / write_s),
        "read_samples_per_s": round(samples / read_s),
        "bit_exact": bool(exact),
        "interval_s": interval_s,
        "rollup_1m_rows": sizes["1m"]["rows"],
        "rollup_1h_rows": sizes["1h"]["rows"],
        "rollup_1m_bytes": sizes["1m"]["bytes"],
        "rollup_1h_bytes": sizes["1h"]["bytes"],
        "rollup_files": sizes["1m"]["files"] + sizes["1h"]["files"],
        "rollup_1m_bytes_per_row": round(per_row["1m"], 3),
        "rollup_1h_bytes_per_row": round(per_row["1h"], 3),
        "rollup_s": round(rollup_s, 3),
        **per_day_at_10k(files / samples, per_row, interval_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-hours", type=float, default=24.0)
    parser.add_argument("--series", type=int, default=100)
    parser.add_argument("--points", type=int, default=20_000, help="points per series")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument(
        "--zstd-level",
        type=int,
        default=ZSTD_LEVEL,
        help=f"{ZSTD_LEVEL}: compacted blocks (default); {FLUSH_ZSTD_LEVEL}: the head's flushes",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="otel-audio-storage-", dir=args.dir))
    try:
        print(json.dumps(run(args.block_hours, args.series, args.points, root, args.zstd_level)))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
