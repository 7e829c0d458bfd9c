"""The store's query interface: metric ranges, span and trace search, log search, exemplars.

:class:`QueryEngine` reads a :class:`~otel_audio.store.memory.Snapshot` of the store (immutable
Arrow tables) so queries run concurrently with ingest. DuckDB filters, joins and sorts the rows
(a cursor per query); numpy does the time-series maths; :mod:`otel_audio.store.histograms` does
the histogram maths. Every documented behaviour is specified in ``docs/query.md``.

Example::

    engine = QueryEngine(store)
    engine.query_range(RangeQuery("audio.processing.duration", start_ns, end_ns, step_ns=60 * 10**9,
                                  agg="p95", group_by=("service",),
                                  matchers=(Matcher("stage", "=~", "denoise|dereverb"),)))
    engine.search_traces(SpanQuery(service="enhancer", min_duration_ns=500 * 10**6, status_code=2))

Every invalid request raises :class:`QueryError` (a ``ValueError``) saying what was wrong and
what is accepted.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import EXEMPLARS_SCHEMA, LOGS_SCHEMA, POINTS_SCHEMA, SPANS_SCHEMA
from otel_audio.store.errors import QueryError
from otel_audio.store.memory import MemoryStore, Snapshot
from otel_audio.store.trace_blocks import read_trace

if TYPE_CHECKING:
    from otel_audio.store.tiered import TieredStore
    from otel_audio.store.view import StoreView
from otel_audio.store.series_math import BucketContext, compute

MAX_BUCKETS = 11_000  # as Prometheus' query_range
MAX_LIMIT = 10_000  # rows/traces returned by a search
MAX_REGEX_LENGTH = 1_000
MAX_SERIES_RESULT = 10_000  # series listed by list_series, groups answered by query_range
MAX_RESULT_POINTS = 2_000_000  # values of a query_range answer: groups x buckets
MAX_TRACE_SPANS = 10_000  # spans of one trace read at once (limits.max_spans_per_trace)
DEFAULT_LOOKBACK_NS = 3600 * 10**9  # how far before start a counter's previous point is looked for

AGGS = ("avg", "min", "max", "sum", "count", "last", "rate", "increase")
PERCENTILE = re.compile(r"p(100|\d{1,2}(?:\.\d+)?)")
_ALLOWED = {  # agg names per metric type; "pNN" stands for every percentile
    "gauge": ("avg", "min", "max", "sum", "count", "last", "pNN"),
    "sum": (*AGGS, "pNN"),
    "histogram": ("count", "sum", "avg", "min", "max", "rate", "increase", "pNN"),
    "exponential_histogram": ("count", "sum", "avg", "min", "max", "rate", "increase", "pNN"),
    "summary": ("count", "sum", "avg", "rate", "increase", "pNN"),
}
MATCH_OPS = ("=", "!=", "=~", "!~")
SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21}
STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}
# Constructs Python's re has and RE2 lacks (backreferences, lookaround): they can take exponential time.
_NOT_RE2 = re.compile(r"\(\?(?:[=!]|<[=!]|P=|\()|\\[1-9]")


@dataclass(frozen=True)
class Matcher:
    """A label condition: ``key op value``; op is ``=``, ``!=``, ``=~`` or ``!~`` (full-match regex)."""

    key: str
    op: str
    value: str


@dataclass(frozen=True)
class RangeQuery:
    """One metric over time: buckets ``[start + k*step, start + (k+1)*step)``, aggregated per group."""

    metric: str
    start_ns: int
    end_ns: int
    step_ns: int
    agg: str = "avg"  # one of AGGS or a percentile pNN / pNN.N
    group_by: tuple[str, ...] = ()
    matchers: tuple[Matcher, ...] = ()


@dataclass
class SeriesResult:
    """One group's values; NaN where its bucket had no data."""

    labels: dict[str, str]
    timestamps_ns: np.ndarray  # int64, bucket starts
    values: np.ndarray  # float64


@dataclass(frozen=True)
class SpanQuery:
    """Span/trace search; every given field must match (attributes: span OR resource attribute)."""

    service: str | None = None
    operation: str | None = None  # span name
    start_ns: int | None = None  # span start >= start_ns
    end_ns: int | None = None  # span start < end_ns
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    status_code: int | str | None = None  # 0/1/2 or "unset"/"ok"/"error"
    attributes: Mapping[str, str] = field(default_factory=dict)
    trace_id: str | None = None
    limit: int = 100


