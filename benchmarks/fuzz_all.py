"""Run every fuzz target for a bounded count and time; print one JSON line of inputs and crashes.

With atheris installed (``pip install -e '.[fuzz]'``) each target runs under libFuzzer in its own
process (``benchmarks/fuzz/<target>.py``), seeded with valid inputs, with a per-input timeout and
an RSS limit, so a hang or a memory blow-up counts as a crash like a segfault or an uncaught
exception does; crash inputs are kept under ``--artifacts``, one folder per run. Without
atheris, the same targets run under hypothesis' ``fuzz_one_input`` (random bytes, no coverage
feedback) in this process.

    python benchmarks/fuzz_all.py [--runs 100000] [--seconds 120] [--targets otlp_scan,rules]
                                  [--engine auto|atheris|hypothesis]

Output: ``{"benchmark": "fuzz", "engine": "atheris", "targets": {"otlp_scan": {"inputs": 100000,
"crashes": 0, "seconds": 41.2}, ...}}``. The exit status is 1 when any target crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "fuzz"
TARGETS = ("otlp_scan", "otlp_json", "rules", "config")
_DONE = re.compile(r"Done (\d+) (?:runs )?in (\d+) second")
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)


def _targets_module():
    sys.path.insert(0, str(HERE))
    import targets

    return targets


def run_atheris(target: str, runs: int, seconds: int, artifacts: Path) -> dict:
    """One target under libFuzzer in a child process; inputs from its own report."""
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    for i, seed in enumerate(_targets_module().seeds(target)):
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(HERE / f"{target}.py"),
        f"-atheris_runs={runs}",
        f"-max_total_time={seconds}",
        "-timeout=10",  # seconds per input: beyond it, a hang
        "-rss_limit_mb=2048",
        "-max_len=8192",
        f"-artifact_prefix={artifacts}/{target}-",
        str(corpus),
    ]
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - began
    log = done.stderr
    finding = done.stdout  # atheris prints an uncaught exception's traceback on stdout
    finished = _DONE.search(log)
    progress = [int(n) for n in _PROGRESS.findall(log)]
    inputs = int(finished.group(1)) if finished else max(progress, default=0)
    # libFuzzer writes an artifact for every finding (crash-, timeout-, oom-, leak-); a run that
    # printed "Done" without one finished its inputs even if a timer signal hit its shutdown.
    found = sorted(p.name for p in artifacts.glob(f"{target}-*"))
    crashes = len(found) or int(done.returncode != 0 and finished is None)
    result = {"inputs": inputs, "crashes": crashes, "seconds": round(elapsed, 1)}
    if crashes:
        result.update(exit_code=done.returncode, artifacts=found, report=(finding[-1500:] + log[-500:]))
    return result


def run_hypothesis(target: str, runs: int, seconds: int) -> dict:
    """One target under hypothesis' fuzz_one_input with random buffers, in this process."""
    import os

    from hypothesis import given, settings
    from hypothesis import strategies as st

    check = _targets_module().TARGETS[target]

    @settings(database=None, deadline=None)
    @given(st.binary(max_size=8192))
    def fuzz(data: bytes) -> None:
        check(data)

    began = time.monotonic()
    inputs = crashes = 0
    report = None
    while inputs < runs and time.monotonic() - began < seconds:
        try:
            fuzz.hypothesis.fuzz_one_input(os.urandom(8192))
        except Exception as exc:
            crashes += 1
            report = report or f"{type(exc).__name__}: {exc}"
        inputs += 1
    result = {"inputs": inputs, "crashes": crashes, "seconds": round(time.monotonic() - began, 1)}
    return result if report is None else {**result, "report": report[-2000:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="inputs per target at most")
    parser.add_argument("--seconds", type=int, default=120, help="time per target at most")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--artifacts", type=Path, default=Path(tempfile.gettempdir()) / "otel-audio-fuzz")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    args = parser.parse_args(argv)
    chosen = [t for t in args.targets.split(",") if t]
    unknown = sorted(set(chosen) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    results = {}
    artifacts = args.artifacts / time.strftime("run-%Y%m%dT%H%M%S")  # each run's findings apart
    for target in chosen:
        if engine == "atheris":
            results[target] = run_atheris(target, args.runs, args.seconds, artifacts)
        else:
            results[target] = run_hypothesis(target, args.runs, args.seconds)
    print(
        json.dumps(
            {"benchmark": "fuzz", "engine": engine, "python": sys.version.split()[0], "targets": results}
        )
    )
    return 1 if any(r["crashes"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
