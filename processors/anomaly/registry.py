"""The detectors by name, the ensemble that combines them, and ``make_detector``."""

from __future__ import annotations

import inspect
from typing import Any

from otel_audio.processors.anomaly import params
from otel_audio.processors.anomaly.detectors import Cusum, Ewma, HoltWinters, RobustZ
from otel_audio.processors.anomaly.esd import StlEsd
from otel_audio.processors.anomaly.score import DEFAULT_THRESHOLD, Detector, Score, check_threshold, z_of

COMBINE = ("vote", "max", "mean")


class Ensemble:
    """Several detectors on the same series, their scores combined.

    ``combine="vote"`` (default) scores a point with the ``votes``-th largest member score, so it is
    an anomaly exactly when at least ``votes`` members score it at or above the threshold;
    ``"max"`` and ``"mean"`` take the largest or the mean score. ``expected`` and the band are the
    medians of the members'. The ensemble warms up until every member has.

    Args:
        members: detector names; default robust_z, holt_winters, cusum (ewma instead of
            holt_winters when ``period`` is 0).
        combine: "vote", "max" or "mean".
        votes: members that must agree (vote only).
        period: points per season, handed to the members that take it.
        threshold: score at which a point is an anomaly (also handed to every member).
        member_params: per-member parameters, e.g. ``{"cusum": {"h": 8}}``.
    """

    name = "ensemble"
    _QUIET = "value {value:.4g}: combined score below the threshold (expected {expected:.4g})"

    def __init__(
        self,
        *,
        members: list[str] | tuple[str, ...] | None = None,
        combine: str = "vote",
        votes: int = 2,
        period: int = 0,
        threshold: float = DEFAULT_THRESHOLD,
        member_params: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        period = params.integer("period", period, 0)
        if members is None:
            members = ("robust_z", "holt_winters" if period >= 2 else "ewma", "cusum")
        if isinstance(members, str) or not members:
            raise ValueError(f"members must be a non-empty list of detector names, got {members!r}")
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {combine!r}")
        self.combine = combine
        self.votes = params.integer("votes", votes, 1)
        if self.votes > len(members):
            raise ValueError(f"votes ({votes}) exceeds the number of members ({len(members)})")
        self.threshold = check_threshold(threshold)
        member_params = dict(member_params or {})
        unknown = set(member_params) - set(members)
        if unknown:
            raise ValueError(f"member_params names {sorted(unknown)} that are not members {list(members)}")
        self.members: list[Detector] = []
        for name in members:
            if name == "ensemble":
                raise ValueError("an ensemble cannot be a member of an ensemble")
            shared: dict[str, Any] = {"threshold": self.threshold}
            if period and "period" in _accepted(_lookup(name)):
                shared["period"] = period
            self.members.append(make_detector(name, **{**shared, **member_params.get(name, {})}))
        self._zthr = z_of(self.threshold)

    def update(self, t_ns: int, value: float) -> Score | None:
        scores = [member.update(t_ns, value) for member in self.members]
        if None in scores:
            return None
        values = [x.score for x in scores]
        if self.combine == "vote":
            s = sorted(values, reverse=True)[self.votes - 1]
        elif self.combine == "max":
            s = max(values)
        else:
            s = sum(values) / len(values)
        mid = len(scores) // 2
        expected = sorted([x.expected for x in scores])[mid]
        lower = sorted([x.lower for x in scores])[mid]
        upper = sorted([x.upper for x in scores])[mid]
        anomaly = s >= self.threshold
        statistic = _z_equivalent(s) * (1.0 if value >= expected else -1.0)
        if anomaly:
            agree = sum(x.is_anomaly for x in scores)
            strongest = values.index(max(values))  # the first of equal best, as a stable sort has it
            best, member = scores[strongest], self.members[strongest]
            top = best.explanation.replace("{", "{{").replace("}", "}}")
            template = f"{agree} of {len(scores)} detectors flag it; strongest ({member.name}): {top}"
        else:
            template = self._QUIET
        return Score(s, expected, lower, upper, anomaly, value, statistic, 0.0, template)


def _z_equivalent(score: float) -> float:
    if score <= 0.0:
        return 0.0
    if score >= 1.0:
        return float("inf")
    return max(0.0, z_of(score))


DETECTORS: dict[str, type] = {
    "robust_z": RobustZ,
    "ewma": Ewma,
    "holt_winters": HoltWinters,
    "stl_esd": StlEsd,
    "cusum": Cusum,
    "ensemble": Ensemble,
}


def _lookup(name: str) -> type:
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTORS)}") from None


def _accepted(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def detector_params(name: str) -> list[str]:
    """The parameter names detector ``name`` accepts."""
    return _accepted(_lookup(name))


def make_detector(name: str, **kwargs: Any) -> Detector:
    """A new detector ``name`` with ``kwargs``; ValueError naming what is wrong and what is accepted."""
    cls = _lookup(name)
    accepted = _accepted(cls)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ValueError(f"detector {name!r} has no parameter {names}; accepted: {', '.join(accepted)}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"detector {name!r}: {exc}") from None
