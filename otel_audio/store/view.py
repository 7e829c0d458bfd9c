"""What a query reads: the head's rows at one moment plus the blocks on disk at that moment.

A :class:`StoreView` is taken under the store's lock, so a flush that moves rows from the head
into blocks is seen either entirely before or entirely after: no row is missing and none is
counted twice. The view reads blocks lazily, only those overlapping the asked time range, and
inside them only the row groups the series and times can be in.

Blocks can vanish under an old view (compaction merges them, retention drops them); a reader
that hits a missing file takes a :func:`settled_view` and tries again (``QueryEngine`` does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.processors.base import EXEMPLARS_SCHEMA
from otel_audio.store.blocks import read_block_points, read_metric_block
from otel_audio.store.catalog import Catalog
from otel_audio.store.memory import Snapshot
from otel_audio.store.rollup import ROLLUP_SCHEMA
from otel_audio.store.rollup_blocks import read_rollups
from otel_audio.store.tiers import Tier


@dataclass(frozen=True)
class StoreView:
    """The head (``head``: every series, recent rows) and the block catalog, as of one moment.

    Args:
        retention: nanoseconds per tier name, for choosing the tier a query reads.
    """

    head: Snapshot
    catalog: Catalog = field(default_factory=Catalog)
    retention: Mapping[str, int] = field(default_factory=dict)

    @property
    def has_blocks(self) -> bool:
        return bool(self.catalog.entries)

    def points(
        self, series_ids: np.ndarray, start_ns: int, end_ns: int, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """POINTS_SCHEMA rows of the head and the raw blocks; blocks filtered by series and time.

        Head rows are not filtered (the caller's SQL does that); block rows outside the series or
        ``[start_ns, end_ns)`` are not returned, and of them only ``columns`` are read (the rest
        null; None reads all).
        """
        paths = self.catalog.select("metrics", "raw", start_ns, end_ns)
        if not paths:
            return self.head.points
        parts = [self.head.points]
        for path in paths:
            parts.append(
                read_block_points(
                    path, series_ids=series_ids, start_ns=start_ns, end_ns=end_ns, columns=columns
                )
            )
        return pa.concat_tables(parts)

    def exemplars(self, series_ids: np.ndarray, start_ns: int, end_ns: int) -> pa.Table:
        """EXEMPLARS_SCHEMA rows of the head and the raw blocks (blocks filtered as in ``points``)."""
        paths = self.catalog.select("metrics", "raw", start_ns, end_ns)
        parts = [self.head.exemplars]
        for path in paths:
            parts.append(read_metric_block(path, series_ids=series_ids, start_ns=start_ns, end_ns=end_ns)[2])
        return pa.concat_tables(parts).cast(EXEMPLARS_SCHEMA) if len(parts) > 1 else parts[0]

    def rollups(
        self, tier: Tier, series_ids: np.ndarray, start_ns: int, end_ns: int, histograms: bool = True
    ) -> pa.Table:
        """ROLLUP_SCHEMA rows of ``tier`` with window start in ``[start_ns, end_ns)``.

        A window cut by a flush has a row from each flush; ``merge_rollups`` (as the tier
        queries do) joins them.
        """
        paths = self.catalog.select("rollups", tier.name, start_ns, end_ns)
        if not paths:
            return ROLLUP_SCHEMA.empty_table()
        return read_rollups(
            paths, series_ids=series_ids, start_ns=start_ns, end_ns=end_ns, histograms=histograms
        )

    def head_min_time(self, series_ids: np.ndarray) -> int | None:
        """The oldest head point of these series: data older than it is all in blocks."""
        points = self.head.points
        if points.num_rows == 0:
            return None
        mine = points.filter(pc.is_in(points.column("series_id"), pa.array(series_ids, pa.uint64())))
        if mine.num_rows == 0:
            return None
        return int(pc.min(mine.column("time_unix_nano")).as_py())

    def span_files(self, start_ns: int | None = None, end_ns: int | None = None) -> list:
        """Span block files that can hold spans overlapping ``[start_ns, end_ns)``."""
        return self.catalog.select("spans", "raw", start_ns, end_ns)

    def log_files(self, start_ns: int | None = None, end_ns: int | None = None) -> list:
        """Log block files with records in ``[start_ns, end_ns)``."""
        return self.catalog.select("logs", "raw", start_ns, end_ns)


def settled_view(store: Any) -> StoreView:
    """A new view of ``store`` once any running retention or compaction has swapped its catalog.

    Maintenance deletes the merged or expired files (in the flush process) before the store's
    thread swaps in the catalog without them, so a view taken at once after a missing file can
    still list it; waiting for that thread closes the gap. It is rare and brief: only a reader
    that met a vanished file waits.
    """
    wait = getattr(store, "wait", None)
    if wait is not None:
        wait()
    return store.view()
