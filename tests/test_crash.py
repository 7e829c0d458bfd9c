"""Crash reliability with a real receiver process: SIGKILL at random moments, during a flush, and
after alerts changed; nothing acknowledged is lost or doubled, every alert transition is notified
once (by idempotency key), and the receiver's flush process does not outlive it.

The harness is ``benchmarks/crash.py`` (which also prints the figures for the README).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import crash  # benchmarks/ is not a package: found through sys.path


def test_twenty_kills_under_load_lose_nothing_double_nothing_and_notify_each_transition_once():
    figures = crash.run(kills=20, seed=7, min_up=0.2, max_up=2.0)
    for kind in ("metrics", "spans", "logs"):
        assert figures[f"{kind}_acked"] > 0, f"no {kind} were acknowledged: the test tested nothing"
        assert figures[f"{kind}_lost"] == 0, figures
        assert figures[f"{kind}_duplicated"] == 0, figures
        assert figures[f"{kind}_partial_requests"] == 0, figures
    assert figures["transitions"] > 0, "the alert never changed state: nothing was tested"
    assert figures["notifications_delivered"] == figures["notifications_expected"], figures
    assert figures["notifications_duplicated"] == 0, figures
    assert figures["notifications_unexpected"] == 0, figures
    assert figures["requests_without_key"] == 0
    assert figures["opened_cleanly"], figures["corruption_lines"]
    assert figures["exit_code"] == 0
    # the flush process (spawned at the first tick) ends by itself when its receiver is killed
    assert figures["kills_with_a_flush_process"] > 0
    assert figures["orphaned_flush_processes"] == 0


def _serve(tmp_path: Path, webhook: crash.Webhook, flush_interval_s: int = 1) -> crash.Serve:
    return crash.Serve(tmp_path, webhook.url(), flip_s=0.6, flush_interval_s=flush_interval_s)


def _flip(serve: crash.Serve, service: str, value: float) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{serve.grpc_port}") as channel:
        channel.unary_unary(crash.EXPORT["metrics"])(crash.flip_request({service: value}), timeout=30)


def _history(serve: crash.Serve) -> list[dict]:
    reply = requests.get(serve.api("/api/v1/alerts/history"), params={"rule": crash.RULE}, timeout=30)
    return reply.json()["transitions"]


def test_a_restart_replays_the_wal_without_judging_alert_data_again_and_flushes_it_at_once(tmp_path):
    """The WAL replay refills the windows; it must not re-run the alert states over old points.
    And the replayed head is flushed at the first tick, not a flush interval (here 1 h) later."""
    webhook = crash.Webhook()
    serve = _serve(tmp_path, webhook, flush_interval_s=3600)  # the points stay in the WAL only
    try:
        serve.start()
        _flip(serve, "flip-a", 1.0)  # fires
        _flip(serve, "flip-a", 0.0)  # resolves
        deadline = time.monotonic() + 30
        while len(webhook.received()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [t["state"] for t in _history(serve)] == ["resolved", "firing"]
        serve.kill()
        serve.start()  # the replay happens before the receiver is ready
        assert [t["state"] for t in _history(serve)] == ["resolved", "firing"]
        assert len({key for key, _ in webhook.received()}) == 2
        assert any("replayed 2 WAL records" in line for line in serve.output)
        deadline = time.monotonic() + 60
        while crash._checkpoint_seq(serve.data) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert crash._checkpoint_seq(serve.data) == 1, "the replayed head was not flushed"
    finally:
        serve.stop()
        webhook.stop()


def test_a_kill_during_a_flush_keeps_every_acknowledged_item_once(tmp_path):
    """Kill the moment a flush has begun writing blocks (its files exist, the checkpoint does not
    name it yet); the restart removes the unfinished flush and replays the WAL instead."""
    webhook = crash.Webhook()
    serve = _serve(tmp_path, webhook)
    ledger = crash.Ledger()
    base_ns = (time.time_ns() // 10**9 - 3600) * 10**9
    try:
        serve.start()
        stop = threading.Event()
        threads = crash._load(serve, ledger, base_ns, 0.6, stop)
        deadline = time.monotonic() + 60
        while not crash.unfinished_flush(serve.data) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert crash.unfinished_flush(serve.data), "no flush began within 60 s"
        serve.kill()
        stop.set()
        for thread in threads:
            thread.join(30)
        serve.start()
        assert any("interrupted flush" in line for line in serve.output), "the kill missed the flush"
        counts = {kind: ledger.next_id[kind] for kind in ("metrics", "spans", "logs")}
        stored = {
            "metrics": crash.stored_metrics(serve, base_ns, counts["metrics"]),
            "spans": crash._items_by_request(crash.stored_spans(serve, base_ns, counts["spans"])),
            "logs": crash._items_by_request(crash.stored_logs(serve, base_ns, counts["logs"])),
        }
        for kind, found in stored.items():
            figures = crash.check_data(kind, ledger, found)
            assert figures[f"{kind}_acked"] > 0
            assert figures[f"{kind}_lost"] == 0, figures
            assert figures[f"{kind}_duplicated"] == 0, figures
    finally:
        serve.stop()
        webhook.stop()


def _alerting(tmp_path: Path, webhook: crash.Webhook):
    from otel_audio.processors.alerting.processor import Alerting

    options = {
        "channels": {"hook": {"type": "webhook", "url": webhook.url()}},
        "route": {"receiver": "hook", "group_by": ["alertname", "service"], "group_wait": "0s"},
        "rules": [{"name": crash.RULE, "condition": "crash.flip > 0.5"}],
    }
    return Alerting(options, tmp_path)


def _wait_for_requests(webhook: crash.Webhook, count: int) -> list[tuple[str, dict]]:
    deadline = time.monotonic() + 30
    while len(webhook.received()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return webhook.received()


def test_a_transition_recorded_just_before_a_crash_is_notified_after_the_restart(tmp_path):
    """A kill between the history's commit and the outbox's: the restart notifies it, once."""
    from otel_audio.processors.alerting.model import Alert, AlertState

    webhook = crash.Webhook()
    labels = {"alertname": crash.RULE, "severity": "warning", "service": "flip-a"}
    firing = Alert(labels, {}, AlertState.FIRING, starts_at=10**18)
    resolved = Alert(labels, {}, AlertState.RESOLVED, starts_at=10**18, ends_at=10**18 + 10**9)
    try:
        first = _alerting(tmp_path, webhook)
        first.history.record(crash.RULE, [firing], firing.starts_at)  # ... and the process dies
        first.close()
        second = _alerting(tmp_path, webhook)
        [(_, body)] = _wait_for_requests(webhook, 1)
        assert [a["status"] for a in body["alerts"]] == ["firing"]
        second.history.record(crash.RULE, [resolved], resolved.ends_at)  # ... and it dies again
        second.close()
        third = _alerting(tmp_path, webhook)
        received = _wait_for_requests(webhook, 2)
        assert [a["status"] for _, body in received for a in body["alerts"]] == ["firing", "resolved"]
        third.close()
        fourth = _alerting(tmp_path, webhook)  # everything was notified: nothing more is sent
        fourth.outbox.stop()
        assert not fourth.outbox.pending()
        assert len(webhook.received()) == 2
        fourth.close()
    finally:
        webhook.stop()