@dataclass(frozen=True)
class LogQuery:
    """Log search, newest first; every given field must match."""

    start_ns: int | None = None
    end_ns: int | None = None
    min_severity: int | str | None = None  # 1-24 or TRACE/DEBUG/INFO/WARN/ERROR/FATAL
    service: str | None = None
    text: str | None = None  # case-insensitive substring of the body
    trace_id: str | None = None
    span_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)  # log OR resource attribute
    limit: int = 100


class QueryEngine:
    """Answers queries over a store's snapshot; safe to call from many threads at once.

    Args:
        store: anything with ``view() -> StoreView``: the block store, or a plain in-memory store.
        lookback_ns: how far before a range's start a cumulative series' previous point is sought.
        max_trace_spans: most spans :meth:`get_trace` returns (the first by start time).
    """

    def __init__(
        self,
        store: MemoryStore | TieredStore,
        *,
        lookback_ns: int = DEFAULT_LOOKBACK_NS,
        clock: Callable[[], int] = time.time_ns,
        max_trace_spans: int = MAX_TRACE_SPANS,
    ) -> None:
        self._store = store
        self.max_trace_spans = max_trace_spans
        self._lookback_ns = lookback_ns
        self._clock = clock  # "now" for choosing a tier; injectable for tests
        self._db = duckdb.connect()
        self._db_lock = threading.Lock()

    @contextmanager
    def _duck(self, **tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._db_lock:
            cur = self._db.cursor()
        try:
            for name, table in tables.items():
                cur.register(name, table)
            yield cur
        finally:
            cur.close()

    # -- metrics metadata ----------------------------------------------------------------------

    def list_metrics(self) -> list[dict[str, Any]]:
        """One dict per metric name (first-seen series' metadata): name, type, unit, description,
        temporality, monotonic, series (count)."""
        series = self._store.view().head.series
        if series.num_rows == 0:
            return []
        cols = ["type", "unit", "description", "temporality", "monotonic"]
        grouped = series.group_by("metric", use_threads=False).aggregate(
            [(c, "first") for c in cols] + [("series_id", "count")]
        )
        rows = grouped.to_pylist()
        out = [
            {"name": r["metric"], **{c: r[f"{c}_first"] for c in cols}, "series": r["series_id_count"]}
            for r in rows
        ]
        return sorted(out, key=lambda r: r["name"])

    def list_series(self, metric: str, matchers: Sequence[Matcher] = ()) -> list[dict[str, Any]]:
        """The series of ``metric`` that match: series_id, service, resource, scope, attributes."""
        rows = _select(_metric_rows(self._store.view().head, metric), _compile(matchers))
        if len(rows) > MAX_SERIES_RESULT:
            raise QueryError(
                f"{len(rows)} series of {metric!r} match; at most {MAX_SERIES_RESULT} are listed: "
                "narrow them with match"
            )
        return [
            {
                "series_id": r["series_id"],
                "service": r["service"],
                "resource": json.loads(r["resource"] or "{}"),
                "scope": r["scope"],
                "attributes": json.loads(r["attributes"] or "{}"),
            }
            for r in rows
        ]

    def exemplars(
        self, metric: str, start_ns: int, end_ns: int, matchers: Sequence[Matcher] = ()
    ) -> pa.Table:
        """Exemplars (EXEMPLARS_SCHEMA) of matching series, time in [start_ns, end_ns), oldest first."""
        if end_ns < start_ns:
            raise QueryError(f"end_ns {end_ns} is before start_ns {start_ns}")
        view = self._store.view()
        rows = _select(_metric_rows(view.head, metric), _compile(matchers))
        ids = np.array([r["series_id"] for r in rows], np.uint64)
        sel = pa.table({"series_id": pa.array(ids, pa.uint64())})
        exemplars = _retrying(lambda v: v.exemplars(ids, start_ns, end_ns), view, self._store)
        with self._duck(exemplars=exemplars, sel=sel) as cur:
            table = cur.sql(
                "SELECT e.* FROM exemplars e SEMI JOIN sel s ON e.series_id = s.series_id "
                "WHERE e.time_unix_nano >= $lo AND e.time_unix_nano < $hi ORDER BY e.time_unix_nano",
                params={"lo": start_ns, "hi": end_ns},
            ).to_arrow_table()
        return table.cast(EXEMPLARS_SCHEMA)

    # -- metric ranges -------------------------------------------------------------------------

    def query_range(self, q: RangeQuery) -> list[SeriesResult]:
        """Aggregate ``q.metric`` per group and time bucket; groups without any data are left out."""
        n = bucket_count(q)
        agg, quantile = parse_agg(q.agg)
        matchers = _compile(q.matchers)
        view = self._store.view()
        rows = _metric_rows(view.head, q.metric)
        kind = rows[0]["type"]
        _check_agg(q.metric, rows[0], agg)
        rows = _select(rows, matchers)
        if not rows:
            return []
        group_of: dict[tuple[str, ...], int] = {}
        gidx = np.array(
            [group_of.setdefault(tuple(_label(r, k) for k in q.group_by), len(group_of)) for r in rows],
            dtype=np.int64,
        )
        groups = list(group_of)
        if len(groups) > MAX_SERIES_RESULT or len(groups) * n > MAX_RESULT_POINTS:
            raise QueryError(
                f"{len(groups)} series x {n} buckets requested; at most {MAX_SERIES_RESULT} series, "
                f"{MAX_RESULT_POINTS} values: narrow with match, group by fewer attributes, or a larger step"
            )
        labels = [dict(zip(q.group_by, g, strict=True)) for g in groups]
        ids = np.array([r["series_id"] for r in rows], np.uint64)
        split = n  # buckets [0, split) from rollups, [split, n) from raw points
        tier = None
        if view.has_blocks:
            from otel_audio.store import tiers  # tiers builds on this module

            tier = tiers.choose_tier(q.start_ns, q.end_ns, q.step_ns, self._clock(), view.retention)
            while tier.window_ns and (q.start_ns % tier.window_ns or q.step_ns % tier.window_ns):
                tier = tiers.TIERS[tiers.TIERS.index(tier) - 1]  # windows must tile the buckets
            if tier.window_ns == 0 or not tiers.answerable_from_rollups(kind, q.agg):
                split = 0
            else:
                oldest = view.head_min_time(ids)
                if oldest is not None:
                    split = int(np.clip((oldest - q.start_ns) // q.step_ns, 0, n))
        else:
            split = 0
        values = np.full((len(groups), n), np.nan)
        if split < n:
            raw_q = replace(q, start_ns=q.start_ns + split * q.step_ns)
            values[:, split:] = _retrying(
                lambda v: self._raw_values(v, rows, kind, agg, quantile, raw_q, n - split, gidx, labels),
                view,
                self._store,
            )
        if split > 0:
            rolled_q = replace(q, end_ns=q.start_ns + split * q.step_ns)
            values[:, :split] = _retrying(
                lambda v: tiers.values_from_rollups(v, tier, ids, gidx, len(groups), rolled_q, kind),
                view,
                self._store,
            )
        stamps = q.start_ns + np.arange(n, dtype=np.int64) * q.step_ns
        out = [
            SeriesResult(labels=labels[g], timestamps_ns=stamps.copy(), values=values[g])
            for g in sorted(range(len(groups)), key=groups.__getitem__)
            if not np.isnan(values[g]).all()
        ]
        return out

    def _raw_values(self, view: StoreView, rows, kind, agg, quantile, q: RangeQuery, n, gidx, labels):
        """Buckets of ``q`` from raw points: a (groups x n) matrix."""
        delta = rows[0]["temporality"] == "delta"
        needs_prev = not delta and (agg in ("rate", "increase") or (kind != "gauge" and kind != "sum"))
        pts = self._fetch(view, rows, kind, agg, q, n, needs_prev)
        ctx = BucketContext(q, n, len(labels), gidx, pts, delta, labels)
        return compute(ctx, kind, agg, quantile, bool(rows[0]["monotonic"]))

    def _fetch(self, view: StoreView, rows, kind, agg, q: RangeQuery, n: int, needs_prev: bool) -> pa.Table:
        cols = ["p.start_time_unix_nano AS st", "p.value AS v"]
        if kind in ("histogram", "exponential_histogram", "summary"):
            cols += ["p.count AS c", "p.min AS mn", "p.max AS mx"]
        if agg == "pNN":
            cols += {
                "histogram": ["hash(p.bounds) AS bh", "p.bounds", "p.bucket_counts"],
                "exponential_histogram": [
                    "p.exp_scale",
                    "p.exp_zero_count",
                    "p.exp_positive_offset",
                    "p.exp_positive_counts",
                    "p.exp_negative_offset",
                    "p.exp_negative_counts",
                ],
                "summary": ["p.quantiles", "p.quantile_values"],
            }.get(kind, [])
        body = (
            f"SELECT s.sidx, p.time_unix_nano AS t, {', '.join(cols)} FROM points p "
            "JOIN sel s ON p.series_id = s.series_id WHERE coalesce(p.flags, 0) & 1 = 0 AND "
        )
        sql = f"({body} p.time_unix_nano >= $lo AND p.time_unix_nano < $hi)"
        if needs_prev:
            sql += (
                f" UNION ALL ({body} p.time_unix_nano >= $lb AND p.time_unix_nano < $lo "
                "QUALIFY row_number() OVER (PARTITION BY p.series_id ORDER BY p.time_unix_nano DESC) = 1)"
            )
        sel = pa.table(
            {
                "series_id": pa.array([r["series_id"] for r in rows], pa.uint64()),
                "sidx": pa.array(np.arange(len(rows), dtype=np.int64)),
            }
        )
        params = {"lo": q.start_ns, "hi": q.start_ns + n * q.step_ns}
        if needs_prev:
            params["lb"] = q.start_ns - self._lookback_ns
        ids = sel.column("series_id").to_numpy()
        needed = {"start_time_unix_nano", "value", "flags", "count", "min", "max"}
        needed.update(name for name in POINTS_SCHEMA.names if f"p.{name}" in " ".join(cols))
        points = view.points(ids, params.get("lb", params["lo"]), params["hi"], sorted(needed))
        with self._duck(points=points, sel=sel) as cur:
            return cur.sql(sql + " ORDER BY sidx, t", params=params).to_arrow_table()

    # -- spans ---------------------------------------------------------------------------------

    def search_spans(self, q: SpanQuery) -> pa.Table:
        """Matching spans (SPANS_SCHEMA), newest start first, at most ``q.limit``."""
        where, params = _span_where(q)
        sql = (
            f"SELECT * FROM spans WHERE {where} "
            f"ORDER BY start_time_unix_nano DESC, span_id LIMIT {_limit(q.limit)}"
        )
        return self._over_spans(q, sql, params).cast(SPANS_SCHEMA)

    def search_traces(self, q: SpanQuery) -> list[str]:
        """Ids of traces with at least one matching span, most recent matching span first."""
        where, params = _span_where(q)
        sql = (
            f"SELECT trace_id FROM spans WHERE {where} GROUP BY trace_id "
            f"ORDER BY max(start_time_unix_nano) DESC, trace_id LIMIT {_limit(q.limit)}"
        )
        return self._over_spans(q, sql, params).column("trace_id").to_pylist()

    def get_trace(self, trace_id: str) -> pa.Table:
        """The spans of the trace (SPANS_SCHEMA), by start time; empty when the trace is unknown.

        At most ``max_trace_spans``, the first by start time; :meth:`get_trace_counted` also
        says how many there were, so an answer can say the trace was cut.
        """
        return self.get_trace_counted(trace_id)[0]

    def get_trace_counted(self, trace_id: str) -> tuple[pa.Table, int]:
        """:meth:`get_trace` and the number of spans the trace has (more than returned when cut)."""
        trace_id = _hex_id(trace_id, 32, "trace_id")

        def read(view: StoreView) -> pa.Table:
            head = view.head.spans
            parts = [head.filter(pc.equal(head.column("trace_id"), trace_id))]
            if view.span_files():
                parts.append(read_trace(view.span_files(), trace_id))
            table = pa.concat_tables([p.cast(SPANS_SCHEMA) for p in parts])
            return table.sort_by([("start_time_unix_nano", "ascending"), ("span_id", "ascending")])

        table = _retrying(read, self._store.view(), self._store)
        return table.slice(0, self.max_trace_spans), table.num_rows

    def _over_spans(self, q: SpanQuery, sql: str, params: dict[str, Any]) -> pa.Table:
        """Run ``sql`` with ``spans`` standing for the head's spans and the span blocks of q's range."""

        def run(view: StoreView) -> pa.Table:
            files = view.span_files(q.start_ns, q.end_ns)
            with self._duck(head=view.head.spans) as cur:
                cte = _with_blocks("spans", "head", files, params)
                return cur.sql(cte + sql, params=params).to_arrow_table()

        return _retrying(run, self._store.view(), self._store)

    # -- logs ----------------------------------------------------------------------------------

    def search_logs(self, q: LogQuery) -> pa.Table:
        """Matching log records (LOGS_SCHEMA), newest first, at most ``q.limit``."""
        where, params = _time_where("time_unix_nano", q.start_ns, q.end_ns)
        if q.min_severity is not None:
            where.append("severity_number >= $sev")
            params["sev"] = _severity(q.min_severity)
        for name, value in (("service", q.service), ("trace_id", q.trace_id), ("span_id", q.span_id)):
            if value is not None:
                if name != "service":
                    value = _hex_id(value, 32 if name == "trace_id" else 16, name)
                where.append(f"{name} = ${name}")
                params[name] = value
        if q.text:
            where.append("strpos(lower(body), lower($text)) > 0")
            params["text"] = q.text
        _attribute_where(q.attributes, where, params)
        sql = (
            f"SELECT * FROM logs WHERE {' AND '.join(where) or 'true'} "
            f"ORDER BY time_unix_nano DESC LIMIT {_limit(q.limit)}"
        )

        def run(view: StoreView) -> pa.Table:
            files = view.log_files(q.start_ns, q.end_ns)
            with self._duck(head=view.head.logs) as cur:
                cte = _with_blocks("logs", "head", files, params)
                return cur.sql(cte + sql, params=params).to_arrow_table()

        return _retrying(run, self._store.view(), self._store).cast(LOGS_SCHEMA)


def _with_blocks(name: str, head: str, files: Sequence[Any], params: dict[str, Any]) -> str:
    """A WITH clause naming the head table plus the block files ``name`` (files go in $files)."""
    if not files:
        return f"WITH {name} AS (SELECT * FROM {head}) "
    params["files"] = [str(f) for f in files]
    return f"WITH {name} AS (SELECT * FROM {head} UNION ALL BY NAME SELECT * FROM read_parquet($files)) "


def _retrying(read: Callable[[StoreView], Any], view: StoreView, store: Any) -> Any:
    """``read(view)``, once more on a fresh view when a block vanished (compaction, retention)."""
    try:
        return read(view)
    except (FileNotFoundError, duckdb.IOException):
        from otel_audio.store.view import settled_view  # view imports tiers, which imports this

        return read(settled_view(store))


# -- request validation ----------------------------------------------------------------------------


def bucket_count(q: RangeQuery) -> int:
    """How many step buckets a range query has; QueryError for a bad step, range or too many."""
    if q.step_ns <= 0:
        raise QueryError(f"step_ns must be > 0, got {q.step_ns}")
    if q.end_ns < q.start_ns:
        raise QueryError(f"end_ns {q.end_ns} is before start_ns {q.start_ns}")
    n = max(1, -(-(q.end_ns - q.start_ns) // q.step_ns))
    if n > MAX_BUCKETS:
        least = -(-(q.end_ns - q.start_ns) // MAX_BUCKETS)
        raise QueryError(
            f"{n} buckets requested; at most {MAX_BUCKETS}: use step_ns >= {least} for this range"
        )
    return n


def parse_agg(agg: str) -> tuple[str, float | None]:
    """(aggregation, quantile): ``("pNN", 0.95)`` for ``p95``, ``(agg, None)`` for the others."""
    if agg in AGGS:
        return agg, None
    m = PERCENTILE.fullmatch(agg)
    if m and float(m.group(1)) <= 100:
        return "pNN", float(m.group(1)) / 100
    raise QueryError(
        f"unknown agg {agg!r}; accepted: {', '.join(AGGS)}, or a percentile pNN/pNN.N (p50, p99.9)"
    )


def _check_agg(metric: str, row: dict[str, Any], agg: str) -> None:
    allowed = _ALLOWED.get(row["type"], ())
    if agg not in allowed:
        shown = ", ".join(a if a != "pNN" else "percentiles pNN" for a in allowed)
        raise QueryError(f"agg {agg!r} is not defined for {row['type']} {metric!r}; accepted: {shown}")


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def _hex_id(value: str, length: int, name: str) -> str:
    value = value.lower()
    if len(value) != length or any(c not in "0123456789abcdef" for c in value):
        raise QueryError(f"{name} must be {length} hex characters, got {value!r}")
    return value


def _severity(value: int | str) -> int:
    if isinstance(value, str):
        if value.upper() in SEVERITY:
            return SEVERITY[value.upper()]
        raise QueryError(f"unknown severity {value!r}; accepted: 1-24 or {', '.join(SEVERITY)}")
    if not 1 <= value <= 24:
        raise QueryError(f"min_severity must be 1-24, got {value}")
    return value


def _time_where(column: str, start_ns: int | None, end_ns: int | None) -> tuple[list[str], dict[str, Any]]:
    if start_ns is not None and end_ns is not None and end_ns < start_ns:
        raise QueryError(f"end_ns {end_ns} is before start_ns {start_ns}")
    where, params = [], {}
    if start_ns is not None:
        where.append(f"{column} >= $start")
        params["start"] = start_ns
    if end_ns is not None:
        where.append(f"{column} < $end")
        params["end"] = end_ns
    return where, params


def _attribute_where(attributes: Mapping[str, str], where: list[str], params: dict[str, Any]) -> None:
    for i, (key, value) in enumerate(sorted(attributes.items())):
        path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
        where.append(
            f"(json_extract_string(attributes, $k{i}) = $v{i} "
            f"OR json_extract_string(resource, $k{i}) = $v{i})"
        )
        params[f"k{i}"], params[f"v{i}"] = path, str(value)


def _span_where(q: SpanQuery) -> tuple[str, dict[str, Any]]:
    where, params = _time_where("start_time_unix_nano", q.start_ns, q.end_ns)
    checks = (
        ("service", "service = $service", q.service),
        ("operation", "name = $operation", q.operation),
        ("min_duration", "duration_ns >= $min_duration", q.min_duration_ns),
        ("max_duration", "duration_ns <= $max_duration", q.max_duration_ns),
    )
    for name, clause, value in checks:
        if value is not None:
            where.append(clause)
            params[name] = value
    if q.status_code is not None:
        code = STATUS.get(q.status_code.upper()) if isinstance(q.status_code, str) else q.status_code
        if code not in (0, 1, 2):
            raise QueryError(f"status_code must be 0/1/2 or unset/ok/error, got {q.status_code!r}")
        where.append("status_code = $status")
        params["status"] = code
    if q.trace_id is not None:
        where.append("trace_id = $trace_id")
        params["trace_id"] = _hex_id(q.trace_id, 32, "trace_id")
    _attribute_where(q.attributes, where, params)
    return " AND ".join(where) or "true", params


# -- series selection ------------------------------------------------------------------------------


def _metric_rows(snap: Snapshot, metric: str) -> list[dict[str, Any]]:
    """The metric's series rows of its first-seen type, in first-seen order."""
    rows = snap.series.filter(pc.equal(snap.series.column("metric"), metric)).to_pylist()
    if not rows:
        known = sorted(set(snap.series.column("metric").to_pylist()))
        close = difflib.get_close_matches(metric, known, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        shown = ", ".join(known[:20]) + (f", ... ({len(known) - 20} more)" if len(known) > 20 else "")
        raise QueryError(f"unknown metric {metric!r}{hint}; known: {shown or '(none yet)'}")
    return [r for r in rows if r["type"] == rows[0]["type"]]


def _label_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _label(row: dict[str, Any], key: str) -> str:
    """A label's value: point attribute, else resource attribute, else (``service``) service.name."""
    if "_attrs" not in row:
        row["_attrs"] = json.loads(row["attributes"] or "{}")
        row["_res"] = json.loads(row["resource"] or "{}")
    for attrs in (row["_attrs"], row["_res"]):
        if key in attrs:
            return _label_str(attrs[key])
    if key == "service":
        return row["service"] or ""
    return ""


def _compile(matchers: Sequence[Matcher]) -> list[Callable[[dict[str, Any]], bool]]:
    out = []
    for m in matchers:
        if m.op in ("=", "!="):
            want = m.op == "="
            out.append(lambda r, m=m, want=want: (_label(r, m.key) == m.value) is want)
        elif m.op in ("=~", "!~"):
            if len(m.value) > MAX_REGEX_LENGTH:
                raise QueryError(
                    f"regex for {m.key!r} is {len(m.value)} characters; at most {MAX_REGEX_LENGTH}"
                )
            if _NOT_RE2.search(m.value):
                raise QueryError(
                    f"regex {m.value!r} for {m.key!r} uses lookaround or backreferences (RE2 syntax only)"
                )
            try:
                pattern = re.compile(m.value)
            except re.error as exc:
                raise QueryError(f"bad regex {m.value!r} for {m.key!r}: {exc}") from exc
            want = m.op == "=~"
            out.append(
                lambda r, m=m, p=pattern, want=want: (p.fullmatch(_label(r, m.key)) is not None) is want
            )
        else:
            raise QueryError(f"unknown matcher op {m.op!r} for {m.key!r}; accepted: {', '.join(MATCH_OPS)}")
    return out


def _select(
    rows: list[dict[str, Any]], matchers: list[Callable[[dict[str, Any]], bool]]
) -> list[dict[str, Any]]:
    return [r for r in rows if all(match(r) for match in matchers)]
