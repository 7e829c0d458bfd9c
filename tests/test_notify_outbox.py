"""The outbox stores every notification before delivery and delivers it, once, through outages and restarts.

Channels here are the real webhook and Alertmanager channels posting to a real local HTTP server;
backoff is made fast by configuration, and waits are for events (requests, rows), never for time.
"""

from __future__ import annotations

import math
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_audio.notify import Backoff, Outbox
from otel_audio.notify.channels import AlertmanagerChannel, WebhookChannel
from otel_audio.notify.codec import notification_from_json, notification_to_json
from otel_audio.processors.alerting.model import Alert, AlertState, Notification
from tests.external import RecordingServer, Reply, free_port

T0 = 1_700_000_000 * 10**9
FAST = Backoff(base_s=0.01, cap_s=0.05)


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def notification(instance: str = "a", state: AlertState = AlertState.FIRING) -> Notification:
    alert = Alert(
        labels={"alertname": "HighLatency", "instance": instance},
        annotations={"summary": "slow"},
        state=state,
        starts_at=T0,
        ends_at=T0 + 60 * 10**9 if state is AlertState.RESOLVED else 0,
        value=612.0,
    )
    status = "resolved" if state is AlertState.RESOLVED else "firing"
    return Notification("team", f"group-{instance}", {"instance": instance}, (alert,), status, T0)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    srv = RecordingServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def outboxes(tmp_path) -> Iterator[list[Outbox]]:
    """Outboxes a test opens are closed after it."""
    opened: list[Outbox] = []
    yield opened
    for outbox in opened:
        outbox.close(timeout=5)


def open_outbox(outboxes: list[Outbox], path, channels, **kwargs) -> Outbox:
    outbox = Outbox(path, {c.name: c for c in channels}, **kwargs)
    outboxes.append(outbox)
    return outbox


def hook(server: RecordingServer, name: str = "hook", path: str = "/hook") -> WebhookChannel:
    return WebhookChannel(name, server.url(path), timeout_s=5)


def test_put_stores_durably_before_any_delivery(tmp_path, outboxes, server):
    outbox = open_outbox(outboxes, tmp_path / "outbox.sqlite", [hook(server)])
    assert outbox.put(notification(), ["hook"]) == 1
    with sqlite3.connect(tmp_path / "outbox.sqlite") as other:
        assert other.execute("SELECT channel, status, delivered_at FROM deliveries").fetchall() == [
            ("hook", "firing", None)
        ]
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert [d.state for d in outbox.pending()] == ["pending"]
    assert server.received() == []


def test_a_duplicate_put_is_delivered_once(tmp_path, outboxes, server):
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [hook(server)])
    assert outbox.put(notification(), ["hook"]) == 1
    assert outbox.put(notification(), ["hook", "hook"]) == 0
    outbox.start()
    wait_until(lambda: outbox.stats()["hook"]["delivered"] == 1)
    outbox.stop()
    assert len(server.received()) == 1


def test_an_unknown_channel_is_refused_and_nothing_is_stored(tmp_path, outboxes, server):
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [hook(server)])
    with pytest.raises(ValueError, match="unknown channel"):
        outbox.put(notification(), ["hook", "pager"])
    assert outbox.history() == []


def test_a_refused_channel_is_retried_with_backoff_until_it_comes_back(tmp_path, outboxes):
    port = free_port()
    outbox = open_outbox(
        outboxes,
        tmp_path / "o.sqlite",
        [WebhookChannel("hook", f"http://127.0.0.1:{port}/hook")],
        backoff=FAST,
    )
    outbox.start()
    outbox.put(notification(), ["hook"])
    wait_until(lambda: outbox.stats()["hook"]["retried"] >= 3)
    (waiting,) = outbox.pending()
    assert "ConnectionError" in waiting.last_error
    server = RecordingServer(port).start()
    try:
        server.wait_for(1, "/hook")
        wait_until(lambda: not outbox.pending())
    finally:
        server.stop()
    (row,) = outbox.history()
    assert row.state == "delivered"
    assert row.attempts >= 4
    assert outbox.stats()["hook"]["delivered"] == 1


def test_a_slow_channel_delays_neither_another_channel_nor_the_caller(tmp_path, outboxes, server):
    server.hold("/slow")
    outbox = open_outbox(
        outboxes, tmp_path / "o.sqlite", [hook(server, "slow", "/slow"), hook(server, "fast", "/fast")]
    )
    outbox.start()
    outbox.put(notification("a"), ["slow", "fast"])
    outbox.put(notification("b"), ["slow", "fast"])
    server.wait_for(2, "/fast")
    wait_until(lambda: outbox.stats()["fast"]["delivered"] == 2)
    assert outbox.stats()["slow"]["delivered"] == 0
    assert {d.channel for d in outbox.pending()} == {"slow"}
    server.release("/slow")
    wait_until(lambda: outbox.stats()["slow"]["delivered"] == 2)


