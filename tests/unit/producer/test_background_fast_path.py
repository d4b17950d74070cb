"""BackgroundProducer.produce()'s inline path (bytes in, open batch with room)
must build exactly the batches the general path builds: same columns, same
partitions, same bounds. The ``cluster`` fixture's broker is a closed port and
``linger_ms`` is long, so batches stay open for inspection.
"""

from __future__ import annotations

import gc
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


def _producer(cluster: Cluster, **kw: Any) -> BackgroundProducer:
    kw.setdefault("required_acks", 1)
    kw.setdefault("linger_ms", 60_000)
    return BackgroundProducer(cluster, cluster._topics["t"], **kw)


def _batch(future: DeliveryFuture) -> ProducerBatch:
    return future._batch


def _place(p: BackgroundProducer) -> None:
    """Place staged keyed messages now, as the sender does once they lingered."""
    with p._sender.lock:
        p._acc.place_stage()


def _columns_aligned(batch: ProducerBatch) -> None:
    n = len(batch.values)
    assert batch.timestamps is not None and len(batch.timestamps) == n
    assert len(batch.handles) == n
    assert batch.keys is None or len(batch.keys) == n
    assert batch.headers is None or len(batch.headers) == n
    for i, handle in enumerate(batch.handles):
        assert handle._batch is batch and handle._index == i


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
        assert futures[2].key == b"k"
        assert futures[3]._size() == record_size(None, b"d", [("h", b"1")])
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
    finally:
        p.close(0.1)


def test_staged_messages_fail_rather_than_hang_if_placing_them_fails(cluster: Cluster) -> None:
    p = _producer(cluster, linger_ms=1)

    def broken(keys: list[bytes]) -> tuple[list[int], int]:
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
    # A future points at its batch and the batch lists its futures: once the
    # batch is done the list goes, so fire-and-forget futures die by refcount.
    gc.collect()
    gc.disable()
    try:
        p = _producer(cluster)
        held = p.produce(b"kept")
        for i in range(100):
            p.produce(b"v%d" % i, partition_key=b"k" if i % 2 else None)
        p.close(0.1)  # the dead cluster fails them all: their batches are done
        alive = [o for o in gc.get_objects() if type(o) is DeliveryFuture]
        assert alive == [held]
        assert held.done() and held.value == b"kept"
    finally:
        gc.enable()
