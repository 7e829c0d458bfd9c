"""The routing tree: which receivers an alert goes to, and with which grouping and timings.

A tree of :class:`Route` nodes, as in Alertmanager's ``route:`` block. An alert enters at the
root (which matches everything) and goes depth-first, left to right: at each node, the children
are tried in order; the first child that matches takes the alert and the search at that level
stops, unless that child has ``continue: true``, in which case the next siblings are tried too.
A node none of whose children match handles the alert itself. So an alert can end up at several
routes (through ``continue``), and always at least at one (the root, the default route).

Each node inherits unset options from its parent; the root takes Alertmanager's defaults
(``group_wait`` 30s, ``group_interval`` 5m, ``repeat_interval`` 4h, ``group_by`` none)::

    route = route_from_config({
        "receiver": "team-default",
        "group_by": ["alertname", "service"],
        "routes": [
            {"matchers": ['severity="critical"'], "receiver": "pager", "group_wait": "0s"},
        ],
    })
    [r.receiver for r in route.match({"alertname": "X", "severity": "critical"})]  # ["pager"]

:func:`route_from_config` reads the YAML dict and reports errors with their path
(``route.routes[1].matchers[0]: ...``). ``mute_time_intervals`` and the deprecated
``match`` / ``match_re`` are not supported (rejected with a clear error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_audio.processors.alerting.model import LabelMatcher, matches_all, parse_matcher
from otel_audio.processors.units import duration_ns

GROUP_BY_ALL = "..."

DEFAULT_GROUP_WAIT_NS = 30 * 10**9
DEFAULT_GROUP_INTERVAL_NS = 5 * 60 * 10**9
DEFAULT_REPEAT_INTERVAL_NS = 4 * 3600 * 10**9

_ROUTE_KEYS = frozenset(
    {
        "receiver",
        "group_by",
        "group_wait",
        "group_interval",
        "repeat_interval",
        "matchers",
        "continue",
        "routes",
    }
)
_UNSUPPORTED = {
    "match": "use matchers: ['name=\"value\"']",
    "match_re": "use matchers: ['name=~\"regex\"']",
    "mute_time_intervals": "time intervals are not supported",
    "active_time_intervals": "time intervals are not supported",
}
_LABEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


_INHERITED = ("receiver", "group_by", "group_wait_ns", "group_interval_ns", "repeat_interval_ns")
_ROOT_DEFAULTS: dict[str, Any] = {
    "receiver": "",
    "group_by": (),
    "group_wait_ns": DEFAULT_GROUP_WAIT_NS,
    "group_interval_ns": DEFAULT_GROUP_INTERVAL_NS,
    "repeat_interval_ns": DEFAULT_REPEAT_INTERVAL_NS,
}


@dataclass(eq=False)
class Route:
    """One node of the routing tree.

    Args:
        receiver: the channel name notifications for this route go to.
        matchers: all must match an alert's labels for the alert to enter this node.
        continue_: after this node matched, try its next siblings too.
        group_by: label names that split alerts into groups; ``["..."]`` groups by all labels
            (every distinct label set its own group); ``[]`` puts all alerts in one group.
        group_wait_ns: how long a new group waits for more alerts before its first notification.
        group_interval_ns: how long to wait before notifying about changes in a group.
        repeat_interval_ns: how long to wait before re-sending an unchanged, still firing group.
        routes: the children, tried in order.

    ``None`` (or an empty receiver) means unset: the value comes from the parent, and at the
    root from Alertmanager's defaults. Routes compare by identity: two nodes with equal options
    are still two routes with their own aggregation groups, as in Alertmanager.
    """

    receiver: str | None = None
    matchers: tuple[LabelMatcher, ...] = ()
    continue_: bool = False
    group_by: tuple[str, ...] | None = None
    group_wait_ns: int | None = None
    group_interval_ns: int | None = None
    repeat_interval_ns: int | None = None
    routes: list[Route] = field(default_factory=list)
    parent: Route | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.matchers = tuple(sorted(self.matchers, key=lambda m: (m.name, m.value, m.op)))
        self._explicit = {name for name in _INHERITED if getattr(self, name) not in (None, "")}
        if self.group_by is not None:
            self.group_by = tuple(self.group_by)
        self._inherit(None)

    def _inherit(self, parent: Route | None) -> None:
        self.parent = parent
        for name in _INHERITED:
            if name not in self._explicit:
                setattr(self, name, getattr(parent, name) if parent else _ROOT_DEFAULTS[name])
        for child in self.routes:
            child._inherit(self)

    @property
    def group_by_all(self) -> bool:
        return GROUP_BY_ALL in self.group_by

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes that handle an alert with these labels (empty if this node does not match)."""
        if not matches_all(self.matchers, dict(labels)):
            return []
        found: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that name the alert's group on this route (missing ``group_by`` labels are left out)."""
        if self.group_by_all:
            return dict(labels)
        return {name: labels[name] for name in self.group_by if name in labels}

    @property
    def key(self) -> str:
        """Alertmanager's route key: the matchers of each node from the root, ``{}/{severity="critical"}``.

        Like Alertmanager's, it does not tell apart siblings with equal matchers.
        """
        own = "{" + ",".join(f"{m.name}{m.op}{quote_label_value(m.value)}" for m in self.matchers) + "}"
        return own if self.parent is None else f"{self.parent.key}/{own}"

    def walk(self) -> Iterable[Route]:
        """This node and its descendants, depth-first."""
        yield self
        for child in self.routes:
            yield from child.walk()


