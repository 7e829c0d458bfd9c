"""How fast the store's flush turns head rows into blocks: Parquet blocks plus 1m and 1h rollups.

A flush runs in its own process beside the receiver and must keep up with ingest. This times
:func:`otel_audio.store.flush.write_flush` (raw metric block at zstd 3, rollups, index files) on
``--hours`` of ``--series`` gauge series at ``--interval`` seconds (the query benchmark's gauge),
arriving as many small tables as ingest leaves them, and separately the rollup step alone.

Usage::

    python benchmarks/flush.py [--hours 3] [--interval 1] [--series 300] [--dir PATH]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from otel_audio.store.flush import write_flush
from otel_audio.store.memory import SCHEMAS, Snapshot
from otel_audio.store.rollup import MINUTE_NS, rollup

END_NS = 1_700_000_000 * 10**9
sys.path.insert(0, str(Path(__file__).resolve().parent))
from query import batches  # noqa: E402  the query benchmark's data generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--interval", type=int, default=1, help="seconds between a series' points")
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    points, series = [], []
    for _, batch in batches(args.hours, args.interval, args.series, 1, END_NS):
        if batch.series.column("metric")[0].as_py() == "bench.level":
            points.append(batch.points)
            series.append(batch.series)
    table = pa.concat_tables(points)
    dictionary = pa.concat_tables(series)
    dictionary = dictionary.take(np.unique(dictionary.column("series_id").to_numpy(), return_index=True)[1])
    empty = {kind: SCHEMAS[kind].empty_table() for kind in ("exemplars", "spans", "logs")}
    cut = Snapshot(series=dictionary, points=table, **empty)

    began = time.perf_counter()
    rollup(table, dictionary, MINUTE_NS)
    rollup_s = time.perf_counter() - began
    root = Path(tempfile.mkdtemp(prefix="otel-audio-flush-", dir=args.dir))
    try:
        began = time.perf_counter()
        entries = write_flush(root, "f0000000001", cut, dictionary, None)
        flush_s = time.perf_counter() - began
        written = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "points": table.num_rows,
                "chunks": table.column(0).num_chunks,
                "flush_s": round(flush_s, 3),
                "flush_points_per_s": round(table.num_rows / flush_s),
                "rollup_points_per_s": round(table.num_rows / rollup_s),
                "files": len(entries),
                "bytes_written": written,
            }
        )
    )


if __name__ == "__main__":
    main()
