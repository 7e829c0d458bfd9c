"""Span and log blocks: layout, pruned trace lookup, bloom filters, DuckDB agreement, atomic writes."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from otel_audio.processors.base import LOGS_SCHEMA, SPANS_SCHEMA
from otel_audio.store import trace_blocks as tb

T0 = 1_750_000_000 * 10**9


def ids(rng: random.Random, count: int, size: int = 16) -> list[str]:
    return [rng.randbytes(size).hex() for _ in range(count)]


def make_spans(trace_ids: list[str], per_trace: int = 3, t0: int = T0, seed: int = 0) -> pa.Table:
    """Spans with a distinct, non-default value in every column (unicode, high uint32 flags)."""
    rng = random.Random(seed)
    rows: dict[str, list] = {name: [] for name in SPANS_SCHEMA.names}
    for t, trace_id in enumerate(trace_ids):
        root = ""
        for i in range(per_trace):
            span_id = rng.randbytes(8).hex()
            start = t0 + t * 1_000_000 + (per_trace - i) * 1000  # children listed before they start
            values = {
                "trace_id": trace_id,
                "span_id": span_id,
                "parent_span_id": root,
                "trace_state": f"ot=th:{i}",
                "name": ["decode", "dénoise", "encode"][i % 3],
                "kind": i % 6,
                "start_time_unix_nano": start,
                "end_time_unix_nano": start + 500 + i,
                "duration_ns": 500 + i,
                "status_code": 2 if i == 1 and t % 4 == 0 else 0,
                "status_message": "clipped 🎧" if i == 1 and t % 4 == 0 else "",
                "service": ["enhancer", "gateway"][t % 2],
                "resource": json.dumps({"service.name": ["enhancer", "gateway"][t % 2]}),
                "scope": "otel_audio",
                "scope_version": "0.3.0",
                "attributes": json.dumps({"audio.id": f"a{t}", "stage": i}),
                "events": json.dumps([{"name": "chunk", "time_unix_nano": start + 1}]) if i == 2 else "[]",
                "links": "[]",
                "flags": 0xFFFFFFFF - i,
            }
            for name, value in values.items():
                rows[name].append(value)
            root = root or span_id
    return pa.table(rows, schema=SPANS_SCHEMA)


def make_logs(trace_ids: list[str], per_trace: int = 2, t0: int = T0) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in LOGS_SCHEMA.names}
    for t, trace_id in enumerate([*trace_ids, ""]):  # "" : records outside any trace
        for i in range(per_trace):
            time_ns = t0 + t * 1_000_000 + i
            values = {
                "time_unix_nano": time_ns,
                "observed_time_unix_nano": time_ns + 7,
                "severity_number": 9 + 8 * (i % 2),
                "severity_text": ["INFO", "ERROR"][i % 2],
                "body": f"chunk {i} of trace {t} ✓",
                "attributes": json.dumps({"i": i}),
                "trace_id": trace_id,
                "span_id": f"{t:08x}{i:08x}" if trace_id else "",
                "flags": 1 if trace_id else 0,
                "service": ["enhancer", "gateway", "denoiser"][t % 3],
                "resource": json.dumps({"service.name": ["enhancer", "gateway", "denoiser"][t % 3]}),
                "scope": "audio.logs",
                "event_name": "stage.done" if i else "",
            }
            for name, value in values.items():
                rows[name].append(value)
    return pa.table(rows, schema=LOGS_SCHEMA)


def by_rows(table: pa.Table) -> list[tuple]:
    """Rows as sorted tuples: equal tables regardless of row order."""
    return sorted(zip(*(table[name].to_pylist() for name in table.column_names), strict=True))


def row_group_ranges(path: Path, column: str = "trace_id") -> list[tuple[str, str]]:
    md = pq.read_metadata(path)
    index = md.schema.to_arrow_schema().get_field_index(column)
    return [
        (md.row_group(r).column(index).statistics.min, md.row_group(r).column(index).statistics.max)
        for r in range(md.num_row_groups)
    ]


def ids_per_row_group(path: Path) -> list[set[str]]:
    file = pq.ParquetFile(path)
    return [
        set(file.read_row_group(rg, columns=["trace_id"])["trace_id"].to_pylist())
        for rg in range(file.num_row_groups)
    ]


@pytest.fixture
def blocks(tmp_path: Path) -> tuple[list[Path], pa.Table]:
    """Four span blocks of 150 traces x 3 spans, 40-row row groups (12 per block)."""
    rng = random.Random(1)
    tables = [make_spans(ids(rng, 150), t0=T0 + b * 10**12, seed=b) for b in range(4)]
    paths = [
        tb.write_span_block(tmp_path / f"{b:06d}.parquet", t, row_group_rows=40).path
        for b, t in enumerate(tables)
    ]
    return paths, pa.concat_tables(tables)


class ReadCalls:
    """Records every row group pyarrow is asked to decode."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[int]] = []
        original = pq.ParquetFile.read_row_groups

        def recording(pf: pq.ParquetFile, row_groups, *args, **kwargs):
            self.calls.append(list(row_groups))
            return original(pf, row_groups, *args, **kwargs)

        monkeypatch.setattr(pq.ParquetFile, "read_row_groups", recording)

    @property
    def row_groups(self) -> int:
        return sum(len(c) for c in self.calls)


