"""The documentation states what the code does."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

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


# -- docs/configuration.md: every receiver setting, its default and meaning ----------------------


def _config_rows() -> dict[str, tuple[str, str]]:
    """``docs/configuration.md``'s settings table: dotted key -> (default cell, meaning cell)."""
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = {}
    for key, default, meaning in re.findall(r"^\| `([\w.]+)` \| (.*?) \| (.*) \|$", doc, re.MULTILINE):
        rows[key] = (default, meaning)
    return rows


def _settings(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every leaf setting of a config dataclass as ``{dotted key: default}``."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_settings(hints[f.name], f"{key}."))
        else:
            out[key] = default
    return out


def _shown(value: Any) -> str:
    """A default as the doc writes it: YAML spelling, in backticks; ``none`` for null."""
    from otel_audio.receiver.config import ProcessorConfig

    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        items = [v.name if isinstance(v, ProcessorConfig) else str(v) for v in value]
        return f"`[{', '.join(items)}]`"
    return f"`{value}`"


def _retention_defaults() -> str:
    from otel_audio.store.retention import RetentionConfig

    days = {tier: ns // (86_400 * 10**9) for tier, ns in RetentionConfig().items()}
    return "`{" + ", ".join(f"{tier}: {d}d" for tier, d in days.items()) + "}`"


def test_every_receiver_setting_is_documented_with_its_default():
    from otel_audio.receiver.config import ReceiverConfig

    rows = _config_rows()
    settings = _settings(ReceiverConfig)
    undocumented = sorted(set(settings) - set(rows))
    assert undocumented == [], "add these keys to the table in docs/configuration.md"
    assert sorted(set(rows) - set(settings)) == [], "docs/configuration.md lists keys the receiver lacks"
    for key, default in settings.items():
        expected = _retention_defaults() if key == "storage.blocks.retention" else _shown(default)
        assert rows[key][0] == expected, f"{key}: the doc says {rows[key][0]}, the code {expected}"
        assert len(rows[key][1]) > 10, f"{key}: say what it means"


def test_the_shipped_full_config_is_the_defaults():
    """``collector-config/otel-audio.yaml`` lists every key with its default, as it claims."""
    from otel_audio.receiver.config import ReceiverConfig, load_config

    shipped = load_config(ROOT / "collector-config" / "otel-audio.yaml")
    shipped.storage.blocks.retention = {}  # spelled out in the file, implied by the code
    assert dataclasses.asdict(shipped) == dataclasses.asdict(ReceiverConfig())


def test_every_processor_is_listed_with_a_link_to_its_options():
    import otel_audio.receiver.service  # noqa: F401 - registers the processor factories
    from otel_audio.receiver.chain import REGISTRY

    _, meaning = _config_rows()["processors"]
    for name in REGISTRY:
        assert f"`{name}`" in meaning, f"processors: {name} is not listed"
        if name not in ("selfmon", "store"):  # no options of their own
            assert re.search(rf"`{name}` \(\[options\]\((\w+\.md)", meaning), f"{name}: link its options"
    for target in re.findall(r"\]\(([\w-]+\.md)", meaning):
        assert (ROOT / "docs" / target).is_file(), target


# -- docs/deployment.md: every config snippet is a shipped file's excerpt or a working receiver ----


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


def _is_excerpt(part: Any, whole: Any) -> bool:
    """Every key of ``part`` is in ``whole`` with the same value (recursively); lists equal."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and _is_excerpt(v, whole[k]) for k, v in part.items()
        )
    return part == whole


def _deployment_blocks(prefix_is_file: bool) -> list[str]:
    blocks = _yaml_blocks((ROOT / "docs" / "deployment.md").read_text())
    return [b for b in blocks if b.startswith("# collector-config/") == prefix_is_file]


def test_deployment_excerpts_match_the_shipped_files():
    import yaml

    excerpts = _deployment_blocks(prefix_is_file=True)
    assert excerpts, "docs/deployment.md quotes the Collector config"
    for block in excerpts:
        path = block.splitlines()[0].removeprefix("# ").split()[0]
        shipped = yaml.safe_load((ROOT / path).read_text())
        assert _is_excerpt(yaml.safe_load(block), shipped), f"the excerpt of {path} differs from the file"


def test_deployment_receiver_configs_start_as_receivers(tmp_path, monkeypatch):
    """Each receiver YAML of docs/deployment.md, loaded and started as written except for what a
    test machine must change: loopback and free ports, a temporary data directory, a throwaway
    TLS certificate for the paths it names, and its token variables set."""
    import trustme

    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    configs = _deployment_blocks(prefix_is_file=False)
    assert len(configs) >= 2, "docs/deployment.md shows the receivers' YAML"
    for index, block in enumerate(configs):
        for name in re.findall(r"env:(\w+)", block):
            monkeypatch.setenv(name, f"token-of-{name.lower()}")
        path = tmp_path / f"receiver-{index}.yaml"
        path.write_text(block)
        tls = {}
        if "cert_file:" in block:
            tls = {
                "server__tls__cert_file": str(tmp_path / "cert.pem"),
                "server__tls__key_file": str(tmp_path / "key.pem"),
            }
        config = load_config(
            path,
            server__host="127.0.0.1",
            server__grpc_port=0,
            server__http_port=0,
            server__api_port=0,
            storage__data_dir=str(tmp_path / f"data-{index}"),
            **tls,
        )
        receiver = Receiver(config)
        receiver.start()
        try:
            names = [p.name for p in config.processors]
            assert receiver.serving and names[0] == "selfmon" and "store" in names
        finally:
            receiver.stop(grace_s=1)
