"""``otel-audio rules suggest``: propose alerting rules from a metric's history.

History comes from a running receiver's API (``GET /api/v1/query_range``, one series per metric:
``--agg`` per ``--step`` over the last ``--since``, restricted by ``--match``) or, offline, from
``--input`` CSV files of ``timestamp,value`` (one per ``--metric``, in order). ``--labels`` is a CSV
of labelled history, either incident intervals (header ``start,end``) or point labels (header
``timestamp,label``, label 1/0, true/false or yes/no; each point takes the last label at or before
it); the critical threshold is then fitted to it. Prints ``{"rules": [...]}`` as YAML or JSON.

Example::

    otel-audio rules suggest --metric audio.stage.duration --since 7d --match 'audio.stage=denoise'

Errors (unreachable API, unknown metric, bad duration or file) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from otel_audio.processors import rulegen
from otel_audio.processors.anomaly.cli import CsvError, read_series
from otel_audio.processors.units import duration_ns, timestamp_ns

PROG = "otel-audio rules"
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}

Labeller = Callable[[np.ndarray], np.ndarray]  # timestamps_ns -> incident flags


class UsageError(ValueError):
    """Bad arguments, input or answer from the API; the message is the one line printed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Alerting rules from history.")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    sub = commands.add_parser(
        "suggest", help="propose rules for metrics from their history", description=__doc__
    )
    sub.formatter_class = argparse.RawDescriptionHelpFormatter
    sub.add_argument("--metric", action="append", required=True, help="metric name (repeat for several)")
    sub.add_argument("--since", default="7d", help="history to read, e.g. 7d, 24h (default: 7d)")
    sub.add_argument("--api", default="http://127.0.0.1:8080", help="receiver API (default: %(default)s)")
    sub.add_argument("--token", help="bearer token, if the receiver requires one")
    sub.add_argument("--step", help="aggregation step and rule window (default: 1m; CSV: its spacing)")
    sub.add_argument("--agg", default="avg", choices=rulegen.FUNCTIONS, help="aggregation (default: avg)")
    sub.add_argument("--match", action="append", default=[], help='label matcher, e.g. stage="denoise"')
    sub.add_argument("--direction", default="above", choices=rulegen.DIRECTIONS, help="which side is bad")
    sub.add_argument("--labels", help="CSV of labelled history: start,end or timestamp,label")
    sub.add_argument("--fp-weight", type=float, default=1.0, help="cost of a false positive (default: 1)")
    sub.add_argument("--fn-weight", type=float, default=5.0, help="cost of a false negative (default: 5)")
    sub.add_argument("--input", action="append", default=[], help="CSV timestamp,value instead of the API")
    sub.add_argument("--format", default="yaml", choices=("yaml", "json"), help="output format")
    return parser


def rules_main(argv: list[str]) -> int:
    """Run ``otel-audio rules``; 0 on success, 2 on bad arguments, input or API answers."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        rules = _suggest(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"{PROG} suggest: {exc}", file=sys.stderr)
        return 2
    document = {"rules": [rule.to_dict() for rule in rules]}
    if args.format == "json":
        print(json.dumps(document, indent=2))
    else:
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000))
    return 0


def _suggest(args: argparse.Namespace) -> list[rulegen.RuleSuggestion]:
    since_ns = duration_ns(args.since, "--since")
    if since_ns <= 0:
        raise UsageError(f"--since: must be longer than 0, got {args.since!r}")
    if args.fp_weight <= 0 or args.fn_weight <= 0:
        raise UsageError("--fp-weight and --fn-weight must be greater than 0")
    matchers = _matchers(args.match)
    if args.step is not None and duration_ns(args.step, "--step") <= 0:
        raise UsageError(f"--step: must be longer than 0, got {args.step!r}")
    if args.input:
        if len(args.input) != len(args.metric):
            raise UsageError(
                f"--input: give one CSV per --metric ({len(args.metric)}), got {len(args.input)}"
            )
        series = {m: _read_csv(p) for m, p in zip(args.metric, args.input, strict=True)}
        step_ns = duration_ns(args.step, "--step") if args.step else _spacing(series)
    else:
        step_ns = duration_ns(args.step or "1m", "--step")
        end_ns = time.time_ns()
        series = {
            m: fetch_history(
                args.api, m, end_ns - since_ns, end_ns, step_ns, args.agg, args.match, args.token
            )
            for m in args.metric
        }
    for metric, (t, _) in series.items():
        if len(t) < rulegen.MIN_POINTS:
            where = (
                "in " + args.input[args.metric.index(metric)] if args.input else f"in the last {args.since}"
            )
            raise UsageError(
                f"{metric}: only {len(t)} points {where}; at least {rulegen.MIN_POINTS} are needed "
                "(a longer --since or a shorter --step gives more)"
            )
    query = rulegen.Query(fn=args.agg, window_ns=step_ns, matchers=matchers, direction=args.direction)
    labels = None
    if args.labels:
        labeller = read_labels(Path(args.labels))
        labels = {m: labeller(t) for m, (t, _) in series.items()}
    try:
        return rulegen.suggest_rules(series, query, step_ns, labels, args.fp_weight, args.fn_weight)
    except ValueError as exc:
        raise UsageError(f"--labels {args.labels}: {exc}" if args.labels else str(exc)) from None


def fetch_history(
    api: str,
    metric: str,
    start_ns: int,
    end_ns: int,
    step_ns: int,
    agg: str,
    match: list[str],
    token: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One metric from ``GET {api}/api/v1/query_range`` as (timestamps_ns, values); UsageError on failure."""
    query = [
        ("metric", metric),
        ("start", f"{start_ns / 1e9:.3f}"),
        ("end", f"{end_ns / 1e9:.3f}"),
        ("step", rulegen.format_duration(step_ns)),
        ("agg", agg),
    ] + [("match", m) for m in match]
    url = f"{api.rstrip('/')}/api/v1/query_range?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        raise UsageError(f"{api}: {_api_error(exc)} (HTTP {exc.code})") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach the receiver API at {api}: {reason}") from None
    except json.JSONDecodeError:
        raise UsageError(f"{api}: the answer to {url} is not JSON; is --api a receiver API?") from None
    points = [p for s in body.get("series", []) for p in s.get("points", [])]
    if not points:
        raise UsageError(f"no data for {metric} between {_iso(start_ns)} and {_iso(end_ns)}")
    pts = np.array(sorted(points), np.float64)
    return np.round(pts[:, 0] * 1e9).astype(np.int64), pts[:, 1]


