"""The demo's faults: what each one does to the pipeline, the rule that catches it, and when it is on.

``make demo`` (``examples/demo_serve.py``) injects one fault at a time into the example pipeline
(:class:`examples.enhance_pipeline.Faults`), in turn, on a fixed schedule (:class:`FaultSchedule`),
and the receiver runs one alert rule per fault (:data:`FAULT_RULES`), so every fault ends as an
alert and a notification. The thresholds are fitted to the example pipeline on generated speech,
with room for a busy machine: enhancement in tens of milliseconds (under 0.2 s at a load of 20 on
two cores), quality index around 0.46, resident memory growing about 1 MB/s while the receiver
fills its head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from examples.enhance_pipeline import Faults

# Each fault as the pipeline's Faults, and how the demo describes it. The leak is released when
# its fault ends (a restart of the leaking worker), so a long demo does not grow without bound.
FAULTS: dict[str, tuple[Faults, str]] = {
    "latency": (
        Faults(latency_spike_probability=0.5, latency_spike_s=0.5),
        "latency spikes: enhancement stalls 0.5 s in half the files",
    ),
    "quality": (
        Faults(quality_drop_probability=0.9),
        "quality drop: a +20 dB gain regression clips the output of 9 files in 10",
    ),
    "errors": (
        Faults(error_probability=0.3),
        "errors: 3 files in 10 fail in load_audio, enhancement or output",
    ),
    "memory": (
        Faults(leak_bytes_per_file=4 << 20),
        "memory leak: 4 MiB per file kept in a cache that is never evicted",
    ),
}

# One rule per fault kind; the windows are short so that an alert fires within seconds of its
# fault starting and resolves within a minute of it ending.
FAULT_RULES: list[dict[str, Any]] = [
    {
        "name": "SlowEnhancement",
        "condition": 'p95(audio.stage.duration{audio.stage="enhancement"}, 30s) > 0.4',
        "severity": "warning",
        "annotations": {"summary": "enhancement p95 {{ humanize $value }}s (limit 0.4 s)"},
    },
    {
        "name": "QualityDrop",
        "condition": "avg(audio.quality.index, 30s) < 0.38",
        "severity": "warning",
        "annotations": {"summary": 'mean quality index {{ printf "%.2f" $value }} (limit 0.38)'},
    },
    {
        "name": "StageErrors",
        "condition": "increase(audio.errors, 1m) > 0",
        "severity": "error",
        "annotations": {"summary": "{{ humanize $value }} stage errors in the last minute"},
    },
    {
        "name": "MemoryGrowth",
        "condition": "rate_of_change(process.memory.usage, 30s) > 3e6",
        "for": "15s",  # the process grows for a few seconds after start, as it warms up
        "severity": "warning",
        "annotations": {"summary": "resident memory grows {{ humanize $value }}B/s"},
    },
]


@dataclass(frozen=True)
class FaultSchedule:
    """Which fault is on at a time: ``kinds`` in turn, one every ``every_s``, each for ``length_s``.

    The first fault starts ``every_s`` after the pipeline does, so the dashboard has a baseline
    first; ``every_s`` 0 means no faults.
    """

    kinds: tuple[str, ...]
    every_s: float
    length_s: float

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault kind {unknown[0]!r}; expected some of {', '.join(FAULTS)}")
        if self.every_s < 0 or self.length_s <= 0:
            raise ValueError("fault period must be >= 0 and fault length > 0 seconds")
        if self.every_s and self.length_s >= self.every_s:
            raise ValueError(
                f"a fault lasting {self.length_s:g} s must be shorter than its period, {self.every_s:g} s"
            )

    def at(self, elapsed_s: float) -> tuple[str | None, float]:
        """The fault on ``elapsed_s`` after the start (or ``None``) and seconds until the next change."""
        if not self.every_s or not self.kinds:
            return None, float("inf")
        slot = int(elapsed_s // self.every_s)
        into = elapsed_s - slot * self.every_s
        if slot >= 1 and into < self.length_s:
            return self.kinds[(slot - 1) % len(self.kinds)], self.length_s - into
        return None, self.every_s - into

    def next_kind(self, elapsed_s: float) -> str | None:
        """The fault that starts next after ``elapsed_s``."""
        if not self.every_s or not self.kinds:
            return None
        return self.kinds[int(elapsed_s // self.every_s) % len(self.kinds)]
