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
