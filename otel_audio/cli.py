"""The ``otel-audio`` command line.

Commands available now:

- ``otel-audio serve [--config FILE] [--data-dir DIR]``: run the receiver (OTLP gRPC 4317,
  OTLP HTTP 4318, API 8080 on 127.0.0.1 by default) until SIGTERM or Ctrl-C.
- ``otel-audio demo``: run the instrumented example pipeline (``examples/`` of a source
  checkout) on generated noisy speech and print a summary of its telemetry. By default the
  telemetry stays in memory; ``--endpoint URL`` exports over OTLP to a collector instead.
  ``--serve`` (what ``make demo`` runs, ``examples/demo_serve.py``) starts a receiver with alert
  rules, SLOs and a webhook to ``notifications.jsonl``, and streams files through it with a fault
  every ``--fault-every`` seconds until Ctrl-C (``--duration S``: S seconds; ``--once``: one pass).
- ``otel-audio semconv``: print the semantic-conventions tables (``docs/semantic-conventions.md``).
- ``otel-audio --version``.

This module imports only the SDK side at start; the receiver is imported when ``serve`` runs
and the example pipeline when ``demo`` runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from otel_audio import semconv
from otel_audio.version import __version__

_EXAMPLES_MISSING = (
    "otel-audio demo: the example pipeline lives in the examples/ folder of a source checkout "
    "and is not part of the installed package; looked in {places}. Run the demo from a clone of "
    "the repository (make demo, or otel-audio demo from its root)."
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-audio", description="Observability for audio-enhancement services, on OpenTelemetry."
    )
    parser.add_argument("--version", action="version", version=f"otel-audio {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="command")

    demo = commands.add_parser(
        "demo",
        help="run the instrumented example pipeline and summarise its telemetry",
        description="Enhance generated noisy speech through the instrumented example pipeline "
        "and print a summary of the telemetry it produced.",
    )
    demo.add_argument("--files", type=_positive_int, default=20, help="files to process (default: 20)")
    demo.add_argument(
        "--endpoint",
        metavar="URL",
        help="export over OTLP to this collector (e.g. http://127.0.0.1:4317) instead of keeping "
        "telemetry in memory",
    )
    demo.add_argument(
        "--faults",
        action="store_true",
        help="inject latency spikes, quality drops, errors and a memory leak",
    )
    demo.add_argument("--output", metavar="DIR", help="keep the enhanced WAV files in DIR")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated audio and faults")
    demo.add_argument(
        "--serve",
        action="store_true",
        help="start a receiver (embedded store) in this process, export to it, query it back through "
        "its API, and keep serving until Ctrl-C",
    )
    demo.add_argument(
        "--once", action="store_true", help="with --serve: one pass over --files files, then stop"
    )
    demo.add_argument(
        "--data-dir", default="./otel-audio-data", help="with --serve: the receiver's data directory"
    )
    _demo_stream_arguments(demo)
    demo.set_defaults(handler=_demo)

    serve = commands.add_parser(
        "serve",
        help="run the receiver: OTLP gRPC/HTTP ingest, storage and the query API",
        description="Run the otel-audio receiver until SIGTERM or Ctrl-C. Works with no config: "
        "OTLP gRPC on 127.0.0.1:4317, OTLP HTTP on :4318, the API on :8080, data in ./otel-audio-data.",
    )
    serve.add_argument(
        "--config", metavar="FILE", help="YAML configuration (see collector-config/otel-audio.yaml)"
    )
    serve.add_argument("--data-dir", metavar="DIR", help="where data is kept (overrides storage.data_dir)")
    serve.add_argument("--host", help="address to listen on (overrides server.host)")
    serve.set_defaults(handler=_serve)

    table = commands.add_parser("semconv", help="print the semantic-conventions tables (Markdown)")
    table.set_defaults(handler=_semconv)

    for name, target, text in (
        (
            "detect",
            "otel_audio.processors.anomaly.cli:detect_main",
            "score a CSV of timestamp,value "
            "with an anomaly detector (the service's own code); see docs/anomaly.md",
        ),
        (
            "forecast",
            "otel_audio.processors.forecast_cli:forecast_main",
            "forecast a CSV of "
            "timestamp,value with intervals and the time a limit is crossed; see docs/forecast.md",
        ),
        (
            "rules",
            "otel_audio.processors.rulegen_cli:rules_main",
            "rules suggest: propose alerting rules from a metric's history; see docs/rulegen.md",
        ),
        (
            "report",
            "otel_audio.processors.slo.report_cli:report_main",
            "report sla: the SLA report of a calendar month (JSON, CSV or printable HTML) from a "
            "receiver's API; see docs/sla-reports.md",
        ),
    ):
        sub = commands.add_parser(name, help=text, add_help=False, prefix_chars="\0")
        sub.add_argument("args", nargs=argparse.REMAINDER)
        sub.set_defaults(handler=lambda args, target=target: _delegate(target, args.args))
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 (any free one) to 65535, got {value}")
    return value


def _demo_stream_arguments(demo: argparse.ArgumentParser) -> None:
    """The options of the streaming demo (``--serve`` without ``--once``; docs/demo.md)."""
    demo.add_argument(
        "--duration", type=_positive_float, metavar="S", help="with --serve: stop after S seconds"
    )
    demo.add_argument(
        "--rate", type=_positive_float, default=2.0, help="with --serve: files per second (default: 2)"
    )
    demo.add_argument(
        "--fault-every",
        type=_non_negative_float,
        default=120.0,
        metavar="S",
        help="with --serve: start a fault every S seconds, the first after S (default: 120; 0: none)",
    )
    demo.add_argument(
        "--fault-length",
        type=_positive_float,
        default=45.0,
        metavar="S",
        help="with --serve: how long each fault lasts (default: 45)",
    )
    demo.add_argument(
        "--fault-kinds",
        metavar="K,K",
        help="with --serve: the faults, in turn (default: latency,quality,errors,memory)",
    )
    demo.add_argument(
        "--progress-every",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="with --serve, when output is not a terminal: a status line every S seconds (default: 10)",
    )
    for name, default, what in (
        ("grpc", 4317, "OTLP gRPC"),
        ("http", 4318, "OTLP HTTP"),
        ("api", 8080, "API"),
    ):
        demo.add_argument(
            f"--{name}-port",
            type=_port,
            default=default,
            help=f"with --serve: the receiver's {what} port (default: {default}; 0: any free one)",
        )


def _delegate(target: str, argv: list[str]) -> int:
    """Run a command whose parser lives with its module (it parses ``argv``, --help included)."""
    module, function = target.split(":")
    return int(getattr(importlib.import_module(module), function)(argv))


def _examples_root() -> Path | None:
    """The checkout holding ``examples/``: next to this package (editable install), else the cwd."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (root / "examples" / "demo.py").is_file():
            return root
    return None


