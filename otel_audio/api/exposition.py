"""``/metrics``: the receiver's own metrics plus the newest value of the series its processors emit.

Prometheus (or any scraper of the text format) reads one page holding:

- the self-metrics of :mod:`otel_audio.receiver.selfmon` (``otel_audio_receiver_*``), as before;
- the newest point of every series the processors emit: aggregates (``<metric>.<agg>`` with
  ``aggregation.window``), ``audio.derived.*``, ``traces.span.metrics.*``, ``slo.*``, anomaly and
  forecast series (their scope is ``otel_audio.processors.*`` or ``otel_audio.slo``);
- optionally the newest point of ingested metrics whose name fully matches one of
  ``exposition.metrics`` (regexes).

Names and labels follow the OpenTelemetry↔Prometheus compatibility spec
(:mod:`otel_audio.receiver.promnames`): ``slo.burn_rate`` (unit ``1``) is ``slo_burn_rate_ratio``,
``traces.span.metrics.calls`` is the counter ``traces_span_metrics_calls_total``,
``traces.span.metrics.duration`` (``s``) the histogram ``traces_span_metrics_duration_seconds``,
``service.name`` the ``job`` label. Samples carry no timestamp, as the Collector's Prometheus
exporter writes them: the scrape time stands for "now".

**Cost.** A scrape reads one store view: the series table is filtered to the exposed ones, and
the points of the last ``lookback_s`` (at most ``max_series`` series; the rest are counted in
``otel_audio_exposition_series_dropped``) are reduced to each series' newest. The page is
cached for ``cache_ms``, so many scrapers at once cost one read; translating a series' name and
labels is cached per series. Output is sorted (families by name, samples by labels), so two
scrapes of unchanged data are byte-identical.

Example::

    exposition = Exposition(receiver.store, receiver.metrics.registry, ExpositionConfig())
    text = exposition.render(time.time_ns())
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from otel_audio.receiver.config import ConfigError, ExpositionConfig
from otel_audio.receiver.promnames import PROCESSOR_SCOPE, PromSeries, describe_row, exportable, samples

# Every name on the page is a classic one ([a-zA-Z_:][a-zA-Z0-9_:]*), so the classic format's type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DROPPED = "otel_audio_exposition_series_dropped"
_SELFMON_SCOPE = "otel_audio.receiver.selfmon"  # served from the registry itself
_POINT_COLUMNS = ["series_id", "time_unix_nano", "value", "count", "bounds", "bucket_counts", "flags",
                  "quantiles", "quantile_values"]  # fmt: skip


class Exposition:
    """The ``/metrics`` page of one receiver.

    Args:
        store: anything with ``view()`` (the receiver's store).
        registry: the self-metrics registry, served first and unchanged.
        config: which series, how far back, how many, how long a page is reused.
        clock: "now" in Unix nanoseconds; injectable for tests.
    """

    def __init__(
        self,
        store: Any,
        registry: CollectorRegistry,
        config: ExpositionConfig,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._registry = registry
        self._config = config
        self._clock = clock
        self._patterns = [_pattern(p, f"exposition.metrics[{i}]") for i, p in enumerate(config.metrics)]
        self._lock = threading.Lock()
        self._page: bytes = b""
        self._page_time = -1
        self.dropped = 0

    def render(self, now_ns: int | None = None) -> bytes:
        """The page in the Prometheus text format 0.0.4 (reused for ``cache_ms``)."""
        now_ns = self._clock() if now_ns is None else now_ns
        with self._lock:
            if self._page_time >= 0 and 0 <= now_ns - self._page_time < self._config.cache_ms * 10**6:
                return self._page
            page = generate_latest(self._registry) + generate_latest(_Families(self.families(now_ns)))
            self._page, self._page_time = page, now_ns
            return page

    def families(self, now_ns: int) -> list[Metric]:
        """The metric families of the exposed series' newest points, sorted by name."""
        view = self._store.view()
        series = self._selected(view.head.series)
        newest = self._newest(view, series.column("series_id").to_numpy(), now_ns) if series.num_rows else []
        rows = {r["series_id"]: r for r in series.to_pylist()}
        by_family: dict[str, tuple[PromSeries, list[tuple[str, dict[str, str], float]]]] = {}
        for point in newest:
            row = rows[point["series_id"]]
            prom = describe_row(row)
            first, found = by_family.setdefault(prom.family, (prom, []))
            if first.type != prom.type:
                continue  # one name, two types: Prometheus would refuse the page; the first type wins
            found.extend(samples(prom, point))
        out = []
        for name in sorted(by_family):
            prom, found = by_family[name]
            family = Metric(name, prom.help, prom.type)
            for sample_name, labels, value in sorted(found, key=_sample_key):
                family.add_sample(sample_name, labels, value)
            out.append(family)
        dropped = Metric(_DROPPED, "Series left off /metrics (exposition.max_series).", "gauge")
        dropped.add_sample(_DROPPED, {}, float(self.dropped))
        out.append(dropped)
        return out

    def _selected(self, series: pa.Table) -> pa.Table:
        """The series to expose: processors' (when enabled) and allow-listed ingested metrics."""
        keep = pa.array(np.zeros(series.num_rows, dtype=bool))
        if self._config.processors:
            scopes = pc.fill_null(series.column("scope"), "")
            keep = pc.match_substring_regex(scopes, f"^(?:{PROCESSOR_SCOPE})$")
        if self._patterns:
            metrics = series.column("metric")
            listed = [
                m for m in pc.unique(metrics).to_pylist() if any(p.fullmatch(m) for p in self._patterns)
            ]
            ingested = pc.and_(
                pc.is_in(metrics, value_set=pa.array(listed, pa.string())),
                pc.not_equal(pc.fill_null(series.column("scope"), ""), _SELFMON_SCOPE),
            )
            keep = pc.or_(keep, ingested)
        selected = series.filter(keep)
        kinds = selected.column("type").to_pylist()
        temporalities = selected.column("temporality").to_pylist()
        ok = [exportable(k, t or "") for k, t in zip(kinds, temporalities, strict=True)]
        selected = selected.filter(pa.array(ok, pa.bool_()))
        limit = self._config.max_series
        self.dropped = max(selected.num_rows - limit, 0)
        if self.dropped:  # keep a stable subset: the lowest ids (metric-name hash first)
            selected = selected.sort_by("series_id").slice(0, limit)
        return selected

    def _newest(self, view: Any, ids: np.ndarray, now_ns: int) -> list[dict[str, Any]]:
        """The newest point with a value of each series in ``ids`` within the lookback."""
        lo = now_ns - self._config.lookback_s * 10**9
        points = view.points(ids, lo, 2**62, _POINT_COLUMNS)  # senders' clocks may run ahead
        points = points.select([c for c in _POINT_COLUMNS if c in points.column_names])
        mask = pc.and_(
            pc.and_(
                pc.is_in(points.column("series_id"), value_set=pa.array(ids, pa.uint64())),
                pc.greater_equal(points.column("time_unix_nano"), lo),
            ),
            pc.equal(pc.bit_wise_and(pc.fill_null(points.column("flags"), 0), 1), 0),
        )
        points = points.filter(mask)
        if points.num_rows == 0:
            return []
        points = points.sort_by([("series_id", "ascending"), ("time_unix_nano", "ascending")])
        sid = points.column("series_id").to_numpy()
        last = np.flatnonzero(np.append(sid[1:] != sid[:-1], True))
        return points.take(pa.array(last)).to_pylist()


class _Families:
    """What ``generate_latest`` reads: anything with ``collect()``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _sample_key(sample: tuple[str, dict[str, str], float]) -> tuple:
    name, labels, _ = sample
    le = labels.get("le")
    bound = float(le) if le is not None else 0.0
    rest = sorted((k, v) for k, v in labels.items() if k != "le")
    return (rest, name, bound)


def _pattern(text: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{key}: not a regular expression ({exc}): {text!r}") from None
