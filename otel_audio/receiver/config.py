"""The receiver's configuration: a YAML file mapped onto typed dataclasses, every default documented.

``otel-audio serve`` runs with no file at all (loopback ports 4317/4318/8080, data in
``./otel-audio-data``). A file overrides any subset; the full reference with every key is
``collector-config/otel-audio.yaml`` and ``docs/configuration.md``.

Errors name the key path and say what is accepted, e.g.
``limits.max_request_bytes: expected an integer >= 1024, got 'big'``; unknown keys are errors
too (with the closest known key suggested), so a typo never silently falls back to a default.

Secrets are not written into the file: a token may be given as ``env:NAME`` (read from the
environment) or ``file:/path`` (first line of a file), resolved at load time.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong kind; the message names the key."""


@dataclass
class TLSConfig:
    """TLS for every listening port; plaintext when ``cert_file`` is unset."""

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None  # require client certificates signed by this CA


@dataclass
class TokenConfig:
    """One accepted bearer token: a plain string in the file is an admin token, or a mapping
    ``{token: env:NAME, scope: ingest|read|admin}`` (docs/security.md says what each scope allows)."""

    token: str
    scope: Literal["ingest", "read", "admin"] = "admin"


@dataclass
class AuthConfig:
    """Bearer tokens accepted on every port; auth is off when the list is empty."""

    tokens: list[TokenConfig] = field(default_factory=list)
    public_health: bool = True  # /healthz, /readyz and gRPC health answer without a token
    public_metrics: bool = False  # /metrics answers without a token


@dataclass
class ServerConfig:
    """Where the receiver listens. Loopback by default."""

    host: str = "127.0.0.1"
    grpc_port: int = 4317
    http_port: int = 4318
    api_port: int = 8080
    grpc_workers: int = 8
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)


@dataclass
class WalConfig:
    """Write-ahead log: what "acknowledged" means."""

    fsync: Literal["always", "interval", "never"] = "always"
    fsync_interval_ms: int = 100
    segment_bytes: int = 64 * 1024 * 1024


@dataclass
class BlocksConfig:
    """When the in-memory head becomes Parquet blocks, and how long each tier is kept."""

    flush_interval_s: int = 7200  # longest time data stays only in memory and the WAL
    head_max_bytes: int = 128 * 1024 * 1024  # flush early above this much Arrow memory
    maintenance_interval_s: int = 60  # retention and compaction
    flush_process: bool = True  # write blocks in a spawned process (off the receiver's GIL)
    retention: dict[str, Any] = field(default_factory=dict)  # {raw: 7d, 1m: 30d, 1h: 90d}


@dataclass
class StorageConfig:
    """Where data lives."""

    data_dir: str = "./otel-audio-data"
    wal: WalConfig = field(default_factory=WalConfig)
    blocks: BlocksConfig = field(default_factory=BlocksConfig)


@dataclass
class LimitsConfig:
    """Bounds that keep one sender from taking the receiver down."""

    max_request_bytes: int = 16 * 1024 * 1024  # after decompression
    max_series_per_metric: int = 10_000  # active series: silent ones free their slot after series_idle_s
    series_idle_s: int = 3600
    max_inflight_bytes: int = 256 * 1024 * 1024  # beyond this, exporters are told to retry later
    max_memory_bytes: int = 0  # refuse requests (with a retry delay) from 80% of this RSS; 0: no limit
    retry_after_s: int = 5
    max_attributes: int = 128  # per attribute set (resource, span, event, link, point, log), as the SDKs
    max_attribute_value_bytes: int = 4096  # UTF-8 bytes of a string value (also inside arrays)
    max_spans_per_trace: int = 10_000  # spans of one trace read at once (API, Jaeger); beyond: marked cut


@dataclass
class ExpositionConfig:
    """What ``/metrics`` serves besides the self-metrics (docs/prometheus.md)."""

    processors: bool = True  # the newest point of every series the processors emit
    metrics: list[str] = field(default_factory=list)  # regexes (full match) of ingested metrics to add
    lookback_s: int = 900  # series whose newest point is older than this are left out
    max_series: int = 10_000  # series beyond this are left out and counted
    cache_ms: int = 1000  # scrapes within this time of the last get the same page


