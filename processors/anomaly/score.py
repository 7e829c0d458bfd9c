"""What every detector returns, and the one map from a detector's statistic to a score in [0, 1].

Each detector reduces its evidence for a point to a *z-equivalent* statistic ``z``: a signed
number in units of the series' (robust) standard deviation, where ``|z| = 4`` is the default
decision boundary. The robust z-score, EWMA and Holt-Winters residuals are z-scores already;
CUSUM reports ``4 * S / h`` (its cumulative sum over its threshold); STL + ESD reports
``4 * R / lambda`` (the ESD statistic over its critical value). All then share

    score(z) = 1 / (1 + exp(-SLOPE * (|z| - CENTER)))      SLOPE = 2, CENTER = 4

a logistic, monotone in ``|z|``: ``|z|`` 0 -> 0.0003, 3 -> 0.12, 4 -> 0.5, 5 -> 0.88, 6 -> 0.98,
8 -> 0.9997. A point is anomalous when ``score >= threshold`` (0.5 by default, i.e. ``|z| >= 4``);
the band ``[lower, upper]`` is where the score stays below the threshold, so a value outside the
band is exactly a value flagged.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

SLOPE = 2.0
CENTER = 4.0
DEFAULT_THRESHOLD = 0.5


def score_of(z: float) -> float:
    """The score in [0, 1] of a z-equivalent statistic (monotone in ``|z|``)."""
    x = -SLOPE * (abs(z) - CENTER)
    if x > 700.0:  # exp would overflow; the score is 0 to double precision
        return 0.0
    return 1.0 / (1.0 + math.exp(x))


def z_of(score: float) -> float:
    """The ``|z|`` at which the score equals ``score`` (the inverse of :func:`score_of`)."""
    if not 0.0 < score < 1.0:
        raise ValueError(f"score {score!r} must be strictly between 0 and 1")
    return CENTER + math.log(score / (1.0 - score)) / SLOPE


def check_threshold(threshold: float) -> float:
    """Validate a score threshold and return it as a float."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    return value


class Score(NamedTuple):
    """One point's verdict.

    ``explanation`` is formatted on demand from ``template`` (most points are never explained).
    """

    score: float  # in [0, 1], see score_of
    expected: float  # what the detector expected at this point
    lower: float  # the band: values inside it score below the threshold
    upper: float
    is_anomaly: bool  # score >= the detector's threshold
    value: float  # the observed value
    statistic: float  # the signed z-equivalent statistic
    detail: float  # detector-specific figure for the explanation (e.g. CUSUM's level shift)
    template: str  # str.format template of the explanation

    @property
    def explanation(self) -> str:
        """One line saying why the point scored as it did."""
        return self.template.format(
            value=self.value,
            expected=self.expected,
            z=abs(self.statistic),
            side="above" if self.statistic >= 0 else "below",
            detail=self.detail,
            lower=self.lower,
            upper=self.upper,
        )


class Detector(Protocol):
    """A streaming detector for one series; ``update`` returns ``None`` while warming up."""

    name: str
    threshold: float

    def update(self, t_ns: int, value: float) -> Score | None: ...
