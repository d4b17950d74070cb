"""Reading a topic back with confluent-kafka (librdkafka): a reader that grete's
own code had no part in. Shared by the integration tests.

confluent_kafka is imported where it is used, so that importing this module
never skips a test module that does not need it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Read:
    """One message as confluent-kafka read it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def read_messages(
    kafka_cluster: Any, topic: str, partitions: int, expected: int, *,
    settle_s: float = 1.0, timeout_s: float = READ_TIMEOUT_S,
    group_prefix: str = "grete-test", config: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """The confluent-kafka messages of partitions ``0 .. partitions - 1`` of ``topic``,
    from offset 0, until ``expected`` arrived, then ``settle_s`` more to catch extras
    (duplicates past the end); bounded by ``timeout_s``. ``config`` adds consumer
    settings. Fails on a message that carries an error."""
    import confluent_kafka

    conf = dict(kafka_cluster.librdkafka_config("PLAINTEXT"))
    conf.update({
        "group.id": f"{group_prefix}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    })
    conf.update(config or {})
    consumer = confluent_kafka.Consumer(conf)
    count = 0
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is None and count >= expected:
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                assert msg.error() is None, msg.error()
                yield msg
                count += 1
    finally:
        consumer.close()


def consume(
    kafka_cluster: Any, topic: str, partitions: int, expected: int, *,
    settle_s: float = 1.0, timeout_s: float = READ_TIMEOUT_S, group_prefix: str = "grete-test",
) -> list[Read]:
    """:func:`read_messages`, each message as a :class:`Read`."""
    out: list[Read] = []
    for msg in read_messages(
        kafka_cluster, topic, partitions, expected,
        settle_s=settle_s, timeout_s=timeout_s, group_prefix=group_prefix,
    ):
        _type, ts = msg.timestamp()
        out.append(Read(
            msg.partition(), msg.offset(), msg.key(), msg.value(),
            tuple(msg.headers() or ()), ts,
        ))
    return out


def read_first(
    bootstrap: str, topic: str, count: int, *, partitions: int = 3,
    timeout_s: float = 30.0, poll_s: float = 0.5,
    group_prefix: str = "grete-test", config: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """The first ``count`` confluent-kafka messages of partitions ``0 .. partitions - 1``
    of ``topic`` (PLAINTEXT at ``bootstrap``), each read from the beginning; fewer if
    ``timeout_s`` runs out first. ``config`` adds consumer settings. Fails on a
    message that carries an error."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{group_prefix}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        **(config or {}),
    })
    got = 0
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout_s
        while got < count and time.monotonic() < deadline:
            msg = consumer.poll(poll_s)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            yield msg
            got += 1
    finally:
        consumer.close()


def consume_topics(
    kafka_cluster: Any, topics: Mapping[str, int], expected: int, *,
    settle_s: float = 1.0, timeout_s: float = READ_TIMEOUT_S, group_prefix: str = "grete-test",
) -> dict[str, list[Read]]:
    """Every partition of several topics (name -> partition count) read by one
    consumer from offset 0, until ``expected`` messages arrived in all and
    ``settle_s`` more (bounded by ``timeout_s``): each topic's messages as
    :class:`Read`, in the order read (offset order within a partition).
    Fails on a message that carries an error."""
    import confluent_kafka

    conf = dict(kafka_cluster.librdkafka_config("PLAINTEXT"))
    conf.update({
        "group.id": f"{group_prefix}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    })
    consumer = confluent_kafka.Consumer(conf)
    out: dict[str, list[Read]] = {name: [] for name in topics}
    count = 0
    try:
        consumer.assign([
            confluent_kafka.TopicPartition(name, p, 0)
            for name, partitions in topics.items() for p in range(partitions)
        ])
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is None and count >= expected:
                settle_until = time.monotonic() + settle_s
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            got: list[Any] = consumer.consume(num_messages=10_000, timeout=0.2)
            for msg in got:
                assert msg.error() is None, msg.error()
                _type, ts = msg.timestamp()
                out[msg.topic()].append(Read(
                    msg.partition(), msg.offset(), msg.key(), msg.value(),
                    tuple(msg.headers() or ()), ts,
                ))
                count += 1
    finally:
        consumer.close()
    return out


def high_watermarks(
    bootstrap: str, topics: Mapping[str, int], *, timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of ``topics`` (name -> partition
    count), as the leaders answer a read_uncommitted ListOffsets: the end of
    the log, open transactions included. Retried (bounded by ``timeout_s``)
    while a leader is moving."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"grete-hw-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_uncommitted",
    })
    out: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        for name, partitions in topics.items():
            for p in range(partitions):
                while True:  # bounded by the deadline
                    left = deadline - time.monotonic()
                    try:
                        _low, high = consumer.get_watermark_offsets(
                            TopicPartition(name, p), timeout=max(1.0, min(10.0, left)),
                            cached=False,
                        )
                    except KafkaException:
                        if time.monotonic() >= deadline:
                            raise
                        time.sleep(0.5)
                        continue
                    out[(name, p)] = high
                    break
    finally:
        consumer.close()
    return out


def read_to_end(
    bootstrap: str, topics: Mapping[str, int], *, committed: bool = True,
    until_eof: bool = False, timeout_s: float = READ_TIMEOUT_S,
    group_prefix: str = "grete-test",
) -> dict[str, list[Read]]:
    """Every message of every partition of ``topics`` (name -> partition count)
    from offset 0, read by one confluent-kafka consumer with ``isolation.level``
    read_committed (``committed``) or read_uncommitted: each topic's messages
    as :class:`Read`, in offset order per partition.

    Reads until the consumer's position in every partition reached the high
    watermark it had when the call began (:func:`high_watermarks`): with
    read_committed that is only once every transaction below it ended (the
    position moves past aborted records and markers). Fails with an
    AssertionError if that takes longer than ``timeout_s``.
    ``until_eof``: stop instead at the first end of partition in each (what
    is visible now; read_committed stops at the last stable offset)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    ends = high_watermarks(bootstrap, topics)
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"{group_prefix}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    })
    out: dict[str, list[Read]] = {name: [] for name in topics}
    position = dict.fromkeys(ends, 0)
    eof: set[tuple[str, int]] = set()
    pending = {tp for tp, end in ends.items() if end > 0 or until_eof}
    try:
        consumer.assign([TopicPartition(name, p, 0) for name, p in ends])
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position[tp] = max(position[tp], msg.offset())
                        eof.add(tp)
                    else:
                        assert not err.fatal(), err
                        continue  # transient (a connection): the consumer goes on
                else:
                    _type, ts = msg.timestamp()
                    out[msg.topic()].append(Read(
                        msg.partition(), msg.offset(), msg.key(), msg.value(),
                        tuple(msg.headers() or ()), ts,
                    ))
                    position[tp] = max(position[tp], msg.offset() + 1)
                if (until_eof and tp in eof) or (not until_eof and position[tp] >= ends[tp]):
                    pending.discard(tp)
    finally:
        consumer.close()
    assert not pending, (
        f"not read to the end within {timeout_s:.0f}s "
        f"({'read_committed' if committed else 'read_uncommitted'}): "
        + ", ".join(f"{t}/{p} at {position[(t, p)]} of {ends[(t, p)]}" for t, p in sorted(pending))
    )
    return out
