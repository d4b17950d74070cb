"""BackgroundProducer.produce()'s inline path (bytes in, open batch with room)
must build exactly the batches the general path builds: same columns, same
partitions, same bounds. The ``cluster`` fixture's broker is a closed port and
``linger_ms`` is long, so batches stay open for inspection.
"""

from __future__ import annotations

import gc
import queue
import sys
import threading
from typing import Any

import pytest

from grete.cluster import Cluster, Partition
from grete.partitioners import (
    HashingPartitioner,
    StickyPartitioner,
    hashing_partitioner,
    partition_id_for_key,
)
from grete.producer import (
    BackgroundProducer,
    DeliveryFuture,
    ProducerClosedError,
    ProducerQueueFullError,
)
from grete.producer.accumulator import record_size
from grete.producer.background import _STAGE_MAX
from grete.producer.batch import ProducerBatch

from .._effort import effort


def _producer(cluster: Cluster, **kw: Any) -> BackgroundProducer:
    kw.setdefault("required_acks", 1)
    kw.setdefault("linger_ms", 60_000)
    return BackgroundProducer(cluster, cluster._topics["t"], **kw)


def _batch(future: DeliveryFuture) -> ProducerBatch:
    """The batch that holds the future's record now (a stage forwards to its
    records' batches once placed)."""
    return future._where()[0]


def _place(p: BackgroundProducer) -> None:
    """Place staged keyed messages now, as the sender does once they lingered."""
    with p._sender.lock:
        p._acc.place_stage()


def _columns_aligned(batch: ProducerBatch) -> None:
    n = len(batch.values)
    assert batch.timestamps is not None and len(batch.timestamps) == n
    assert batch.handles is None  # futures point at batches, not the other way
    assert batch.keys is None or len(batch.keys) == n
    assert batch.headers is None or len(batch.headers) == n


def _one_future_per_record(futures: list[DeliveryFuture]) -> None:
    """Each batch's records are pointed at by exactly one of ``futures`` each."""
    indexes: dict[ProducerBatch, list[int]] = {}
    for f in futures:
        batch, i = f._where()
        indexes.setdefault(batch, []).append(i)
    for batch, found in indexes.items():
        assert sorted(found) == list(range(len(batch.values)))


