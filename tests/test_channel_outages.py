"""Channel outages end to end: every notification made while a target is down or slow arrives after.

A real receiver runs the ``alerting`` processor with one rule that fires for every new value of
the ``seq`` attribute and a route grouping by it, so each OTLP export of a new ``seq`` is a
distinct notification for each of three real channels: a webhook (:class:`RecordingServer`), SMTP
(``aiosmtpd``) and a real Debian ``prometheus-alertmanager``. Each target can be taken down (its
port closed) and brought back on the same port, or made slow.

What is checked is the delivery record on both sides: what each target received, by idempotency
key (``Idempotency-Key`` header, ``Message-ID``; Alertmanager deduplicates by labels), against the
outbox's rows and its attempt log. Backoff is configured short (``min_backoff``/``max_backoff``
per channel), and the retry schedule is checked as an order (gaps grow until the cap, never pass
it, no retry before its time), never against the wall clock. ``benchmarks/channel_outage.py`` runs
the same with minutes of outage and production backoff.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from aiosmtpd.controller import Controller
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc

from otel_audio.notify import Outbox
from otel_audio.notify.channels import AlertmanagerChannel
from otel_audio.processors.alerting.model import Alert, AlertState, Notification
from tests.external import RecordingServer, free_port, require_external
from tests.receiver_helpers import gauge, metrics_request

CHANNELS = ("hook", "mail", "am")
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.05, 0.4
_SEQ = re.compile(r'seq="(\d+)"')


# -- the three targets, each able to go down and come back on its own port --------------------------


class Webhook:
    """A RecordingServer on a fixed port that can be stopped and started again; keeps every request."""

    path = "/hook"

    def __init__(self) -> None:
        self.port = free_port()
        self._servers: list[RecordingServer] = []
        self.up()

    @property
    def server(self) -> RecordingServer:
        return self._servers[-1]

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def up(self) -> None:
        self._servers.append(RecordingServer(self.port).start())

    def down(self) -> None:
        self.server.stop()

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request answered, across restarts, in arrival order."""
        return [r.headers["Idempotency-Key"] for s in self._servers for r in s.received(self.path)]


class _Inbox:
    def __init__(self) -> None:
        self.message_ids: list[str] = []
        self.delay_s = 0.0  # a slow server: each DATA is answered this much later

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = envelope.original_content.decode(errors="replace")
        found = re.search(r"^Message-ID: <([^>]+)@", text, re.MULTILINE | re.IGNORECASE)
        self.message_ids.append(found.group(1) if found else "")
        return "250 OK"


