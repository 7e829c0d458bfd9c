"""atheris harness of the ``config`` target (see ``targets.py``); a finding is a crash report.

python benchmarks/fuzz/config.py -atheris_runs=100000 [corpus_dir]
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["otel_audio"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.config)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
