"""KafkaProducer without a broker: lanes per topic on one core, topics whose
partitions are not known yet, the buffer bound across topics, signatures.

The ``cluster`` fixture lists topic ``t`` (3 partitions) led by a closed
port: nothing is ever acknowledged, and metadata requests never answer, so
a topic's partitions appear only when a test puts them in the cluster.
"""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest

from grete import (
    BackgroundProducer,
    KafkaProducer,
    KafkaTimeoutError,
    Producer,
    UnknownTopicOrPartition,
)
from grete.cluster import Cluster, Partition, Topic
from grete.partitioners import partition_id_for_key
from grete.producer import InvalidMessageError, ProducerQueueFullError
from grete.producer.batch import Unassigned
from grete.producer.config import defaults
from grete.producer.futures import DeliveryFuture


def _producer(cluster: Cluster, **kw: Any) -> KafkaProducer:
    kw.setdefault("required_acks", 1)
    kw.setdefault("linger_ms", 60_000)
    return KafkaProducer(cluster, **kw)


def _add_topic(cluster: Cluster, name: str, partitions: int) -> Topic:
    """Make ``name`` known to the cluster, as a metadata answer would."""
    topic = Topic(cluster, name)
    broker = cluster.brokers[1]
    for i in range(partitions):
        part = Partition(topic, i)
        part.leader = broker
        topic.partitions[i] = part
    cluster._topics[name] = topic
    return topic


