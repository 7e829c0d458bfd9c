"""The block store: the head flushed into blocks answers every query as the in-memory store did.

Data comes from the query benchmark's generator (a gauge, a cumulative counter and a cumulative
explicit histogram per series, with ``stage`` and ``device`` attributes). The same batches go to a
plain :class:`MemoryStore` (the reference: the raw answer) and to a :class:`TieredStore` that is
flushed every few batches, with the clock injected.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from otel_audio.processors.base import MetricBatch
from otel_audio.store import catalog
from otel_audio.store.memory import MemoryStore
from otel_audio.store.query import LogQuery, QueryEngine, RangeQuery, SpanQuery
from otel_audio.store.retention import RetentionConfig
from otel_audio.store.tiered import TieredStore
from otel_audio.store.tiers import DAY_NS
from tests.test_store_memory import log, log_batch, span, span_batch

S = 10**9
MIN = 60 * S
HOUR = 3600 * S
END = 20_412 * DAY_NS  # 2025-11-20T00:00Z: data spans the day boundary when it starts the day before


def _bench_query():
    path = Path(__file__).parent.parent / "benchmarks" / "query.py"
    spec = importlib.util.spec_from_file_location("bench_query_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH = _bench_query()


class Tee:
    """Sends every batch to the reference and the tiered store; flushes the latter every ``every``."""

    def __init__(self, reference: MemoryStore, tiered: TieredStore, every: int) -> None:
        self.reference, self.tiered, self.every, self.seen = reference, tiered, every, 0

    def process(self, batch: MetricBatch) -> None:
        self.seen += 1
        self.reference.process(batch)
        self.tiered.process(batch)
        if self.seen % self.every == 0:
            self.tiered.flush()


def loaded(
    tmp_path: Path, hours: float = 6, flush_every: int = 3, **store_kw
) -> tuple[MemoryStore, TieredStore]:
    reference = MemoryStore()
    tiered = TieredStore(tmp_path, background=False, **store_kw)
    BENCH.load(Tee(reference, tiered, flush_every), hours, 60, 12, 60, END)
    return reference, tiered


def answers(store, q: RangeQuery, now: int = END) -> dict[tuple, np.ndarray]:
    engine = QueryEngine(store, clock=lambda: now)
    return {tuple(sorted(r.labels.items())): r.values for r in engine.query_range(q)}


def assert_same_answers(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], rtol=1e-9, atol=1e-9, equal_nan=True)


QUERIES = [
    ("bench.level", "avg", ("stage",)),
    ("bench.level", "max", ()),
    ("bench.level", "count", ("stage",)),
    ("bench.frames", "rate", ("stage",)),
    ("bench.frames", "increase", ()),
    ("bench.duration", "p95", ("stage",)),
    ("bench.duration", "count", ()),
    ("bench.duration", "avg", ("stage",)),
]


@pytest.mark.parametrize(("metric", "agg", "group_by"), QUERIES)
@pytest.mark.parametrize("step", [MIN, 5 * MIN, HOUR])
def test_blocks_and_rollups_answer_as_the_raw_points_did(tmp_path, metric, agg, group_by, step):
    reference, tiered = loaded(tmp_path)
    tiered.flush()
    assert tiered.snapshot().points.num_rows == 0  # everything is in blocks now
    q = RangeQuery(metric, END - 6 * HOUR, END, step, agg=agg, group_by=group_by)
    assert_same_answers(answers(tiered, q), answers(reference, q))


@pytest.mark.parametrize(("metric", "agg", "group_by"), QUERIES)
def test_a_query_over_blocks_and_the_head_together_is_the_raw_answer(tmp_path, metric, agg, group_by):
    reference, tiered = loaded(tmp_path, flush_every=4)
    assert tiered.snapshot().points.num_rows > 0  # the newest batches are still in the head
    assert tiered.view().catalog.select("rollups", "1m")
    q = RangeQuery(metric, END - 6 * HOUR, END, 5 * MIN, agg=agg, group_by=group_by)
    assert_same_answers(answers(tiered, q), answers(reference, q))


@pytest.mark.parametrize(("metric", "agg", "group_by"), [*QUERIES, ("bench.level", "avg", ("device",))])
def test_a_raw_step_reads_raw_blocks_with_the_same_answer(tmp_path, metric, agg, group_by):
    reference, tiered = loaded(tmp_path)
    tiered.flush()
    q = RangeQuery(metric, END - 6 * HOUR, END, 15 * S, agg=agg, group_by=group_by)
    assert_same_answers(answers(tiered, q), answers(reference, q))


def test_flush_writes_day_partitions_of_every_tier_and_a_checkpoint(tmp_path):
    _, tiered = loaded(tmp_path, hours=26)  # starts the day before END
    tiered.flush()
    blocks = tmp_path / "blocks"
    for tier in ("raw", "1m", "1h"):
        days = sorted(p.name for p in (blocks / tier).iterdir())
        assert days == ["2025-11-18", "2025-11-19"], tier
    assert catalog.read_checkpoint(tmp_path).seq == tiered.checkpoint.seq > 1
    # A raw block is plain Parquet: its values are right without otel-audio.
    block = next((blocks / "raw" / "2025-11-19").iterdir())
    stored = pq.read_table(block / "points.parquet")
    assert stored.num_rows > 0 and "value_int" in stored.column_names


def test_a_reopened_store_has_every_series_and_block(tmp_path):
    reference, tiered = loaded(tmp_path)
    tiered.close()
    reopened = TieredStore(tmp_path, background=False)
    q = RangeQuery("bench.frames", END - 6 * HOUR, END, 10 * MIN, agg="rate", group_by=("stage",))
    assert_same_answers(answers(reopened, q), answers(reference, q))
    engine = QueryEngine(reopened)
    assert {m["name"] for m in engine.list_metrics()} == {"bench.level", "bench.frames", "bench.duration"}
    assert len(engine.list_series("bench.level")) == 12


def test_the_checkpoint_names_the_last_lsn_flushed_and_is_reported(tmp_path):
    truncated: list[int] = []
    store = TieredStore(tmp_path, background=False, on_checkpoint=truncated.append)
    for lsn in (5, 6, 9):
        store.process(replace(span_batch([span(lsn, 1, start_s=END / S - 60)]), lsn=lsn))
    store.flush()
    assert truncated == [9] and store.checkpoint.lsn == 9
    assert TieredStore(tmp_path, background=False).checkpoint == catalog.Checkpoint(seq=1, lsn=9)


def test_an_unfinished_flush_is_removed_on_open(tmp_path):
    _, tiered = loaded(tmp_path, hours=2)
    tiered.flush()
    committed = tiered.checkpoint.seq
    # What a crash between writing blocks and the checkpoint leaves:
    partition = next((tmp_path / "blocks" / "raw").iterdir())
    ghost = partition / catalog.flush_name(committed + 1)
    (ghost).mkdir()
    (ghost / "meta.json").write_text("{}")
    series_dir = tmp_path / "index" / "series"
    (series_dir / f"{catalog.flush_name(committed + 1)}.parquet").write_bytes(b"partial")
    (partition / ".f.parquet.tmp").write_bytes(b"torn")
    TieredStore(tmp_path, background=False)
    assert not ghost.exists()
    assert not (series_dir / f"{catalog.flush_name(committed + 1)}.parquet").exists()
    assert not (partition / ".f.parquet.tmp").exists()
    assert any(partition.iterdir())  # committed blocks stay


def test_spans_and_logs_are_found_in_blocks_and_head_alike(tmp_path):
    store = TieredStore(tmp_path, background=False)
    t0 = END / S - 3600
    store.process(span_batch([span(1, 1, start_s=t0, service="a"), span(1, 2, start_s=t0 + 1, service="b")]))
    store.process(log_batch([log(t0, "flushed line", trace_id=f"{1:032x}")]))
    store.flush()
    store.process(span_batch([span(1, 3, start_s=t0 + 2, service="a"), span(2, 1, start_s=t0 + 5)]))
    store.process(log_batch([log(t0 + 3, "head line", trace_id=f"{1:032x}")]))
    assert store.view().span_files() and store.snapshot().spans.num_rows == 2
    engine = QueryEngine(store)
    trace = engine.get_trace(f"{1:032x}")
    assert trace.column("span_id").to_pylist() == [f"{i:016x}" for i in (1, 2, 3)]
    assert engine.search_traces(SpanQuery(service="a")) == [f"{1:032x}"]
    assert len(engine.search_spans(SpanQuery(start_ns=int(t0 * S), limit=10))) == 4
    logs = engine.search_logs(LogQuery(trace_id=f"{1:032x}"))
    assert logs.column("body").to_pylist() == ["head line", "flushed line"]


def test_retention_drops_expired_raw_days_and_older_ranges_read_rollups(tmp_path):
    reference, tiered = loaded(
        tmp_path, hours=26, retention=RetentionConfig.from_mapping({"raw": "1d"}), maintenance_interval_ns=MIN
    )
    tiered.flush()
    later = END + 12 * HOUR  # 2025-11-18 ended more than a day ago, 2025-11-19 did not
    tiered.tick(later)
    tiered.tick(later + MIN)  # the first tick only starts the clocks
    assert sorted(p.name for p in (tmp_path / "blocks" / "raw").iterdir()) == ["2025-11-19"]
    assert len(list((tmp_path / "blocks" / "1m").iterdir())) == 2
    q = RangeQuery("bench.level", END - 26 * HOUR, END, 5 * MIN, agg="avg", group_by=("stage",))
    assert_same_answers(answers(tiered, q, now=later), answers(reference, q))


def test_compaction_merges_a_finished_day_and_answers_stay_the_same(tmp_path):
    reference, tiered = loaded(tmp_path, hours=26, flush_every=2, maintenance_interval_ns=MIN)
    tiered.flush()
    day = tmp_path / "blocks" / "raw" / "2025-11-19"
    assert len([p for p in day.iterdir() if p.is_dir()]) > 1
    later = END + 25 * HOUR  # the day ended a day and an hour ago: no flush goes there any more
    tiered.tick(later)
    tiered.tick(later + MIN)
    assert len([p for p in day.iterdir() if p.is_dir()]) == 1
    assert len(list((tmp_path / "blocks" / "1m" / "2025-11-19").iterdir())) == 1
    for step in (MIN, 15 * S):
        q = RangeQuery("bench.frames", END - 26 * HOUR, END, step, agg="increase", group_by=("stage",))
        assert_same_answers(answers(tiered, q, now=later), answers(reference, q))


def test_memory_pressure_flushes_before_the_interval(tmp_path):
    store = TieredStore(tmp_path, background=False, head_max_bytes=1, flush_interval_ns=DAY_NS)
    store.tick(END)
    store.process(span_batch([span(1, 1, start_s=END / S - 10)]))
    store.tick(END + S)
    assert store.snapshot().spans.num_rows == 0 and store.view().span_files()


class Collect:
    def __init__(self) -> None:
        self.batches: list[MetricBatch] = []

    def process(self, batch: MetricBatch) -> None:
        self.batches.append(batch)


def test_the_flush_process_rebuilds_from_the_wal_what_the_head_held(tmp_path):
    from otel_audio.store.batch_codec import encode_batch
    from otel_audio.store.wal import WriteAheadLog

    collected = Collect()
    BENCH.load(collected, 3, 60, 6, 30, END)
    extra = span_batch([span(9, 1, start_s=END / S - 30)])  # not from the log, like self-monitoring
    wal = WriteAheadLog(tmp_path / "a" / "wal")
    by_process = TieredStore(tmp_path / "a", wal_dir=tmp_path / "a" / "wal")
    in_thread = TieredStore(tmp_path / "b", background=False)
    reference = MemoryStore()
    try:
        for batch in collected.batches:
            logged = replace(batch, lsn=wal.append_durable(*encode_batch(batch)))
            for store in (by_process, in_thread, reference):
                store.process(logged)
        for store in (by_process, in_thread, reference):
            store.process(extra)
        by_process.flush()
        in_thread.flush()
    finally:
        by_process.close()
        wal.close()
    assert by_process.checkpoint == in_thread.checkpoint == catalog.Checkpoint(1, len(collected.batches))
    assert by_process.snapshot().points.num_rows == 0
    for metric, agg, group_by in QUERIES:
        for step in (15 * S, 5 * MIN):
            q = RangeQuery(metric, END - 3 * HOUR, END, step, agg=agg, group_by=group_by)
            expected = answers(reference, q)
            assert_same_answers(answers(by_process, q), expected)
            assert_same_answers(answers(in_thread, q), expected)
    assert QueryEngine(by_process).get_trace(f"{9:032x}").num_rows == 1


def test_retention_and_compaction_run_in_the_flush_process(tmp_path):
    reference, tiered = loaded(tmp_path, hours=26, flush_every=2)
    tiered.close()
    day = tmp_path / "blocks" / "raw" / "2025-11-19"
    assert len([p for p in day.iterdir() if p.is_dir()]) > 1
    (tmp_path / "wal").mkdir()
    store = TieredStore(
        tmp_path,
        wal_dir=tmp_path / "wal",
        retention=RetentionConfig.from_mapping({"raw": "2d"}),
        maintenance_interval_ns=MIN,
    )
    try:
        later = END + 25 * HOUR
        store.tick(later)
        store.tick(later + MIN)
        store.wait(60)
        assert store._pool is not None  # the work went to the flush process
        assert len([p for p in day.iterdir() if p.is_dir()]) == 1
        assert sorted(p.name for p in (tmp_path / "blocks" / "raw").iterdir()) == ["2025-11-19"]
        # From 23 h before END: the counters' previous points (an hour back) are in the kept day.
        q = RangeQuery("bench.frames", END - 23 * HOUR, END, 15 * S, agg="increase", group_by=("stage",))
        assert_same_answers(answers(store, q, now=later), answers(reference, q))
    finally:
        store.close()


def test_rollup_days_are_merged_while_they_fill_and_answers_stay_the_same(tmp_path):
    reference, tiered = loaded(tmp_path, hours=6, flush_every=2, maintenance_interval_ns=MIN)
    tiered.flush()
    minute_day = tmp_path / "blocks" / "1m" / "2025-11-19"
    assert len(list(minute_day.iterdir())) >= 4
    tiered.tick(END)
    tiered.tick(END + MIN)  # the same day: raw blocks wait, rollup files do not
    assert len(list(minute_day.iterdir())) == 1
    assert len([p for p in (tmp_path / "blocks" / "raw" / "2025-11-19").iterdir() if p.is_dir()]) > 1
    for metric, agg, group_by in QUERIES:
        q = RangeQuery(metric, END - 6 * HOUR, END, 5 * MIN, agg=agg, group_by=group_by)
        assert_same_answers(answers(tiered, q), answers(reference, q))
