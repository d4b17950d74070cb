"""One topic of a producer core: how ``produce()`` turns a message into a
record in that topic's accumulator.

:class:`TopicLane` holds the general path, which checks everything
(serializers, types, sizes, timestamps, explicit partitions, the buffer
bound, a topic whose partitions are not known yet). The hand-tuned inline
paths for the common cases live apart, in :mod:`grete.producer.fast`
(``FastLane.produce``, the lane's only entry), and fall back to
:meth:`TopicLane._produce` for anything they do not handle.

A topic whose partitions are not known yet (its first message, before the
metadata answer) does not block: its records are held in order
(``Accumulator.add_unassigned``) and the core places them once the metadata
lists the topic, or fails them (``UnknownTopicOrPartition``) when it does
not appear within ``unknown_topic_timeout_ms``. Other topics go on meanwhile.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grete.cluster import Partition, Topic
from grete.errors import MessageSizeTooLarge
from grete.partitioners import StickyPartitioner, java_key_hash
from grete.producer.accumulator import KeyPlacer, record_size
from grete.producer.batch import ProducerBatch
from grete.producer.errors import InvalidMessageError, ProducerQueueFullError
from grete.producer.futures import Callback, DeliveryFuture, watch
from grete.producer.grouping import java_ids
from grete.producer.message import to_bytes, to_headers

if TYPE_CHECKING:
    from grete.producer.core import ProducerCore

_time_ns = time.time_ns
_monotonic = time.monotonic


class TopicLane:
    """``produce()`` for one topic of a :class:`~grete.producer.core.ProducerCore`."""

    def __init__(self, core: ProducerCore, name: str, topic: Topic | None = None) -> None:
        config = core.config
        self._core = core
        self._cluster = core.cluster
        self.name = name
        # The cluster's Topic once the metadata lists it (updated in place by
        # refreshes); until then a stand-in without partitions.
        self._topic = topic or core.cluster.known_topic(name) or Topic(core.cluster, name)
        partitioner = core.partitioner
        self._partitioner = partitioner
        # The sticky partition for unkeyed messages, kept here so produce()
        # need not ask the partitioner per message; updated when a batch closes.
        self._sticky: list[int | None] = [None]
        self._parts_cache: list[Partition] = []
        # Whether the partitioner sticks to one partition for unkeyed messages
        # until told a batch closed (then _sticky is all produce() needs).
        self._sticky_partitioner = type(partitioner) is StickyPartitioner
        # Java's murmur2 for keyed messages, in bulk (None: ask the partitioner).
        key_hash = java_key_hash(partitioner)
        self._serializer = config.serializer
        self._key_serializer = config.key_serializer
        # The inline paths take only values they need not convert.
        self._plain = config.serializer is None and config.key_serializer is None
        self._plain_keyed = self._plain and key_hash is not None
        self._max_record = core.max_bytes
        self._max_queued_messages = config.max_queued_messages
        self._max_buffer_bytes = config.max_buffer_bytes
        self._block = config.block_on_queue_full
        self._queue_full_timeout_s = config.queue_full_timeout_s
        # Every future is visited when its batch is done (to be reported).
        self._watch_all = config.delivery_reports
        # The index of a batch's last record: the inline path compares its
        # index with it (an index + 1 would make a new int per message).
        self._last_index = config.batch_size - 1
        self._acc = core.accs.add_topic(
            name,
            on_new_batch=_sticky_hook(self, getattr(partitioner, "on_new_batch", None)),
            key_placer=None if key_hash is None else _key_placer(self),
            stage_gone=core.stage_gone,
        )

    def __repr__(self) -> str:
        return f"<TopicLane {self.name!r}>"

    # -- the topic's partitions ------------------------------------------------

    def current_topic(self) -> Topic:
        """The topic, re-read from the metadata when the one held has no
        partitions (a stand-in, or a topic deleted and made again)."""
        topic = self._topic
        if not topic.partitions:
            known = self._cluster.known_topic(self.name)
            if known is not None and known is not topic:
                self._topic = topic = known
                self._parts_cache = []
        return topic

    def _partition_list(self) -> list[Partition]:
        """The topic's partitions by id. Partition objects are updated in
        place by metadata refreshes, so the list only changes with the count."""
        parts = self._topic.partitions
        cached = self._parts_cache
        if len(cached) != len(parts):
            cached = self._parts_cache = self._topic.partition_list()
        return cached

    def _choose(self, key: bytes | None) -> int:
        """The partitioner's choice (the topic has partitions)."""
        if key is None and self._sticky[0] is not None:
            return self._sticky[0]
        pid: int = self._partitioner(self._partition_list(), key).id
        if key is None and self._sticky_partitioner:
            # Unkeyed messages stay on this partition until its batch
            # closes (then the hook picks the next): no need to ask again.
            self._sticky[0] = pid
        return pid

    def choose_partition(self, key: bytes | None, wanted: int | None) -> int | None:
        """A held record's partition once the topic's are known: the one it
        asked for (None when the topic has no such partition) or the
        partitioner's choice."""
        if wanted is not None:
            return wanted if wanted in self._topic.partitions else None
        return self._choose(key)

    def no_such_partition(self, batch: ProducerBatch) -> InvalidMessageError:
        return InvalidMessageError(
            f"topic {self.name!r} has no such partition (it has "
            f"{len(self._topic.partitions)}); {len(batch.values)} message(s) not sent"
        )

    # -- the general path ------------------------------------------------------

    def _produce(
        self,
        value: Any,
        partition_key: Any,
        timestamp: int | None,
        headers: Any,
        partition: int | None,
        callback: Callback | None,
    ) -> DeliveryFuture:
        """:meth:`produce` for every case, with every check."""
        core = self._core
        if core.refusal is not None:
            raise core.refusal_type(core.refusal)
        if self._serializer is not None and value is not None:
            value = self._serializer(value)
        if self._key_serializer is not None and partition_key is not None:
            partition_key = self._key_serializer(partition_key)
        v = value if type(value) is bytes else to_bytes(value, "value", 0)
        k = partition_key
        if k is not None and type(k) is not bytes:
            k = to_bytes(k, "key", 0)
        h = None if headers is None else to_headers(headers, 0)
        size = record_size(k, v, h)
        if timestamp is None:
            ts = _time_ns() // 1_000_000
        elif type(timestamp) is int and 0 <= timestamp < 2**63:
            ts = timestamp
        else:
            raise InvalidMessageError(
                f"timestamp must be a non-negative int (ms), not {timestamp!r}"
            )
        if size > self._max_record:
            raise MessageSizeTooLarge(
                f"message of {size} bytes is over max_request_size/max_batch_bytes; not sent"
            )
        if partition is not None and (type(partition) is not int or partition < 0):
            raise InvalidMessageError(f"topic {self.name!r} has no partition {partition!r}")
        topic = self._topic if self._topic.partitions else self.current_topic()
        # Partitions known and nothing held before this one: place it now.
        assign = bool(topic.partitions) and self._acc.unassigned is None
        pid = -1
        if assign:
            if partition is not None:
                if partition not in topic.partitions:
                    raise InvalidMessageError(
                        f"topic {topic.name!r} has no partition {partition!r}"
                    )
                pid = partition
            else:
                pid = self._choose(k)
        future = DeliveryFuture()
        with core.lock:
            if core.refusal is not None:  # the sender died since the check above
                raise core.refusal_type(core.refusal)
            acc = self._acc
            # Staged keyed records were produced before this one: placed first,
            # they stay first (and the queue slots their stage reserved and did
            # not use are free again before the bounds are checked).
            placed = acc.stage is not None and acc.place_stage()
            if (
                core.queued_messages >= self._max_queued_messages
                or core.queued_bytes + size > self._max_buffer_bytes
            ):
                self._wait_for_space(size)
                if acc.stage is not None:  # staged by another thread meanwhile
                    placed = acc.place_stage() or placed
            # Records held for the topic's partitions came first: this one
            # waits behind them (the sender places them all, in order).
            assign = assign and acc.unassigned is None
            core.queued_messages += 1
            core.queued_bytes += size
            batch: ProducerBatch
            if assign:
                full = acc.append(pid, k, v, h, ts, None, size, _monotonic()) or placed
                last = acc.last
                assert last is not None
                batch, index = last, len(last.values) - 1
            else:
                # The first one held wakes the sender, which asks for the metadata.
                batch, index = acc.add_unassigned(k, v, h, ts, size, partition, _monotonic())
                full = placed
            future._batch = batch
            future._index = index
            if callback is not None or self._watch_all:
                future._callback = callback  # both, on every watcher: see batch_done
                future._callbacks = None
                watch(batch, future)  # under the core's lock: see futures.watch
        if full or index == 0:
            # A full batch goes now; a new one must be looked at within
            # linger_ms, and the sender may be asleep for longer than that.
            core.network.wakeup()
        return future

    def _wait_for_space(self, size: int) -> None:
        """Called with the core's lock held."""
        core = self._core
        if not self._block:
            raise ProducerQueueFullError(
                f"{core.queued_messages} messages / {core.queued_bytes} bytes queued"
            )
        deadline = time.monotonic() + self._queue_full_timeout_s
        while True:
            # Closed meanwhile, or the sender died: refused, even with room now
            # (nobody would drain what went into the accumulator).
            if core.refusal is not None:
                raise core.refusal_type(core.refusal)
            if (
                core.queued_messages < self._max_queued_messages
                and core.queued_bytes + size <= self._max_buffer_bytes
            ):
                return
            left = deadline - time.monotonic()
            if left <= 0 or core.stopped.is_set():
                raise ProducerQueueFullError(
                    f"queue still full after {self._queue_full_timeout_s:.1f}s "
                    f"({core.queued_messages} messages, {core.queued_bytes} bytes)"
                )
            core.space.wait(left)


def _key_placer(lane: TopicLane) -> KeyPlacer:
    """The accumulator's ``key_placer``: every key's partition at once
    (``grouping.java_ids``), and the topic's partition count (the last one
    seen, should a metadata refresh ever leave the topic without partitions)."""
    last = [len(lane._topic.partitions)]

    def place(keys: list[bytes], length: int | None) -> tuple[bytes | array[int], int]:
        partitions = len(lane._topic.partitions) or last[0]
        last[0] = partitions
        return java_ids(keys, partitions, length), partitions

    return place


def _sticky_hook(lane: TopicLane, hook: Any) -> Callable[[int], None] | None:
    """The accumulator's batch-closed hook: the partitioner's new sticky
    partition goes in the lane's ``_sticky`` cell. (A closure over the lane,
    never over a front end: the sender thread must not keep one alive.)"""
    if hook is None:
        return None
    cell = lane._sticky

    def closed(partition: int) -> None:
        chosen = hook(lane._topic.partition_list(), partition)
        cell[0] = chosen if isinstance(chosen, int) else None

    return closed
