"""The parsed form of an alert condition: a small tree of frozen dataclasses, printed canonically.

:func:`~otel_audio.processors.alerting.grammar.parse` builds it; the evaluator
(:mod:`otel_audio.processors.alerting.evaluate`), the rule checks and the SLO alerts read it.
A :class:`Condition` is :class:`Compare` (``operand op number``), :class:`Absent`, or
:class:`And` / :class:`Or` / :class:`Not` of conditions; an operand is a :class:`Call`
(``func(selector, window)``), an :class:`Anomaly` or a bare :class:`Selector`. Every node knows
the metrics it reads (``metrics``), and ``str(node)`` is canonical text that parses back to an
equal tree, with the fewest parentheses and windows in their largest exact unit.

Kept apart from the tokenizer and parser so the code that reads conditions depends on the tree
only. Every name here is re-exported from :mod:`otel_audio.processors.alerting.grammar`.

Example::

    Compare(Call("p95", Selector("audio.stage.duration"), 5 * 60 * 10**9), ">", 0.5)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from otel_audio.processors.alerting.model import LabelMatcher
from otel_audio.processors.units import DURATION_UNITS_NS

DEFAULT_WINDOW_NS = 5 * 60 * 10**9  # window of a call without one, and the lookback of bare selectors

FUNCTIONS = ("avg", "min", "max", "sum", "count", "last", "rate", "increase", "rate_of_change")
_PERCENTILE = re.compile(r"p(100|\d{1,2}(?:\.\d+)?)")


class Node:
    """Common to every tree node: the metric names it reads."""

    @property
    def metrics(self) -> frozenset[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Selector(Node):
    """``metric{label="value",...}``: the series of one metric whose labels match every matcher."""

    metric: str
    matchers: tuple[LabelMatcher, ...] = ()

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset((self.metric,))

    def __str__(self) -> str:
        if not self.matchers:
            return self.metric
        inner = ",".join(f'{m.name}{m.op}"{_quote(m.value)}"' for m in self.matchers)
        return f"{self.metric}{{{inner}}}"


@dataclass(frozen=True)
class Call(Node):
    """``func(selector, window)``: a function of each selected series over ``(now - window, now]``."""

    func: str
    selector: Selector
    window_ns: int = DEFAULT_WINDOW_NS

    @property
    def metrics(self) -> frozenset[str]:
        return self.selector.metrics

    def __str__(self) -> str:
        return f"{self.func}({self.selector}, {format_window(self.window_ns)})"


ANOMALY_METRIC = "anomaly.score"  # the anomaly processor's score series ...
ANOMALY_SOURCE = "anomaly.metric"  # ... and its attribute naming the scored metric


@dataclass(frozen=True)
class Anomaly(Node):
    """``anomaly(selector)``: the latest ``anomaly.score`` of the selected metric's series."""

    selector: Selector

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset((ANOMALY_METRIC,))

    def score_selector(self) -> Selector:
        """The score series this reads: ``anomaly.score{anomaly.metric="<metric>", <matchers>}``."""
        source = LabelMatcher(ANOMALY_SOURCE, "=", self.selector.metric)
        return Selector(ANOMALY_METRIC, (source, *self.selector.matchers))

    def __str__(self) -> str:
        return f"anomaly({self.selector})"


Operand = Call | Anomaly | Selector


class Condition(Node):
    """A parsed condition: :class:`Compare`, :class:`Absent`, :class:`And`, :class:`Or` or :class:`Not`."""


@dataclass(frozen=True)
class Compare(Condition):
    """``operand op number``; a bare selector operand is the series' latest value."""

    operand: Operand
    op: str
    number: float

    @property
    def metrics(self) -> frozenset[str]:
        return self.operand.metrics

    def __str__(self) -> str:
        return f"{self.operand} {self.op} {format_number(self.number)}"


@dataclass(frozen=True)
class Absent(Condition):
    """``absent(selector, window)``: no selected series has a point in the window."""

    selector: Selector
    window_ns: int = DEFAULT_WINDOW_NS

    @property
    def metrics(self) -> frozenset[str]:
        return self.selector.metrics

    def __str__(self) -> str:
        return f"absent({self.selector}, {format_window(self.window_ns)})"


@dataclass(frozen=True)
class And(Condition):
    left: Condition
    right: Condition

    @property
    def metrics(self) -> frozenset[str]:
        return self.left.metrics | self.right.metrics

    def __str__(self) -> str:
        left = f"({self.left})" if isinstance(self.left, Or) else str(self.left)
        right = f"({self.right})" if isinstance(self.right, Or | And) else str(self.right)
        return f"{left} and {right}"


@dataclass(frozen=True)
class Or(Condition):
    left: Condition
    right: Condition

    @property
    def metrics(self) -> frozenset[str]:
        return self.left.metrics | self.right.metrics

    def __str__(self) -> str:
        right = f"({self.right})" if isinstance(self.right, Or) else str(self.right)
        return f"{self.left} or {right}"


@dataclass(frozen=True)
class Not(Condition):
    operand: Condition

    @property
    def metrics(self) -> frozenset[str]:
        return self.operand.metrics

    def __str__(self) -> str:
        inner = f"({self.operand})" if isinstance(self.operand, And | Or) else str(self.operand)
        return f"not {inner}"


def format_number(x: float) -> str:
    """The shortest text that reads back as ``x`` (``0.5``, ``500``, ``1e+16``)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def format_window(ns: int) -> str:
    """The largest unit that divides ``ns`` exactly: ``5m``, ``90s``, ``1500ms``, ``1w``."""
    for unit in ("w", "d", "h", "m", "s"):
        if ns % DURATION_UNITS_NS[unit] == 0:
            return f"{ns // DURATION_UNITS_NS[unit]}{unit}"
    return f"{ns // DURATION_UNITS_NS['ms']}ms"


def is_function(name: str) -> bool:
    """Whether ``name(...)`` is an allowed function: the fixed names or a percentile pNN / pNN.N."""
    match = _PERCENTILE.fullmatch(name)
    return name in FUNCTIONS or (match is not None and 0 < float(match.group(1)) <= 100)


@functools.lru_cache(maxsize=1024)
def percentile(func: str) -> float | None:
    """The quantile of a percentile function (``p95`` -> 0.95); None for the others."""
    match = _PERCENTILE.fullmatch(func)
    return float(match.group(1)) / 100 if match else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