def test_a_restart_delivers_what_was_left_exactly_once(tmp_path, outboxes, server):
    path = tmp_path / "o.sqlite"
    first = open_outbox(outboxes, path, [hook(server, "a", "/a"), hook(server, "b", "/b")], backoff=FAST)
    first.start()
    first.put(notification("delivered-before"), ["a", "b"])
    wait_until(lambda: len(first.pending()) == 0)
    first.stop()
    for instance in ("x", "y", "z"):
        first.put(notification(instance), ["a", "b"])
    first.close()

    second = open_outbox(outboxes, path, [hook(server, "a", "/a"), hook(server, "b", "/b")], backoff=FAST)
    assert len(second.pending()) == 6
    second.start()
    wait_until(lambda: not second.pending())
    second.stop()
    assert second.put(notification("x"), ["a", "b"]) == 0
    for path_ in ("/a", "/b"):
        received = server.received(path_)
        keys = [r.headers["Idempotency-Key"] for r in received]
        assert len(keys) == len(set(keys)) == 4
        assert [r.body["groupLabels"]["instance"] for r in received] == ["delivered-before", "x", "y", "z"]


def test_a_4xx_is_marked_failed_not_retried_and_the_channel_moves_on(tmp_path, outboxes, server):
    server.script("/hook", Reply(400, body="no such team"))
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [hook(server)], backoff=FAST)
    outbox.start()
    outbox.put(notification("a"), ["hook"])
    outbox.put(notification("b"), ["hook"])
    wait_until(lambda: not outbox.pending())
    outbox.stop()
    later, rejected = outbox.history()
    assert rejected.state == "failed"
    assert rejected.attempts == 1
    assert "HTTP 400: no such team" in rejected.last_error
    assert later.state == "delivered"
    assert len(server.received()) == 2
    assert outbox.stats()["hook"] == {"delivered": 1, "failed": 1, "retried": 0, "resent": 0}


def test_retry_after_on_429_is_honoured(tmp_path, outboxes, server):
    clock = FakeClock()
    server.script("/hook", Reply(429, {"Retry-After": "1"}))
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [hook(server)], backoff=FAST, clock=clock)
    outbox.start()
    outbox.put(notification(), ["hook"])
    wait_until(lambda: outbox.pending()[0].attempts == 1)
    (waiting,) = outbox.pending()
    assert waiting.next_attempt_at == clock.t + 1.0  # not FAST's jitter of at most 0.01 s
    assert len(server.received()) == 1
    clock.t += 1.0
    server.wait_for(2)
    wait_until(lambda: not outbox.pending())
    assert outbox.stats()["hook"]["retried"] == 1


def test_wake_delivers_a_backing_off_row_now(tmp_path, outboxes, server):
    clock = FakeClock()
    server.script("/hook", Reply(503))
    outbox = open_outbox(
        outboxes, tmp_path / "o.sqlite", [hook(server)], backoff=Backoff(base_s=1000, cap_s=1000), clock=clock
    )
    outbox.start()
    outbox.put(notification(), ["hook"])
    wait_until(lambda: outbox.pending()[0].attempts == 1)
    outbox.wake()
    wait_until(lambda: not outbox.pending())
    assert len(server.received()) == 2


def test_alertmanager_firing_groups_are_resent_until_resolved(tmp_path, outboxes, server):
    clock = FakeClock()
    channel = AlertmanagerChannel("am", server.url(), resend_interval_s=10)
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [channel], backoff=FAST, clock=clock)
    outbox.start()
    outbox.put(notification(), ["am"])
    wait_until(lambda: outbox.stats()["am"]["delivered"] == 1)
    clock.t += 10
    outbox.wake()
    resent = server.wait_for(2)[1]
    assert "endsAt" not in resent.body[0]
    wait_until(lambda: outbox.stats()["am"]["resent"] == 1)
    outbox.put(notification(state=AlertState.RESOLVED), ["am"])
    assert "endsAt" in server.wait_for(3)[2].body[0]
    wait_until(lambda: not outbox.pending())
    clock.t += 10
    outbox.wake()
    outbox.stop()
    assert len(server.received()) == 3


