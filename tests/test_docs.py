"""The documentation states what the code does."""

from __future__ import annotations

from pathlib import Path

from otel_audio import semconv

ROOT = Path(__file__).resolve().parents[1]


def test_semantic_conventions_doc_matches_semconv_module():
    doc = (ROOT / "docs" / "semantic-conventions.md").read_text()
    assert semconv.markdown_table() in doc, "regenerate with: otel-audio semconv"


def test_every_metric_and_attribute_is_documented_with_its_unit():
    table = semconv.markdown_table()
    for spec in semconv.METRICS:
        assert f"| `{spec.name}` | {spec.kind.value} | `{spec.unit}` |" in table
    assert f"`{semconv.AUDIO_ID}` | string | - | no |" in table


def _python_blocks(markdown: str) -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_python_example_runs_as_written():
    """The README's instrumentation example, run in a fresh interpreter with export switched off."""
    import os
    import subprocess
    import sys

    blocks = _python_blocks((ROOT / "README.md").read_text())
    assert blocks, "the README shows how to instrument a pipeline"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    for block in blocks:
        done = subprocess.run(
            [sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