class Smtp:
    """aiosmtpd on a fixed port; ``message_ids`` are the keys of every mail taken, across restarts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.inbox = _Inbox()
        self._controller: Controller | None = None
        self.up()

    def up(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def keys(self) -> list[str]:
        return list(self.inbox.message_ids)


class Alertmanager:
    """Debian's prometheus-alertmanager as a subprocess on a fixed port (no cluster, its own storage)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_external("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "alertmanager.yml").write_text(
            "route: {receiver: none, group_by: [alertname]}\nreceivers: [{name: none}]\n"
        )
        self._process: subprocess.Popen[bytes] | None = None
        self.up()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'alertmanager.yml'}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout=20, what="alertmanager ready")

    def _ready(self) -> bool:
        assert self._process is not None and self._process.poll() is None, "alertmanager exited"
        try:
            return requests.get(f"{self.url()}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def down(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def seqs(self) -> set[int]:
        """The ``seq`` of every alert Alertmanager holds (it keeps one per label set)."""
        alerts = requests.get(f"{self.url()}/api/v2/alerts", timeout=5).json()
        return {int(a["labels"]["seq"]) for a in alerts if a["labels"].get("alertname") == "Outage"}


class Targets:
    def __init__(self, workdir: Path) -> None:
        self.hook = Webhook()
        self.mail = Smtp()
        self.am = Alertmanager(workdir / "alertmanager")

    def down(self) -> None:
        for target in (self.hook, self.mail, self.am):
            target.down()

    def up(self) -> None:
        for target in (self.hook, self.mail, self.am):
            target.up()

    def close(self) -> None:
        self.mail.down()
        self.am.down()
        self.hook.server.stop()


@pytest.fixture
def targets(tmp_path) -> Iterator[Targets]:
    found = Targets(tmp_path)
    yield found
    found.close()


# -- the receiver and its stream of alerts -------------------------------------------------------


def alerting_options(targets: Targets, *, hook_timeout: str = "1s", **backoff: str) -> dict[str, Any]:
    """The alerting processor: one rule firing per ``seq``, grouped by it, to all three channels."""
    retry = {"min_backoff": f"{MIN_BACKOFF_S}s", "max_backoff": f"{MAX_BACKOFF_S}s", **backoff}
    return {
        "alerting": {
            "channels": {
                "hook": {"type": "webhook", "url": targets.hook.url(), "timeout": hook_timeout, **retry},
                "mail": {
                    "type": "email",
                    "host": "127.0.0.1",
                    "port": targets.mail.port,
                    "starttls": False,
                    "from": "otel-audio@example.org",
                    "to": ["oncall@example.org"],
                    "timeout": "5s",
                    **retry,
                },
                "am": {"type": "alertmanager", "url": targets.am.url(), "resend_interval": "1h", **retry},
            },
            "route": {
                "receiver": "default",  # every channel
                "group_by": ["alertname", "seq"],
                "group_wait": "0s",
                "group_interval": "1h",
                "repeat_interval": "1h",
            },
            "rules": [{"name": "Outage", "condition": "avg(outage.probe, 1h) > 0", "severity": "warning"}],
        }
    }


class Exporter:
    """OTLP/gRPC exports over one channel: alert-making points (a new ``seq`` each) or plain load."""

    def __init__(self, port: int) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._stub = metrics_service_pb2_grpc.MetricsServiceStub(self._channel)
        self.acked = 0

    def alert(self, seq: int) -> None:
        self._export(gauge("outage.probe", [(time.time_ns(), 1.0, {"seq": str(seq)})]))

    def load(self, n: int) -> None:
        self._export(gauge("outage.load", [(time.time_ns(), float(n), {"worker": "w"})]))

    def _export(self, metric: Any) -> None:
        self._stub.Export(metrics_request("outage", [metric]), timeout=10)
        self.acked += 1

    def close(self) -> None:
        self._channel.close()


def outbox_of(receiver: Any) -> Outbox:
    return next(p for p in receiver.chain.processors if getattr(p, "name", "") == "alerting").outbox


def rows_by_seq(outbox: Outbox, channel: str) -> dict[int, Any]:
    """The channel's outbox rows by the ``seq`` of their group (one notification per ``seq``)."""
    rows = [d for d in outbox.history(limit=10_000) if d.channel == channel]
    return {int(_SEQ.search(d.group_key).group(1)): d for d in rows}


def key_of(row: Any) -> str:
    """What the channel sends as its idempotency key: the row's key without the channel name."""
    return row.idempotency_key.rsplit(":", 1)[0]


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)


def produce(exporter: Exporter, outbox: Outbox, seqs: range) -> None:
    """Export one alert per ``seq`` and wait until the outbox holds its row for every channel."""
    for seq in seqs:
        exporter.alert(seq)
    wanted = set(seqs)
    wait_until(lambda: all(wanted <= set(rows_by_seq(outbox, c)) for c in CHANNELS), what=f"rows for {seqs}")


