"""The receiver process: wires config, WAL, processor chain, OTLP transports and the API together.

Start order makes "acknowledged" mean "durable and queryable": open the WAL, build the chain,
replay the WAL into it, and only then open the ports. Stop order drains: mark health
NOT_SERVING, stop accepting and let in-flight requests finish, stop the ticker, close the chain
(processors flush), close the WAL (last fsync).
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from otel_audio.dashboard.hub import DashboardHub
from otel_audio.receiver.attribute_limits import AttributeLimits
from otel_audio.receiver.auth import Scope, Token, TokenAuth
from otel_audio.receiver.cardinality import CardinalityLimiter
from otel_audio.receiver.chain import ChainContext, ProcessorChain, build_chain, register
from otel_audio.receiver.config import ConfigError, ReceiverConfig, TLSConfig
from otel_audio.receiver.grpc_server import build_grpc_server
from otel_audio.receiver.http_server import build_otlp_http_app
from otel_audio.receiver.ingest import Ingestor
from otel_audio.receiver.selfmon import SelfMetrics, SelfMonitor
from otel_audio.store.query import QueryEngine
from otel_audio.store.retention import RetentionConfig
from otel_audio.store.state import StateDB
from otel_audio.store.tiered import TieredStore
from otel_audio.store.wal import WriteAheadLog

_log = logging.getLogger(__name__)


@register("store")
def _store(options: dict[str, Any], context: ChainContext) -> TieredStore:
    if options:
        raise ConfigError(f"processors.store: takes no options (see storage.blocks), got {sorted(options)}")
    return context.shared["store"]


def _register_analytics(name: str, module: str) -> None:
    """Chain members from ``otel_audio.processors``, imported only when a config names them
    (statsmodels and friends cost start-up time a receiver without them should not pay)."""

    @register(name)
    def build(options: dict[str, Any], context: ChainContext) -> Any:
        try:
            return importlib.import_module(module).from_options(options)
        except ValueError as exc:
            raise ConfigError(f"processors.{name}: {exc}") from None


for _name, _module in (
    ("spanmetrics", "otel_audio.processors.spanmetrics"),
    ("anomaly", "otel_audio.processors.anomaly"),
    ("forecast", "otel_audio.processors.forecast"),
    ("aggregation", "otel_audio.processors.aggregation"),
    ("derived", "otel_audio.processors.derived"),
):
    _register_analytics(_name, _module)


@register("alerting")
def _alerting(options: dict[str, Any], context: ChainContext) -> Any:
    from otel_audio.processors.alerting.processor import Alerting

    try:
        alerting = Alerting(options, context.data_dir)
    except ValueError as exc:
        raise ConfigError(f"processors.alerting: {exc}") from None
    context.shared["alerting"] = alerting
    slo = context.shared.get("slo")  # burn-rate rules of the SLOs (the slo stage comes first)
    if slo is not None:
        try:
            alerting.set_source_rules("slo", slo.alert_rules())
        except ValueError as exc:
            raise ConfigError(f"processors.alerting: {exc}") from None
    alerting.attach_store(context.shared["store"].view)  # windows as they were before a restart
    return alerting


@register("slo")
def _slo(options: dict[str, Any], context: ChainContext) -> Any:
    from otel_audio.processors.slo.processor import SLOs

    if "alerting" in context.shared:  # alerting would neither see the series nor get the rules
        raise ConfigError("processors.slo: must come before alerting, which reads its burn-rate series")
    try:
        slo = SLOs(options, context.shared["store"], context.data_dir, context.shared)
    except ValueError as exc:
        raise ConfigError(f"processors.slo: {exc}") from None
    context.shared["slo"] = slo
    return slo


@register("remote_write")
def _remote_write(options: dict[str, Any], context: ChainContext) -> Any:
    from otel_audio.receiver.remote_write import from_options  # docs/prometheus.md

    try:
        return from_options(options, context.metrics.registry)
    except ValueError as exc:
        raise ConfigError(f"processors.remote_write: {exc}") from None


@register("selfmon")
def _selfmon(options: dict[str, Any], context: ChainContext) -> SelfMonitor:
    if options:
        raise ConfigError(f"processors.selfmon: takes no options, got {sorted(options)}")
    shared = context.shared

    def refresh() -> None:
        wal, store, metrics = shared["wal"], shared["store"], context.metrics
        stats = wal.stats()
        metrics.wal_lag.set(max(stats["last_lsn"] - stats["durable_lsn"], 0))
        metrics.wal_bytes.set(stats["total_bytes"])
        for kind, figures in store.stats().items():
            if isinstance(figures, dict):
                metrics.stored_rows.labels(kind).set(figures.get("rows", 0))
                metrics.stored_bytes.labels(kind).set(figures.get("bytes", 0))

    return SelfMonitor(context.metrics, refresh)


def _is_loopback(host: str) -> bool:
    """True for loopback addresses and ``localhost``: nothing off this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _uvicorn_tls(tls: TLSConfig) -> dict[str, Any]:
    """uvicorn's TLS settings for ``server.tls``; with ``client_ca_file`` a client certificate
    signed by that CA is required, as on the gRPC port."""
    if not tls.cert_file:
        return {}
    settings: dict[str, Any] = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    if tls.client_ca_file:
        settings |= {"ssl_ca_certs": tls.client_ca_file, "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return settings


class _Uvicorn(uvicorn.Server):
    """A uvicorn server on a socket bound up front (so port 0 works), run on its own thread."""

    def __init__(self, app: Any, host: str, port: int, tls: dict[str, Any]) -> None:
        super().__init__(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", **tls))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Naming TCP explicitly makes asyncio set TCP_NODELAY on accepted connections; without it
        # every reply after the first on a kept-alive connection waits ~40 ms for delayed ACKs.
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.port = self.socket.getsockname()[1]
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, kwargs={"sockets": [self.socket]}, daemon=True)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("HTTP server did not start within 30 s")

    def stop(self, grace_s: float = 5.0) -> None:
        # Bounded: a TLS connection left half-open (seen after a client without the required
        # certificate was refused) otherwise holds uvicorn's shutdown open indefinitely.
        self.config.timeout_graceful_shutdown = max(1, round(grace_s))
        self.should_exit = True
        self.thread.join(10)
        self.socket.close()


class Receiver:
    """One receiver: ``start()``, use the bound ports, ``stop()``.

    Args:
        config: the loaded configuration; ports may be 0 to pick free ones (tests).
    """

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        tls = config.server.tls
        if bool(tls.cert_file) != bool(tls.key_file):
            raise ConfigError("server.tls: cert_file and key_file must be set together")
        if tls.client_ca_file and not tls.cert_file:
            raise ConfigError("server.tls.client_ca_file: needs cert_file and key_file (TLS) as well")
        self.metrics = SelfMetrics()
        self.auth = TokenAuth(Token(t.token, Scope(t.scope)) for t in config.server.auth.tokens)
        self.data_dir = Path(config.storage.data_dir)
        try:
            self.retention = RetentionConfig.from_mapping(config.storage.blocks.retention)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"storage.blocks.retention: {exc}") from None
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._servers: list[_Uvicorn] = []
        self._grpc: Any = None
        self._health: Any = None
        self._ticker: threading.Thread | None = None
        self.grpc_port = self.http_port = self.api_port = 0
        self.alerting: Any = None
        self.slo: Any = None

    def start(self) -> None:
        """Open storage, replay the WAL, then listen; returns once every port accepts."""
        config = self.config
        blocks = config.storage.blocks
        self.data_dir.mkdir(parents=True, exist_ok=True)
        wal_config = config.storage.wal
        self.wal = WriteAheadLog(
            self.data_dir / "wal",
            fsync=wal_config.fsync,
            fsync_interval_ms=wal_config.fsync_interval_ms,
            segment_bytes=wal_config.segment_bytes,
        )
        wal = self.wal
        self.store = TieredStore(
            self.data_dir,
            retention=self.retention,
            flush_interval_ns=blocks.flush_interval_s * 10**9,
            head_max_bytes=blocks.head_max_bytes,
            maintenance_interval_ns=blocks.maintenance_interval_s * 10**9,
            on_checkpoint=lambda lsn: wal.truncate_before(lsn + 1),
            wal_dir=self.data_dir / "wal",
            flush_process=blocks.flush_process,
        )
        self.query = QueryEngine(self.store, max_trace_spans=config.limits.max_spans_per_trace)
        shared: dict[str, Any] = {"store": self.store, "wal": self.wal}
        self.chain: ProcessorChain = build_chain(
            config.processors, ChainContext(str(self.data_dir), self.metrics, shared)
        )
        self.dashboard = DashboardHub()  # last in the chain: live updates see what was stored
        self.chain.processors.append(self.dashboard)
        self.state = StateDB(self.data_dir)  # small transactional state: alerts, silences, outbox
        self.alerting = shared.get("alerting")  # the API's way to rules, alerts, silences, incidents
        self.slo = shared.get("slo")  # the API's way to SLOs
        shared["state"] = self.state
        self.ingestor = Ingestor(
            self.wal,
            self.chain,
            CardinalityLimiter(config.limits.max_series_per_metric, config.limits.series_idle_s * 10**9),
            self.metrics,
            config.limits.max_inflight_bytes,
            config.limits.retry_after_s,
            pressure=self.store.pressure,
            max_memory_bytes=config.limits.max_memory_bytes,
            attribute_limits=AttributeLimits(
                config.limits.max_attributes, config.limits.max_attribute_value_bytes
            ),
        )
        since = time.time_ns() - config.limits.series_idle_s * 10**9
        self.ingestor.restore_series(self.store.recent_series(since))
        if self.alerting is not None:  # the alert history already holds what the log changed
            self.alerting.evaluating = False
        replayed = self.ingestor.replay(self.store.checkpoint.lsn + 1)
        if self.alerting is not None:
            self.alerting.evaluating = True
        if replayed:
            self.store.flush_at_first_tick()
        _log.info("replayed %d WAL records from %s", replayed, self.data_dir / "wal")
        try:
            self._listen()
        except BaseException:
            self._close_listeners(0)
            self._close_storage()
            raise
        self._ticker = threading.Thread(target=self._tick_loop, name="receiver-ticker", daemon=True)
        self._ticker.start()
        self.ready.set()

    def _listen(self) -> None:
        from otel_audio.api.app import build_api_app

        server, limits = self.config.server, self.config.limits
        self._grpc, self.grpc_port, self._health = build_grpc_server(
            self.ingestor, server, self.auth, limits.max_request_bytes
        )
        self._grpc.start()
        tls = _uvicorn_tls(server.tls)
        otlp_http = _Uvicorn(
            build_otlp_http_app(
                self.ingestor, self.auth, limits.max_request_bytes, public_health=server.auth.public_health
            ),
            server.host,
            server.http_port,
            tls,
        )
        api = _Uvicorn(build_api_app(self), server.host, server.api_port, tls)
        for each in (otlp_http, api):
            each.start()
            self._servers.append(each)
        self.http_port, self.api_port = otlp_http.port, api.port
        if not self.auth.enabled and not _is_loopback(server.host):
            _log.warning(
                "listening on %s without authentication: anyone who can reach ports %d, %d and %d "
                "can send, read and change data; set server.auth.tokens (docs/security.md) or "
                "bind to 127.0.0.1",
                server.host,
                self.grpc_port,
                self.http_port,
                self.api_port,
            )

    def _tick_loop(self) -> None:
        interval = self.config.tick_interval_s
        while not self._stop.wait(interval):
            now = time.time_ns()
            self.ingestor.tick(now)
            self.chain.tick(now)

    def stop(self, grace_s: float = 5.0) -> None:
        """Drain and shut down: no acknowledged data is lost."""
        self.ready.clear()
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        self._close_listeners(grace_s)
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        self._close_storage()

    def _close_listeners(self, grace_s: float) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace_s).wait(grace_s + 1)
        for each in self._servers:
            each.stop(grace_s)

    def _close_storage(self) -> None:
        self.chain.close()
        self.wal.close()
        self.state.close()

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT, then drain and stop."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        print(
            f"otel-audio receiver: OTLP gRPC {self.config.server.host}:{self.grpc_port}, "
            f"OTLP HTTP :{self.http_port}, API http://{self.config.server.host}:{self.api_port} "
            f"(data in {os.fspath(self.data_dir)})",
            flush=True,
        )
        stop.wait()
        self.stop()

    @property
    def serving(self) -> bool:
        """True while every port accepts data (readiness)."""
        return self.ready.is_set()
