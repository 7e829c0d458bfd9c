"""Span SLIs: which spans an SLO counts and which of them are good, weighted by adjusted count.

Spans are weighted as spanmetrics weights them (:func:`otel_audio.processors.spanmetrics.adjusted_count`):
a span sampled with probability ``p`` stands for ``1/p`` spans, so ratios stay right at any
sampling rate; spans promoted by tail sampling count 0 (their trace's sampled spans count them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from otel_audio.processors.slo import compute, read
from otel_audio.processors.slo.spec import SLOSpec
from otel_audio.processors.spanmetrics import adjusted_count

SPAN_COLUMNS = ("service", "name", "status_code", "duration_ns", "attributes", "trace_state", "trace_id")


def span_events(spec: SLOSpec, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Adjusted-count sums ``(good, total)`` of the spans an SLO counts.

    A span counts when its service (and name, if given) match and it carries every attribute a
    good-condition names (unscored files are not quality events); it is good when every
    condition holds.
    """
    sli = spec.sli
    want = sli.span_good
    service = sli.span_service or spec.service
    good = total = 0.0
    for r in rows:
        if service and r["service"] != service:
            continue
        if sli.span_name and r["name"] != sli.span_name:
            continue
        attrs = read.attributes(r["attributes"])
        values = [attrs.get(key) for key, _, _ in want.attributes]
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
            continue
        weight, _ = adjusted_count(r["trace_state"], r["trace_id"], attrs)
        if weight <= 0:
            continue
        total += weight
        ok = want.status == "any" or (want.status == "ok" and r["status_code"] == 1)
        ok = ok or (want.status == "not_error" and r["status_code"] != 2)
        ok = ok and (want.max_duration_ns is None or r["duration_ns"] <= want.max_duration_ns)
        ok = ok and all(compute.threshold_verdicts(np.array([v]), op, x)[0] == 1
                        for v, (_, op, x) in zip(values, want.attributes, strict=True))  # fmt: skip
        if ok:
            good += weight
    return good, total
