"""Streaming anomaly detection per series, installed as ``otel_audio.processors.anomaly``.

A detector follows one series and scores each point as it arrives, in O(1) amortised work:
``update(t_ns, value)`` returns a :class:`Score` (score in [0, 1], expected value, band,
``is_anomaly``, a one-line ``explanation``) or ``None`` while warming up. On offer, by name:

- ``robust_z``: distance from an exact rolling median in robust sigmas (1.4826 MAD);
- ``ewma``: residual from an exponentially weighted mean, in EW standard deviations;
- ``holt_winters``: additive Holt-Winters one-step forecast residuals, in EW standard deviations;
- ``stl_esd``: STL on a rolling buffer (refit every k points), generalised ESD on its residuals;
- ``cusum``: two-sided CUSUM of robust z-scores, reporting level shifts;
- ``ensemble``: several of the above, combined by vote (default), max or mean.

All map their statistic to a score with the same logistic (:mod:`.score`). Example::

    detector = make_detector("robust_z", window=120, period=288)
    for t_ns, value in points:
        result = detector.update(t_ns, value)
        if result is not None and result.is_anomaly:
            print(result.explanation)

:class:`AnomalyProcessor` (chain name ``anomaly``) runs one detector per series of configured
metrics and emits ``anomaly.score|expected|lower|upper`` series; ``docs/anomaly.md`` has the
parameters and the CLI (``otel-audio detect``).
"""

from otel_audio.processors.anomaly.processor import OUTPUTS, AnomalyProcessor, from_options
from otel_audio.processors.anomaly.registry import DETECTORS, Ensemble, detector_params, make_detector
from otel_audio.processors.anomaly.score import Score, score_of, z_of

__all__ = [
    "DETECTORS",
    "OUTPUTS",
    "AnomalyProcessor",
    "Ensemble",
    "Score",
    "detector_params",
    "from_options",
    "make_detector",
    "score_of",
    "z_of",
]