# -- layout and round trip -------------------------------------------------------------------------


def test_span_block_round_trips_every_column(tmp_path: Path) -> None:
    spans = make_spans(ids(random.Random(2), 20))
    meta = tb.write_span_block(tmp_path / "b.parquet", spans)
    back = pq.read_table(meta.path)
    assert back.schema.remove_metadata() == SPANS_SCHEMA
    assert by_rows(back) == by_rows(spans)


def test_log_block_round_trips_every_column(tmp_path: Path) -> None:
    logs = make_logs(ids(random.Random(3), 20))
    meta = tb.write_log_block(tmp_path / "l.parquet", logs)
    back = pq.read_table(meta.path)
    assert back.schema.remove_metadata() == LOGS_SCHEMA
    assert by_rows(back) == by_rows(logs)


def test_span_block_is_sorted_by_trace_then_start_and_row_groups_cover_disjoint_id_ranges(
    tmp_path: Path,
) -> None:
    meta = tb.write_span_block(
        tmp_path / "b.parquet", make_spans(ids(random.Random(4), 100)), row_group_rows=32
    )
    back = pq.read_table(meta.path)
    keys = list(zip(back["trace_id"].to_pylist(), back["start_time_unix_nano"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    ranges = row_group_ranges(meta.path)
    assert len(ranges) == meta.row_groups == 10
    assert all(high <= next_low for (_, high), (next_low, _) in itertools.pairwise(ranges))
    sorting = pq.read_metadata(meta.path).row_group(0).sorting_columns
    assert [SPANS_SCHEMA.names[s.column_index] for s in sorting] == [
        "trace_id",
        "start_time_unix_nano",
        "span_id",
    ]


def test_span_block_has_zstd_dictionary_names_statistics_and_a_trace_id_bloom_filter(tmp_path: Path) -> None:
    meta = tb.write_span_block(tmp_path / "b.parquet", make_spans(ids(random.Random(5), 30)))
    group = pq.read_metadata(meta.path).row_group(0)
    columns = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    assert {c.compression for c in columns.values()} == {"ZSTD"}
    assert columns["service"].has_dictionary_page and columns["name"].has_dictionary_page
    assert not columns["span_id"].has_dictionary_page
    assert (
        columns["trace_id"].statistics.has_min_max and columns["start_time_unix_nano"].statistics.has_min_max
    )
    assert columns["trace_id"].bloom_filter_length > 0


def test_block_metadata_is_returned_and_kept_in_the_file(tmp_path: Path) -> None:
    spans = make_spans(ids(random.Random(6), 10))
    meta = tb.write_span_block(tmp_path / "b.parquet", spans)
    assert meta.rows == 30 and meta.bytes == os.path.getsize(meta.path) and meta.row_groups == 1
    assert meta.min_start_ns == pc.min(spans["start_time_unix_nano"]).as_py()
    assert meta.max_end_ns == pc.max(spans["end_time_unix_nano"]).as_py()
    assert (meta.min_trace_id, meta.max_trace_id) == (
        min(spans["trace_id"].to_pylist()),
        max(spans["trace_id"].to_pylist()),
    )
    assert tb.read_block_meta(meta.path) == meta
    logs = make_logs(ids(random.Random(6), 4))
    log_meta = tb.write_log_block(tmp_path / "l.parquet", logs)
    assert tb.read_block_meta(log_meta.path) == log_meta
    assert log_meta.min_trace_id != ""  # records without a trace do not count


def test_writers_reject_missing_columns_and_empty_tables(tmp_path: Path) -> None:
    spans = make_spans(ids(random.Random(7), 2))
    with pytest.raises(ValueError, match=r"lacks column.*duration_ns"):
        tb.write_span_block(tmp_path / "b.parquet", spans.drop_columns(["duration_ns"]))
    with pytest.raises(ValueError, match="at least one row"):
        tb.write_log_block(tmp_path / "l.parquet", LOGS_SCHEMA.empty_table())
    assert list(tmp_path.iterdir()) == []


# -- trace lookup ----------------------------------------------------------------------------------


def test_trace_lookup_reads_only_the_row_groups_that_hold_the_id(
    blocks: tuple[list[Path], pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, spans = blocks
    calls = ReadCalls(monkeypatch)
    false_positives = 0
    for trace_id in random.Random(8).sample(spans["trace_id"].unique().to_pylist(), 40):
        stats = tb.ReadStats()
        before = calls.row_groups
        found = tb.read_trace(paths, trace_id.upper(), stats=stats)
        expected = spans.filter(pc.equal(spans["trace_id"], trace_id))
        assert by_rows(found) == by_rows(expected)
        assert found["start_time_unix_nano"].to_pylist() == sorted(
            expected["start_time_unix_nano"].to_pylist()
        )
        covering = sum(lo <= trace_id <= hi for p in paths for lo, hi in row_group_ranges(p))
        holding = sum(trace_id in group for p in paths for group in ids_per_row_group(p))
        assert stats.row_groups == 48 and stats.row_groups - stats.pruned_by_stats == covering
        assert stats.row_groups_read == calls.row_groups - before >= holding
        assert holding in (1, 2)  # a trace of three spans straddles at most one boundary
        false_positives += stats.row_groups_read - holding
    assert false_positives <= 1  # the bloom filters promise 0.1% per probe; ~120 probes here


def test_bloom_filter_rules_out_blocks_whose_id_range_covers_the_trace(
    blocks: tuple[list[Path], pa.Table],
) -> None:
    paths, spans = blocks
    trace_id = spans["trace_id"][200].as_py()  # ids are random: every block's range covers them
    with_bloom, stats_only = tb.ReadStats(), tb.ReadStats()
    assert tb.read_trace(paths, trace_id, stats=with_bloom).num_rows == 3
    assert tb.read_trace(paths, trace_id, stats=stats_only, use_bloom=False).num_rows == 3
    assert stats_only.row_groups_read >= 4  # one candidate per block by min/max
    assert with_bloom.pruned_by_bloom == stats_only.row_groups_read - with_bloom.row_groups_read
    assert with_bloom.row_groups_read <= 2


def test_missing_trace_returns_empty_without_reading_data(
    blocks: tuple[list[Path], pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, spans = blocks
    present = set(spans["trace_id"].to_pylist())
    missing = [i for i in ids(random.Random(9), 200) if i not in present]
    calls = ReadCalls(monkeypatch)
    stats = tb.ReadStats()
    for trace_id in missing:
        found = tb.read_trace(paths, trace_id, stats=stats)
        assert found.num_rows == 0 and found.schema == SPANS_SCHEMA
    candidates = stats.row_groups - stats.pruned_by_stats  # ids fall in a row group's range or a gap
    assert candidates > 2 * len(missing)
    assert stats.pruned_by_bloom == candidates - stats.row_groups_read
    assert calls.row_groups == stats.row_groups_read <= 2  # false positives at 0.1% per probe


def test_id_outside_every_block_range_is_pruned_by_statistics_alone(
    blocks: tuple[list[Path], pa.Table],
) -> None:
    paths, _ = blocks
    stats = tb.ReadStats()
    assert tb.read_trace(paths, "0" * 32, stats=stats).num_rows == 0
    assert stats.pruned_by_stats == stats.row_groups == 48 and stats.pruned_by_bloom == 0


def test_trace_id_must_be_32_hex_characters(blocks: tuple[list[Path], pa.Table]) -> None:
    with pytest.raises(ValueError, match="32 hex characters"):
        tb.read_trace(blocks[0], "not-a-trace")


def test_bloom_probe_agrees_with_duckdb_parquet_bloom_probe(blocks: tuple[list[Path], pa.Table]) -> None:
    paths, spans = blocks
    footer = tb._footer(paths[0])
    probes = [*spans["trace_id"].to_pylist()[::37], *ids(random.Random(10), 200)]
    with duckdb.connect() as con:
        for trace_id in probes:
            rows = con.execute(
                "SELECT row_group_id, bloom_filter_excludes FROM parquet_bloom_probe(?, 'trace_id', ?)",
                [str(paths[0]), trace_id],
            ).fetchall()
            assert [footer.bloom_may_contain(rg, trace_id) for rg, _ in rows] == [not ex for _, ex in rows]


def test_xxh64_matches_the_reference_vectors() -> None:
    assert tb.xxh64(b"") == 0xEF46DB3751D8E999
    assert tb.xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert tb.xxh64(b"abc") == 0x44BC2CF5AD770999


def test_duckdb_reads_only_footer_and_bloom_filter_for_an_id_inside_a_row_group_range(tmp_path: Path) -> None:
    rng = random.Random(11)
    meta = tb.write_span_block(tmp_path / "b.parquet", make_spans(ids(rng, 3000)), row_group_rows=1000)
    low, high = row_group_ranges(meta.path)[4]
    present = set(pq.read_table(meta.path, columns=["trace_id"])["trace_id"].to_pylist())
    inside = next(i for i in ids(rng, 10_000) if low < i < high and i not in present)
    group = pq.read_metadata(meta.path).row_group(4)
    group_bytes = sum(group.column(c).total_compressed_size for c in range(group.num_columns))

    def bytes_read(trace_id: str) -> int:
        profile = tmp_path / "profile.json"
        with duckdb.connect() as con:
            con.execute("PRAGMA enable_profiling='json'")
            con.execute(f"PRAGMA profiling_output='{profile}'")
            con.execute(
                "SELECT * FROM read_parquet(?) WHERE trace_id = ?", [str(meta.path), trace_id]
            ).fetchall()
        return json.loads(profile.read_text())["io"]["total_bytes_read"]

    footer_only = bytes_read("0" * 32)  # below every row group: pruned by statistics
    assert bytes_read(inside) - footer_only == group.column(0).bloom_filter_length  # no data page
    assert bytes_read(low) - footer_only > group_bytes / 2


# -- DuckDB and pyarrow agree ----------------------------------------------------------------------


def test_plain_pyarrow_and_duckdb_read_the_same_rows(blocks: tuple[list[Path], pa.Table]) -> None:
    paths, spans = blocks
    with duckdb.connect() as con:
        duck = con.sql(
            "SELECT * FROM read_parquet($p)", params={"p": [str(p) for p in paths]}
        ).to_arrow_table()
    plain = pa.concat_tables(pq.read_table(p) for p in paths)
    assert by_rows(duck.cast(SPANS_SCHEMA)) == by_rows(plain) == by_rows(spans)
    trace_id = spans["trace_id"][10].as_py()
    assert (
        tb.scan_spans(paths, trace_id=trace_id).to_pylist()
        == tb.read_trace(paths, trace_id)[::-1].to_pylist()
    )


def test_scan_spans_applies_time_service_status_and_duration_filters(
    blocks: tuple[list[Path], pa.Table],
) -> None:
    paths, spans = blocks
    start, end = T0 + 10**12 + 20_000_000, T0 + 2 * 10**12 + 50_000_000
    found = tb.scan_spans(
        paths, start_ns=start, end_ns=end, service="enhancer", status_code=2, min_duration_ns=501
    )
    s = spans
    expected = s.filter(
        pc.and_(
            pc.and_(
                pc.greater_equal(s["start_time_unix_nano"], start), pc.less(s["start_time_unix_nano"], end)
            ),
            pc.and_(
                pc.and_(pc.equal(s["service"], "enhancer"), pc.equal(s["status_code"], 2)),
                pc.greater_equal(s["duration_ns"], 501),
            ),
        )
    )
    assert found.schema == SPANS_SCHEMA and expected.num_rows > 0
    assert by_rows(found) == by_rows(expected)
    assert found["start_time_unix_nano"].to_pylist() == sorted(
        expected["start_time_unix_nano"].to_pylist(), reverse=True
    )
    assert tb.scan_spans(paths, service="enhancer", limit=5).num_rows == 5
    assert tb.scan_spans([], service="enhancer").num_rows == 0


# -- logs ------------------------------------------------------------------------------------------


def test_log_block_is_sorted_by_service_then_time(tmp_path: Path) -> None:
    meta = tb.write_log_block(tmp_path / "l.parquet", make_logs(ids(random.Random(12), 30)))
    back = pq.read_table(meta.path)
    keys = list(zip(back["service"].to_pylist(), back["time_unix_nano"].to_pylist(), strict=True))
    assert keys == sorted(keys)


def test_logs_of_a_trace_skip_every_row_group_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(13)
    logs = make_logs(ids(rng, 300))
    path = tb.write_log_block(tmp_path / "l.parquet", logs, row_group_rows=50).path
    trace_id = logs["trace_id"][123].as_py()
    calls = ReadCalls(monkeypatch)
    stats = tb.ReadStats()
    found = tb.read_logs([path], trace_id=trace_id, stats=stats)
    assert by_rows(found) == by_rows(logs.filter(pc.equal(logs["trace_id"], trace_id)))
    assert found["time_unix_nano"].to_pylist() == sorted(found["time_unix_nano"].to_pylist())
    holding = sum(trace_id in group for group in ids_per_row_group(path))
    assert stats.row_groups == 13 and calls.row_groups == stats.row_groups_read == holding == 1
    assert tb.read_logs([path], trace_id=ids(rng, 1)[0]).num_rows == 0


def test_logs_by_time_range_and_service(tmp_path: Path) -> None:
    logs = make_logs(ids(random.Random(14), 300))
    path = tb.write_log_block(tmp_path / "l.parquet", logs, row_group_rows=50).path
    start, end = T0 + 100 * 1_000_000, T0 + 120 * 1_000_000
    stats = tb.ReadStats()
    found = tb.read_logs([path], start_ns=start, end_ns=end, service="gateway", stats=stats)
    t = logs["time_unix_nano"]
    expected = logs.filter(
        pc.and_(pc.and_(pc.greater_equal(t, start), pc.less(t, end)), pc.equal(logs["service"], "gateway"))
    )
    assert by_rows(found) == by_rows(expected) and expected.num_rows == 14
    assert stats.row_groups_read <= 2 < stats.row_groups


# -- atomic writes ---------------------------------------------------------------------------------


def test_a_failed_write_leaves_no_file_and_keeps_the_previous_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b.parquet"
    old = tb.write_span_block(path, make_spans(ids(random.Random(15), 5)))
    original = pq.ParquetWriter.write_table

    def fail_midway(writer, table, row_group_size=None):
        original(writer, table.slice(0, 10), row_group_size=5)  # two row groups reach the temp file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail_midway)
    with pytest.raises(OSError, match="No space"):
        tb.write_span_block(path, make_spans(ids(random.Random(16), 50)))
    with pytest.raises(OSError, match="No space"):
        tb.write_span_block(tmp_path / "new.parquet", make_spans(ids(random.Random(16), 50)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.parquet"]
    assert tb.read_block_meta(path) == old and pq.read_table(path).num_rows == 15


def test_the_file_is_fsynced_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: (events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    tb.write_span_block(tmp_path / "b.parquet", make_spans(ids(random.Random(17), 3)))
    assert len(events) == 3
    assert events[0].startswith(f"fsync {tmp_path}/.b.parquet.") and events[0].endswith(".tmp")
    assert events[1:] == ["replace", f"fsync {tmp_path}"]


_KILLED_WRITER = """
import random, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_store_trace_blocks import ids, make_spans
from otel_audio.store import trace_blocks as tb
spans = make_spans(ids(random.Random(0), 4000))
print("ready", flush=True)
for i in range(10**6):
    tb.write_span_block(Path({dir!r}) / f"{{i % 3}}.parquet", spans)
    print(i, flush=True)
"""


def test_a_writer_killed_mid_write_leaves_only_whole_blocks(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    code = _KILLED_WRITER.format(root=root, dir=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    # Kill during a later write, after all three names exist: a random number of writes in.
    for _ in range(3 + random.Random().randrange(4)):
        child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait()
    blocks = sorted(tmp_path.glob("*.parquet"))
    assert [p.name for p in blocks] == ["0.parquet", "1.parquet", "2.parquet"]
    for path in blocks:
        assert pq.read_table(path).num_rows == 12_000
        assert tb.read_block_meta(path).rows == 12_000
    assert all(
        p.name.startswith(".") and p.name.endswith(".tmp") for p in tmp_path.iterdir() if p not in blocks
    )
