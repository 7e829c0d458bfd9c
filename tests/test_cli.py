"""The ``otel-audio`` command line: demo, semconv, --version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from otel_audio import __version__, cli, semconv
from tests.otlp_sink import attributes

ROOT = Path(__file__).resolve().parents[1]


def otel_audio_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_audio.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_runs_in_memory_and_prints_a_summary_of_every_stage():
    done = otel_audio_cmd("demo", "--files", "3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "no endpoint given: telemetry goes to an in-memory exporter" in out
    assert "in-memory exporter" in out
    assert "files processed: 3" in out
    for stage in ("load_audio", "quality_analysis", "enhancement", "validation", "output"):
        assert any(line.split()[:2] == [stage, "3"] for line in out.splitlines()), stage
    assert "improvement +" in out
    assert "errors (audio.errors metric): none" in out


def test_demo_exports_over_otlp_when_given_an_endpoint(otlp_sink):
    done = otel_audio_cmd("demo", "--files", "2", "--endpoint", otlp_sink.grpc_endpoint)
    assert done.returncode == 0, done.stderr
    assert "in-memory exporter" not in done.stdout
    names = [span.name for _r, _s, span in otlp_sink.spans()]
    assert names.count("enhancement") == 2 and names.count("speech_enhancement") == 2
    ids = {attributes(span.attributes).get("audio.id") for _r, _s, span in otlp_sink.spans()}
    assert ids == {"file-0-0000", "file-0-0001"}


def test_demo_without_the_examples_folder_says_where_it_looked(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_examples_root", lambda: None)
    assert cli.main(["demo"]) == 2
    assert "examples/ folder of a source checkout" in capsys.readouterr().err


def test_semconv_prints_the_generated_table(capsys):
    assert cli.main(["semconv"]) == 0
    assert capsys.readouterr().out == semconv.markdown_table()


def test_version_flag_prints_the_distribution_version(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"otel-audio {__version__}"


def test_console_script_is_installed_and_runs():
    script = Path(sys.executable).with_name("otel-audio")
    assert script.exists(), f"no otel-audio console script next to {sys.executable}"
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"otel-audio {__version__}"


def test_no_command_prints_usage_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: otel-audio" in capsys.readouterr().err


def test_files_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "--files", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_cli_imports_no_receiver_side_module():
    probe = (
        "import sys, otel_audio.cli; "
        "print([m for m in sys.modules if m.split('.')[:2] in "
        "(['otel_audio', 'receiver'], ['otel_audio', 'store'], ['otel_audio', 'api'], "
        "['otel_audio', 'dashboard'], ['otel_audio', 'notify'], ['otel_audio', 'processors'])])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_demo_with_a_receiver_exports_to_it_and_reads_the_data_back(tmp_path):
    done = otel_audio_cmd("demo", "--serve", "--once", "--files", "2", "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 0, done.stderr
    assert "receiver started: OTLP gRPC" in done.stdout
    assert "dashboard: http://127.0.0.1:" in done.stdout
    assert "holds 2 traces of otel-audio-demo and 15 audio.* metrics" in done.stdout
    for stage in ("load_audio", "quality_analysis", "enhancement", "validation", "output"):
        assert f"  {stage}" in done.stdout
    assert "Failed to export" not in done.stderr
    assert (tmp_path / "data" / "wal").is_dir()


def _csv(tmp_path, values) -> str:
    path = tmp_path / "in.csv"
    rows = [f"{1_700_000_000 + 3600 * i},{v}" for i, v in enumerate(values)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    return str(path)


def test_detect_scores_every_row_and_flags_the_spike(tmp_path):
    import numpy as np

    values = 100 + np.random.default_rng(1).normal(0, 1, 300)
    values[250] = 160.0
    out = tmp_path / "scores.csv"
    argv = ["detect", "--detector", "robust_z", "--input", _csv(tmp_path, values), "--output", str(out)]
    assert cli.main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score" and len(lines) == 301
    scores = [float(line.split(",")[2]) for line in lines[1:]]
    assert scores[250] > 0.9 and sorted(scores)[-2] < scores[250]


def test_forecast_writes_the_horizon_and_bad_input_fails(tmp_path, capsys):
    out = tmp_path / "forecast.csv"
    values = [50 + 0.5 * i for i in range(200)]
    argv = ["forecast", "--input", _csv(tmp_path, values), "--horizon", "24h", "--output", str(out)]
    assert cli.main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,forecast,lower,upper" and len(lines) == 25
    missing = str(tmp_path / "missing.csv")
    assert cli.main(["forecast", "--input", missing, "--horizon", "1h", "--output", "x"]) == 2
