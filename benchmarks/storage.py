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