def test_unkeyed_messages_share_the_sticky_batch(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        futures = [p.produce(b"v%d" % i) for i in range(50)]
        batch = _batch(futures[0])
        assert all(_batch(f) is batch for f in futures)
        assert batch.values == [b"v%d" % i for i in range(50)]
        assert batch.keys is None and batch.headers is None
        assert batch.size == sum(record_size(None, b"v%d" % i, None) for i in range(50))
        _columns_aligned(batch)
        assert [f.value for f in futures] == batch.values
        assert all(f.key is None for f in futures)
        _one_future_per_record(futures)
        assert p.metrics()["queued_messages"] == 50
    finally:
        p.close(0.1)


def test_mixed_keys_and_headers_keep_columns_aligned(cluster: Cluster) -> None:
    # Everything to partition 0: an explicit partition, then keyed and unkeyed
    # messages that the partitioner also sends there.
    def to_zero(partitions: Any, key: bytes | None) -> Partition:
        return partitions[0]

    p = _producer(cluster, partitioner=to_zero)
    try:
        futures = [
            p.produce(b"a", partition=0),
            p.produce(b"b"),  # sticky partition unknown for a plain callable: general path
            p.produce(b"c", partition_key=b"k"),
            p.produce(b"d", headers=[("h", b"1")]),
            p.produce(b"e", partition_key=b"k2"),
        ]
        batch = _batch(futures[0])
        assert all(_batch(f) is batch for f in futures)
        assert batch.values == [b"a", b"b", b"c", b"d", b"e"]
        assert batch.keys == [None, None, b"k", None, b"k2"]
        assert batch.headers == [None, None, None, [("h", b"1")], None]
        _columns_aligned(batch)
        _one_future_per_record(futures)
        assert futures[2].key == b"k"
        assert futures[3]._record() == (b"d", None, [("h", b"1")])
    finally:
        p.close(0.1)


def test_keyed_fast_path_after_unkeyed_sticky_batch(cluster: Cluster) -> None:
    p = _producer(cluster, partitioner=StickyPartitioner())
    try:
        first = p.produce(b"x")
        sticky = _batch(first).partition
        keys = (b"k%d" % i for i in range(1000))
        key = next(k for k in keys if partition_id_for_key(k, 3) == sticky)
        keyed = p.produce(b"y", partition_key=key)
        unkeyed = p.produce(b"z")
        batch = _batch(first)
        assert _batch(keyed) is batch and _batch(unkeyed) is batch
        assert batch.keys == [None, key, None]
        _columns_aligned(batch)
        _one_future_per_record([first, keyed, unkeyed])
    finally:
        p.close(0.1)


@pytest.mark.parametrize("partitioner", [None, StickyPartitioner(), hashing_partitioner])
def test_keyed_messages_land_where_java_puts_them(cluster: Cluster, partitioner: Any) -> None:
    p = _producer(cluster, partitioner=partitioner)
    try:
        keys = [b"key-%d" % i for i in range(300)]
        futures = [p.produce(b"v", partition_key=key) for key in keys]
        assert {_batch(f).partition for f in futures} == {-1}  # staged, not placed yet
        _place(p)
        placed = [_batch(f).partition for f in futures]
        assert placed == [partition_id_for_key(key, 3) for key in keys]
        for batch in {_batch(f) for f in futures}:
            _columns_aligned(batch)
        _one_future_per_record(futures)
    finally:
        p.close(0.1)


def test_staged_futures_read_back_and_follow_their_records(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        keys = [b"key-%d" % i for i in range(_STAGE_MAX + 10)]
        futures = [p.produce(b"v%d" % i, partition_key=k) for i, k in enumerate(keys)]
        # The first _STAGE_MAX were placed when the stage filled; the rest wait.
        assert {_batch(f).partition for f in futures[_STAGE_MAX:]} == {-1}
        assert [_batch(f).partition for f in futures[:_STAGE_MAX]] == [
            partition_id_for_key(k, 3) for k in keys[:_STAGE_MAX]
        ]
        assert [(f.key, f.value) for f in futures] == [(k, b"v%d" % i) for i, k in enumerate(keys)]
        assert not any(f.done() for f in futures)
        assert p.metrics()["queued_messages"] == len(keys)
        _place(p)
        batches = {_batch(f) for f in futures}
        assert {b.partition for b in batches} == {0, 1, 2}
        _one_future_per_record(futures)
        assert [(f.key, f.value) for f in futures] == [(k, b"v%d" % i) for i, k in enumerate(keys)]
        for batch in batches:
            _columns_aligned(batch)
            # Per partition, produce order.
            assert batch.values == sorted(batch.values, key=lambda v: int(v[1:]))
    finally:
        p.close(0.1)


def test_a_message_on_the_general_path_goes_after_staged_ones(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        key = next(b"k%d" % i for i in range(100) if partition_id_for_key(b"k%d" % i, 3) == 1)
        staged = [p.produce(b"a", partition_key=key), p.produce(b"b", partition_key=key)]
        explicit = p.produce(b"c", partition=1)  # general path: places the stage first
        with_headers = p.produce(b"d", partition_key=key, headers=[("h", b"1")])
        unkeyed = p.produce(b"e")
        batch = _batch(explicit)
        assert all(_batch(f) is batch for f in [*staged, with_headers])
        assert batch.values[:4] == [b"a", b"b", b"c", b"d"]
        assert batch.keys[:4] == [key, key, None, key]  # type: ignore[index]
        _columns_aligned(batch)
        _columns_aligned(_batch(unkeyed))
        _one_future_per_record([*staged, explicit, with_headers, unkeyed])
    finally:
        p.close(0.1)


def test_staged_messages_fail_rather_than_hang_if_placing_them_fails(cluster: Cluster) -> None:
    p = _producer(cluster, linger_ms=1)

    def broken(keys: list[bytes], length: int | None) -> tuple[bytes, int]:
        raise RuntimeError("placer broke")

    p._acc._key_placer = broken
    futures = [p.produce(b"v", partition_key=b"k%d" % i) for i in range(5)]
    try:
        assert p.flush(5.0) == 0  # the sender failed them all, within the bound
        for f in futures:
            assert f.done() and "placer broke" in str(f.exception())
    finally:
        p.close(0.1)


def test_custom_partitioners_are_always_asked(cluster: Cluster) -> None:
    calls: list[bytes | None] = []

    class Last(HashingPartitioner):
        def __call__(self, partitions: Any, key: bytes | None = None) -> Any:
            calls.append(key)
            return partitions[-1]

    p = _producer(cluster, partitioner=Last())
    try:
        futures = [p.produce(b"v", partition_key=b"k%d" % i) for i in range(20)]
        assert calls == [b"k%d" % i for i in range(20)]
        assert {_batch(f).partition for f in futures} == {2}
    finally:
        p.close(0.1)

    custom_hash = HashingPartitioner(hash_func=lambda key: 1)
    p = _producer(cluster, partitioner=custom_hash)
    try:
        futures = [p.produce(b"v", partition_key=b"k%d" % i) for i in range(20)]
        assert {_batch(f).partition for f in futures} == {1}
    finally:
        p.close(0.1)


def test_full_batch_closes_and_the_next_message_opens_another(cluster: Cluster) -> None:
    p = _producer(cluster, batch_size=3, partitioner=lambda parts, key: parts[0])
    try:
        futures = [p.produce(b"v%d" % i) for i in range(7)]
        batches = [_batch(f) for f in futures]
        assert [len(b.values) for b in dict.fromkeys(batches)] == [3, 3, 1]
        for b in dict.fromkeys(batches):
            _columns_aligned(b)
        _one_future_per_record(futures)
    finally:
        p.close(0.1)


def test_byte_bound_closes_the_batch(cluster: Cluster) -> None:
    p = _producer(
        cluster,
        max_batch_bytes=2048,
        max_request_size=2048,
        partitioner=lambda parts, key: parts[0],
    )
    try:
        futures = [p.produce(b"x" * 500) for _ in range(8)]
        batches = list(dict.fromkeys(_batch(f) for f in futures))
        assert len(batches) > 1
        assert all(b.size <= 2048 for b in batches)
    finally:
        p.close(0.1)


def test_queue_bound_holds_on_the_fast_path(cluster: Cluster) -> None:
    p = _producer(cluster, max_queued_messages=5, block_on_queue_full=False)
    try:
        for _ in range(5):
            p.produce(b"v")
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"v")
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"v", partition_key=b"k")
    finally:
        p.close(0.1)


def test_queue_bound_holds_for_staged_messages(cluster: Cluster) -> None:
    # A stage reserves queue slots for its records when it opens (up to the
    # bound), and gives back those left unused when it is placed: the bound
    # holds, and what the producer reports counts messages, not slots.
    p = _producer(cluster, max_queued_messages=5, block_on_queue_full=False)
    try:
        for i in range(3):
            p.produce(b"v", partition_key=b"k%d" % i)
        assert p._sender.queued_messages == 5  # the stage's reservation
        assert p.metrics()["queued_messages"] == 3
        # The general path places the stage first: its 2 unused slots are free.
        p.produce(b"v")
        assert p._sender.queued_messages == 4 and p.metrics()["queued_messages"] == 4
        p.produce(b"v", partition_key=b"k")  # a new stage, of the one slot left
        for key in (b"k", None):
            with pytest.raises(ProducerQueueFullError):
                p.produce(b"v", partition_key=key)
        assert p.metrics()["queued_messages"] == 5
    finally:
        p.close(0.1)


def test_a_stage_reserves_at_most_its_size_and_flush_counts_messages(cluster: Cluster) -> None:
    p = _producer(cluster, max_queued_messages=100_000)
    try:
        for i in range(10):
            p.produce(b"v", partition_key=b"k%d" % i)
        assert p._sender.queued_messages == _STAGE_MAX
        assert p.metrics()["queued_messages"] == 10
        assert p.flush(0.05) == 10  # the broker is a closed port: all unreported
    finally:
        p.close(0.1)


def test_a_stage_that_cannot_be_placed_takes_no_record_past_its_reservation(
    cluster: Cluster,
) -> None:
    p = _producer(cluster, max_queued_messages=3)

    def broken(keys: list[bytes], length: int | None) -> tuple[bytes, int]:
        raise RuntimeError("placer broke")

    p._acc._key_placer = broken
    futures = [p.produce(b"v", partition_key=b"k%d" % i) for i in range(2)]
    with pytest.raises(RuntimeError, match="placer broke"):
        p.produce(b"v", partition_key=b"k2")  # its last slot: placed, which fails
    with pytest.raises(RuntimeError, match="placer broke"):
        p.produce(b"v", partition_key=b"k3")  # the general path tries again
    stage = p._acc.stage
    assert stage is not None and len(stage.values) == 3  # none past the reservation
    p.close(0.5)
    assert all(f.done() and "placer broke" in str(f.exception()) for f in futures)
    assert p._sender.queued_messages == 0


@pytest.mark.parametrize("keyed", [False, True], ids=["sticky-batch", "staged"])
def test_callback_given_to_produce_runs_once(cluster: Cluster, keyed: bool) -> None:
    seen: list[DeliveryFuture] = []
    lock = threading.Lock()

    def callback(f: DeliveryFuture) -> None:
        with lock:
            seen.append(f)

    def key(i: int) -> bytes | None:
        return b"k%d" % i if keyed else None

    p = _producer(cluster)
    futures = [p.produce(b"v%d" % i, partition_key=key(i), callback=callback) for i in range(10)]
    later = [p.produce(b"w%d" % i, partition_key=key(i)) for i in range(10)]
    # Asked for while the message waits (for a keyed one: in the stage, unplaced).
    later[4].add_done_callback(callback)
    p.close(0.1)  # the dead cluster fails every message: callbacks run
    assert sorted(map(id, seen)) == sorted(map(id, [*futures, later[4]]))
    assert all(f.done() and f.exception() is not None for f in [*futures, *later])


def test_closed_producer_refuses_on_the_fast_path(cluster: Cluster) -> None:
    p = _producer(cluster)
    p.produce(b"v")
    p.close(0.1)
    with pytest.raises(ProducerClosedError):
        p.produce(b"v")
    with pytest.raises(ProducerClosedError):
        p.produce(b"v", partition_key=b"k")


def test_serializers_take_the_general_path(cluster: Cluster) -> None:
    p = _producer(cluster, serializer=lambda v: str(v).encode(), key_serializer=str.encode)
    try:
        futures = [p.produce(b"raw"), p.produce(b"raw", partition_key="k")]
        assert [f.value for f in futures] == [b"b'raw'", b"b'raw'"]
        assert futures[1].key == b"k"
    finally:
        p.close(0.1)


def test_futures_nobody_holds_are_freed_without_the_cyclic_gc(cluster: Cluster) -> None:
    # A future points at its batch, the batch not at it (only at futures with
    # callbacks, until done): fire-and-forget futures die by refcount at once,
    # before their batch is even sent, and never reach an older GC generation.
    gc.collect()
    gc.disable()
    try:
        p = _producer(cluster)
        held = p.produce(b"kept")
        for i in range(100):
            p.produce(b"v%d" % i, partition_key=b"k" if i % 2 else None)

        def alive() -> list[DeliveryFuture]:
            return [o for o in gc.get_objects() if type(o) is DeliveryFuture]

        assert alive() == [held]
        p.produce(b"cb", callback=lambda f: None)
        assert len(alive()) == 2  # its batch visits it when done
        p.close(0.1)  # the dead cluster fails them all: their batches are done
        assert alive() == [held]
        assert held.done() and held.value == b"kept"
    finally:
        gc.enable()


def test_delivery_reports_cover_staged_messages_once_in_order(cluster: Cluster) -> None:
    p = _producer(cluster, delivery_reports=True)
    keys = [b"k%d" % (i % 7) for i in range(_STAGE_MAX + 50)]
    futures = [p.produce(b"v%d" % i, partition_key=k) for i, k in enumerate(keys)]
    futures.append(p.produce(b"unkeyed"))  # general path: places the stage first
    p.close(0.1)
    reports = []
    while True:
        try:
            reports.append(p.get_delivery_report(block=False))
        except queue.Empty:
            break
    assert sorted(map(id, (f for f, _ in reports))) == sorted(map(id, futures))
    assert all(err is not None for _, err in reports)
    # Per partition, in produce order.
    order = {id(f): i for i, f in enumerate(futures)}
    by_partition: dict[int, list[int]] = {}
    for f, _ in reports:
        by_partition.setdefault(_batch(f).partition, []).append(order[id(f)])
    assert all(seq == sorted(seq) for seq in by_partition.values())
    assert p.metrics()["queued_messages"] == 0


def test_futures_follow_a_split_batch(cluster: Cluster) -> None:
    # The engine splits a batch the broker finds too large: futures, those
    # with callbacks (watchers) included, follow their records into the halves.
    p = _producer(cluster)
    try:
        futures = [p.produce(b"v%d" % i) for i in range(5)]
        seen: list[DeliveryFuture] = []
        futures[3].add_done_callback(seen.append)
        batch = _batch(futures[0])
        with p._sender.lock:
            first, second = batch.split()
        assert [_batch(f) for f in futures] == [first] * 2 + [second] * 3
        assert [f.value for f in futures] == [b"v%d" % i for i in range(5)]
        assert second.watchers == [futures[3]] and batch.watchers is None
        assert futures[3]._batch is second and futures[3]._index == 1
        p._sender.batch_done(second, 40, -1, None)
        assert seen == [futures[3]]
        assert [futures[i].result().offset for i in (2, 3, 4)] == [40, 41, 42]
        assert not futures[0].done()
    finally:
        p.close(0.1)


def test_reading_staged_futures_while_the_stage_is_placed(cluster: Cluster) -> None:
    # A reader thread reads futures' records while produce() keeps placing
    # stages: it must always see its own record, never a dropped column.
    p = _producer(cluster, max_queued_messages=1_000_000)
    futures: list[DeliveryFuture] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                for i in range(max(0, len(futures) - 300), len(futures)):
                    f = futures[i]
                    assert f.value == b"v%d" % i and f.key == b"k%d" % i
        except BaseException as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(_STAGE_MAX * 8):
            futures.append(p.produce(b"v%d" % i, partition_key=b"k%d" % i))
    finally:
        stop.set()
        reader.join(10)
        p.close(0.1)
    assert not errors, errors[0]
    assert [f.value for f in futures] == [b"v%d" % i for i in range(len(futures))]


def _list_callbacks_from_two_threads(cluster: Cluster) -> None:
    p = _producer(cluster, max_queued_messages=100_000)
    calls: list[DeliveryFuture] = []
    lock = threading.Lock()

    def callback(f: DeliveryFuture) -> None:
        with lock:
            calls.append(f)

    early = [p.produce(b"e%d" % i) for i in range(300)]
    later: list[DeliveryFuture] = []

    def produce_more() -> None:
        for i in range(300):
            later.append(p.produce(b"l%d" % i, callback=callback))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race is a few bytecodes wide
    try:
        t = threading.Thread(target=produce_more)
        t.start()
        for f in early:
            f.add_done_callback(callback)
        t.join(10)
    finally:
        sys.setswitchinterval(interval)
    p.close(0.1)
    assert sorted(map(id, calls)) == sorted(map(id, early + later))


def test_callbacks_listed_from_two_threads_at_once_are_all_kept(cluster: Cluster) -> None:
    # One thread produces with callbacks into the open batch while another adds
    # callbacks to earlier futures of the same batch: both list futures on the
    # batch, and neither may drop the other's (the dead cluster then fails all).
    for _ in range(effort(20, 4)):
        _list_callbacks_from_two_threads(cluster)