def delivered_everywhere(targets: Targets, outbox: Outbox, seqs: range, am_seqs: range | None = None) -> bool:
    """Nothing pending, and the targets hold every notification of ``seqs`` (Alertmanager: of
    ``am_seqs``, as a restarted Alertmanager forgets what it had)."""
    if outbox.pending():
        return False
    hook, mail = set(targets.hook.keys()), set(targets.mail.keys())
    return (
        all(key_of(rows_by_seq(outbox, "hook")[s]) in hook for s in seqs)
        and all(key_of(rows_by_seq(outbox, "mail")[s]) in mail for s in seqs)
        and set(seqs if am_seqs is None else am_seqs) <= targets.am.seqs()
    )


def assert_backoff_grew_to_the_cap(outbox: Outbox, row: Any) -> None:
    """The attempt log of a row that waited out an outage: failures, then one delivery; the gaps
    chosen never shrink until they reach the cap's range, never pass the cap, and no retry came
    before its time."""
    attempts = outbox.attempts(row.id)
    *failures, delivered = attempts
    assert delivered.error is None and all(a.error for a in failures), attempts
    gaps = [a.retry_at - a.at for a in failures]
    assert len(gaps) >= 4, f"only {len(gaps)} retries: {attempts}"
    assert all(MIN_BACKOFF_S / 2 <= g <= MAX_BACKOFF_S for g in gaps), gaps
    assert all(later >= earlier or later >= MAX_BACKOFF_S / 2 for earlier, later in pairwise(gaps)), gaps
    assert max(gaps) >= MAX_BACKOFF_S / 2, f"the cap was never reached: {gaps}"
    assert all(b.at >= a.retry_at for a, b in pairwise(attempts)), "a retry came before its time"


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def firing(group: str) -> Notification:
    alert = Alert({"alertname": "Outage", "group": group}, {}, AlertState.FIRING, time.time_ns(), 0, 1.0)
    return Notification(
        "am", f"{{}}:{{group={group!r}}}", {"group": group}, (alert,), "firing", time.time_ns()
    )


# -- the scenarios -------------------------------------------------------------------------------


def test_targets_down_for_an_outage_get_every_notification_once_after_recovery(start_receiver, targets):
    receiver = start_receiver(processors=[alerting_options(targets), "store"])
    outbox, exporter = outbox_of(receiver), Exporter(receiver.grpc_port)
    produce(exporter, outbox, range(0, 3))
    wait_until(lambda: delivered_everywhere(targets, outbox, range(0, 3)), what="delivery before the outage")

    targets.down()
    produce(exporter, outbox, range(3, 13))
    first = {c: rows_by_seq(outbox, c)[3] for c in CHANNELS}
    # every channel retries its oldest row until the gaps have reached the cap (attempt 4 on)
    wait_until(
        lambda: all(r.attempts >= 6 for r in outbox.pending() if r.id in {d.id for d in first.values()}),
        what="six attempts on each channel",
    )
    for channel in CHANNELS:
        assert "refused" in rows_by_seq(outbox, channel)[3].last_error.lower()
        assert all(rows_by_seq(outbox, channel)[s].attempts == 0 for s in range(4, 13))  # in order
    targets.up()

    recovered = lambda: delivered_everywhere(targets, outbox, range(0, 13), range(3, 13))  # noqa: E731
    wait_until(recovered, what="delivery after recovery")
    exporter.close()
    for channel in CHANNELS:
        assert_backoff_grew_to_the_cap(outbox, first[channel])
        rows = rows_by_seq(outbox, channel)
        assert all(rows[s].attempts == 1 for s in range(4, 13)), "the backlog went on the first try"
    for target, channel in ((targets.hook, "hook"), (targets.mail, "mail")):
        keys = target.keys()
        assert Counter(keys) == Counter(key_of(r) for r in rows_by_seq(outbox, channel).values())
    assert set(range(3, 13)) <= targets.am.seqs()  # the pre-outage alerts left with the old process


