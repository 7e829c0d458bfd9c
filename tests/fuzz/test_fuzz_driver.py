"""``benchmarks/fuzz_all.py`` runs every target and prints one JSON line of inputs and crashes.

Only the shape and the zero-crash verdict are checked, with tiny counts; the figures come from
long runs of the benchmark itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_all.py"
TARGETS = {"otlp_scan", "otlp_json", "rules", "config"}


def run(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(DRIVER), *args], capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    return json.loads(line)


def test_the_hypothesis_engine_feeds_every_target_and_finds_no_crash(tmp_path):
    result = run("--engine", "hypothesis", "--runs", "150", "--seconds", "30", "--artifacts", str(tmp_path))
    assert result["benchmark"] == "fuzz" and result["engine"] == "hypothesis"
    assert set(result["targets"]) == TARGETS
    for target, figures in result["targets"].items():
        assert figures["inputs"] == 150, (target, figures)
        assert figures["crashes"] == 0, (target, figures)


def test_the_default_engine_reports_inputs_per_target(tmp_path):
    options = ("--runs", "300", "--seconds", "30", "--targets", "rules,config")
    result = run(*options, "--artifacts", str(tmp_path))
    assert result["engine"] in ("atheris", "hypothesis")
    assert set(result["targets"]) == {"rules", "config"}
    assert all(f["inputs"] > 0 and f["crashes"] == 0 for f in result["targets"].values()), result
