"""A KeyboardInterrupt can land inside BackgroundProducer.produce() (Ctrl-C in
the thread that produces): the producer must stay whole. Its batches' columns
stay aligned, and its counts never leave flush() or close() waiting for
messages that were never queued. The ``cluster`` fixture's broker is a closed
port, so messages stay queued until their delivery timeout fails them.
"""

from __future__ import annotations

import ctypes
import gc
import random
import sys
import threading
import time
import traceback
from typing import Any

import pytest

from grete.cluster import Cluster
from grete.producer import BackgroundProducer, ProducerQueueFullError, accumulator
from grete.producer.accumulator import Accumulator
from grete.producer.batch import ProducerBatch
from grete.protocol.compression import CompressionType
from grete.protocol.records import encode_batch

from .._effort import effort


def _producer(cluster: Cluster, **kw: Any) -> BackgroundProducer:
    kw.setdefault("required_acks", 1)
    kw.setdefault("linger_ms", 60_000)
    return BackgroundProducer(cluster, cluster._topics["t"], **kw)


def _all_batches(p: BackgroundProducer) -> list[ProducerBatch]:
    """Every batch holding queued records (call with the sender lock held)."""
    acc = p._acc
    batches = [b for state in p._sender.engine._partitions.values() for b in state.queue]
    batches += acc.open_batches.values()
    batches += acc._ready
    if acc.stage is not None:
        batches.append(acc.stage)
    return batches


def _aligned(batch: ProducerBatch) -> bool:
    n = len(batch.values)
    return (
        batch.timestamps is not None
        and len(batch.timestamps) == n
        and (batch.keys is None or len(batch.keys) == n)
        and (batch.headers is None or len(batch.headers) == n)
    )


def _encodes_as_its_columns(batch: ProducerBatch) -> bool:
    """Its encoding (from runs, where it has them) is what its columns make:
    runs left by an interrupted placement never describe other records."""
    columns = encode_batch(
        batch.values,
        batch.keys,
        batch.headers,
        batch.timestamps,
        base_timestamp=batch.base_timestamp,
    )
    return batch.encode(CompressionType.NONE, None) == columns


class _InterruptingList(list[Any]):
    """A column whose next append raises KeyboardInterrupt, once: the
    interrupt lands between two column appends of one record."""

    armed = True

    def append(self, item: Any) -> None:
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        super().append(item)


