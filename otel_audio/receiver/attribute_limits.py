"""Attribute limits at ingest: how many attributes an item may carry and how long a value may be.

``limits.max_attributes`` (default 128, the OpenTelemetry SDKs' default attribute count limit) and
``limits.max_attribute_value_bytes`` (default 4096 UTF-8 bytes of a string value, strings inside
arrays and key-value lists included) apply to every attribute set of a decoded request:

- **spans, span events, span links, log records, resources**: cut the way the SDKs cut them
  (``OTEL_ATTRIBUTE_COUNT_LIMIT``, ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``): attributes beyond the
  count are dropped (the first ones in key order are kept: attribute sets are stored with sorted
  keys, the order on the wire is not kept) and long strings are cut at a character boundary. The
  item is kept, so nothing is rejected; the reply's ``partial_success.error_message`` says how
  many attributes were dropped and values cut.
- **metric points**: attributes are a series' identity, and cutting them would silently merge
  distinct series, so the points of a series over either limit are rejected instead, counted in
  ``partial_success.rejected_data_points`` with a message naming the metric and the limit.

Most requests are never parsed here: an attribute JSON text shorter than both limits allow cannot
exceed them, and lengths are checked column-wise with Arrow, so only the rare long sets are read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import LogBatch, MetricBatch, SpanBatch, canonical_json
from otel_audio.receiver.decoded import Decoded


@dataclass
class _Cuts:
    dropped: int = 0  # attributes beyond the count limit
    truncated: int = 0  # string values cut to the length limit


@dataclass(frozen=True)
class AttributeLimits:
    """The two limits, applied to decoded batches by :meth:`apply`.

    Args:
        max_attributes: attributes kept per attribute set.
        max_value_bytes: UTF-8 bytes kept of a string value.
    """

    max_attributes: int = 128
    max_value_bytes: int = 4096

    def apply(self, decoded: Decoded) -> Decoded:
        """``decoded`` within the limits: span and log attributes cut, metric points over them refused."""
        batch = decoded.batch
        if isinstance(batch, MetricBatch):
            return self._metrics(decoded)
        cuts = _Cuts()
        if isinstance(batch, SpanBatch):
            table = self._cut_columns(batch.spans, ("resource", "attributes"), ("events", "links"), cuts)
            batch = replace(batch, spans=table)
        elif isinstance(batch, LogBatch):
            batch = replace(batch, logs=self._cut_columns(batch.logs, ("resource", "attributes"), (), cuts))
        if not (cuts.dropped or cuts.truncated):
            return decoded
        note = (
            f"{cuts.dropped} attributes dropped beyond limits.max_attributes ({self.max_attributes}), "
            f"{cuts.truncated} values cut to limits.max_attribute_value_bytes ({self.max_value_bytes})"
        )
        return replace(decoded, batch=batch, errors=[*decoded.errors, note])

    # -- spans and logs: cut --------------------------------------------------------------------

    def _long(self, column: pa.ChunkedArray) -> list[int]:
        """Rows whose JSON text is long enough to break a limit (the rest cannot)."""
        # n attributes take at least 5n + 1 characters ({"":0,"":0}), a value at least its bytes
        shortest = min(self.max_value_bytes, 5 * self.max_attributes + 6)
        lengths = pc.fill_null(pc.binary_length(column), 0)
        return pc.indices_nonzero(pc.greater_equal(lengths, shortest)).to_pylist()

    def _cut_columns(
        self, table: pa.Table, sets: tuple[str, ...], lists: tuple[str, ...], cuts: _Cuts
    ) -> pa.Table:
        for name in (*sets, *lists):
            column = table.column(name)
            rows = self._long(column)
            if not rows:
                continue
            values = column.to_pylist()
            for row in rows:
                values[row] = self._cut_text(values[row], name in lists, cuts)
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(values, pa.string()))
        return table

    def _cut_text(self, text: str | None, is_list: bool, cuts: _Cuts) -> str | None:
        if not text:
            return text
        document = json.loads(text)
        if is_list:  # events or links: each item's "attributes"
            for item in document:
                if isinstance(item, dict) and isinstance(item.get("attributes"), dict):
                    item["attributes"] = self._cut_set(item["attributes"], cuts)
            return json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        return canonical_json(self._cut_set(document, cuts))

    def _cut_set(self, attributes: dict[str, Any], cuts: _Cuts) -> dict[str, Any]:
        keys = sorted(attributes)
        cuts.dropped += max(0, len(keys) - self.max_attributes)
        return {key: self._cut_value(attributes[key], cuts) for key in keys[: self.max_attributes]}

    def _cut_value(self, value: Any, cuts: _Cuts) -> Any:
        if isinstance(value, str):
            encoded = value.encode()
            if len(encoded) <= self.max_value_bytes:
                return value
            cuts.truncated += 1
            return encoded[: self.max_value_bytes].decode(errors="ignore")  # at a character boundary
        if isinstance(value, list):
            return [self._cut_value(v, cuts) for v in value]
        if isinstance(value, dict):
            return {k: self._cut_value(v, cuts) for k, v in value.items()}
        return value

    # -- metrics: refuse ------------------------------------------------------------------------

    def _over(self, text: str | None) -> bool:
        if not text:
            return False
        probe = _Cuts()
        self._cut_set(json.loads(text), probe)
        return bool(probe.dropped or probe.truncated)

    def _metrics(self, decoded: Decoded) -> Decoded:
        batch: MetricBatch = decoded.batch
        series = batch.series
        rows = sorted(set(self._long(series.column("attributes")) + self._long(series.column("resource"))))
        bad = [
            r
            for r in rows
            if self._over(series["attributes"][r].as_py()) or self._over(series["resource"][r].as_py())
        ]
        if not bad:
            return decoded
        bad_ids = pa.array([series["series_id"][r].as_py() for r in bad], pa.uint64())
        refused = pc.is_in(batch.points.column("series_id"), value_set=bad_ids)
        count = int(pc.sum(refused).as_py() or 0)
        keep_series = pc.invert(pc.is_in(series.column("series_id"), value_set=bad_ids))
        kept = replace(
            batch,
            points=batch.points.filter(pc.invert(refused)),
            series=series.filter(keep_series),
            exemplars=batch.exemplars.filter(
                pc.invert(pc.is_in(batch.exemplars.column("series_id"), value_set=bad_ids))
            ),
        )
        metrics = sorted({series["metric"][r].as_py() for r in bad})
        note = (
            f"{count} data points of {len(bad)} series of {', '.join(map(repr, metrics[:5]))} rejected: "
            f"more than limits.max_attributes ({self.max_attributes}) attributes or a value longer than "
            f"limits.max_attribute_value_bytes ({self.max_value_bytes})"
        )
        return replace(decoded, batch=kept, rejected=decoded.rejected + count, errors=[*decoded.errors, note])
