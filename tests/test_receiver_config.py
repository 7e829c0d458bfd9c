"""Receiver configuration: defaults with no file, errors that name the key, secrets from env/files."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_audio.receiver.config import ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "otel-audio.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_loopback_defaults():
    config = load_config()
    assert (config.server.host, config.server.grpc_port, config.server.http_port, config.server.api_port) == (
        "127.0.0.1",
        4317,
        4318,
        8080,
    )
    assert config.storage.data_dir == "./otel-audio-data"
    assert config.storage.wal.fsync == "always"
    assert [p.name for p in config.processors] == ["selfmon", "store"]
    assert config.server.auth.tokens == []


def test_file_overrides_a_subset(tmp_path):
    config = load_config(write(tmp_path, "server:\n  api_port: 9090\nlimits:\n  max_series_per_metric: 50\n"))
    assert config.server.api_port == 9090
    assert config.server.grpc_port == 4317
    assert config.limits.max_series_per_metric == 50


def test_processors_as_names_or_mappings(tmp_path):
    config = load_config(write(tmp_path, "processors:\n  - selfmon\n  - store: {}\n"))
    assert [(p.name, p.options) for p in config.processors] == [("selfmon", {}), ("store", {})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server:\n  grpc_prot: 1\n", "server.grpc_prot: unknown key; did you mean 'grpc_port'?"),
        (
            "limits:\n  max_request_bytes: big\n",
            "limits.max_request_bytes: expected an integer >= 1024, got 'big'",
        ),
        (
            "storage:\n  wal:\n    fsync: sometimes\n",
            "storage.wal.fsync: expected one of 'always', 'interval', 'never'",
        ),
        ("server: [1, 2]\n", "server: expected a mapping, got [1, 2]"),
        (
            "server:\n  auth:\n    public_metrics: yes please\n",
            "server.auth.public_metrics: expected true or false",
        ),
        ("processors:\n  - a: 1\n", "processors[0].a: expected a mapping of options, got 1"),
        ("server:\n\thost: a\n", "invalid YAML at line 2, column 1"),
        ("- just\n- a list\n", "expected a mapping at the top level, got list"),
    ],
)
def test_bad_values_name_the_key_and_what_is_accepted(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert message in str(caught.value)


def test_tokens_from_environment_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_AUDIO_TEST_TOKEN", "from-env")
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    config = load_config(
        write(tmp_path, f"server:\n  auth:\n    tokens: [env:OTEL_AUDIO_TEST_TOKEN, 'file:{secret}']\n")
    )
    assert [t.token for t in config.server.auth.tokens] == ["from-env", "from-file"]


def test_missing_secret_is_an_error_naming_the_token(tmp_path, monkeypatch):
    monkeypatch.delenv("OTEL_AUDIO_MISSING", raising=False)
    with pytest.raises(
        ConfigError, match=r"server.auth.tokens\[0\]: environment variable 'OTEL_AUDIO_MISSING'"
    ):
        load_config(write(tmp_path, "server:\n  auth:\n    tokens: [env:OTEL_AUDIO_MISSING]\n"))


def test_unknown_processor_is_a_config_error(tmp_path):
    from otel_audio.receiver.service import Receiver

    config = load_config(
        write(tmp_path, f"processors: [store, sorcery]\nstorage:\n  data_dir: {tmp_path / 'd'}\n")
    )
    with pytest.raises(ConfigError, match=r"processors\[1\]: unknown processor 'sorcery'; known: .*store"):
        Receiver(config).start()


def test_serve_reports_a_bad_config_and_exits_2(tmp_path):
    path = write(tmp_path, "server:\n  grpc_prot: 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "otel_audio.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "configuration error: server.grpc_prot: unknown key" in done.stderr


def test_serve_reports_a_bad_processor_option_and_exits_2(tmp_path):
    """Processor options are checked when the chain is built at start, after the file loaded."""
    path = write(
        tmp_path,
        "server: {grpc_port: 0, http_port: 0, api_port: 0}\n"
        f"storage: {{data_dir: {tmp_path / 'd'}}}\n"
        "processors:\n"
        "  - alerting: {rules: [{name: X, condition: 'avg(a, 1m) >', severity: warning}]}\n"
        "  - store\n",
    )
    done = subprocess.run(
        [sys.executable, "-m", "otel_audio.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "configuration error: processors.alerting: rules[0].condition: line 1, column 13" in done.stderr
    assert "Traceback" not in done.stderr


def test_shipped_example_config_loads(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "collector-config" / "otel-audio.yaml"
    config = load_config(example)
    assert config.server.host == "127.0.0.1"


def test_a_port_in_use_fails_start_cleanly_and_frees_the_data_dir(start_receiver, tmp_path):
    import socket

    from otel_audio.receiver.config import load_config
    from otel_audio.receiver.service import Receiver

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = load_config(
            None,
            storage__data_dir=str(tmp_path / "d"),
            server__grpc_port=0,
            server__http_port=0,
            server__api_port=busy.getsockname()[1],
        )
        with pytest.raises(OSError):
            Receiver(config).start()
    # The WAL was closed: a new receiver on the same directory starts and serves.
    receiver = start_receiver(data_dir=tmp_path / "d")
    assert receiver.serving


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ("raw: forever", "storage.blocks.retention: retention of tier 'raw': cannot read 'forever'"),
        ("2m: 1d", "storage.blocks.retention: unknown tier '2m' in retention; tiers: raw, 1m, 1h"),
    ],
)
def test_bad_retention_is_a_config_error_before_anything_starts(tmp_path, retention, message):
    from otel_audio.receiver.service import Receiver

    config = load_config(write(tmp_path, f"storage:\n  blocks:\n    retention:\n      {retention}\n"))
    with pytest.raises(ConfigError) as caught:
        Receiver(config)
    assert message in str(caught.value)