def quote_label_value(value: str) -> str:
    """A label value quoted as Go's ``%q`` does it for the characters label values carry in practice."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def route_from_config(config: Mapping[str, Any], receivers: Iterable[str] | None = None) -> Route:
    """Build the tree from an Alertmanager-style ``route:`` mapping.

    Args:
        config: ``receiver``, ``group_by``, ``group_wait``, ``group_interval``,
            ``repeat_interval``, ``matchers`` (``['severity="critical"', ...]``), ``continue``,
            ``routes`` (a list of the same). Durations as ``30s``, ``5m``, ``4h``.
        receivers: when given, every ``receiver`` must be one of these names.

    Raises:
        ValueError: naming the path of the bad field (``route.routes[1].matchers[0]: ...``).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"route: expected a mapping, got {type(config).__name__}")
    known = None if receivers is None else set(receivers)
    if not config.get("receiver"):
        raise ValueError("route.receiver: the root route needs a receiver (the default for every alert)")
    if config.get("matchers"):
        raise ValueError("route.matchers: the root route must not have matchers (it takes every alert)")
    if config.get("continue"):
        raise ValueError("route.continue: the root route cannot have continue")
    return _build(config, "route", known)


def _build(config: Mapping[str, Any], path: str, receivers: set[str] | None) -> Route:
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: expected a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - _ROUTE_KEYS)
    for name in unknown:
        if name in _UNSUPPORTED:
            raise ValueError(f"{path}.{name}: not supported; {_UNSUPPORTED[name]}")
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown field; accepted: {', '.join(sorted(_ROUTE_KEYS))}")

    receiver = config.get("receiver")
    if receiver is not None and not isinstance(receiver, str):
        raise ValueError(f"{path}.receiver: expected a receiver name, got {receiver!r}")
    if receivers is not None and receiver and receiver not in receivers:
        raise ValueError(f"{path}.receiver: {receiver!r} is not a configured receiver {sorted(receivers)}")

    timings: dict[str, int | None] = {}
    for name in ("group_wait", "group_interval", "repeat_interval"):
        timings[name] = None if config.get(name) is None else _duration(config[name], f"{path}.{name}")
    for name in ("group_interval", "repeat_interval"):
        if timings[name] == 0:
            raise ValueError(f"{path}.{name}: cannot be zero")

    cont = config.get("continue", False)
    if not isinstance(cont, bool):
        raise ValueError(f"{path}.continue: expected true or false, got {cont!r}")
    children = config.get("routes") or []
    if not isinstance(children, list):
        raise ValueError(f"{path}.routes: expected a list of routes, got {type(children).__name__}")

    return Route(
        receiver=receiver or None,
        matchers=matchers_from_config(config.get("matchers"), f"{path}.matchers"),
        continue_=cont,
        # unset, or an empty list, inherits the parent's grouping (as in Alertmanager)
        group_by=_group_by(config.get("group_by"), f"{path}.group_by"),
        group_wait_ns=timings["group_wait"],
        group_interval_ns=timings["group_interval"],
        repeat_interval_ns=timings["repeat_interval"],
        routes=[_build(child, f"{path}.routes[{i}]", receivers) for i, child in enumerate(children)],
    )


def _duration(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{path}: expected a duration like 30s, 5m or 4h, got {value!r}")
    return duration_ns(str(value), path)


def _group_by(value: Any, path: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f'{path}: expected a list of label names (or ["..."]), got {value!r}')
    names: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}[{i}]: expected a label name, got {name!r}")
        if name != GROUP_BY_ALL and (name[0].isdigit() or not set(name) <= _LABEL_NAME_CHARS):
            raise ValueError(f"{path}[{i}]: {name!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*) nor '...'")
        if name in names:
            raise ValueError(f"{path}[{i}]: {name!r} is listed twice")
        names.append(name)
    if GROUP_BY_ALL in names and len(names) > 1:
        raise ValueError(f"{path}: '...' (all labels) cannot be combined with other label names")
    return tuple(names) or None


def matchers_from_config(value: Any, path: str) -> tuple[LabelMatcher, ...]:
    """A YAML list of matcher strings (``['severity="critical"']``); errors name ``path[i]``."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{path}: expected a list of matchers like ['severity=\"critical\"'], got {value!r}")
    out = []
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ValueError(f'{path}[{i}]: expected a matcher string like severity="critical", got {text!r}')
        try:
            out.append(parse_matcher(text))
        except ValueError as exc:
            raise ValueError(f"{path}[{i}]: {exc}") from None
    return tuple(out)
