"""Property-based fuzz tests of everything that reads untrusted input.

Targets: the OTLP protobuf decoders (reference and native), OTLP/JSON, the alert rule parser, the
config loader and the query API's parameters. Each test feeds random and mutated-valid inputs
and asserts the input is either accepted or refused with the target's own error type and a
message that names the problem; anything else (another exception, a crash, a 5xx) fails.

Budgets: :func:`budget` gives each target its number of examples for the default run (all of
them together well under a minute); ``HYPOTHESIS_PROFILE=fuzz`` multiplies every budget by
:data:`FUZZ_SCALE` for a long run. How many inputs each target tried is printed at the end of
the pytest run (``fuzz inputs tried: {...}``). The coverage-guided harnesses for long runs are
in ``benchmarks/fuzz/``.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

FUZZ_SCALE = 100  # HYPOTHESIS_PROFILE=fuzz: this many times each target's default examples
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")

settings.register_profile(
    "fuzz",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

tried: Counter[str] = Counter()  # target -> inputs fed to it in this run


def budget(examples: int) -> settings:
    """Settings of one target: ``examples`` by default, :data:`FUZZ_SCALE` times more when fuzzing."""
    scale = FUZZ_SCALE if PROFILE == "fuzz" else 1
    return settings(
        settings.get_profile("fuzz"),
        max_examples=examples * scale,
        database=None,  # a fixed budget per run, not a replay of old failures
    )
