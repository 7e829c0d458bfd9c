"""Validation of detector parameters: each error names the parameter, the value and what is accepted."""

from __future__ import annotations

import math
from typing import Any


def integer(name: str, value: Any, minimum: int) -> int:
    """An int >= minimum (floats that are whole numbers are accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite float in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    below = value <= low if low_open else value < low
    if below or value > high:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low:g}, {high:g}], got {value!r}")
    return float(value)
