"""The config loader under random YAML and mutations of the reference config: loads or ConfigError.

Every refusal must name where the problem is: the file (invalid YAML, with line and column) or the
key path (``limits.max_request_bytes: expected an integer >= 1024, got 'big'``), whose first part
is a top-level key of the configuration.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from otel_audio.receiver.config import ConfigError, ReceiverConfig, load_config
from tests.fuzz import budget, tried

REFERENCE = Path(__file__).resolve().parents[2] / "collector-config" / "otel-audio.yaml"
TOP_LEVEL = {f.name for f in dataclasses.fields(ReceiverConfig)}
REFERENCE_DOCUMENT = yaml.safe_load(REFERENCE.read_text())  # read once: generation must not change mid-run

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["always", "never", "7d", "env:OTEL_AUDIO_FUZZ_UNSET", "file:/nonexistent", "", "0"]),
)
yaml_trees = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.booleans()), children, max_size=3),
    ),
    max_leaves=12,
)


def _paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*path, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*path, i))
    return out


@st.composite
def mutated_reference(draw: st.DrawFn) -> Any:
    document = copy.deepcopy(REFERENCE_DOCUMENT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(yaml_trees)
        elif action == "drop":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(yaml_trees)
    return document


def assert_loads_or_names_the_key(path: Path) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        if ": unknown key" in message:  # the key itself may hold ": " (it is quoted then)
            where, why = message.rsplit(": unknown key", 1)[0], "unknown key"
        else:
            where, _sep, why = message.partition(": ")
        assert where and where.strip() == where and why.strip(), message
        key = where.split(".")[0].split("[")[0]
        unknown_at_top = why == "unknown key" and ("." not in where or where[0] in "'\"")
        assert where.startswith(str(path)) or key in TOP_LEVEL or key == "config" or unknown_at_top, message
        return
    assert isinstance(config, ReceiverConfig)


@budget(150)
@given(yaml_trees)
def test_random_yaml_trees(tmp_path_factory, tree: Any) -> None:
    tried["config.random_trees"] += 1
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert_loads_or_names_the_key(path)


@budget(150)
@given(st.text(max_size=300))
def test_random_text(tmp_path_factory, text: str) -> None:
    tried["config.random_text"] += 1
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert_loads_or_names_the_key(path)


@budget(300)
@given(mutated_reference())
def test_mutated_reference_config(tmp_path_factory, document: Any) -> None:
    tried["config.mutated"] += 1
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    assert_loads_or_names_the_key(path)


@budget(100)
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path_factory, data: bytes) -> None:
    tried["config.random_bytes"] += 1
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_bytes(data)
    assert_loads_or_names_the_key(path)


def test_a_file_that_is_not_utf8_names_the_file_and_byte(tmp_path) -> None:
    # Found by benchmarks/fuzz/config.py: a UnicodeDecodeError escaped load_config.
    path = tmp_path / "c.yaml"
    path.write_bytes(b"limits:\n  max_request_bytes: \xe0\x80\n")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc) == f"{path}: not UTF-8 text at byte 29"
    else:
        raise AssertionError("a file that is not UTF-8 loaded")