def _wait(cond: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _senders() -> int:
    return sum(t.name == "grete-sender" for t in threading.enumerate())


def test_every_topic_shares_one_core_and_one_sender_thread(cluster: Cluster) -> None:
    for i in range(5):
        _add_topic(cluster, f"x{i}", 2)
    before = _senders()
    p = _producer(cluster)
    try:
        futures = [p.produce(f"x{i % 5}", b"v%d" % i) for i in range(50)]
        futures.append(p.produce("t", b"plain"))
        assert _senders() == before + 1
        lanes = p._core.lanes
        assert sorted(lanes) == ["t", *(f"x{i}" for i in range(5))]
        assert {f._where()[0].owner for f in futures} == {p._core}
        assert {f._where()[0].topic for f in futures[:5]} == {f"x{i}" for i in range(5)}
    finally:
        p.close(timeout=0.5)
    _wait(lambda: _senders() == before)


def test_keyed_messages_go_where_the_java_client_puts_them(cluster: Cluster) -> None:
    _add_topic(cluster, "seven", 7)
    p = _producer(cluster)
    try:
        keys = [b"key-%d" % i for i in range(3000)]
        futures = [p.produce("seven", b"v", key=k) for k in keys]
        with p._core.lock:
            p._core.lanes["seven"]._acc.place_stage()
        for k, f in zip(keys, futures, strict=True):
            batch, _ = f._where()
            assert batch.topic == "seven"
            assert batch.partition == partition_id_for_key(k, 7)
    finally:
        p.close(timeout=0.5)


@pytest.mark.parametrize("name", ["", "a b", "x" * 250, ".", "..", "é", 7, None, ["t"]])
def test_a_bad_topic_name_is_refused_before_anything_is_queued(cluster: Cluster, name: Any) -> None:
    p = _producer(cluster)
    try:
        with pytest.raises(InvalidMessageError, match="topic must be"):
            p.produce(name, b"v")
        assert p.metrics()["queued_messages"] == 0
    finally:
        p.close(timeout=0.5)


def test_messages_for_an_unknown_topic_wait_in_order_and_are_placed_once_it_appears(
    cluster: Cluster,
) -> None:
    p = _producer(cluster, unknown_topic_timeout_ms=60_000)
    try:
        futures = [p.produce("later", b"v%d" % i, key=b"k%d" % (i % 5)) for i in range(20)]
        futures.append(p.produce("later", b"explicit", partition=1, headers={"h": b"1"}))
        futures.append(p.produce("later", b"no such partition", partition=9))
        held = futures[0]._where()[0]
        assert isinstance(held, Unassigned)
        assert held.values[:3] == [b"v0", b"v1", b"v2"]
        # Other topics are not held up meanwhile.
        other = p.produce("t", b"other")
        assert other._where()[0].partition >= 0
        _add_topic(cluster, "later", 4)
        _wait(lambda: futures[-1].done())
        with pytest.raises(InvalidMessageError, match="no such partition"):
            futures[-1].result()
        by_partition: dict[int, list[bytes]] = {}
        for i, f in enumerate(futures[:20]):
            batch, index = f._where()
            assert batch.topic == "later" and not isinstance(batch, Unassigned)
            assert batch.partition == partition_id_for_key(b"k%d" % (i % 5), 4)
            assert batch.values[index] == b"v%d" % i
            by_partition.setdefault(batch.partition, []).append(batch.values[index])  # type: ignore[arg-type]
        for values in by_partition.values():  # produce order within each partition
            assert values == sorted(values, key=lambda v: int(v[1:]))
        batch, index = futures[20]._where()
        assert (batch.partition, batch.values[index]) == (1, b"explicit")
        assert batch.headers is not None and batch.headers[index] == [("h", b"1")]
    finally:
        p.close(timeout=0.5)


def test_a_topic_that_never_appears_fails_only_its_own_messages(cluster: Cluster) -> None:
    p = _producer(cluster, unknown_topic_timeout_ms=300)
    try:
        missing = [p.produce("missing", b"m%d" % i) for i in range(3)]
        # The brokers said so (as a metadata answer would record it).
        cluster._topic_errors["gone"] = 3
        gone = p.produce("gone", b"g")
        good = p.produce("t", b"good")
        start = time.monotonic()
        for f in missing:
            with pytest.raises(KafkaTimeoutError, match="no metadata for topic 'missing'"):
                f.result(timeout=10)
        with pytest.raises(UnknownTopicOrPartition, match="'gone' does not exist"):
            gone.result(timeout=10)
        assert time.monotonic() - start < 10
        assert not good.done()  # the good topic's message is still on its way
        assert p.metrics()["topics"]["missing"]["errors"] == 3
        assert p.metrics()["queued_messages"] == 1
    finally:
        p.close(timeout=0.5)


def test_a_topic_the_brokers_refuse_fails_at_once(cluster: Cluster) -> None:
    cluster._topic_errors["secret"] = 29  # TOPIC_AUTHORIZATION_FAILED: not retriable
    p = _producer(cluster, unknown_topic_timeout_ms=60_000)
    try:
        f = p.produce("secret", b"v")
        error = f.exception(timeout=10)
        assert error is not None and "secret" in str(error)
    finally:
        p.close(timeout=0.5)


def test_the_buffer_bound_holds_across_topics(cluster: Cluster) -> None:
    p = _producer(
        cluster, max_queued_messages=5, block_on_queue_full=False, unknown_topic_timeout_ms=60_000
    )
    try:
        for i in range(5):
            p.produce("slow", b"s%d" % i)  # held: the topic is not known
        with pytest.raises(ProducerQueueFullError):
            p.produce("t", b"healthy")
        with pytest.raises(ProducerQueueFullError):
            p.produce("t", b"keyed", key=b"k")
        assert p.metrics()["queued_messages"] == 5
    finally:
        p.close(timeout=0.5)


def test_close_fails_held_messages_and_is_bounded(cluster: Cluster) -> None:
    p = _producer(cluster, unknown_topic_timeout_ms=60_000)
    held = [p.produce(f"held{i}", b"v") for i in range(10)]
    queued = [p.produce("t", b"v%d" % i, key=b"k") for i in range(10)]
    start = time.monotonic()
    p.close(timeout=0.5)
    assert time.monotonic() - start < 5
    for f in held + queued:
        assert f.done()
        assert f.exception() is not None


def test_results_name_their_topic(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        f = p.produce("t", b"v", partition=2)
        batch, _ = f._where()
        # As the sender would on an acknowledgement.
        p._core.batch_done(batch, 100, -1, None)
        result = f.result(timeout=1)
        assert (result.topic, result.partition, result.offset) == ("t", 2, 100)
        assert result[:3] == (2, 100, result.timestamp)
        assert p.metrics()["topics"]["t"]["messages_sent"] == 1
    finally:
        p.close(timeout=0.5)


def test_client_producer_makes_a_kafka_producer(cluster: Cluster) -> None:
    class Client:  # what KafkaProducer needs of a KafkaClient: its cluster
        def __init__(self, c: Cluster) -> None:
            self.cluster = c

    from grete.client import KafkaClient

    p = KafkaClient.producer(Client(cluster), linger_ms=1)  # type: ignore[arg-type]
    try:
        assert isinstance(p, KafkaProducer)
        assert isinstance(p.produce("t", b"v"), DeliveryFuture)
    finally:
        p.close(timeout=0.5)


@pytest.mark.parametrize("front_end", [Producer, BackgroundProducer, KafkaProducer])
def test_signature_defaults_are_the_option_table(front_end: type) -> None:
    table = defaults(front_end.__name__)
    params = inspect.signature(front_end).parameters
    taken = {
        name: p.default
        for name, p in params.items()
        if name not in ("cluster", "topic", "client") and p.default is not p.empty
    }
    assert taken == table


def test_an_unknown_option_is_refused_by_name_in_every_front_end(cluster: Cluster) -> None:
    from grete.errors import ConfigurationError

    topic = cluster._topics["t"]
    makers = {
        "Producer": lambda **kw: Producer(cluster, topic, **kw),
        "BackgroundProducer": lambda **kw: BackgroundProducer(cluster, topic, **kw),
        "KafkaProducer": lambda **kw: KafkaProducer(cluster, **kw),
    }
    for name, make in makers.items():
        with pytest.raises(ConfigurationError, match=f"{name} has no option 'lingr_ms'"):
            make(lingr_ms=3)
    with pytest.raises(ConfigurationError, match="only BackgroundProducer and KafkaProducer"):
        makers["Producer"](linger_ms=3)


def test_a_forked_child_is_refused_and_never_waits(cluster: Cluster) -> None:
    # The same core as BackgroundProducer: in a forked child every call that
    # would wait for the parent's sender thread raises, close() returns at once.
    from grete.producer import ProducerClosedError

    from .test_background_threads import _in_a_forked_child, _quick, _raises

    p = _producer(cluster, delivery_timeout_ms=60_000, unknown_topic_timeout_ms=60_000)
    pending = p.produce("t", b"in the parent")
    held = p.produce("unknown-yet", b"held in the parent")
    checks: list[tuple[str, Any]] = [
        ("produce", _raises(ProducerClosedError, lambda: p.produce("t", b"child"))),
        ("new topic", _raises(ProducerClosedError, lambda: p.produce("other", b"child"))),
        ("flush", _raises(ProducerClosedError, lambda: p.flush())),
        ("result", _raises(ProducerClosedError, lambda: pending.result())),
        ("held result", _raises(ProducerClosedError, lambda: held.result())),
        ("close", _quick(lambda: p.close())),
    ]
    failed = _in_a_forked_child(checks)
    assert failed == 0, [name for bit, (name, _) in enumerate(checks) if failed & (1 << bit)]
    assert not pending.done()
    p.close(timeout=0.5)
    assert pending.done() and held.done()