@dataclass
class ProcessorConfig:
    """One member of the processor chain: its registered name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def _default_processors() -> list[ProcessorConfig]:
    return [ProcessorConfig("selfmon"), ProcessorConfig("store")]


@dataclass
class ReceiverConfig:
    """The whole receiver configuration."""

    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    exposition: ExpositionConfig = field(default_factory=ExpositionConfig)
    processors: list[ProcessorConfig] = field(default_factory=_default_processors)
    tick_interval_s: float = 1.0


_MINIMUMS = {
    "max_request_bytes": 1024,
    "max_series_per_metric": 1,
    "max_inflight_bytes": 1024,
    "segment_bytes": 4096,
    "grpc_workers": 1,
    "fsync_interval_ms": 1,
    "retry_after_s": 1,
    "series_idle_s": 1,
    "flush_interval_s": 1,
    "head_max_bytes": 1024 * 1024,
    "maintenance_interval_s": 1,
    "lookback_s": 1,
    "max_series": 1,
    "max_attributes": 1,
    "max_attribute_value_bytes": 16,
    "max_spans_per_trace": 1,
}


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> ReceiverConfig:
    """Read ``path`` (or nothing) into a :class:`ReceiverConfig`; ``overrides`` set top-level paths.

    ``overrides`` use dotted keys with ``__`` for dots, e.g. ``storage__data_dir="/tmp/x"``.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{os.fspath(path)}: not UTF-8 text at byte {exc.start}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(
                f"{os.fspath(path)}: invalid YAML{where}: {getattr(exc, 'problem', exc)}"
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"{os.fspath(path)}: expected a mapping at the top level, got {type(loaded).__name__}"
            )
        raw = loaded or {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config = _build(ReceiverConfig, raw, "")
    for i, entry in enumerate(config.server.auth.tokens):
        entry.token = resolve_secret(entry.token, f"server.auth.tokens[{i}]")
    return config


def resolve_secret(value: str, key: str) -> str:
    """``env:NAME`` -> the variable's value, ``file:/path`` -> the file's first line, else as given."""
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if not found:
            raise ConfigError(f"{key}: environment variable {name!r} is not set")
        return found
    if value.startswith("file:"):
        try:
            lines = Path(value[5:]).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read {value[5:]!r}: {exc.strerror}") from None
        if not lines or not lines[0].strip():
            raise ConfigError(f"{key}: {value[5:]!r} is empty")
        return lines[0].strip()
    return value


_PLAIN_KEY = re.compile(r"[\w-]+")  # other keys are quoted in messages, so the key path stays readable


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            shown = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else repr(key)  # '', 'a: b', 1
            raise ConfigError(f"{_join(path, shown)}: unknown key{hint}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], _join(path, f.name))
    return cls(**values)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {', '.join(map(repr, args))}, got {_show(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        return [_convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        return dict(value)
    if hint is ProcessorConfig:
        return _processor(value, path)
    if hint is TokenConfig:
        return _token(value, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        minimum = _MINIMUMS.get(path.rsplit(".", 1)[-1], 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{path}: expected an integer >= {minimum}, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(f"{path}: expected a number > 0, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: expected a non-empty string, got {_show(value)}")
        return value
    raise ConfigError(f"{path}: unsupported setting type {hint!r}")  # a bug in this module, not the file


def _processor(value: Any, path: str) -> ProcessorConfig:
    """A chain member is a bare name (``store``) or a one-key mapping (``{aggregation: {...}}``)."""
    if isinstance(value, str) and value:
        return ProcessorConfig(value)
    if isinstance(value, dict) and len(value) == 1:
        ((name, options),) = value.items()
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{path}.{name}: expected a mapping of options, got {_show(options)}")
        return ProcessorConfig(str(name), dict(options or {}))
    raise ConfigError(f"{path}: expected a processor name or a one-key mapping, got {_show(value)}")


def _token(value: Any, path: str) -> TokenConfig:
    """A token entry: a plain string (an admin token) or ``{token: ..., scope: ...}``.

    Errors name the entry but never echo it: a misplaced value may well be the secret itself.
    """
    if isinstance(value, str) and value:
        return TokenConfig(value)
    if isinstance(value, dict):
        if not isinstance(value.get("token"), str) or not value["token"]:
            raise ConfigError(f"{path}.token: required, a non-empty string (or env:NAME / file:/path)")
        return _build(TokenConfig, value, path)
    raise ConfigError(
        f"{path}: expected a token string or a mapping {{token: ..., scope: ingest|read|admin}}, "
        f"got {type(value).__name__}"
    )


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
