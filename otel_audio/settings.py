"""Process-wide switches for what the decorators compute, set by :func:`otel_audio.configure`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    """Switches read on every decorated call, so they are plain attributes, not env lookups.

    Args:
        signal_metrics: compute buffer signal metrics (RMS, peak, clipping, silence, blind SNR)
            on stage inputs and outputs.
        signal_sample_ratio: fraction of stage calls, in [0, 1], for which they are computed;
            they cost time proportional to the audio length, so busy services sample them.
    """

    signal_metrics: bool = False
    signal_sample_ratio: float = 0.1


settings = Settings()
