"""The alerting stage of the receiver's chain: rules evaluated as batches arrive, notifications out.

:class:`Alerting` wires the stages of :mod:`otel_audio.processors.alerting` together:

- every metric batch updates the shared windows; the rules reading a metric the batch touched
  are evaluated at the batch's newest point time (event-driven: no evaluation interval between a
  breaching point and its alert), and the ticker evaluates every rule on the wall clock, which
  catches ``absent`` and lets ``for`` run out;
- changes go to the history (SQLite) and the dispatcher (routing tree, grouping, inhibition,
  silences); what the dispatcher sends goes to the incidents and escalation, and into the
  durable outbox, whose workers deliver through the channels.

Options (the ``alerting`` processor in the receiver's YAML; ``docs/alerting.md``)::

    rules: [...]                      # processors/alerting/rules.py
    channels: {name: {type: ...}}     # otel_audio/notify/channels
    receivers: {oncall: [slack, pagerduty]}   # optional: a receiver is a list of channels
    route: {receiver: ..., group_by: [...], routes: [...]}   # default: every channel
    inhibit_rules: [...]
    escalation_policies: {...}
    external_url: http://127.0.0.1:8080
    damping: {flap_starts: 3, flap_window: 15m, flap_hold: 5m}

A rule's ``channels`` put routes for it in front of the configured ones (with ``continue``), so
``add_alert_rule(..., channels=["slack"])`` reaches Slack whatever the tree says. Rules added
through the API are kept in ``<data_dir>/alerting/api-rules.json`` and survive a restart.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from otel_audio.notify.channels import channel_from_config
from otel_audio.notify.outbox import Outbox
from otel_audio.processors.alerting.dispatch import Dispatcher
from otel_audio.processors.alerting.escalation import Escalator, policies_from_config
from otel_audio.processors.alerting.evaluate import Evaluator, Windows
from otel_audio.processors.alerting.grammar import parse
from otel_audio.processors.alerting.incidents import Incidents
from otel_audio.processors.alerting.inhibit import Inhibitor, inhibit_rules_from_config
from otel_audio.processors.alerting.model import ALERTNAME, Alert, AlertState, Notification, Sample
from otel_audio.processors.alerting.routing import route_from_config
from otel_audio.processors.alerting.rules import AlertRule, rule_from_dict
from otel_audio.processors.alerting.silences import Silences
from otel_audio.processors.alerting.state import AlertHistory, Damping, RuleAlerts
from otel_audio.processors.base import EXEMPLARS_SCHEMA, Batch, MetricBatch
from otel_audio.processors.units import duration_ns
from otel_audio.store.durable import fsync_path

_OPTIONS = ("rules", "channels", "receivers", "route", "inhibit_rules", "escalation_policies",
            "external_url", "damping")  # fmt: skip
DEFAULT_ROUTE = {"group_by": ["alertname", "service"], "group_wait": "0s", "group_interval": "1m",
                 "repeat_interval": "4h"}  # fmt: skip
DEFAULT_RECEIVER = "default"
MAX_SENT_KEYS = 100_000  # last notification key per (receiver, group), to tell repeats apart
HOUSEKEEPING_NS = 3600 * 10**9  # delivered notifications and expired silences are pruned hourly


class _Rule:
    """A rule with its evaluator and its alert instances."""

    def __init__(self, rule: AlertRule, windows: Windows, damping: Damping, restored: list[Alert]) -> None:
        self.rule = rule
        self.evaluator = Evaluator(rule.parsed, windows)
        self.alerts = RuleAlerts(rule, damping, restored)


class Alerting:
    """The chain member (see the module docstring).

    Args:
        options: the processor's options.
        data_dir: where the alerting state lives (``<data_dir>/alerting/``).
        clock: wall-clock nanoseconds for the dispatcher's timers (tests inject one).
    """

    name = "alerting"

    def __init__(self, options: dict[str, Any] | None, data_dir: str | Path,
                 clock: Callable[[], int] = time.time_ns) -> None:  # fmt: skip
        options = dict(options or {})
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"alerting option {unknown[0]}: expected only the keys {', '.join(_OPTIONS)}")
        self.clock = clock
        self.dir = Path(data_dir) / "alerting"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.external_url = str(options.get("external_url", ""))
        self.damping = _damping(options.get("damping", {}))
        channels = _map(options, "channels")
        self.channels = {name: channel_from_config(name, cfg) for name, cfg in channels.items()}
        self.receivers = self._receivers(_map(options, "receivers"))
        config_rules = options.get("rules", [])
        if not isinstance(config_rules, list):
            raise ValueError(f"alerting option rules: expected a list of rule maps, got {config_rules!r}")
        rules = [rule_from_dict(item, f"rules[{i}]") for i, item in enumerate(config_rules)]
        self._check_unique(rules)
        self._route_config = dict(options.get("route") or {"receiver": DEFAULT_RECEIVER, **DEFAULT_ROUTE})
        self.inhibitor = Inhibitor(inhibit_rules_from_config(options.get("inhibit_rules")))
        policies = policies_from_config(options, list(self.channels))
        self.history = AlertHistory(self.dir / "history.sqlite")
        self.silences = Silences(self.dir / "silences.sqlite")
        self.incidents = Incidents(self.dir / "incidents.sqlite")
        self.outbox = Outbox(self.dir / "outbox.sqlite", self.channels)
        self.escalator = Escalator(policies, self.incidents, self._enqueue)
        self.windows = Windows()
        self._rules: dict[str, _Rule] = {}
        self._sent_keys: dict[tuple[str, str], str] = {}
        self._pruned_at = 0
        self._view: Callable[[], Any] | None = None  # the store's view, once attached
        # False while the receiver replays its write-ahead log after a restart: the replayed
        # batches fill the windows, but the history already holds the transitions they caused,
        # so judging them again (at their old times, on half-filled windows) would invent
        # transitions; the first tick after the replay judges everything at the wall clock
        self.evaluating = True
        for rule in rules + self._load_api_rules():
            self._install(rule)
        self.dispatcher = Dispatcher(
            self._route(), self.inhibitor, self.silences, self._send, log_path=self.dir / "nflog.sqlite"
        )
        self._resume()
        self.outbox.start()

    # -- chain ---------------------------------------------------------------------------------

    def process(self, batch: Batch) -> None:
        if not isinstance(batch, MetricBatch) or batch.points.num_rows == 0:
            return
        with self._lock:
            touched = self.windows.observe(batch)
            if not touched or not self.evaluating:
                return
            now = pc.max(batch.points.column("time_unix_nano")).as_py()
            for entry in list(self._rules.values()):
                if entry.evaluator.metrics & touched:
                    self._apply(entry, entry.evaluator.evaluate(now), now)

    def tick(self, now_unix_nano: int) -> None:
        with self._lock:
            for entry in list(self._rules.values()):
                self._apply(entry, entry.evaluator.evaluate(now_unix_nano), now_unix_nano)
            self.dispatcher.tick(now_unix_nano)
            self.escalator.tick(now_unix_nano)
            if now_unix_nano - self._pruned_at >= HOUSEKEEPING_NS:
                self._pruned_at = now_unix_nano
                self.outbox.prune()
                self.silences.gc(now_unix_nano)

    def close(self) -> None:
        with self._lock:
            self.outbox.close()
            self.dispatcher.close()
            for store in (self.history, self.silences, self.incidents):
                store.close()

    def _apply(self, entry: _Rule, samples: list[Sample], now: int) -> None:
        changes = entry.alerts.update(samples, now)
        if not changes:
            return
        if self.external_url:
            changes = [_with_url(a, self.external_url) for a in changes]
        self.history.record(entry.rule.name, changes, now)
        wall = self.clock()
        for alert in changes:
            self.dispatcher.receive(alert, wall)

    def _resume(self) -> None:
        """Give the dispatcher, whose groups live in memory, what stands after a restart.

        Firing alerts restored from the history go back into their groups; an alert the last
        notification of its group showed firing, whose newest transition is a resolve, goes in
        resolved. So a transition recorded just before a crash, before the outbox had it, is
        notified now; one that was notified is dropped by the notification log, and one notified
        but not yet logged there by the outbox's idempotency key.
        """
        wall = self.clock()
        active = set()
        for entry in self._rules.values():
            for alert in entry.alerts.active():
                active.add(alert.fingerprint)
                if alert.state is AlertState.FIRING:
                    self.dispatcher.receive(self._linked(alert), wall)
        for fp in sorted(self.dispatcher.notified_firing() - active):
            alert = self.history.last_transition(fp)
            if alert is not None and alert.state is AlertState.RESOLVED and alert.name in self._rules:
                self.dispatcher.receive(self._linked(alert), wall)

    def _linked(self, alert: Alert) -> Alert:
        return _with_url(alert, self.external_url) if self.external_url else alert

    # -- notifications ---------------------------------------------------------------------------

    def _send(self, notification: Notification) -> None:
        """The dispatcher's output: follow the incident, then hand to the outbox."""
        self.escalator.observe(notification, self.clock())
        channels = self.receivers.get(notification.receiver, [])
        if not channels:
            return
        slot = (notification.receiver, notification.group_key)
        key = notification.key
        if self._sent_keys.get(slot) == key:  # a repeat of an unchanged group: a delivery of its own
            key = f"{key}:repeat:{notification.created_at}"
        else:
            self._sent_keys.pop(slot, None)
            self._sent_keys[slot] = key
            if len(self._sent_keys) > MAX_SENT_KEYS:  # the oldest groups first (insertion order)
                del self._sent_keys[next(iter(self._sent_keys))]
        self.outbox.put(notification, channels, key=key)

    def _enqueue(self, notification: Notification) -> None:
        """The escalator's output: one channel per page; its idempotency key comes in ``extra``."""
        self.outbox.put(notification, [notification.receiver])

    # -- rules -----------------------------------------------------------------------------------

    def rules(self) -> list[AlertRule]:
        with self._lock:
            return [entry.rule for entry in self._rules.values()]

    def put_rule(self, item: dict[str, Any], create: bool) -> AlertRule:
        """Add (``create``) or replace a rule from the API; validated before it takes effect.

        Raises:
            ValueError: the rule is invalid, or (create) its name is taken.
            KeyError: (replace) no rule of that name.
            PermissionError: the rule comes from the config file, which the API does not change.
        """
        rule = rule_from_dict(item, "rule", source="api")
        self._check_channels(rule)
        with self._lock:
            existing = self._rules.get(rule.name)
            if create and existing is not None:
                raise ValueError(f"rule {rule.name!r} already exists; PUT replaces it")
            if not create and existing is None:
                raise KeyError(f"rule {rule.name!r} not found")
            if existing is not None and existing.rule.source != "api":
                raise PermissionError(_read_only(existing.rule))
            if existing is not None:
                self._uninstall(rule.name)
            watched = self.windows.metrics
            self._install(rule)
            self._warm(self.windows.metrics - watched)
            self._save_api_rules()
            self.dispatcher.set_route(self._route(), self.clock())
            return rule

    def delete_rule(self, name: str) -> None:
        with self._lock:
            entry = self._rules.get(name)
            if entry is None:
                raise KeyError(f"rule {name!r} not found")
            if entry.rule.source != "api":
                raise PermissionError(_read_only(entry.rule))
            self._uninstall(name)
            self._save_api_rules()
            self.dispatcher.set_route(self._route(), self.clock())

    def set_source_rules(self, source: str, items: list[dict[str, Any]]) -> None:
        """Replace every rule of ``source`` (e.g. ``"slo"``: generated burn-rate rules) with ``items``.

        Such rules are read-only through the API, like config rules, and are not saved with the
        API rules: their source generates them again after a restart. Unchanged rules keep
        their alert state.
        """
        rules = [rule_from_dict(item, f"{source} rule {i}", source=source) for i, item in enumerate(items)]
        with self._lock:
            for rule in rules:
                existing = self._rules.get(rule.name)
                if existing is not None and existing.rule.source != source:
                    raise ValueError(f"rule {rule.name!r} already exists from the {existing.rule.source}")
            wanted = {rule.name: rule for rule in rules}
            for name, entry in list(self._rules.items()):
                if entry.rule.source == source and wanted.get(name) != entry.rule:
                    self._uninstall(name)
            watched = self.windows.metrics
            for rule in rules:
                if rule.name not in self._rules:
                    self._install(rule)
            self._warm(self.windows.metrics - watched)
            self.dispatcher.set_route(self._route(), self.clock())

    def test_condition(self, condition: str, at_ns: int) -> list[Sample]:
        """What a condition gives at ``at_ns`` (a dry run; nothing fires); metrics no rule reads
        yet are read from the store for it."""
        parsed = parse(condition)
        with self._lock:
            watched = self.windows.metrics
            evaluator = Evaluator(parsed, self.windows)
            self._warm(self.windows.metrics - watched)
            try:
                return evaluator.evaluate(at_ns)
            finally:
                evaluator.close()

    def attach_store(self, view: Callable[[], Any]) -> None:
        """Read the windows of every watched metric from the store now, and of metrics later
        rules watch when they are added (``view``: the store's ``view`` method).

        The windows live in memory, and a graceful stop flushes the head to blocks (so the WAL
        replay that follows a start is short): without this a restart would find every window
        empty and resolve alerts that still hold, and a rule added through the API would judge
        ``avg(x, 1h)`` on the minutes since it was made. Call it before the WAL replay.
        """
        with self._lock:
            self._view = view
            self._warm(self.windows.metrics)

    def _warm(self, metrics: frozenset[str] | set[str]) -> int:
        """Feed ``metrics``' recent points from the store to the windows; the points read."""
        if self._view is None or not metrics:
            return 0
        longest = {name: self.windows.metric(name).longest for name in metrics}
        view, now_ns = self._view(), self.clock()
        series = view.head.series
        series = series.filter(pc.is_in(series.column("metric"), pa.array(list(longest), pa.string())))
        if series.num_rows == 0:
            return 0
        ids = series.column("series_id").combine_chunks()
        start = now_ns - max(longest.values())
        points = view.points(ids.to_numpy(), start, now_ns + 1)
        recent = pc.greater_equal(points.column("time_unix_nano"), start)
        points = points.filter(pc.and_(pc.is_in(points.column("series_id"), ids), recent))
        if points.num_rows:
            points = points.take(pc.sort_indices(points, [("time_unix_nano", "ascending")]))
            self.windows.observe(MetricBatch(points, series, EXEMPLARS_SCHEMA.empty_table()))
        return points.num_rows

    def active_alerts(self) -> list[Alert]:
        with self._lock:
            return [a for entry in self._rules.values() for a in entry.alerts.active()]

    def _install(self, rule: AlertRule) -> None:
        self._check_channels(rule)
        self._rules[rule.name] = _Rule(rule, self.windows, self.damping, self.history.restore(rule.name))

    def _uninstall(self, name: str) -> None:
        entry = self._rules.pop(name)
        entry.evaluator.close()
        wall = self.clock()
        for alert in entry.alerts.active():  # a deleted rule's firing alerts resolve
            if alert.state.value == "firing":
                self.dispatcher.receive(_resolved(alert, wall), wall)
        self.history.forget_rule(name)

    def _check_unique(self, rules: list[AlertRule]) -> None:
        names = [r.name for r in rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"alerting option rules: the name {repeated[0]!r} is used twice")

    def _check_channels(self, rule: AlertRule) -> None:
        unknown = [c for c in rule.channels if c not in self.channels and c not in self.receivers]
        if unknown:
            known = ", ".join(sorted(set(self.channels) | set(self.receivers))) or "none configured"
            raise ValueError(f"rule {rule.name!r}: unknown channel {unknown[0]!r}; known: {known}")

    def _route(self):
        config = dict(self._route_config)
        by_rule = [
            {"receiver": channel, "matchers": [f'{ALERTNAME}="{entry.rule.name}"'], "continue": True}
            for entry in self._rules.values()
            for channel in entry.rule.channels
        ]
        config["routes"] = by_rule + list(config.get("routes", []))
        try:
            return route_from_config(config, self.receivers)
        except ValueError as exc:
            raise ValueError(f"alerting option {exc}") from None

    def _receivers(self, configured: dict[str, Any]) -> dict[str, list[str]]:
        out = {name: [name] for name in self.channels}
        out[DEFAULT_RECEIVER] = list(self.channels)
        for name, channels in configured.items():
            ok = isinstance(channels, list) and all(c in self.channels for c in channels)
            if not ok:
                raise ValueError(
                    f"alerting option receivers.{name}: expected a list of configured channels "
                    f"({', '.join(self.channels) or 'none configured'}), got {channels!r}"
                )
            out[name] = list(channels)
        return out

    # -- API rules on disk -----------------------------------------------------------------------

    def _api_rules_path(self) -> Path:
        return self.dir / "api-rules.json"

    def _load_api_rules(self) -> list[AlertRule]:
        path = self._api_rules_path()
        if not path.exists():
            return []
        items = json.loads(path.read_text())
        return [rule_from_dict(item, f"{path.name}[{i}]", source="api") for i, item in enumerate(items)]

    def _save_api_rules(self) -> None:
        items = []
        for entry in self._rules.values():
            if entry.rule.source == "api":
                item = entry.rule.to_dict()
                item.pop("source")
                items.append(item)
        path = self._api_rules_path()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(items, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(self.dir)


def _read_only(rule: AlertRule) -> str:
    if rule.source == "config":
        return f"rule {rule.name!r} comes from the config file; change it there"
    return f"rule {rule.name!r} is generated by the {rule.source} processor; change its definition there"


def _with_url(alert: Alert, base: str) -> Alert:
    from dataclasses import replace

    return replace(alert, generator_url=f"{base.rstrip('/')}/api/v1/rules/{alert.name}")


def _resolved(alert: Alert, now: int) -> Alert:
    from dataclasses import replace

    from otel_audio.processors.alerting.model import AlertState

    return replace(alert, state=AlertState.RESOLVED, ends_at=now)


def _map(options: dict[str, Any], key: str) -> dict[str, Any]:
    value = options.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"alerting option {key}: expected a map, got {value!r}")
    return value


def _damping(value: Any) -> Damping:
    where = "alerting option damping"
    if not isinstance(value, dict) or set(value) - {"flap_starts", "flap_window", "flap_hold"}:
        raise ValueError(f"{where}: expected a map of flap_starts, flap_window, flap_hold, got {value!r}")
    starts = value.get("flap_starts", 3)
    if not isinstance(starts, int) or isinstance(starts, bool) or starts < 0:
        raise ValueError(f"{where}.flap_starts: expected an integer >= 0 (0: off), got {starts!r}")
    return Damping(
        flap_starts=starts,
        flap_window_ns=duration_ns(str(value.get("flap_window", "15m")), f"{where}.flap_window"),
        flap_hold_ns=duration_ns(str(value.get("flap_hold", "5m")), f"{where}.flap_hold"),
    )


def from_options(options: dict[str, Any] | None, data_dir: str | Path) -> Alerting:
    """Build the chain member; ``ValueError`` names the option that is wrong."""
    return Alerting(options, data_dir)
