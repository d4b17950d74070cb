"""The sync Producer against a real cluster, checked with readers nobody here wrote:
confluent-kafka's Consumer (librdkafka) and Kafka's own console consumer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.errors import MessageSizeTooLarge, UnknownTopicOrPartition
from grete.partitioners import hashing_partitioner, partition_id_for_key
from grete.producer import Message, ProduceFailureError, Producer
from grete.protocol.compression import CompressionType

from ._consume import consume

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration


@pytest.fixture
def client(kafka_cluster: Any) -> Iterator[KafkaClient]:
    c = KafkaClient(kafka_cluster.bootstrap_servers)
    yield c
    c.close()


def test_every_kind_of_message_is_read_back_exactly(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    producer = Producer(client.cluster, client.topics[topic])
    # An hour ago, not years: a batch older than the topic's retention may be
    # deleted (segment and all) before it is read back.
    ts = int(time.time() * 1000) - 3_600_000
    messages: list[Any] = [
        b"plain bytes",
        "a str \u00e9\u4e2d",
        (b"key-1", b"tuple value"),
        ("str key", "str value"),
        (None, b"no key"),
        (b"tomb-key", None),
        Message(
            b"with headers", key=b"hk", headers=[("h1", b"v1"), ("h2", None), ("h1", b"again")]
        ),
        Message("dict headers", headers={"a": "x", "b": b"y"}),
        Message(b"stamped", timestamp=ts),
        Message(b"explicit partition 2", key=b"k2", partition=2),
        Message(None, key=b"tombstone", partition=1, timestamp=ts + 1),
        Message(b"", key=b""),
        bytes(range(256)) * 40,
    ]
    before_ms = int(time.time() * 1000)
    results = producer.produce(messages)
    after_ms = int(time.time() * 1000)
    assert len(results) == len(messages)
    assert results[9].partition == 2 and results[10].partition == 1

    reads = consume(kafka_cluster, topic, 3, len(messages))
    assert len(reads) == len(messages)
    by_position = {(r.partition, r.offset): r for r in reads}
    assert len(by_position) == len(messages)
    expected = [
        (None, b"plain bytes", (), None),
        (None, "a str \u00e9\u4e2d".encode(), (), None),
        (b"key-1", b"tuple value", (), None),
        (b"str key", b"str value", (), None),
        (None, b"no key", (), None),
        (b"tomb-key", None, (), None),
        (b"hk", b"with headers", (("h1", b"v1"), ("h2", None), ("h1", b"again")), None),
        (None, b"dict headers", (("a", b"x"), ("b", b"y")), None),
        (None, b"stamped", (), ts),
        (b"k2", b"explicit partition 2", (), None),
        (b"tombstone", None, (), ts + 1),
        (b"", b"", (), None),
        (None, bytes(range(256)) * 40, (), None),
    ]
    for i, (result, (key, value, headers, stamp)) in enumerate(zip(results, expected, strict=True)):
        read = by_position.get((result.partition, result.offset))
        assert read is not None, f"message {i}: nothing at {result}"
        assert (read.key, read.value, read.headers) == (key, value, headers), f"message {i}"
        assert read.timestamp == result.timestamp, f"message {i}"
        if stamp is not None:
            assert read.timestamp == stamp, f"message {i}"
        else:
            assert before_ms - 1000 <= read.timestamp <= after_ms + 1000, f"message {i}"


def test_results_match_the_log_for_many_messages(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    producer = Producer(client.cluster, client.topics[topic], batch_size=37)
    values = [f"m-{i}".encode() for i in range(2_000)]
    results = producer.produce(values)
    assert len(results) == len(values)
    positions = [(r.partition, r.offset) for r in results]
    assert len(set(positions)) == len(values)
    reads = consume(kafka_cluster, topic, 3, len(values))
    assert len(reads) == len(values)
    stored = {(r.partition, r.offset): r.value for r in reads}
    assert [stored.get(pos) for pos in positions] == values
    # Input order is kept within each partition.
    for p in range(3):
        offsets = [r.offset for r in results if r.partition == p]
        assert offsets == sorted(offsets)


CODECS = [
    (CompressionType.NONE, None),
    (CompressionType.GZIP, None),
    (CompressionType.GZIP, 1),
    (CompressionType.GZIP, 9),
    (CompressionType.SNAPPY, None),
    (CompressionType.LZ4, None),
    (CompressionType.LZ4, 12),
    (CompressionType.ZSTD, None),
    (CompressionType.ZSTD, 1),
    (CompressionType.ZSTD, 19),
]


@pytest.mark.parametrize(("codec", "level"), CODECS,
                         ids=[f"{c.name}-{lv}" for c, lv in CODECS])
def test_each_codec_is_readable_by_librdkafka(
    kafka_cluster: Any, client: KafkaClient, topic: str,
    codec: CompressionType, level: int | None,
) -> None:
    producer = Producer(client.cluster, client.topics[topic], compression=codec,
                        compression_level=level, batch_size=500)
    messages = [(f"k{i % 17}".encode(), f"value {i} ".encode() * (1 + i % 9)) for i in range(1_500)]
    messages.append((b"big", b"z" * 200_000))  # compresses well, still one record
    results = producer.produce(messages)
    reads = consume(kafka_cluster, topic, 3, len(messages))
    assert len(reads) == len(messages)
    stored = {(r.partition, r.offset): (r.key, r.value) for r in reads}
    assert [stored.get((r.partition, r.offset)) for r in results] == messages


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_required_acks(kafka_cluster: Any, client: KafkaClient, topic: str, acks: int) -> None:
    warmup = [Message(b"warm-up", partition=p) for p in range(3)]
    if acks == 0:
        # A leader that has not finished taking over its new partition refuses
        # the write; with acks=0 it can only drop the connection, and the data
        # is gone (by design). Acknowledged writes first make sure it is ready.
        Producer(client.cluster, client.topics[topic], required_acks=1).produce(warmup)
    producer = Producer(client.cluster, client.topics[topic], required_acks=acks)
    values = [f"acks {acks} #{i}".encode() for i in range(300)]
    results = producer.produce(values)
    assert len(results) == len(values)
    if acks == 0:
        assert all(r.offset == -1 for r in results)
    else:
        assert sorted(r.offset for r in results if r.partition == 0) == list(
            range(sum(1 for r in results if r.partition == 0))
        )
    extra = len(warmup) if acks == 0 else 0
    reads = consume(kafka_cluster, topic, 3, len(values) + extra)
    got = sorted(r.value for r in reads if r.value is not None and r.value != b"warm-up")
    assert got == sorted(values)
    by_partition = {r.partition for r in results}
    assert {r.partition for r in reads if r.value != b"warm-up"} == by_partition


def test_idempotent_producer_several_calls(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    producer = Producer(client.cluster, client.topics[topic], required_acks=-1,
                        partitioner=hashing_partitioner)
    sent: list[tuple[bytes, bytes]] = []
    for call in range(5):
        batch = [(f"k{i % 11}".encode(), f"{call}-{i}".encode()) for i in range(400)]
        producer.produce(batch)
        sent += batch
    assert producer._engine.producer_id >= 0
    reads = consume(kafka_cluster, topic, 3, len(sent))
    assert sorted((r.key, r.value) for r in reads) == sorted(sent)
    for p in range(3):
        got = [(r.key, r.value) for r in sorted(reads, key=lambda r: r.offset) if r.partition == p]
        want = [m for m in sent if m[0] is not None and partition_id_for_key(m[0], 3) == p]
        assert got == want


def test_hashing_partitioner_matches_librdkafka_murmur2(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any
) -> None:
    name = topic_factory(partitions=7)
    keys = [f"user-{i}".encode() for i in range(500)]
    keys += [bytes([i]) * (i % 13 + 1) for i in range(256)]
    producer = Producer(client.cluster, client.topics[name], partitioner=hashing_partitioner)
    # An iterator of (key, value) tuples, read once without a copy.
    results = producer.produce(zip(keys, [b"v"] * len(keys), strict=True))
    assert len(results) == len(keys)
    assert [r.partition for r in results] == [partition_id_for_key(k, 7) for k in keys]
    reads = consume(kafka_cluster, name, 7, len(keys))
    assert len(reads) == len(keys)
    stored = {r.key: r.partition for r in reads}
    assert all(stored[k] == partition_id_for_key(k, 7) for k in keys)
    # Cross-check with librdkafka's own murmur2_random placement of the same keys.
    rd_conf = dict(kafka_cluster.librdkafka_config("PLAINTEXT"))
    rd_conf["partitioner"] = "murmur2_random"
    rd = confluent_kafka.Producer(rd_conf)
    placed: dict[bytes, int] = {}
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            placed[msg.key()] = msg.partition()

    for k in keys[:200]:
        rd.produce(name, value=b"rd", key=k, on_delivery=on_delivery)
    assert rd.flush(60) == 0
    assert not errors
    assert placed == {k: stored[k] for k in keys[:200]}


def test_unknown_topic(kafka_cluster: Any) -> None:
    with (
        KafkaClient(kafka_cluster.bootstrap_servers, allow_auto_create_topics=False) as c,
        pytest.raises(UnknownTopicOrPartition),
    ):
        c.topics[f"no-such-topic-{uuid.uuid4().hex[:8]}"]


@pytest.mark.parametrize("batch_size", [1, 200])
@pytest.mark.parametrize("keyed", [False, True])
def test_oversize_message_fails_alone(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any, batch_size: int, keyed: bool
) -> None:
    name = topic_factory(config={"max.message.bytes": 10_000})
    producer = Producer(client.cluster, client.topics[name], batch_size=batch_size)
    big_index = 57
    values = [f"small {i}".encode() for i in range(120)]
    values[big_index] = b"B" * 50_000
    messages: list[Any] = [(b"k", v) for v in values] if keyed else values
    with pytest.raises(ProduceFailureError) as info:
        producer.produce(messages)
    err = info.value
    assert [f.index for f in err.failures] == [big_index]
    (failure,) = err.failures
    assert isinstance(failure.error, MessageSizeTooLarge)
    assert failure.maybe_written is False
    assert err.results[big_index] is None
    assert all(r is not None for i, r in enumerate(err.results) if i != big_index)
    expected = [v for i, v in enumerate(values) if i != big_index]
    reads = consume(kafka_cluster, name, 3, len(expected))
    assert sorted(r.value for r in reads if r.value is not None) == sorted(expected)
    assert len(reads) == len(expected)
    stored = {(r.partition, r.offset): r.value for r in reads}
    for i, r in enumerate(err.results):
        if r is not None:
            assert stored[(r.partition, r.offset)] == values[i]


@pytest.mark.parametrize("keyed", [False, True])
def test_message_over_max_request_size_fails_alone(
    kafka_cluster: Any, client: KafkaClient, topic: str, keyed: bool
) -> None:
    producer = Producer(client.cluster, client.topics[topic], max_request_size=8_192)
    values = [f"small {i}".encode() for i in range(60)]
    values[10] = b"L" * 20_000
    messages: list[Any] = [(b"key", v) for v in values] if keyed else values
    with pytest.raises(ProduceFailureError) as info:
        producer.produce(messages)
    (failure,) = info.value.failures
    assert failure.index == 10 and failure.maybe_written is False
    assert isinstance(failure.error, MessageSizeTooLarge)
    expected = [v for i, v in enumerate(values) if i != 10]
    reads = consume(kafka_cluster, topic, 3, len(expected))
    assert sorted(r.value for r in reads if r.value is not None) == sorted(expected)


def test_kafka_console_consumer_reads_grete_messages(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any
) -> None:
    if not hasattr(kafka_cluster, "run_java_tool"):
        pytest.skip("needs the harness's jars")
    name = topic_factory(partitions=1)
    producer = Producer(client.cluster, client.topics[name], compression=CompressionType.ZSTD,
                        required_acks=-1)
    producer.produce([(b"k1", b"hello"), (b"k2", "w\u00f6rld"), Message(b"third", key=b"k3")])
    proc = kafka_cluster.run_java_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server", kafka_cluster.bootstrap_servers,
        "--topic", name, "--from-beginning", "--max-messages", "3",
        "--timeout-ms", "60000",
        "--property", "print.key=true", "--property", "key.separator=|",
        timeout=120.0,
    )
    lines = [ln for ln in proc.stdout.splitlines() if "|" in ln]
    assert lines == ["k1|hello", "k2|w\u00f6rld", "k3|third"]


def test_log_append_time_results_carry_the_broker_time(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any
) -> None:
    name = topic_factory(config={"message.timestamp.type": "LogAppendTime"})
    producer = client.topics[name].get_sync_producer(required_acks=-1)
    old = 1_000_000_000_000
    before = int(time.time() * 1000)
    results = producer.produce([Message(f"v{i}".encode(), timestamp=old) for i in range(50)])
    assert all(r.timestamp >= before - 5_000 for r in results)
    reads = consume(kafka_cluster, name, 3, 50)
    stored = {(r.partition, r.offset): r.timestamp for r in reads}
    assert [stored[(r.partition, r.offset)] for r in results] == [r.timestamp for r in results]


@pytest.mark.parametrize("partitioner", ["round_robin", "sticky"])
def test_other_partitioners(
    kafka_cluster: Any, client: KafkaClient, topic: str, partitioner: str
) -> None:
    from grete.partitioners import RoundRobinPartitioner, StickyPartitioner

    part: Any = RoundRobinPartitioner() if partitioner == "round_robin" else StickyPartitioner()
    producer = Producer(client.cluster, client.topics[topic], partitioner=part, batch_size=10)
    messages: list[tuple[None, str]] = [(None, f"{i}") for i in range(90)]
    results = producer.produce(messages)
    counts = {p: sum(1 for r in results if r.partition == p) for p in range(3)}
    if partitioner == "round_robin":
        assert counts == {0: 30, 1: 30, 2: 30}
        assert [r.partition for r in results[:6]] == [
            results[0].partition, results[1].partition, results[2].partition] * 2
    else:
        # Sticky: whole batches of 10 go to one partition before it switches.
        for start in range(0, 90, 10):
            assert len({r.partition for r in results[start:start + 10]}) == 1
    reads = consume(kafka_cluster, topic, 3, 90)
    stored = {(r.partition, r.offset): r.value for r in reads}
    assert [stored.get((r.partition, r.offset)) for r in results] == [
        v.encode() for _k, v in messages
    ]


def test_producer_follows_a_leader_that_stopped_between_calls(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    if not hasattr(kafka_cluster, "brokers"):
        pytest.skip("needs the harness's own brokers")
    all_ids = {b.node_id for b in kafka_cluster.brokers}
    name = topic_factory(partitions=1, replication_factor=3)
    with KafkaClient(kafka_cluster.bootstrap_servers) as c:
        producer = Producer(c.cluster, c.topics[name], required_acks=-1, max_retries=10)
        first = producer.produce([b"before"] * 10)
        leader = c.topics[name].partitions[0].leader
        assert leader is not None
        victim = kafka_cluster.broker(leader.id)
        victim.stop()
        try:
            second = producer.produce([b"after"] * 10)
        finally:
            victim.start(timeout=90.0)
            kafka_cluster.wait_for_brokers(all_ids, timeout=90.0)
    assert [r.offset for r in first] == list(range(10))
    assert [r.offset for r in second] == list(range(10, 20))
    reads = consume(kafka_cluster, name, 1, 20)
    values = [r.value for r in sorted(reads, key=lambda r: r.offset)]
    assert values == [b"before"] * 10 + [b"after"] * 10


@pytest.mark.parametrize(("batch_size", "as_iterator"), [(7, False), (200, False), (200, True)])
def test_keyed_list_fast_path_places_orders_and_reports_like_java(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any, batch_size: int, as_iterator: bool
) -> None:
    """A list (or an iterator such as zip) of (bytes, bytes) with a
    Java-compatible partitioner takes the column-wise keyed path: same
    partitions, per-partition input order, one result per message, and an
    oversize message failing alone."""
    name = topic_factory(partitions=5)
    producer = Producer(
        client.cluster,
        client.topics[name],
        partitioner=hashing_partitioner,
        batch_size=batch_size,
        max_request_size=8_192,
        # Idempotent, so per-partition order holds even across a retry (with
        # acks=1 and several batches in flight a retried batch may land later).
        required_acks=-1,
    )
    keys = [f"user-{i % 97}".encode() for i in range(1_000)]
    values = [f"value {i}".encode() for i in range(1_000)]
    values[321] = b"L" * 20_000  # over max_request_size: fails alone
    with pytest.raises(ProduceFailureError) as info:
        pairs = zip(keys, values, strict=True)
        producer.produce(pairs if as_iterator else list(pairs))
    (failure,) = info.value.failures
    assert failure.index == 321 and isinstance(failure.error, MessageSizeTooLarge)
    results = info.value.results
    assert results[321] is None
    for i, r in enumerate(results):
        if i != 321:
            assert r is not None and r.partition == partition_id_for_key(keys[i], 5)
    reads = consume(kafka_cluster, name, 5, 999)
    assert len(reads) == 999
    stored = {(r.partition, r.offset): (r.key, r.value) for r in reads}
    for i, r in enumerate(results):
        if r is not None:
            assert stored[(r.partition, r.offset)] == (keys[i], values[i])
    # Per partition, the log holds the messages in input order.
    for p in range(5):
        in_log = [v for (part, _off), (_k, v) in sorted(stored.items()) if part == p]
        sent = [
            v for i, v in enumerate(values) if i != 321 and partition_id_for_key(keys[i], 5) == p
        ]
        assert in_log == sent