def _api_error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


def read_labels(path: Path) -> Labeller:
    """A labelled-history CSV (``start,end`` intervals or ``timestamp,label`` rows) as a labeller."""
    try:
        with open(path, newline="") as handle:
            rows = [
                (n, row) for n, row in enumerate(csv.reader(handle), start=1) if any(c.strip() for c in row)
            ]
    except OSError as exc:
        raise UsageError(f"--labels: cannot read {path}: {exc.strerror}") from None
    if not rows:
        raise UsageError(f"--labels {path}: empty; expected a header start,end or timestamp,label")
    header = [c.strip().lower() for c in rows[0][1]]
    if header not in (["start", "end"], ["timestamp", "label"]):
        raise UsageError(f"--labels {path}:{rows[0][0]}: expected the header start,end or timestamp,label")
    firsts, seconds = [], []
    for line, row in rows[1:]:
        if len(row) != 2:
            raise UsageError(f"--labels {path}:{line}: expected 2 columns, got {len(row)}")
        try:
            firsts.append(timestamp_ns(row[0]))
            seconds.append(timestamp_ns(row[1]) if header[0] == "start" else _flag(row[1]))
        except ValueError as exc:
            raise UsageError(f"--labels {path}:{line}: {exc}") from None
    if len(rows) == 1:
        raise UsageError(f"--labels {path}: no rows after the header")
    if header[0] == "start":
        bad = [i for i, (a, b) in enumerate(zip(firsts, seconds, strict=True)) if b < a]
        if bad:
            raise UsageError(f"--labels {path}:{rows[bad[0] + 1][0]}: end is before start")
        return lambda t: rulegen.labels_from_intervals(t, firsts, seconds)
    return lambda t: rulegen.labels_from_points(t, np.array(firsts, np.int64), np.array(seconds, bool))


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"label {text!r}: expected 1/0, true/false or yes/no")


def _matchers(texts: list[str]) -> tuple[tuple[str, str, str], ...]:
    from otel_audio.api.params import matchers  # the API's own matcher syntax, so both agree

    try:
        return tuple((m.key, m.op, m.value) for m in matchers(texts))
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None


def _read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="") as source:
            rows = read_series(source)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except CsvError as exc:
        raise UsageError(f"{path}: {exc}") from None
    rows.sort(key=lambda row: row[1])
    return np.array([r[1] for r in rows], np.int64), np.array([r[2] for r in rows], np.float64)


def _spacing(series: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """The median spacing of the first CSV, to whole milliseconds: the rule window for CSV input."""
    t = next(iter(series.values()))[0]
    if len(t) < 2:
        return 60 * 10**9
    return max(10**6, int(np.median(np.diff(t))) // 10**6 * 10**6)


def _iso(t_ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ns / 1e9))