def test_a_slow_target_holds_back_neither_ingest_nor_the_other_channels(start_receiver, targets):
    receiver = start_receiver(processors=[alerting_options(targets, hook_timeout="0.5s"), "store"])
    outbox, exporter = outbox_of(receiver), Exporter(receiver.grpc_port)
    produce(exporter, outbox, range(0, 2))
    wait_until(lambda: delivered_everywhere(targets, outbox, range(0, 2)), what="delivery before")

    hook = targets.hook.server
    hook.hold(targets.hook.path)  # slower than the webhook's 0.5 s timeout: every try times out
    targets.mail.inbox.delay_s = 0.3  # slower, but within the mail channel's 5 s
    answered = len(hook.received())
    produce(exporter, outbox, range(2, 7))
    for n in range(300):
        exporter.load(n)
    assert exporter.acked == 7 + 300
    wait_until(lambda: hook.arrived(targets.hook.path) >= answered + 2, what="a webhook retry")
    wait_until(
        lambda: all(rows_by_seq(outbox, c)[s].delivered_at for c in ("mail", "am") for s in range(2, 7)),
        what="mail and Alertmanager delivery while the webhook is stuck",
    )
    assert set(range(2, 7)) <= targets.am.seqs()
    assert len(hook.received()) == answered, "the webhook answered while it was held"
    stuck = rows_by_seq(outbox, "hook")
    assert all(stuck[s].delivered_at is None for s in range(2, 7))
    assert "timed out" in stuck[2].last_error.lower() or "timeout" in stuck[2].last_error.lower()

    hook.release(targets.hook.path)
    wait_until(lambda: delivered_everywhere(targets, outbox, range(0, 7)), what="delivery after release")
    exporter.close()
    rows = {c: rows_by_seq(outbox, c) for c in CHANNELS}
    assert max(rows[c][s].delivered_at for c in ("mail", "am") for s in range(2, 7)) < min(
        rows["hook"][s].delivered_at for s in range(2, 7)
    )
    assert all(rows["mail"][s].attempts == 1 for s in range(2, 7)), "a slow-but-in-time send was retried"
    assert Counter(targets.mail.keys()) == Counter(key_of(r) for r in rows["mail"].values())
    # timed-out tries reached the server too: repeats, each under the key of its notification
    hook_keys = Counter(targets.hook.keys())
    assert set(hook_keys) == {key_of(r) for r in rows["hook"].values()}
    assert hook_keys[key_of(rows["hook"][2])] >= 2


def test_an_outage_survives_a_receiver_restart_and_is_delivered_once(start_receiver, targets, tmp_path):
    data = tmp_path / "data"
    options = alerting_options(targets)
    first = start_receiver(data_dir=data, processors=[options, "store"])
    outbox, exporter = outbox_of(first), Exporter(first.grpc_port)
    produce(exporter, outbox, range(0, 2))
    wait_until(lambda: delivered_everywhere(targets, outbox, range(0, 2)), what="delivery before")

    targets.down()
    produce(exporter, outbox, range(2, 6))
    heads = lambda: [rows_by_seq(outbox, c)[2] for c in CHANNELS]  # noqa: E731
    wait_until(lambda: all(r.attempts >= 2 for r in heads()), what="two tries on each channel")
    exporter.close()
    first.stop(grace_s=1)

    second = start_receiver(data_dir=data, processors=[options, "store"])
    outbox, exporter = outbox_of(second), Exporter(second.grpc_port)
    assert {rows_by_seq(outbox, "hook")[s].state for s in range(2, 6)} == {"pending"}
    produce(exporter, outbox, range(6, 9))
    targets.up()
    recovered = lambda: delivered_everywhere(targets, outbox, range(0, 9), range(2, 9))  # noqa: E731
    wait_until(recovered, what="delivery after restart")
    exporter.close()
    for target, channel in ((targets.hook, "hook"), (targets.mail, "mail")):
        rows = rows_by_seq(outbox, channel)
        assert sorted(rows) == list(range(9))  # one notification per seq, none made again
        assert Counter(target.keys()) == Counter(key_of(r) for r in rows.values())
    assert set(range(2, 9)) <= targets.am.seqs()
    head = rows_by_seq(outbox, "hook")[2]
    attempts = outbox.attempts(head.id)
    assert len(attempts) == head.attempts >= 3  # its retries before the restart and after
    assert all(b.at >= a.retry_at for a, b in pairwise(attempts) if a.retry_at is not None)


