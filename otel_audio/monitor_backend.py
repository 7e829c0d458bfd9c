"""Where a :class:`~otel_audio.monitor.ProductionMonitor` sends metrics and asks questions.

Two backends with one interface, so the monitor's methods are written once:

- :class:`EmbeddedBackend` starts an in-process receiver (``otel_audio.receiver.service.Receiver``)
  on free loopback ports with its store in a directory. Metrics enter through the receiver's own
  ingest path (:meth:`Ingestor.export <otel_audio.receiver.ingest.Ingestor.export>`: WAL, then the
  processor chain), exactly as an OTLP request would; questions go to its HTTP API on loopback.
- :class:`RemoteBackend` talks to a receiver elsewhere: metrics as OTLP/HTTP protobuf
  (``http://host:4318``) or OTLP/gRPC (``grpc://host:4317``, ``grpcs://`` for TLS), questions to its
  HTTP API (``api``), with the bearer ``token`` on both.

Both answer :meth:`api` with the JSON the receiver's API answers, and raise :class:`MonitorError`
with the API's own message (which names the field that was wrong) for a 4xx.

The channel settings of the embedded receiver come from :func:`channel_settings`: per channel name,
``config['channels'][name]``, completed from environment variables (:data:`CHANNEL_ENV`).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests


class MonitorError(ValueError):
    """A request the receiver refused (invalid rule, SLO, condition, ...); the message says why."""


class ChannelConfigError(ValueError):
    """An alert channel lacks a setting it needs; the message names the channel and the setting."""


# channel type -> (setting, environment variable) for what config['channels'][name] leaves out
CHANNEL_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "email": (
        ("host", "OTEL_AUDIO_SMTP_HOST"),
        ("port", "OTEL_AUDIO_SMTP_PORT"),
        ("from", "OTEL_AUDIO_EMAIL_FROM"),
        ("to", "OTEL_AUDIO_EMAIL_TO"),  # comma-separated addresses
        ("username", "OTEL_AUDIO_SMTP_USERNAME"),
        ("password", "OTEL_AUDIO_SMTP_PASSWORD"),
        ("starttls", "OTEL_AUDIO_SMTP_STARTTLS"),  # true/false
        ("ca_file", "OTEL_AUDIO_SMTP_CA_FILE"),
    ),
    "slack": (("webhook_url", "OTEL_AUDIO_SLACK_WEBHOOK_URL"),),
    "pagerduty": (
        ("routing_key", "OTEL_AUDIO_PAGERDUTY_ROUTING_KEY"),
        ("url", "OTEL_AUDIO_PAGERDUTY_URL"),
    ),
    "webhook": (("url", "OTEL_AUDIO_WEBHOOK_URL"),),
    "alertmanager": (("url", "OTEL_AUDIO_ALERTMANAGER_URL"),),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "email": ("host", "from", "to"),
    "slack": ("webhook_url",),
    "pagerduty": ("routing_key",),
    "webhook": ("url",),
    "alertmanager": ("url",),
}


def channel_settings(names: list[str], configured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alerting processor's ``channels`` option for the channel ``names``.

    A channel's type is its ``type`` setting, else its name (``email``, ``slack``, ...). Settings
    missing from ``configured[name]`` are read from :data:`CHANNEL_ENV`; a required one missing
    from both raises :class:`ChannelConfigError` naming the channel, the setting and the variable.
    """
    out = {}
    for name in names:
        settings = dict(configured.get(name) or {})
        kind = settings.setdefault("type", name)
        if kind not in CHANNEL_ENV:
            raise ChannelConfigError(
                f"alert channel {name!r}: unknown type {kind!r}; expected one of {', '.join(CHANNEL_ENV)} "
                f"(set config['channels'][{name!r}]['type'])"
            )
        for key, variable in CHANNEL_ENV[kind]:
            value = os.environ.get(variable)
            if key not in settings and value:
                settings[key] = _env_value(key, value)
        for key in REQUIRED[kind]:
            if not settings.get(key):
                variable = dict(CHANNEL_ENV[kind])[key]
                raise ChannelConfigError(
                    f"alert channel {name!r} ({kind}): missing setting {key!r}; set "
                    f"config['channels'][{name!r}][{key!r}] or the environment variable {variable}"
                )
        out[name] = settings
    return out


def _env_value(key: str, value: str) -> Any:
    if key == "to":
        return [v.strip() for v in value.split(",") if v.strip()]
    if key == "port":
        return int(value)
    if key == "starttls":
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value


