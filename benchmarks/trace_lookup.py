"""Trace fetch by id from span blocks: latency with and without row-group pruning, bytes per span.

Builds ``--traces`` synthetic traces of ``--spans-per-trace`` spans (default 100k x 10 = 1M
spans: five services, ten stage names, ~1% errors, per-request attributes with an ``audio.id``,
an event on one span in ten) spread over ``--hours`` and cut by start time into ``--blocks``
span blocks, as the head would flush them. Then it fetches ``--lookups`` random existing traces:

- ``pruned_*``: :func:`read_trace` as the store uses it (min/max statistics, then the trace_id
  bloom filter; footers already parsed, as in a running receiver);
- ``stats_only_*``: the same without the bloom filter, so every block's one candidate row group
  is read;
- ``cold_*``: pruned, with the footer cache cleared before each fetch (every footer re-parsed);
- ``duckdb_*``: ``scan_spans(paths, trace_id=...)``, DuckDB's own pushdown over the same files;
- ``full_scan_*``: every row group of every block read and filtered (``--full-scan-lookups``);
- ``missing_*``: :func:`read_trace` of ids that are in no block.

``*_row_groups`` are row groups decoded per fetch (mean). ``bytes_per_span`` is file bytes on
disk over spans; ``bloom_bytes_per_span`` the part of it that is bloom filters. Latencies are
over the lookups after one warm-up each; the OS page cache is warm (the files were just written).

Usage::

    python benchmarks/trace_lookup.py [--traces 100000] [--spans-per-trace 10] [--blocks 10]
                                      [--row-group-rows 8192] [--lookups 300] [--dir PATH]

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from otel_audio.processors.base import SPANS_SCHEMA
from otel_audio.store import trace_blocks as tb

SERVICES = ["enhancer", "denoiser", "dereverb", "loudness", "gateway"]
STAGES = ["decode", "resample", "vad", "denoise", "dereverb", "eq", "limiter", "loudness", "encode", "upload"]


def hex_ids(rng: np.random.Generator, count: int, size: int) -> list[str]:
    raw = rng.bytes(size * count)
    return [raw[i : i + size].hex() for i in range(0, len(raw), size)]


def synthetic_spans(traces: int, per_trace: int, hours: float, seed: int) -> pa.Table:
    """``traces * per_trace`` spans in SPANS_SCHEMA, root first, children within 2 s of the root."""
    rng = np.random.default_rng(seed)
    n = traces * per_trace
    t0 = 1_750_000_000 * 10**9
    trace_ids = hex_ids(rng, traces, 16)
    span_ids = hex_ids(rng, n, 8)
    roots = np.sort(rng.integers(0, int(hours * 3600e9), traces)) + t0
    position = np.tile(np.arange(per_trace), traces)
    start = np.repeat(roots, per_trace) + position * rng.integers(1_000_000, 200_000_000, n)
    duration = rng.lognormal(17.0, 1.0, n).astype(np.int64)
    parent = [""] * n
    for i in range(n):
        if i % per_trace:
            parent[i] = span_ids[i - i % per_trace]
    service = rng.integers(0, len(SERVICES), traces)
    names = [STAGES[p % len(STAGES)] for p in position]
    audio_ids = hex_ids(rng, traces, 8)
    seconds = rng.uniform(1, 600, traces).round(3)
    attributes = [
        f'{{"audio.channels":{1 + (i & 1)},"audio.duration_s":{seconds[i // per_trace]},'
        f'"audio.id":"{audio_ids[i // per_trace]}","audio.sample_rate":48000,"stage":"{names[i]}"}}'
        for i in range(n)
    ]
    error = rng.random(n) < 0.01
    events = [
        f'[{{"attributes":"{{}}","name":"chunk","time_unix_nano":{start[i] + 1000}}}]'
        if i % 10 == 3
        else "[]"
        for i in range(n)
    ]
    services = [SERVICES[s] for s in np.repeat(service, per_trace)]
    return pa.table(
        {
            "trace_id": np.repeat(trace_ids, per_trace),
            "span_id": span_ids,
            "parent_span_id": parent,
            "trace_state": [""] * n,
            "name": names,
            "kind": np.where(position == 0, 2, 1).astype(np.int8),
            "start_time_unix_nano": start,
            "end_time_unix_nano": start + duration,
            "duration_ns": duration,
            "status_code": np.where(error, 2, 0).astype(np.int8),
            "status_message": np.where(error, "enhancement failed", ""),
            "service": services,
            "resource": [f'{{"service.name":"{s}","service.version":"1.4.2"}}' for s in services],
            "scope": ["otel_audio"] * n,
            "scope_version": ["0.3.0"] * n,
            "attributes": attributes,
            "events": events,
            "links": ["[]"] * n,
            "flags": np.full(n, 0x301, dtype=np.uint32),
        },
        schema=SPANS_SCHEMA,
    )


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], list[Any]]:
    fn()  # warm-up
    times, results = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        results.append(fn())
        times.append((time.perf_counter() - began) * 1000)
    return times, results


def summary(prefix: str, times_ms: list[float], row_groups: list[int] | None = None) -> dict[str, Any]:
    ordered = sorted(times_ms)
    out = {
        f"{prefix}_p50_ms": round(statistics.median(ordered), 3),
        f"{prefix}_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
    }
    if row_groups is not None:
        out[f"{prefix}_row_groups"] = round(statistics.mean(row_groups), 2)
    return out


def lookups(fetch: Callable[[str], Any], ids: list[str], repeats_each: int = 1) -> list[float]:
    times = []
    for trace_id in ids:
        t, _ = timed(lambda trace_id=trace_id: fetch(trace_id), repeats_each)
        times.extend(t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--spans-per-trace", type=int, default=10)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--row-group-rows", type=int, default=tb.SPAN_ROW_GROUP_ROWS)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--full-scan-lookups", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the blocks (default: a temp dir)"
    )
    args = parser.parse_args()

    spans = synthetic_spans(args.traces, args.spans_per_trace, args.hours, args.seed)
    spans = spans.sort_by("start_time_unix_nano")
    directory = Path(tempfile.mkdtemp(prefix="trace-lookup-", dir=args.dir))
    try:
        per_block = -(-spans.num_rows // args.blocks)
        began = time.perf_counter()
        metas = [
            tb.write_span_block(
                directory / f"{i:06d}.parquet",
                spans.slice(i * per_block, per_block),
                row_group_rows=args.row_group_rows,
            )
            for i in range(args.blocks)
        ]
        write_s = time.perf_counter() - began
        paths = [m.path for m in metas]
        total_bytes = sum(m.bytes for m in metas)
        bloom_bytes = 0
        for path in paths:
            md = pq.read_metadata(path)
            index = md.schema.to_arrow_schema().get_field_index("trace_id")
            bloom_bytes += sum(
                md.row_group(r).column(index).bloom_filter_length or 0 for r in range(md.num_row_groups)
            )

        rng = np.random.default_rng(args.seed + 1)
        all_ids = pc.unique(spans["trace_id"]).to_pylist()
        ids = [all_ids[i] for i in rng.choice(len(all_ids), args.lookups, replace=False)]
        missing = hex_ids(rng, args.lookups, 16)

        def counted(use_bloom: bool, sink: list[int]) -> Callable[[str], pa.Table]:
            def fetch(trace_id: str) -> pa.Table:
                stats = tb.ReadStats()
                table = tb.read_trace(paths, trace_id, stats=stats, use_bloom=use_bloom)
                sink.append(stats.row_groups_read)
                return table

            return fetch

        pruned_rg: list[int] = []
        pruned = lookups(counted(True, pruned_rg), ids)
        stats_rg: list[int] = []
        stats_only = lookups(counted(False, stats_rg), ids)
        missing_rg: list[int] = []
        missing_t = lookups(counted(True, missing_rg), missing)

        def cold(trace_id: str) -> pa.Table:
            tb._footer_cached.cache_clear()
            return tb.read_trace(paths, trace_id)

        cold_t = lookups(cold, ids[: max(1, args.lookups // 3)])
        duck = lookups(
            lambda trace_id: tb.scan_spans(paths, trace_id=trace_id), ids[: max(1, args.lookups // 3)]
        )

        def full_scan(trace_id: str) -> pa.Table:
            tables = [pq.ParquetFile(p).read() for p in paths]
            table = pa.concat_tables(tables)
            return table.filter(pc.equal(table["trace_id"], trace_id)).sort_by("start_time_unix_nano")

        full = lookups(full_scan, ids[: args.full_scan_lookups])
        spans_found = tb.read_trace(paths, ids[0]).num_rows
        row_groups = sum(m.row_groups for m in metas)
        result = {
            "spans": spans.num_rows,
            "traces": args.traces,
            "blocks": args.blocks,
            "row_group_rows": args.row_group_rows,
            "row_groups": row_groups,
            "write_spans_per_s": round(spans.num_rows / write_s),
            "bytes_per_span": round(total_bytes / spans.num_rows, 2),
            "bloom_bytes_per_span": round(bloom_bytes / spans.num_rows, 3),
            "arrow_bytes_per_span": round(spans.nbytes / spans.num_rows, 1),
            "spans_per_fetched_trace": spans_found,
            **summary("pruned", pruned, pruned_rg),
            **summary("stats_only", stats_only, stats_rg),
            **summary("cold", cold_t),
            **summary("duckdb", duck),
            **summary("full_scan", full, [row_groups]),
            **summary("missing", missing_t, missing_rg),
            "python": platform.python_version(),
            "pyarrow": pa.__version__,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