def test_a_slow_alertmanager_resend_round_goes_in_batches_behind_new_notifications(tmp_path):
    """Re-sends (Alertmanager forgets alerts not posted again) must not queue a new page behind a
    slow target's answer for every firing group: they go 64 groups to a request, and a new
    notification goes before the rest of the round."""
    clock = FakeClock()
    server = RecordingServer().start()
    channel = AlertmanagerChannel("am", server.url(), resend_interval_s=60, timeout_s=10)
    outbox = Outbox(tmp_path / "o.sqlite", {"am": channel}, clock=clock)
    try:
        outbox.start()
        for i in range(100):
            outbox.put(firing(f"g{i}"), ["am"])
        server.wait_for(100, "/api/v2/alerts")
        wait_until(lambda: not outbox.pending(), what="first delivery")
        server.hold("/api/v2/alerts")  # slow, within the timeout
        clock.t += 60
        outbox.wake()
        wait_until(lambda: server.arrived("/api/v2/alerts") == 101, what="the re-send round")
        outbox.put(firing("new"), ["am"])
        server.release("/api/v2/alerts")
        requests_ = server.wait_for(103, "/api/v2/alerts")[100:]
        wait_until(lambda: outbox.stats()["am"]["resent"] == 100, what="the rest of the round")
    finally:
        outbox.close()
        server.stop()
    groups = [[a["labels"]["group"] for a in r.body] for r in requests_]
    assert [len(g) for g in groups] == [64, 1, 36]
    assert groups[1] == ["new"] and sorted(groups[0] + groups[2]) == sorted(f"g{i}" for i in range(100))


def test_backoff_settings_are_read_per_channel_with_precise_errors():
    from otel_audio.notify import channel_from_config

    hook = channel_from_config("h", {"type": "webhook", "url": "http://h", "max_backoff": "2s"})
    assert (hook.backoff.base_s, hook.backoff.cap_s) == (1.0, 2.0)
    assert channel_from_config("h", {"type": "webhook", "url": "http://h"}).backoff is None
    with pytest.raises(ValueError, match=r"channels\.h\.max_backoff: expected at least min_backoff"):
        channel_from_config("h", {"type": "webhook", "url": "http://h", "min_backoff": 5, "max_backoff": 1})
    with pytest.raises(ValueError, match=r"channels\.h\.min_backoff: expected a duration above 0"):
        channel_from_config("h", {"type": "webhook", "url": "http://h", "min_backoff": 0})
    with pytest.raises(ValueError, match=r"channels\.h\.min_backoff: expected seconds"):
        channel_from_config("h", {"type": "webhook", "url": "http://h", "min_backoff": "soon"})


def test_the_outage_benchmark_prints_one_json_line_with_nothing_lost():
    """benchmarks/channel_outage.py with a 2-second outage: its figures are there and add up."""
    require_external("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "channel_outage.py"), "--outage", "2", "--load", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = done.stdout.strip().splitlines()
    result = json.loads(line)
    made = result["alerts_exported_during_outage"]
    assert made >= 1 and result["notifications_during_outage"] == 3 * made
    assert result["delivered_after_recovery"] == result["notifications_during_outage"]
    assert (result["lost"], result["duplicates"], result["ingest_errors_during_outage"]) == (0, 0, 0)
    assert result["ingest_acks_during_outage"] > 0 and result["recovery_to_all_delivered_s"] is not None
    assert 0 < result["max_backoff_interval_s"] <= 60.0  # the production cap
    assert set(result["channels"]) == set(CHANNELS)