def _demo(args: argparse.Namespace) -> int:
    root = _examples_root()
    if root is None:
        places = f"{Path(__file__).resolve().parents[1] / 'examples'} and {Path.cwd() / 'examples'}"
        print(_EXAMPLES_MISSING.format(places=places), file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    demo = importlib.import_module("examples.demo")
    if args.serve:
        return _demo_with_receiver(args)
    return int(
        demo.run_demo(
            args.files, endpoint=args.endpoint, faults=args.faults, output_dir=args.output, seed=args.seed
        )
    )


def _demo_with_receiver(args: argparse.Namespace) -> int:
    """``demo --serve``: the receiver, the streaming pipeline and its faults (``examples/demo_serve.py``)."""
    demo_serve = importlib.import_module("examples.demo_serve")
    try:
        settings = demo_serve.DemoSettings(
            data_dir=args.data_dir,
            files=args.files,
            once=args.once,
            faults=args.faults,
            output_dir=args.output,
            seed=args.seed,
            duration_s=args.duration,
            rate=args.rate,
            fault_every_s=args.fault_every,
            fault_length_s=args.fault_length,
            fault_kinds=tuple(args.fault_kinds.split(",")) if args.fault_kinds else tuple(demo_serve.FAULTS),
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            api_port=args.api_port,
            progress_every_s=args.progress_every,
        )
        demo_serve.FaultSchedule(settings.fault_kinds, settings.fault_every_s, settings.fault_length_s)
    except ValueError as exc:
        print(f"otel-audio demo: {exc}", file=sys.stderr)
        return 2
    return int(demo_serve.run(settings))


def _serve(args: argparse.Namespace) -> int:
    import logging

    from otel_audio.receiver.config import ConfigError, load_config
    from otel_audio.receiver.service import Receiver

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, storage__data_dir=args.data_dir, server__host=args.host)
        receiver = Receiver(config)
    except ConfigError as exc:
        print(f"otel-audio serve: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        receiver.serve_forever()
    except ConfigError as exc:  # processor options are checked when the chain is built, at start
        print(f"otel-audio serve: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"otel-audio serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _semconv(args: argparse.Namespace) -> int:
    sys.stdout.write(semconv.markdown_table())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otel-audio`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