class _HTTPAPI:
    """The receiver's HTTP API, answers as JSON; 4xx become :class:`MonitorError`."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout_s = timeout_s

    def api(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        reply = self.session.request(
            method, f"{self.base_url}{path}", params=params, json=body, timeout=self.timeout_s
        )
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error") or reply.text
            except ValueError:
                message = reply.text
            raise MonitorError(f"{method} {path}: {message} (HTTP {reply.status_code})")
        if reply.status_code == 204 or not reply.content:
            return None
        return reply.json()

    def close(self) -> None:
        self.session.close()


class EmbeddedBackend(_HTTPAPI):
    """An in-process receiver: selfmon, derived, slo, alerting (with ``channels``), store.

    Args:
        data_dir: where its WAL, blocks and state live (created if missing).
        channels: the alerting processor's ``channels`` option.
        retention_days: how long the longest tier (1-hour rollups) is kept; raw points keep at
            most 7 days and 1-minute rollups at most 30.
        tick_interval_s: how often rules, SLOs and derived windows run on the wall clock.
        slos: extra SLO maps for the slo processor (the four defaults are always there).
    """

    mode = "embedded"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        channels: dict[str, dict[str, Any]],
        retention_days: int | None = None,
        tick_interval_s: float = 1.0,
        slos: list[dict[str, Any]] | None = None,
    ) -> None:
        from otel_audio.receiver.config import load_config
        from otel_audio.receiver.service import Receiver

        overrides: dict[str, Any] = {
            "storage__data_dir": os.fspath(data_dir),
            "server__host": "127.0.0.1",
            "server__grpc_port": 0,
            "server__http_port": 0,
            "server__api_port": 0,
            "tick_interval_s": float(tick_interval_s),
            "processors": [
                "selfmon",
                {"derived": {}},
                {"slo": {"slos": list(slos or [])}},
                {"alerting": {"channels": channels}},
                "store",
            ],
        }
        if retention_days is not None:
            days = int(retention_days)
            overrides["storage__blocks__retention"] = {
                "raw": f"{min(days, 7)}d",
                "1m": f"{min(days, 30)}d",
                "1h": f"{days}d",
            }
        # The served receiver writes blocks in a spawned flush process; spawning re-imports the
        # user's __main__, which in a notebook cell or an unguarded script (the seed's example)
        # would start a second monitor. An embedded store is small: write blocks on a thread.
        overrides["storage__blocks__flush_process"] = False
        self.receiver = Receiver(load_config(None, **overrides))
        self.receiver.start()
        super().__init__(f"http://127.0.0.1:{self.receiver.api_port}", None)

    def send_metrics(self, request: Any) -> None:
        from otel_audio.processors.base import Signal

        payload = request.SerializeToString()
        result = self.receiver.ingestor.export(Signal.METRICS, payload, len(payload), "embedded")
        if result.rejected:
            raise MonitorError(f"the receiver rejected {result.rejected} points: {result.message}")

    def close(self) -> None:
        super().close()
        if self.receiver.serving:
            self.receiver.stop(grace_s=1)


class RemoteBackend(_HTTPAPI):
    """A receiver elsewhere: OTLP to ``endpoint``, questions to ``api``.

    Args:
        endpoint: ``http(s)://host:4318`` (OTLP/HTTP protobuf) or ``grpc(s)://host:4317``.
        api: the receiver's API, e.g. ``http://host:8080``.
        token: bearer token for both, when the receiver requires one.
    """

    mode = "remote"

    def __init__(self, endpoint: str, api: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.netloc:
            raise MonitorError(
                f"config endpoint: expected http://host:4318 or grpc://host:4317, got {endpoint!r}"
            )
        if urlsplit(api).scheme not in ("http", "https"):
            raise MonitorError(
                f"config api: expected the receiver's API URL like http://host:8080, got {api!r}"
            )
        super().__init__(api, token, timeout_s)
        self.endpoint, self.scheme, self.token = endpoint.rstrip("/"), parts.scheme, token
        self._grpc_channel: Any = None
        if parts.scheme.startswith("grpc"):
            import grpc

            target = parts.netloc
            self._grpc_channel = (
                grpc.secure_channel(target, grpc.ssl_channel_credentials())
                if parts.scheme == "grpcs"
                else grpc.insecure_channel(target)
            )

    def send_metrics(self, request: Any) -> None:
        if self._grpc_channel is not None:
            from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

            stub = metrics_service_pb2_grpc.MetricsServiceStub(self._grpc_channel)
            metadata = [("authorization", f"Bearer {self.token}")] if self.token else None
            reply = stub.Export(request, metadata=metadata, timeout=self.timeout_s)
            rejected = reply.partial_success.rejected_data_points
            if rejected:
                raise MonitorError(
                    f"the receiver rejected {rejected} points: {reply.partial_success.error_message}"
                )
            return
        headers = {"Content-Type": "application/x-protobuf"}
        reply = self.session.post(
            f"{self.endpoint}/v1/metrics", data=request.SerializeToString(), headers=headers,
            timeout=self.timeout_s,
        )  # fmt: skip
        if reply.status_code >= 400:
            raise MonitorError(f"OTLP export to {self.endpoint}: HTTP {reply.status_code} {reply.text[:200]}")

    def close(self) -> None:
        super().close()
        if self._grpc_channel is not None:
            self._grpc_channel.close()


def default_data_dir() -> Path:
    """``$OTEL_AUDIO_DATA_DIR``, else ``$XDG_DATA_HOME/otel-audio/monitor`` (``~/.local/share/...``),
    else, when the home directory cannot be written, a fresh temporary directory."""
    explicit = os.environ.get("OTEL_AUDIO_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base / "otel-audio" / "monitor"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}-{time.time_ns()}"
        probe.touch()
        probe.unlink()
        return path
    except OSError:
        return Path(tempfile.mkdtemp(prefix="otel-audio-monitor-"))
