"""Build an :class:`~otel_audio.samplers.adaptive.AdaptiveSampler` from ``OTEL_TRACES_SAMPLER_ARG``.

otel-audio registers :func:`adaptive_sampler_factory` under the ``opentelemetry_traces_sampler``
entry point as ``audio_adaptive``. The OpenTelemetry SDK's configurator (used by
``opentelemetry-instrument`` and by distros) looks the name up when
``OTEL_TRACES_SAMPLER=audio_adaptive`` and calls the factory with the raw value of
``OTEL_TRACES_SAMPLER_ARG``: ``None`` when the variable is unset (the SDK docstring says an empty
string), otherwise the string as given. Both mean "use the defaults".

Note that a bare ``TracerProvider()`` does *not* consult entry points: its environment lookup
knows only the built-in samplers and falls back to ``parentbased_always_on`` for any other name.
Entry-point samplers take effect through the SDK configurator
(``opentelemetry.sdk._configuration``) or when the sampler is passed to ``TracerProvider``.

Accepted values of ``OTEL_TRACES_SAMPLER_ARG``:

- a bare number: the target of sampled traces per second per operation (``10``);
- comma-separated ``key=value`` pairs, any subset of:

  ================  ===========================================  =========
  key               meaning                                      default
  ================  ===========================================  =========
  target            sampled traces per second per operation      10
  min_p             lowest sampling probability                  0.0001
  load_threshold    load (0..1) above which p is reduced         0.8
  load_factor       multiplier for p under high load             0.5
  interval          adaptation interval in seconds               1
  max_operations    span names with their own budget             1000
  record_only       record unsampled spans for tail promotion    false
  ================  ===========================================  =========

For example ``OTEL_TRACES_SAMPLER_ARG=target=5,min_p=0.001,load_threshold=0.8``.

The returned sampler follows parent decisions itself, so it is not wrapped in ``ParentBased``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_audio.samplers.adaptive import AdaptiveSampler

_ACCEPTED = (
    "a bare number (target traces per second per operation) or comma-separated key=value pairs "
    "with keys target, min_p, load_threshold, load_factor, interval, max_operations, record_only"
)


def _positive(value: float) -> bool:
    return value > 0


def _probability(value: float) -> bool:
    return 0 < value <= 1


def _unit(value: float) -> bool:
    return 0 <= value <= 1


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


# key -> (AdaptiveSampler keyword, converter, check, what is accepted)
_KEYS: dict[str, tuple[str, Callable[[str], Any], Callable[[Any], bool], str]] = {
    "target": ("target_per_second", float, _positive, "a number > 0"),
    "min_p": ("min_probability", float, _probability, "a number in (0, 1]"),
    "load_threshold": ("load_threshold", float, _unit, "a number in [0, 1]"),
    "load_factor": ("load_factor", float, _probability, "a number in (0, 1]"),
    "interval": ("adaptation_interval_s", float, _positive, "a number of seconds > 0"),
    "max_operations": ("max_operations", int, lambda v: v >= 1, "an integer >= 1"),
    "record_only": ("record_only_for_tail", _parse_bool, lambda v: True, "true or false"),
}


def parse_sampler_arg(arg: str | None) -> dict[str, Any]:
    """Parse ``OTEL_TRACES_SAMPLER_ARG`` into :class:`AdaptiveSampler` keyword arguments.

    Raises:
        ValueError: Naming the key and what it accepts, for unknown keys and bad values.
    """
    if arg is None or not arg.strip():
        return {}
    text = arg.strip()
    if "=" not in text:
        return {"target_per_second": _convert("target", text)}
    kwargs: dict[str, Any] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(
                f"OTEL_TRACES_SAMPLER_ARG: {item.strip()!r} is not key=value; accepted: {_ACCEPTED}"
            )
        if key not in _KEYS:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: unknown key {key!r}; accepted: {_ACCEPTED}")
        kwargs[_KEYS[key][0]] = _convert(key, value.strip())
    return kwargs


def adaptive_sampler_factory(arg: str | None) -> AdaptiveSampler:
    """Entry-point factory: an :class:`AdaptiveSampler` configured from ``OTEL_TRACES_SAMPLER_ARG``.

    Args:
        arg: The raw variable: ``None`` (unset), ``""``, a bare number or ``key=value`` pairs.

    Raises:
        ValueError: If the argument cannot be parsed; the message names the key.
    """
    return AdaptiveSampler(**parse_sampler_arg(arg))


def _convert(key: str, text: str) -> Any:
    _, converter, check, accepted = _KEYS[key]
    try:
        value = converter(text)
    except ValueError:
        value = None
    if value is None or not check(value) or value != value:  # value != value catches NaN
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: {key} must be {accepted}, got {text!r}")
    return value
