"""Streaming evaluation of parsed conditions: shared sliding windows, per-series functions, and/or/not.

The windows each condition reads are kept by :class:`~otel_audio.processors.alerting.windows.Windows`
(fed batch by batch from ingest, shared by every rule; its module says how).

:class:`Evaluator` answers, for one condition and a time ``now``, which label sets satisfy it
(:class:`~otel_audio.processors.alerting.model.Sample`). Leaf values are computed per series
over ``(now - window, now]`` with numpy and cached per ``(metric, function, window, now)`` until
the next batch, so 1,000 rules over the same metrics cost one pass per distinct leaf.
``docs/alerting-rules.md`` states every function's meaning per metric type.

The parts live in three modules: the windows and the leaf cache in
:mod:`otel_audio.processors.alerting.windows`, the per-series functions in
:mod:`otel_audio.processors.alerting.functions`, and here the :class:`Evaluator`, which combines
leaf results with and/or/not. ``Windows``, ``Leaf``, ``leaf_of`` and ``leaves`` are re-exported.

Which ``now`` to pass: the newest point time of the batch just observed when evaluating on
arrival (event time, so a replay gives the same answers), and the wall clock on the ticker that
catches ``absent`` and staleness. Example::

    windows = Windows()
    rules = {name: Evaluator(parse(text), windows) for name, text in conditions.items()}
    touched = windows.observe(batch)
    now = pc.max(batch.points.column("time_unix_nano")).as_py()
    for name, ev in rules.items():
        if ev.metrics & touched:
            samples = ev.evaluate(now)
"""

from __future__ import annotations

import numpy as np

from otel_audio.processors.alerting.functions import POINTS
from otel_audio.processors.alerting.grammar import Absent, And, Compare, Condition, Not
from otel_audio.processors.alerting.model import Sample
from otel_audio.processors.alerting.windows import NEVER, Leaf, Windows, leaf_of, leaves

__all__ = ["NEVER", "POINTS", "Evaluator", "Found", "Leaf", "Windows", "leaf_of", "leaves"]

_COMPARE = {
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
    "==": np.equal,
    "!=": np.not_equal,
}
Found = dict[tuple, tuple[dict[str, str], float]]  # label-set key -> (labels, value)


class Evaluator:
    """One condition over shared :class:`Windows`: which label sets satisfy it at a time.

    Args:
        condition: a parsed condition (:func:`~otel_audio.processors.alerting.grammar.parse`).
        windows: the shared windows; the condition's leaves are watched from now on.
    """

    def __init__(self, condition: Condition, windows: Windows) -> None:
        self.condition = condition
        self.windows = windows
        self.metrics = condition.metrics  # re-evaluate when a batch touched one of these
        self._leaves: dict[int, Leaf] = {}  # by id of the Compare node: hashing a tree is slow
        windows.watch(condition)

    def close(self) -> None:
        """Stop watching the condition's windows."""
        self.windows.unwatch(self.condition)

    def evaluate(self, now_ns: int) -> list[Sample]:
        """The label sets for which the condition holds at ``now_ns``, sorted by labels, each with
        the value of its first comparison's operand (``absent``: 1)."""
        if isinstance(self.condition, Compare):  # most rules: straight from the arrays
            sidx, values = self._hits(self.condition, now_ns)
            if sidx.size == 0:
                return []
            metric = self.windows.metric(self._leaves[id(self.condition)].selector.metric)
            sidx, values = metric.by_labels(sidx, values)
            return [
                Sample(dict(metric.labels[s]), v) for s, v in zip(sidx.tolist(), values.tolist(), strict=True)
            ]
        holds, _ = self._node(self.condition, now_ns, False)
        return [Sample(dict(labels), value) for _, (labels, value) in sorted(holds.items())]

    def _node(self, node: Condition, now: int, domain: bool) -> tuple[Found, Found | None]:
        """(label sets where ``node`` holds, label sets it is decided for, when ``domain`` asks)."""
        if isinstance(node, Compare):
            return self._compare(node, now, domain)
        if isinstance(node, Absent):
            return self._absent(node, now)
        if isinstance(node, Not):
            holds, decided = self._node(node.operand, now, True)
            return {k: v for k, v in decided.items() if k not in holds}, decided
        left, left_all = self._node(node.left, now, domain)
        right, right_all = self._node(node.right, now, domain)
        if isinstance(node, And):
            return _join(left, right), _join(left_all, right_all) if domain else None
        return _union(left, right), _union(left_all, right_all) if domain else None

    def _hits(self, node: Compare, now: int, everything: bool = False) -> tuple[np.ndarray, ...]:
        """(series, values) where the comparison holds; with ``everything``, also all decided ones."""
        leaf = self._leaves.get(id(node)) or self._leaves.setdefault(id(node), leaf_of(node))
        sidx, values = self.windows.values(leaf, now)
        hit = _COMPARE[node.op](values, node.number) & ~np.isnan(values)  # NaN compares false
        return (sidx[hit], values[hit], sidx, values) if everything else (sidx[hit], values[hit])

    def _compare(self, node: Compare, now: int, domain: bool) -> tuple[Found, Found | None]:
        sidx, values, all_sidx, all_values = self._hits(node, now, True)
        if all_sidx.size == 0:
            return {}, {} if domain else None
        metric = self.windows.metric(self._leaves[id(node)].selector.metric)
        return metric.found(sidx, values), metric.found(all_sidx, all_values) if domain else None

    def _absent(self, node: Absent, now: int) -> tuple[Found, Found]:
        sidx, _ = self.windows.values(leaf_of(node), now)
        labels = {m.name: m.value for m in node.selector.matchers if m.op == "="}
        key = tuple(sorted(labels.items()))
        if sidx.size:
            return {}, {key: (labels, 0.0)}
        return {key: (labels, 1.0)}, {key: (labels, 1.0)}


def _union(left: Found | None, right: Found | None) -> Found | None:
    """Every label set of either side; the left side's value where both have one."""
    if left is None or right is None:
        return None
    out = dict(right)
    out.update(left)
    return out


def _join(left: Found | None, right: Found | None) -> Found | None:
    """Pairs whose shared label names carry equal values, labels merged, the left side's value.

    Label sets are grouped by their names, so each pair of groups is one hash join on the names
    the two groups share (one pair of groups when both sides come from one metric each).
    """
    if left is None or right is None:
        return None
    out: Found = {}
    by_names: dict[frozenset, list] = {}
    for key, item in right.items():
        by_names.setdefault(frozenset(k for k, _ in key), []).append(item)
    left_groups: dict[frozenset, list] = {}
    for key, item in left.items():
        left_groups.setdefault(frozenset(k for k, _ in key), []).append(item)
    for left_names, left_items in left_groups.items():
        for right_names, right_items in by_names.items():
            shared = sorted(left_names & right_names)
            index: dict[tuple, list] = {}
            for labels, _ in right_items:
                index.setdefault(tuple(labels[k] for k in shared), []).append(labels)
            for labels, value in left_items:
                for other in index.get(tuple(labels[k] for k in shared), ()):
                    merged = {**other, **labels}
                    out.setdefault(tuple(sorted(merged.items())), (merged, value))
    return out