def test_backoff_is_exponential_with_equal_jitter():
    backoff = Backoff(base_s=1.0, cap_s=300.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (5, 16.0), (9, 256.0), (10, 300.0), (80, 300.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(500)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) > 0.95 * ceiling and min(delays) < 0.55 * ceiling


def test_a_notification_reads_back_equal_with_the_same_key():
    original = notification(state=AlertState.RESOLVED)
    back = notification_from_json(notification_to_json(original))
    assert back == original
    assert back.key == original.key
    nan_alert = Alert({"alertname": "A"}, {}, AlertState.FIRING, T0)
    nan_back = notification_from_json(
        notification_to_json(Notification("r", "g", {}, (nan_alert,), "firing", T0))
    )
    assert math.isnan(nan_back.alerts[0].value)


def test_put_defaults_to_the_receiver_and_a_resend_under_its_own_key_is_sent_again(
    tmp_path, outboxes, server
):
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [hook(server, "team")], backoff=FAST)
    outbox.start()
    same = notification()
    assert outbox.put(same) == 1
    assert outbox.put(same, key=f"{same.key}:repeat-1") == 1
    assert outbox.put(same, key=f"{same.key}:repeat-1") == 0
    first, repeat = server.wait_for(2, "/hook")
    assert first.headers["Idempotency-Key"] == same.key
    assert repeat.headers["Idempotency-Key"] == f"{same.key}:repeat-1"


_CHILD = """
import sys, time
from otel_audio.notify import Backoff, Outbox
from otel_audio.notify.channels import WebhookChannel
from tests.test_notify_outbox import notification
outbox = Outbox(sys.argv[1], {"hook": WebhookChannel("hook", sys.argv[2], timeout_s=60)})
outbox.start()
for i in range(5):
    outbox.put(notification(str(i)), ["hook"])
    print(i, flush=True)
time.sleep(600)
"""


def test_a_killed_process_loses_no_acknowledged_notification(tmp_path, outboxes, server):
    """SIGKILL while a request is in flight: every put that returned is delivered after restart."""
    root = Path(__file__).resolve().parents[1]
    server.hold("/hook")
    path = tmp_path / "o.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), server.url("/hook")],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        acknowledged = [child.stdout.readline().strip() for _ in range(5)]
        assert acknowledged == ["0", "1", "2", "3", "4"]
        wait_until(lambda: server.arrived("/hook") >= 1)  # held: the child is mid-request
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    server.release("/hook")

    outbox = open_outbox(outboxes, path, [hook(server)], backoff=FAST)
    assert len(outbox.pending()) == 5
    outbox.start()
    wait_until(lambda: not outbox.pending())
    outbox.stop()
    received = server.received("/hook")
    assert {r.body["groupLabels"]["instance"] for r in received} == {"0", "1", "2", "3", "4"}
    # the request in flight at the kill may arrive twice, under the same Idempotency-Key
    assert len({r.headers["Idempotency-Key"] for r in received}) == 5


def test_prune_deletes_old_finished_rows_but_each_groups_newest(tmp_path, outboxes, server):
    clock = FakeClock()
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [hook(server)], backoff=FAST, clock=clock)
    outbox.start()
    outbox.put(notification("a"), ["hook"])
    outbox.put(notification("a", AlertState.RESOLVED), ["hook"])
    outbox.put(notification("b"), ["hook"])
    wait_until(lambda: not outbox.pending())
    assert outbox.prune(older_than_s=60) == 0
    clock.t += 61
    assert outbox.prune(older_than_s=60) == 1
    assert [(d.group_key, d.status) for d in outbox.history()] == [
        ("group-b", "firing"),
        ("group-a", "resolved"),
    ]


class _BuggyOnce:
    """A channel whose first send fails with a bug (not a DeliveryError), then works."""

    name = "buggy"

    def __init__(self) -> None:
        self.raised = False
        self.sent: list[Notification] = []

    def send(self, notification: Notification) -> None:
        if not self.raised:
            self.raised = True
            raise KeyError("template field")
        self.sent.append(notification)


def test_a_channel_raising_an_unexpected_error_is_retried_not_lost(tmp_path, outboxes):
    channel = _BuggyOnce()
    outbox = open_outbox(outboxes, tmp_path / "o.sqlite", [channel], backoff=FAST)
    outbox.start()
    outbox.put(notification(), ["buggy"])
    wait_until(lambda: not outbox.pending())
    assert len(channel.sent) == 1
    (row,) = outbox.history()
    assert row.attempts == 2
    assert outbox.stats()["buggy"]["retried"] == 1
