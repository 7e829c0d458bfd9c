"""The ``slo`` stage of the receiver's chain: SLIs, error budgets and burn rates as series, burn-rate alerts.

Options (``docs/slo.md``)::

    slos: [...]                  # SLO maps (processors/slo/spec.py)
    defaults: true               # also the four default SLOs (DEFAULT_SLOS)
    evaluation_interval: 30s
    burn_alerts: true            # multiwindow burn-rate rules for the alerting stage

Every ``evaluation_interval`` ``tick(now)`` reads the store (``QueryEngine`` plus raw points) and
emits gauges labelled ``slo`` (and ``service`` when the SLO has one): ``slo.sli{window=<period>}``,
``slo.error_ratio{window=W}`` and ``slo.burn_rate{window=W}`` for the scaled windows of
:mod:`otel_audio.processors.slo.alerts` (the alerts' short windows also as
``slo.burn_rate.short{short_window=W}``, which their rules read),
``slo.error_budget.remaining`` / ``.consumed`` (ratios), ``slo.error_budget.remaining_events``,
``slo.time_to_exhaustion_seconds`` and ``slo.objective``.
The emitted batch flows to the stages after this one: put ``slo`` before ``store`` (so the series
are stored) and before ``alerting`` (so the rules see them).

Span SLIs count spans as they pass (weighted by adjusted count) into two cumulative counters per
SLO, ``slo.span_events.good`` and ``slo.span_events.total``, emitted on each evaluation and read
back like any counter SLI. SLOs added at run time (``add``) are kept in
``<data_dir>/slo/api-slos.json`` and survive a restart.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from otel_audio.processors.base import (
    EXEMPLARS_SCHEMA,
    POINTS_SCHEMA,
    SERIES_SCHEMA,
    Batch,
    MetricBatch,
    MetricType,
    SpanBatch,
    series_row,
)
from otel_audio.processors.slo import alerts, compute, read
from otel_audio.processors.slo.spans import SPAN_COLUMNS, span_events
from otel_audio.processors.slo.spec import (
    DEFAULT_SLOS,
    SLOSpec,
    parse_selector,
    slo_from_dict,
    slos_from_list,
)
from otel_audio.processors.units import duration_ns
from otel_audio.store.durable import fsync_path
from otel_audio.store.query import QueryEngine, RangeQuery

_OPTIONS = ("slos", "defaults", "evaluation_interval", "burn_alerts")
_SCOPE = "otel_audio.slo"
SLICES_PER_QUERY = 10_000  # below the query engine's 11,000-bucket limit
SPAN_GOOD, SPAN_TOTAL = "slo.span_events.good", "slo.span_events.total"


class SLOs:
    """The chain member (see the module docstring).

    Args:
        options: the processor's options.
        store: what the store processor holds (anything with ``view()``).
        data_dir: runtime SLOs live in ``<data_dir>/slo/``.
        shared: the chain's shared objects; ``shared["alerting"]`` receives the burn-rate rules.
    """

    name = "slo"

    def __init__(self, options: dict[str, Any] | None, store: Any, data_dir: str | Path,
                 shared: dict[str, Any] | None = None) -> None:  # fmt: skip
        options = dict(options or {})
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"slo option {unknown[0]}: expected only the keys {', '.join(_OPTIONS)}")
        self.store = store
        self.engine = QueryEngine(store)
        self.dir = Path(data_dir) / "slo"
        self._shared = shared if shared is not None else {}
        self._lock = threading.RLock()
        self.interval_ns = duration_ns(str(options.get("evaluation_interval", "30s")), "evaluation_interval")
        if self.interval_ns <= 0:
            raise ValueError("slo option evaluation_interval: expected a positive duration")
        self.burn_alerts = bool(options.get("burn_alerts", True))
        specs = slos_from_list(options.get("slos", []), "slos")
        if options.get("defaults", True):
            taken = {s.name for s in specs}
            specs += [s for s in slos_from_list(DEFAULT_SLOS, "defaults", "default") if s.name not in taken]
        self._specs: dict[str, SLOSpec] = {s.name: s for s in specs}
        for spec in self._load():
            if spec.name not in self._specs:
                self._specs[spec.name] = spec
        self._span_counts: dict[str, list[float]] = {}  # slo -> [good, total], cumulative
        self._started_ns: int | None = None
        self._last_eval: int | None = None
        self._status: dict[str, dict[str, Any]] = {}
        self._emit: Callable[[Batch], None] | None = None

    # -- chain ---------------------------------------------------------------------------------

    def bind_emit(self, emit: Callable[[Batch], None]) -> None:
        self._emit = emit

    def process(self, batch: Batch) -> None:
        if not isinstance(batch, SpanBatch) or batch.spans.num_rows == 0:
            return
        with self._lock:
            span_specs = [s for s in self._specs.values() if s.sli.kind == "spans"]
            if not span_specs:
                return
            rows = batch.spans.select(list(SPAN_COLUMNS)).to_pylist()
            for spec in span_specs:
                counts = self._span_counts.setdefault(spec.name, [0.0, 0.0])
                good, total = span_events(spec, rows)
                counts[0] += good
                counts[1] += total

    def tick(self, now_unix_nano: int) -> None:
        with self._lock:
            since = None if self._last_eval is None else now_unix_nano - self._last_eval
            if since is not None and 0 <= since < self.interval_ns:  # a clock set back evaluates at once
                return
            self._last_eval = now_unix_nano
            self.evaluate(now_unix_nano)

    def close(self) -> None:
        pass

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, now: int) -> None:
        """Compute every SLO at ``now`` and emit the series (the ticker calls this)."""
        with self._lock:
            self._emit_span_counters(now)
            series: dict[int, dict[str, Any]] = {}
            points: list[dict[str, Any]] = []
            for spec in list(self._specs.values()):
                status = self.status_at(spec, now)
                self._status[spec.name] = status
                for metric, labels, value in _gauges(spec, status):
                    if value is None or not math.isfinite(value):
                        continue
                    row = _series(metric, spec, labels)
                    series.setdefault(row["series_id"], row)
                    points.append(_point(row, now, now, float(value)))
            self._send(series, points)

    def status_at(self, spec: SLOSpec, now: int) -> dict[str, Any]:
        """SLI, budget, error ratios and burn rates of one SLO at ``now`` (no emission)."""
        start, period_ns = _period(spec, now)
        scaled = alerts.windows(spec)
        if spec.budgeting == "timeslices":
            verdicts, slice_starts = self._slices(spec, start, now)
            good, total = float(np.nansum(verdicts)), float(np.sum(~np.isnan(verdicts)))
            ratios = {}
            for label, w in scaled:
                inside = ~np.isnan(verdicts) & (slice_starts >= now - w)
                n = inside.sum()
                ratios[label] = float((1 - verdicts[inside]).sum() / n) if n else math.nan
        else:
            good_s, bad_s, total_s = self._series(spec, start, now)
            total = read.window_events(total_s, start, now)
            if bad_s is not None:
                bad = read.window_events(bad_s, start, now)
                good = total - (0.0 if math.isnan(bad) else bad)
                ratios = {label: compute.window_ratio(bad_s, total_s, now - w, now) for label, w in scaled}
            else:
                g = read.window_events(good_s, start, now)
                good = 0.0 if math.isnan(g) else g
                ratios = {
                    label: 1 - compute.window_ratio(good_s, total_s, now - w, now) for label, w in scaled
                }
            total = 0.0 if math.isnan(total) else total
        burns = {label: compute.burn_rate(r, spec.objective) for label, r in ratios.items()}
        current = burns[scaled[2][0]]  # the 1h window (scaled): the fast page's long window
        budget = compute.calculate_error_budget(
            spec.objective, good, total, period_s=period_ns / 1e9,
            current_burn_rate=None if math.isnan(current) else current,
        )  # fmt: skip
        return {
            "name": spec.name,
            "service": spec.service,
            "objective": spec.objective,
            "window": spec.window_label,
            "budgeting": spec.budgeting,
            "at_ns": now,
            "window_start_ns": start,
            "good": good,
            "total": total,
            "sli": budget.sli,
            "budget": budget,
            "error_ratios": ratios,
            "burn_rates": burns,
        }

    def _series(self, spec: SLOSpec, start: int, end: int):
        sli = spec.sli
        if sli.kind == "ratio":
            total = read.samples(self.engine, self.store, sli.total, spec.service, start, end)
            which = sli.good if sli.good is not None else sli.bad
            part = read.samples(self.engine, self.store, which, spec.service, start, end)
            return (part, None, total) if sli.good is not None else (None, part, total)
        if sli.kind == "histogram":
            total = read.samples(self.engine, self.store, sli.histogram, spec.service, start, end)
            good = read.samples(self.engine, self.store, sli.histogram, spec.service, start, end, le=sli.le)
            return good, None, total
        selector = f'{{slo="{spec.name}"}}'
        good = read.samples(
            self.engine, self.store, parse_selector(SPAN_GOOD + selector, "spans"), "", start, end
        )
        total = read.samples(
            self.engine, self.store, parse_selector(SPAN_TOTAL + selector, "spans"), "", start, end
        )
        return good, None, total

    def _slices(self, spec: SLOSpec, start: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        """Verdict per complete timeslice in the period (1 good, 0 bad, NaN no data) and slice starts."""
        ts = spec.timeslice_ns
        first = -(-start // ts) * ts
        n = (now - first) // ts
        if n <= 0:
            return np.array([]), np.array([], np.int64)
        end = first + n * ts
        starts = first + np.arange(n, dtype=np.int64) * ts
        sli = spec.sli
        if sli.kind == "threshold":
            values = np.full(n, np.nan)
            # a month of 1-minute slices is more buckets than one query may ask for: in parts
            for k in range(0, n, SLICES_PER_QUERY):
                m = min(SLICES_PER_QUERY, n - k)
                lo = first + k * ts
                q = RangeQuery(
                    sli.metric.metric,
                    lo,
                    lo + m * ts,
                    ts,
                    sli.agg,
                    (),
                    read.matchers(sli.metric, spec.service),
                )
                try:
                    results = self.engine.query_range(q)
                except ValueError:  # the metric has no data yet
                    continue
                if results:
                    values[k : k + m] = results[0].values[:m]
            return compute.threshold_verdicts(values, sli.op, sli.value), starts
        good_s, bad_s, total_s = self._series(spec, first - ts, end)
        total = read.step_events(total_s, first, end, ts)
        if bad_s is not None:
            good = total - read.step_events(bad_s, first, end, ts)
        else:
            good = read.step_events(good_s, first, end, ts)
        return compute.timeslice_verdicts(good, total, spec.timeslice_target), starts

    # -- runtime definitions ----------------------------------------------------------------------

    def add(self, item: dict[str, Any]) -> SLOSpec:
        """Define an SLO at run time (validated; persisted; its burn-rate rules go to alerting).

        Raises:
            ValueError: invalid definition (naming the field) or the name is taken.
        """
        spec = slo_from_dict(item, "slo", source="api")
        with self._lock:
            if spec.name in self._specs:
                raise ValueError(f"slo.name: an SLO named {spec.name!r} already exists")
            self._specs[spec.name] = spec
            self._save()
            self._sync_alerting()
        return spec

    def remove(self, name: str) -> None:
        """Delete a runtime SLO. Raises KeyError (unknown) or PermissionError (config/default)."""
        with self._lock:
            spec = self._specs.get(name)
            if spec is None:
                raise KeyError(f"SLO {name!r} not found")
            if spec.source != "api":
                raise PermissionError(f"SLO {name!r} comes from the {spec.source} SLOs; change the config")
            del self._specs[name]
            self._status.pop(name, None)
            self._save()
            self._sync_alerting()

    def get(self, name: str) -> SLOSpec:
        with self._lock:
            if name not in self._specs:
                raise KeyError(f"SLO {name!r} not found")
            return self._specs[name]

    def list(self) -> list[SLOSpec]:
        with self._lock:
            return list(self._specs.values())

    def status(self, name: str, now: int) -> dict[str, Any]:
        """The SLO's status computed at ``now``."""
        return self.status_at(self.get(name), now)

    def counts(self, name: str, start_ns: int, end_ns: int, step_ns: int) -> tuple[np.ndarray, ...]:
        """``(t, good, total)`` per step ``[start + k*step, start + (k+1)*step)``: events (occurrences,
        plain increments without extrapolation) or timeslices (good slices, slices with data)."""
        spec = self.get(name)
        n = max(1, -(-(end_ns - start_ns) // step_ns))
        t = start_ns + np.arange(n, dtype=np.int64) * step_ns
        if spec.budgeting == "timeslices":
            verdicts, starts = self._slices(spec, start_ns, start_ns + n * step_ns)
            k = (starts - start_ns) // step_ns
            ok = ~np.isnan(verdicts)
            good, total = np.zeros(n), np.zeros(n)
            np.add.at(good, k[ok], verdicts[ok])
            np.add.at(total, k[ok], 1.0)
            return t, good, total
        good_s, bad_s, total_s = self._series(spec, start_ns - step_ns, start_ns + n * step_ns)
        total = read.step_events(total_s, start_ns, end_ns, step_ns)
        if bad_s is not None:
            good = total - read.step_events(bad_s, start_ns, end_ns, step_ns)
        else:
            good = read.step_events(good_s, start_ns, end_ns, step_ns)
        return t, good, total

    def alert_rules(self) -> list[dict[str, Any]]:
        """The burn-rate rules of every SLO (alert rule maps), empty with ``burn_alerts: false``."""
        if not self.burn_alerts:
            return []
        look = max(5 * 60 * 10**9, 3 * self.interval_ns)
        with self._lock:
            return [rule for spec in self._specs.values() for rule in alerts.alert_rules(spec, look)]

    def _sync_alerting(self) -> None:
        alerting = self._shared.get("alerting")
        if alerting is not None:
            alerting.set_source_rules("slo", self.alert_rules())

    # -- span events ------------------------------------------------------------------------------

    def _emit_span_counters(self, now: int) -> None:
        series, points = {}, []
        if self._started_ns is None:
            self._started_ns = now  # the counters count from the first evaluation on
        for spec in self._specs.values():
            if spec.sli.kind != "spans":
                continue
            name = spec.name
            good, total = self._span_counts.setdefault(name, [0.0, 0.0])
            for metric, value in ((SPAN_GOOD, good), (SPAN_TOTAL, total)):
                row = series_row(metric, scope=_SCOPE, attributes={"slo": name}, kind=MetricType.SUM,
                                 monotonic=True, unit="{span}")  # fmt: skip
                series[row["series_id"]] = row
                points.append(_point(row, now, self._started_ns or now, value))
        self._send(series, points)

    def _send(self, series: dict[int, dict[str, Any]], points: list[dict[str, Any]]) -> None:
        if self._emit is None or not points:
            return
        self._emit(
            MetricBatch(
                points=pa.Table.from_pylist(points, schema=POINTS_SCHEMA),
                series=pa.Table.from_pylist(list(series.values()), schema=SERIES_SCHEMA),
                exemplars=EXEMPLARS_SCHEMA.empty_table(),
            )
        )

    # -- persistence ------------------------------------------------------------------------------

    def _path(self) -> Path:
        return self.dir / "api-slos.json"

    def _load(self) -> list[SLOSpec]:
        path = self._path()
        if not path.exists():
            return []
        return slos_from_list(json.loads(path.read_text()), path.name, source="api")

    def _save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        items = [s.to_dict() for s in self._specs.values() if s.source == "api"]
        tmp = self._path().with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(items, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path())
        fsync_path(self.dir)


def _period(spec: SLOSpec, now: int) -> tuple[int, int]:
    """``(start, length)`` of the SLO period at ``now``: rolling window, or the calendar month so far."""
    if not spec.calendar:
        return now - spec.window_ns, spec.window_ns
    day = datetime.fromtimestamp(now / 1e9, UTC)
    first = datetime(day.year, day.month, 1, tzinfo=UTC)
    days = calendar.monthrange(day.year, day.month)[1]
    return int(first.timestamp()) * 10**9, days * 86400 * 10**9


def _gauges(spec: SLOSpec, status: dict[str, Any]):
    """``(metric, extra labels, value)`` of every series an SLO's status gives."""
    budget: compute.ErrorBudget = status["budget"]
    yield "slo.sli", {"window": spec.window_label}, status["sli"]
    yield "slo.objective", {}, spec.objective
    short = set(alerts.short_windows(spec))
    for label, ratio in status["error_ratios"].items():
        yield "slo.error_ratio", {"window": label}, ratio
        yield "slo.burn_rate", {"window": label}, status["burn_rates"][label]
        if label in short:
            yield alerts.SHORT_METRIC, {"short_window": label}, status["burn_rates"][label]
    if status["total"] > 0:
        yield "slo.error_budget.remaining", {}, budget.remaining_ratio
        yield "slo.error_budget.consumed", {}, budget.consumed_ratio
        yield "slo.error_budget.remaining_events", {}, budget.remaining
        yield "slo.time_to_exhaustion_seconds", {}, budget.time_to_exhaustion_s


def _point(row: dict[str, Any], time_ns: int, start_ns: int, value: float) -> dict[str, Any]:
    return {"series_id": row["series_id"], "time_unix_nano": time_ns, "start_time_unix_nano": start_ns,
            "value": value, "flags": 0}  # fmt: skip


def _series(metric: str, spec: SLOSpec, labels: dict[str, str]) -> dict[str, Any]:
    return series_row(metric, scope=_SCOPE, service=spec.service, attributes={"slo": spec.name, **labels},
                      unit="1" if metric != "slo.time_to_exhaustion_seconds" else "s")  # fmt: skip


def from_options(options: dict[str, Any] | None, store: Any, data_dir: str | Path,
                 shared: dict[str, Any] | None = None) -> SLOs:  # fmt: skip
    """Build the chain member; ``ValueError`` names the option that is wrong."""
    return SLOs(options, store, data_dir, shared)
