"""Multiwindow, multi-burn-rate alert rules of an SLO, as the SRE workbook defines and Sloth generates them.

For a 30-day SLO (Sloth's defaults):

| severity | long window | short window | budget share | burn-rate factor |
| --- | --- | --- | --- | --- |
| page (critical) | 1h | 5m | 2 % | 14.4 |
| page (critical) | 6h | 30m | 5 % | 6 |
| ticket (warning) | 1d | 2h | 10 % | 3 |
| ticket (warning) | 3d | 6h | 10 % | 1 |

The factor is ``budget share x SLO period / long window``: burning that fast for the long window
spends that share of the budget. For other periods the windows scale with ``period / 30d`` (a 7d
SLO pages over 14m and 70s) and the factors stay the same. An alert fires when the burn rate
over both its long and its short window exceeds the factor; the short window makes it resolve
soon after the burning stops.

The rules read the ``slo.burn_rate`` series the ``slo`` processor emits (the short window's under
``slo.burn_rate.short``, see ``SHORT_METRIC``), in the alert grammar::

    last(slo.burn_rate{slo="availability",window="1h"}, 5m) > 14.4
      and last(slo.burn_rate.short{slo="availability",short_window="5m"}, 5m) > 14.4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from otel_audio.processors.alerting.grammar import format_number
from otel_audio.processors.slo.spec import DAY_NS, SLOSpec, _label

BASE_PERIOD_NS = 30 * DAY_NS
# The short windows' burn rates again, labelled short_window instead of window: the alert grammar's
# ``and`` pairs label sets that agree on the labels they share (as PromQL's ``and``; Sloth writes
# ``ignoring (sloth_window)``), so the two sides must not both carry a ``window`` label.
SHORT_METRIC = "slo.burn_rate.short"
MIN = 60 * 10**9
HOUR = 60 * MIN
# The base windows of the emitted burn rates: the short and long windows of the four alerts.
BASE_WINDOWS_NS = (5 * MIN, 30 * MIN, HOUR, 2 * HOUR, 6 * HOUR, DAY_NS, 3 * DAY_NS)


@dataclass(frozen=True)
class BurnAlert:
    """One multiwindow alert of the table above, at the 30-day base."""

    kind: str  # "page" or "ticket"
    severity: str  # "critical" or "warning"
    budget_share: float
    long_ns: int
    short_ns: int

    @property
    def factor(self) -> float:
        return round(self.budget_share * BASE_PERIOD_NS / self.long_ns, 6)


BURN_ALERTS = (
    BurnAlert("page", "critical", 0.02, HOUR, 5 * MIN),
    BurnAlert("page", "critical", 0.05, 6 * HOUR, 30 * MIN),
    BurnAlert("ticket", "warning", 0.10, DAY_NS, 2 * HOUR),
    BurnAlert("ticket", "warning", 0.10, 3 * DAY_NS, 6 * HOUR),
)


def scaled(base_ns: int, spec: SLOSpec) -> int:
    """A base window scaled to the SLO's period (whole seconds); 30 days leaves it as is.

    A timeslice SLO's windows are at least two timeslices long: a shorter window need not hold a
    whole slice, and would give no burn rate at all (a 1d SLO of 1m slices scales 5m to 10s).
    """
    floor = 2 * spec.timeslice_ns if spec.budgeting == "timeslices" else 10**9
    return max(floor, round(base_ns * spec.window_ns / BASE_PERIOD_NS / 10**9) * 10**9)


def short_windows(spec: SLOSpec) -> list[str]:
    """Labels of the alerts' short windows (5m 30m 2h 6h scaled)."""
    return [_label(scaled(alert.short_ns, spec)) for alert in BURN_ALERTS]


def windows(spec: SLOSpec) -> list[tuple[str, int]]:
    """``(label, ns)`` of the burn-rate windows of an SLO: 5m 30m 1h 2h 6h 1d 3d scaled."""
    return [(_label(scaled(w, spec)), scaled(w, spec)) for w in BASE_WINDOWS_NS]


def alert_rules(spec: SLOSpec, lookback_ns: int = 5 * MIN) -> list[dict[str, Any]]:
    """The four burn-rate rules of one SLO as alert rule maps (``rule_from_dict`` input)."""
    out = []
    where = f'slo="{spec.name}"'  # SLO names are unique: the service label is not needed to select
    look = _label(lookback_ns)
    for alert in BURN_ALERTS:
        long_label, short_label = _label(scaled(alert.long_ns, spec)), _label(scaled(alert.short_ns, spec))
        factor = format_number(alert.factor)
        condition = (
            f'last(slo.burn_rate{{{where},window="{long_label}"}}, {look}) > {factor} and '
            f'last({SHORT_METRIC}{{{where},short_window="{short_label}"}}, {look}) > {factor}'
        )
        out.append(
            {
                "name": f"SLOBurnRate:{spec.name}:{long_label}",
                "condition": condition,
                "severity": alert.severity,
                "labels": {"slo": spec.name, "long_window": long_label, "short_window": short_label,
                           "alert_kind": alert.kind, **({"service": spec.service} if spec.service else {})},
                "annotations": {
                    "summary": f"SLO {spec.name}: error budget burning {factor}x too fast "
                    f"over {long_label} and {short_label}",
                    "description": f"{alert.budget_share:.0%} of the {spec.window_label} error budget of "
                    f"{spec.name} (objective {spec.objective:g}) is spent in {long_label} at this rate; "
                    "burn rate over " + long_label + " {{ humanize $value }}",
                },
            }
        )  # fmt: skip
    return out
