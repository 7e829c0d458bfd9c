"""Channel outage: minutes with every notification target down, then how delivery catches up.

A receiver (in this process, on loopback ports) runs the ``alerting`` processor with one rule
that fires for every new value of a ``seq`` attribute, grouped by it, routed to three real
channels: a webhook (the tests' ``RecordingServer``), SMTP (``aiosmtpd``) and a real Debian
``prometheus-alertmanager``. Channel settings are the production defaults: no ``min_backoff`` /
``max_backoff`` (1 s doubling to 1 min, equal jitter) and the default timeouts.

1. ``--before`` notifications are delivered with every target up.
2. Every target goes down (its port closed; Alertmanager's process stopped) for ``--outage``
   seconds. Meanwhile a new alert is exported every ``1 / --rate`` s, and plain metric exports
   run at ``--load`` per second, each waiting for its acknowledgement.
3. The targets come back on the same ports; the script waits until the outbox is empty and each
   target holds every notification.

Counted from both sides: the outbox rows made during the outage against what each target
received, by idempotency key (``Idempotency-Key``, ``Message-ID``; Alertmanager by the alert's
labels, as it deduplicates them itself), and the outbox's attempt log for the backoff.

Usage::

    python benchmarks/channel_outage.py [--outage 300] [--rate 1] [--load 20] [--before 3]

Prints one JSON line: ``outage_s``, ``notifications_during_outage`` (rows, all channels),
``delivered_after_recovery``, ``lost``, ``duplicates`` (extra deliveries of one key, webhook and
SMTP), ``recovery_to_all_delivered_s``, ``max_backoff_interval_s`` (the longest wait the outbox
chose between two tries), ``max_attempt_gap_s`` (the longest gap between two tries as they
happened), ``ingest_acks_during_outage``, ``ingest_errors_during_outage``, and per channel.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from otel_audio.receiver.config import load_config  # noqa: E402
from otel_audio.receiver.service import Receiver  # noqa: E402
from tests.test_channel_outages import (  # noqa: E402  the tests' targets and helpers
    CHANNELS,
    Exporter,
    Targets,
    alerting_options,
    key_of,
    outbox_of,
    produce,
    rows_by_seq,
    wait_until,
)


def _production(options: dict[str, Any]) -> dict[str, Any]:
    """The test's alerting options with the channels' own defaults: no backoff or timeout set."""
    channels = options["alerting"]["channels"]
    for name, config in channels.items():
        channels[name] = {
            k: v for k, v in config.items() if k not in ("min_backoff", "max_backoff", "timeout")
        }
    channels["am"]["resend_interval"] = "1h"  # re-sends are not what is measured
    return options


def _load(port: int, per_second: float, stop: threading.Event, counts: Counter[str]) -> None:
    """Plain exports at ``per_second``, each acknowledged before the next; counts acks and errors."""
    exporter = Exporter(port)
    n = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                exporter.load(n)
                counts["acked"] += 1
            except Exception:
                counts["errors"] += 1
            n += 1
            stop.wait(max(0.0, 1.0 / per_second - (time.monotonic() - started)))
    finally:
        exporter.close()


def run(outage_s: float, rate: float, load: float, before: int, settle_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="channel-outage-") as tmp:
        targets = Targets(Path(tmp))
        settings = {
            "storage__data_dir": str(Path(tmp) / "data"),
            "server__grpc_port": 0,
            "server__http_port": 0,
            "server__api_port": 0,
            "processors": [_production(alerting_options(targets)), "store"],
        }
        receiver = Receiver(load_config(None, **settings))
        receiver.start()
        try:
            return _measure(receiver, targets, outage_s, rate, load, before, settle_s)
        finally:
            receiver.stop(grace_s=1)
            targets.close()


def _measure(
    receiver: Receiver,
    targets: Targets,
    outage_s: float,
    rate: float,
    load: float,
    before: int,
    settle_s: float,
) -> dict[str, Any]:
    outbox, exporter = outbox_of(receiver), Exporter(receiver.grpc_port)
    produce(exporter, outbox, range(before))
    wait_until(lambda: not outbox.pending(), timeout=60, what="delivery before the outage")

    counts: Counter[str] = Counter()
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(receiver.grpc_port, load, stop, counts), daemon=True)
    targets.down()
    down_at = time.time()
    loader.start()
    seq = before
    while time.time() - down_at < outage_s:
        exporter.alert(seq)
        seq += 1
        time.sleep(max(0.0, down_at + (seq - before) / rate - time.time()))
    stop.set()
    loader.join(30)
    targets.up()
    up_at = time.time()
    during = range(before, seq)

    def delivered() -> bool:
        hook, mail = set(targets.hook.keys()), set(targets.mail.keys())
        return (
            not outbox.pending()
            and {key_of(r) for s, r in rows_by_seq(outbox, "hook").items() if s in during} <= hook
            and {key_of(r) for s, r in rows_by_seq(outbox, "mail").items() if s in during} <= mail
            and set(during) <= targets.am.seqs()
        )

    try:
        wait_until(delivered, timeout=settle_s, what="delivery after recovery")
        done_at: float | None = time.time()
    except AssertionError:
        done_at = None
    exporter.close()
    return _report(outbox, targets, during, down_at, up_at, done_at, counts)


def _report(
    outbox: Any, targets: Targets, during: range, down_at: float, up_at: float, done_at: float | None,
    counts: Counter[str],
) -> dict[str, Any]:  # fmt: skip
    received = {"hook": Counter(targets.hook.keys()), "mail": Counter(targets.mail.keys())}
    am_seqs = targets.am.seqs()
    per_channel: dict[str, dict[str, Any]] = {}
    for channel in CHANNELS:
        rows = {s: r for s, r in rows_by_seq(outbox, channel).items() if s in during}
        if channel in received:
            got = received[channel]
            delivered = sum(1 for r in rows.values() if got[key_of(r)] > 0)
            duplicates = sum(max(0, got[key_of(r)] - 1) for r in rows.values())
        else:
            delivered, duplicates = sum(1 for s in rows if s in am_seqs), 0
        chosen, gaps = [0.0], [0.0]
        for row in rows.values():
            attempts = outbox.attempts(row.id)
            chosen += [a.retry_at - a.at for a in attempts if a.retry_at is not None]
            gaps += [b.at - a.at for a, b in itertools.pairwise(attempts)]
        per_channel[channel] = {
            "produced": len(rows),
            "delivered": delivered,
            "lost": len(rows) - delivered,
            "duplicates": duplicates,
            "attempts": sum(r.attempts for r in rows.values()),
            "max_backoff_interval_s": round(max(chosen), 3),
            "max_attempt_gap_s": round(max(gaps), 3),
            "last_delivered_after_recovery_s": _last_after(rows.values(), up_at),
        }
    total = lambda key: sum(c[key] for c in per_channel.values())  # noqa: E731
    return {
        "outage_s": round(up_at - down_at, 1),
        "notifications_during_outage": total("produced"),
        "delivered_after_recovery": total("delivered"),
        "lost": total("lost"),
        "duplicates": total("duplicates"),
        "recovery_to_all_delivered_s": round(done_at - up_at, 2) if done_at is not None else None,
        "max_backoff_interval_s": max(c["max_backoff_interval_s"] for c in per_channel.values()),
        "max_attempt_gap_s": max(c["max_attempt_gap_s"] for c in per_channel.values()),
        "ingest_acks_during_outage": counts["acked"],
        "ingest_errors_during_outage": counts["errors"],
        "alerts_exported_during_outage": len(during),
        "channels": per_channel,
    }


def _last_after(rows: Any, up_at: float) -> float | None:
    """Seconds from recovery to the last of ``rows`` delivered; None if one is still undelivered."""
    times = [r.delivered_at for r in rows]
    if not times or None in times:
        return None
    return round(max(times) - up_at, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=300.0, help="seconds every target is down")
    parser.add_argument("--rate", type=float, default=1.0, help="new alerts per second during the outage")
    parser.add_argument("--load", type=float, default=20.0, help="plain metric exports per second meanwhile")
    parser.add_argument("--before", type=int, default=3, help="notifications delivered before the outage")
    parser.add_argument("--settle", type=float, default=600.0, help="seconds to wait for delivery after it")
    args = parser.parse_args()
    print(json.dumps(run(args.outage, args.rate, args.load, args.before, args.settle)), flush=True)


if __name__ == "__main__":
    main()
