"""An instrumented speech-enhancement pipeline and the scripts that drive it.

``examples`` lives in the source checkout, not in the installed distribution: run it from the
repository root (``make demo``, ``otel-audio demo`` or ``python -m examples.demo``).
"""
