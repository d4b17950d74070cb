"""The delivery reports queue: FIFO, bounded waits, nothing lost or read twice."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from grete.producer.reports import ReportQueue


def test_reports_come_out_in_order() -> None:
    q: ReportQueue[int] = ReportQueue()
    q.put_many([1, 2, 3])
    q.put_many([])
    q.put_many(iter([4, 5]))
    assert len(q) == 5
    assert [q.get(block=False) for _ in range(5)] == [1, 2, 3, 4, 5]
    assert len(q) == 0


def test_an_empty_queue_raises_at_once_or_after_the_timeout() -> None:
    q: ReportQueue[int] = ReportQueue()
    with pytest.raises(queue.Empty):
        q.get(block=False)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    assert 0.04 <= time.monotonic() - t0 < 2.0
    with pytest.raises(queue.Empty):
        q.get(timeout=0)
    with pytest.raises(ValueError):
        q.get(timeout=-1)


def test_a_waiting_reader_wakes_when_reports_arrive() -> None:
    q: ReportQueue[str] = ReportQueue()
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    reader.start()
    time.sleep(0.05)  # the reader is waiting (or about to: it then finds the item)
    q.put_many(["r"])
    reader.join(10)
    assert not reader.is_alive() and got == ["r"]


def test_every_report_is_read_exactly_once_by_concurrent_readers() -> None:
    q: ReportQueue[int] = ReportQueue()
    total = 20_000
    seen: list[list[int]] = [[] for _ in range(4)]

    def read(mine: list[int]) -> None:
        while True:
            try:
                item = q.get(timeout=2)
            except queue.Empty:
                return
            if item < 0:
                return
            mine.append(item)

    readers = [threading.Thread(target=read, args=(seen[i],)) for i in range(4)]
    for r in readers:
        r.start()
    for start in range(0, total, 1000):  # batches, as the sender adds them
        q.put_many(range(start, start + 1000))
    q.put_many([-1] * 4)
    for r in readers:
        r.join(30)
    assert not any(r.is_alive() for r in readers)
    assert sorted(x for mine in seen for x in mine) == list(range(total))
    assert all(mine == sorted(mine) for mine in seen)  # each reader sees FIFO order