def test_interrupt_between_two_columns_of_the_inline_path_is_undone(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        first = p.produce(b"a")  # opens the sticky partition's batch
        second = p.produce(b"b")  # the inline path from here on
        batch = second._batch
        assert batch is first._batch and batch is not None
        batch.timestamps = _InterruptingList(batch.timestamps or [])
        before = p.metrics()["queued_messages"]
        with pytest.raises(KeyboardInterrupt):
            p.produce(b"interrupted")
        assert batch.values == [b"a", b"b"] and _aligned(batch)
        assert p.metrics()["queued_messages"] == before
        third = p.produce(b"c")
        assert third._batch is batch and third._index == 2
        assert batch.values == [b"a", b"b", b"c"] and _aligned(batch)
    finally:
        p.close(0.1)


@pytest.mark.parametrize("column", ["keys", "values", "timestamps"])
def test_batch_append_interrupted_between_columns_is_undone(column: str) -> None:
    batch = ProducerBatch("t", 0, 0.0, None, handles=True)
    batch.append(b"k0", b"v0", None, 1, "h0", 10)
    setattr(batch, column, _InterruptingList(getattr(batch, column)))
    with pytest.raises(KeyboardInterrupt):
        batch.append(b"k1", b"v1", [("h", b"1")], 2, "h1", 10)
    assert batch.values == [b"v0"] and batch.keys == [b"k0"] and batch.timestamps == [1]
    assert batch.headers in (None, [None])  # created by the interrupted record, or not yet
    assert batch.handles == ["h0"] and batch.size == 10
    batch.append(b"k2", b"v2", None, 3, "h2", 10)
    assert batch.values == [b"v0", b"v2"] and batch.keys == [b"k0", b"k2"]
    assert batch.headers in (None, [None, None])
    assert batch.handles == ["h0", "h2"] and batch.size == 20


def test_accumulator_opens_no_empty_batch_when_the_first_append_is_interrupted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acc = Accumulator("t", max_records=10, max_bytes=1 << 20, linger_s=1.0)

    def interrupted(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ProducerBatch, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        acc.append(0, None, b"v", None, 1, None, 10, 0.0)
    assert acc.open_batches == {} and len(acc) == 0


@pytest.mark.parametrize("where", ["first group", "second group", "a run", "the forward"])
def test_interrupted_stage_placement_puts_every_record_back(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A KeyboardInterrupt while produce() places the keyed stage, after some
    partitions' records moved and before the stage points at them, puts
    everything back: no record lost (their futures never resolved) nor placed
    twice, and the next placement moves them all."""
    p = _producer(cluster, batch_size=100)  # batches fill and close on the way
    calls = [0]

    def interrupt_at(n: int, real: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[0] += 1
            if calls[0] == n:
                raise KeyboardInterrupt
            return real(*args)

        return wrapper

    # The sender lock held throughout (an RLock: produce() takes it again):
    # the sender drains no batch meanwhile, so every batch is where we look.
    lock = p._sender.lock
    lock.acquire()
    try:
        futures = [p.produce(b"early-%d" % i, partition_key=b"%d" % i) for i in range(40)]
        p._acc.place_stage()  # some batches open before the interrupted placement
        if where == "the forward":
            real = accumulator.StageForward
            monkeypatch.setattr(accumulator, "StageForward", interrupt_at(1, real))
        elif where == "a run":  # the second group's, encoded before it moves
            monkeypatch.setattr(ProducerBatch, "add_run", interrupt_at(2, ProducerBatch.add_run))
        else:
            n = 1 if where == "first group" else 2
            monkeypatch.setattr(Accumulator, "_extend", interrupt_at(n, Accumulator._extend))
        values = [b"value-%05d" % i for i in range(1100)]
        interrupted = []
        for i, value in enumerate(values):
            try:
                futures.append(p.produce(value, partition_key=b"key-%05d" % i))
            except KeyboardInterrupt:
                interrupted.append(i)  # queued all the same: it was staged first
        assert len(interrupted) == 1
        p._acc.place_stage()
        batches = _all_batches(p)
        assert all(_aligned(b) for b in batches)
        assert any(b.runs is not None for b in batches)  # runs were made, and kept right
        assert all(_encodes_as_its_columns(b) for b in batches)
        placed = sorted(v for b in batches for v in b.values)
        # Every future's record is in a batch that will be sent (or failed).
        homes = {id(b) for b in batches}
        assert all(id(f._where()[0]) in homes for f in futures)
        expected = [b"early-%d" % i for i in range(40)] + values
        assert placed == sorted(expected)  # each record once
        produced = expected[:40] + [v for i, v in enumerate(values) if i not in interrupted]
        assert [f.value for f in futures] == produced
    finally:
        lock.release()
        p.close(0.1)


@pytest.mark.parametrize("reports", [False, True], ids=["futures", "delivery_reports"])
def test_counts_left_by_an_interrupted_produce_are_settled(cluster: Cluster, reports: bool) -> None:
    """An interrupt after produce() counted its message and before it queued
    it leaves the counts high; once nothing is queued or in flight, the sender
    settles them, and flush() returns (it used to wait for ever). With
    delivery reports on, the settled count keeps exactly the reports not read
    yet, and reading them empties the queue."""
    p = _producer(cluster, delivery_timeout_ms=300, delivery_reports=reports)
    try:
        futures = [p.produce(b"m%d" % i) for i in range(3)]
        sender = p._sender
        with sender.lock:  # what an interrupted produce() left behind
            sender.queued_messages += 2
            sender.queued_bytes += 200
        started = time.monotonic()
        assert p.flush(timeout=10) == 0
        assert time.monotonic() - started < 5
        if reports:
            assert p.metrics()["queued_messages"] == 3  # the unread reports
            read = [p.get_delivery_report(timeout=5) for _ in range(3)]
            assert [f for f, _ in read] == futures
            assert all(error is not None for _, error in read)
        assert all(f.exception(timeout=0) is not None for f in futures)
        m = p.metrics()
        assert m["queued_messages"] == 0 and sender.unresolved == 0
        if not reports:  # (with reports on, the 200 bytes stay counted)
            assert m["queued_bytes"] == 0
    finally:
        p.close(0.1)


def test_bytes_left_counted_with_no_message_queued_are_settled(cluster: Cluster) -> None:
    """Records that reached a batch whose size missed them (an interrupt between
    extending a batch's columns and its size, seen on Python 3.10 in
    Accumulator._extend) leave bytes counted once every message is released:
    settled too, so a full buffer cannot block produce() for ever."""
    p = _producer(cluster, delivery_timeout_ms=300)
    try:
        p.produce(b"m")
        sender = p._sender
        with sender.lock:
            sender.queued_bytes += 43_360
        assert p.flush(timeout=10) == 0
        deadline = time.monotonic() + 5
        while p.metrics()["queued_bytes"] and time.monotonic() < deadline:
            time.sleep(0.01)
        m = p.metrics()
        assert m["queued_messages"] == 0 and m["queued_bytes"] == 0
    finally:
        p.close(0.1)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in the thread at its next check (None: clear one pending)."""
    arg = None if exc is None else ctypes.py_object(exc)  # None: NULL, which clears
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), arg)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_asynchronous_interrupts_leave_the_producer_whole(cluster: Cluster, keyed: bool) -> None:
    """KeyboardInterrupts raised at random moments in a thread that produces
    (PyThreadState_SetAsyncExc: where a Ctrl-C lands in the main thread):
    afterwards every batch's columns are aligned, flush() returns and every
    future resolves."""
    p = _producer(
        cluster,
        linger_ms=5,
        delivery_timeout_ms=500,
        max_queued_messages=200_000,
        block_on_queue_full=False,
    )
    stop = threading.Event()
    hits = [0]
    value = b"x" * 100
    kept: list[Any] = [None] * 400_000
    kept_n = [0]
    started = [False]

    def produce_loop() -> None:
        # Two levels of handlers: an interrupt landing in the inner handler or
        # on the loop's jump back is caught by the outer one.
        while True:
            try:
                while True:
                    try:
                        if stop.is_set():
                            return
                        started[0] = True  # a store: no lock an interrupt could leak
                        for i in range(100):
                            # The last 400,000 futures kept, to check each resolves.
                            kept[kept_n[0] % 400_000] = p.produce(
                                value, partition_key=b"k%d" % i if keyed else None
                            )
                            kept_n[0] += 1
                    except KeyboardInterrupt:
                        hits[0] += 1
                    except ProducerQueueFullError:
                        time.sleep(0.001)
            except KeyboardInterrupt:
                hits[0] += 1

    worker = threading.Thread(target=produce_loop, daemon=True)
    rng = random.Random(7)
    # No cyclic GC meanwhile: it runs finalizers and weakref callbacks in the
    # worker thread, where an interrupt aimed at produce() would land in them.
    gc.disable()
    worker.start()
    # Interrupts only once it is in its handlers: one landing while the thread
    # starts up would end it there.
    deadline = time.monotonic() + 10
    while not started[0] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert started[0]
    try:
        for _ in range(effort(2000, 300)):
            time.sleep(rng.uniform(0.0002, 0.002))
            if not worker.is_alive():  # its id may be reused: stop aiming at it
                break
            assert worker.ident is not None
            _set_async_exc(worker.ident, KeyboardInterrupt)
    finally:
        # An interrupt still pending (set while the worker waited for the GIL)
        # would land wherever it runs next, maybe past its handlers: cleared.
        if worker.ident is not None and worker.is_alive():
            _set_async_exc(worker.ident, None)
        stop.set()
        worker.join(10)
        gc.enable()
    if worker.is_alive():
        assert worker.ident is not None
        stack = "".join(traceback.format_stack(sys._current_frames()[worker.ident]))
        pytest.fail(f"the producing thread is stuck:\n{stack}")
    assert hits[0] > 0
    # Bounded: a lock leaked by the worker (an RLock: the worker itself never
    # blocked on it) must fail the test, not hang it (close() would wait on it).
    lock = p._sender.lock
    if not lock.acquire(timeout=10):
        pytest.fail("the sender lock was leaked by an interrupted produce()")
    try:
        assert all(_aligned(b) for b in _all_batches(p))
    finally:
        lock.release()
    try:
        assert p.flush(timeout=20) == 0
        m = p.metrics()
        assert m["queued_messages"] == 0 and m["queued_bytes"] == 0
        # Every future resolved (the broker is a closed port: each by its
        # delivery timeout); one lost with its record never would.
        sample = [f for f in kept if f is not None]
        assert sample and all(f.done() for f in sample)
    finally:
        p.close(0.1)
