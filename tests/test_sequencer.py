"""The ingest sequencer: batches reach the chain in LSN order whatever order threads arrive in."""

from __future__ import annotations

import random
import threading

from otel_audio.receiver.sequencer import Sequencer


def test_threads_arriving_in_any_order_run_in_lsn_order() -> None:
    seq = Sequencer(next_lsn=10)
    ran: list[int] = []
    lsns = list(range(10, 60))
    random.Random(7).shuffle(lsns)
    started = threading.Barrier(len(lsns))

    def worker(lsn: int) -> None:
        started.wait()
        seq.run(lsn, lambda: ran.append(lsn))

    threads = [threading.Thread(target=worker, args=(lsn,)) for lsn in lsns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert ran == list(range(10, 60))


def test_a_skipped_lsn_does_not_hold_up_later_ones() -> None:
    seq = Sequencer(next_lsn=1)
    ran: list[int] = []
    later = threading.Thread(target=seq.run, args=(3, lambda: ran.append(3)))
    later.start()
    seq.run(1, lambda: ran.append(1))
    seq.skip(2)  # its WAL write failed
    later.join(10)
    assert ran == [1, 3]


def test_a_failing_step_still_lets_the_next_lsn_through() -> None:
    seq = Sequencer(next_lsn=1)

    def boom() -> None:
        raise RuntimeError("processor bug")

    try:
        seq.run(1, boom)
    except RuntimeError:
        pass
    ran: list[int] = []
    seq.run(2, lambda: ran.append(2))
    assert ran == [2]
