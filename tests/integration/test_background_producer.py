"""The BackgroundProducer against a real cluster, read back with confluent-kafka."""

from __future__ import annotations

import gc
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.errors import KafkaError
from grete.partitioners import partition_id_for_key
from grete.producer import (
    BackgroundProducer,
    DeliveryFuture,
    DeliveryTimeoutError,
    ProducerQueueFullError,
)
from grete.producer import batch as batch_module
from grete.protocol.compression import CompressionType

from ._consume import consume

pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration


@pytest.fixture
def client(kafka_cluster: Any) -> Iterator[KafkaClient]:
    c = KafkaClient(kafka_cluster.bootstrap_servers)
    yield c
    c.close()


def test_produce_flush_keys_headers_timestamps_and_callbacks(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    # An hour ago, not years: a batch older than the topic's retention may be
    # deleted (segment and all) before it is read back.
    ts = int(time.time() * 1000) - 3_600_000
    called: list[DeliveryFuture] = []
    lock = threading.Lock()

    def cb(f: DeliveryFuture) -> None:
        with lock:
            called.append(f)

    with client.topics[topic].get_producer(linger_ms=20) as p:
        futures = [
            p.produce(b"plain", callback=cb),
            p.produce("str \u00e9", partition_key="k-str", callback=cb),
            p.produce(
                b"hv", partition_key=b"hk", headers=[("h1", b"v1"), ("h2", None)], callback=cb
            ),
            p.produce(b"dict headers", headers={"a": "x"}, callback=cb),
            p.produce(b"stamped", timestamp=ts, partition=2, callback=cb),
            p.produce(None, partition_key=b"tomb", partition=1, callback=cb),
            p.produce(b"", partition_key=b"", callback=cb),
        ]
        before_ms = int(time.time() * 1000)
        assert p.flush(timeout=60) == 0
        assert all(f.done() for f in futures)
        results = [f.result(timeout=0) for f in futures]
        m = p.metrics()
    assert len(called) == len(futures) and {id(f) for f in called} == {id(f) for f in futures}
    assert results[4].partition == 2 and results[5].partition == 1
    assert results[4].timestamp == ts
    assert results[2].partition == partition_id_for_key(b"hk", 3)
    assert m["messages_sent"] == len(futures) and m["queued_messages"] == 0 and m["errors"] == 0

    reads = consume(kafka_cluster, topic, 3, len(futures))
    assert len(reads) == len(futures)
    by_pos = {(r.partition, r.offset): r for r in reads}
    expected = [
        (None, b"plain", ()),
        (b"k-str", "str \u00e9".encode(), ()),
        (b"hk", b"hv", (("h1", b"v1"), ("h2", None))),
        (None, b"dict headers", (("a", b"x"),)),
        (None, b"stamped", ()),
        (b"tomb", None, ()),
        (b"", b"", ()),
    ]
    for res, (key, value, headers) in zip(results, expected, strict=True):
        r = by_pos[(res.partition, res.offset)]
        assert (r.key, r.value, r.headers) == (key, value, headers)
        assert r.timestamp == res.timestamp
    assert by_pos[(results[4].partition, results[4].offset)].timestamp == ts
    assert all(
        before_ms - 60_000 < res.timestamp <= before_ms + 60_000
        for i, res in enumerate(results)
        if i != 4
    )


def test_many_messages_arrive_once_in_order(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    n = 50_000
    with BackgroundProducer(client.cluster, client.topics[topic], batch_size=500) as p:
        futures = [p.produce(b"%d" % i, partition_key=b"k%d" % (i % 30)) for i in range(n)]
        assert p.flush(timeout=120) == 0
    assert all(f.done() for f in futures)
    results = [f.result(timeout=0) for f in futures]
    reads = consume(kafka_cluster, topic, 3, n)
    assert len(reads) == n
    by_pos = {(r.partition, r.offset): r.value for r in reads}
    assert len(by_pos) == n
    for i, res in enumerate(results):
        assert by_pos[(res.partition, res.offset)] == b"%d" % i
    per_partition: dict[int, list[int]] = {}
    for r in sorted(reads, key=lambda r: (r.partition, r.offset)):
        per_partition.setdefault(r.partition, []).append(int(r.value or b"-1"))
    for values in per_partition.values():
        assert values == sorted(values)  # send order kept per partition


@pytest.mark.parametrize("compression", [CompressionType.NONE, CompressionType.GZIP])
def test_keyed_records_of_one_length_read_back_exactly(
    kafka_cluster: Any,
    client: KafkaClient,
    topic: str,
    compression: CompressionType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys and values of one length each, as most traffic: the stage's
    records are encoded as runs where they are placed (ProducerBatch.add_run)
    and the sender only frames them. confluent-kafka reads back every key,
    value and timestamp, on the key's murmur2 partition, in send order."""
    framed = [0]
    real = batch_module.frame_record_runs

    def counting(*args: Any, **kwargs: Any) -> bytes:
        framed[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_module, "frame_record_runs", counting)
    n = 20_000
    keys = [b"user-%06d" % (i * 7919 % 5000) for i in range(n)]
    values = [b"event-%08d" % i for i in range(n)]
    with BackgroundProducer(
        client.cluster, client.topics[topic], compression=compression, batch_size=3000
    ) as p:
        futures = [p.produce(v, partition_key=k) for k, v in zip(keys, values, strict=True)]
        assert p.flush(timeout=120) == 0
    results = [f.result(timeout=0) for f in futures]
    assert framed[0] >= 3  # the runs were used (at least a batch per partition)
    reads = consume(kafka_cluster, topic, 3, n)
    assert len(reads) == n
    by_pos = {(r.partition, r.offset): r for r in reads}
    for key, value, res in zip(keys, values, results, strict=True):
        r = by_pos[(res.partition, res.offset)]
        assert (r.key, r.value, r.timestamp) == (key, value, res.timestamp)
        assert res.partition == partition_id_for_key(key, 3)
    for pid in range(3):
        sent = [r.value for r in sorted(reads, key=lambda r: r.offset) if r.partition == pid]
        assert sent == sorted(sent)  # send order kept per partition


@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_batches_are_acknowledged_while_a_produce_loop_runs(
    client: KafkaClient, topic: str, keyed: bool
) -> None:
    """A thread calling produce() back to back must not keep the sender from
    sending: linger_ms holds while the loop runs, not only after it. (Every
    produce() that opened a keyed stage wrote a wakeup byte, and the sender
    read them back a byte at a time, each read letting go of the GIL for the
    producer's whole switch interval: acknowledgements stopped for most of the
    loop. That starvation came and went from run to run: this test caught it
    in about half of them.)"""
    value = b"v" * 100
    keys = [b"key-%05d" % i for i in range(1000)]
    # The loop runs back to back until GOAL messages produced in it are
    # acknowledged, or CAP were produced. Nothing here depends on how fast the
    # brokers are next to this thread: a working sender reaches GOAL however
    # slow they are, as long as they answer ~3 requests while CAP messages are
    # produced (seconds); the starved one had acknowledged 655 of 300,000 when
    # its loop ended. (Counting samples without acknowledgements, every 10,000
    # messages, failed on a loaded machine whose brokers answered slower.)
    goal, cap = 30_000, 2_000_000
    with BackgroundProducer(
        client.cluster,
        client.topics[topic],
        required_acks=1,
        max_queued_messages=cap + 1000,
        max_buffer_bytes=1 << 30,
    ) as p:
        # Connections up and a first request answered: connecting is not the loop's.
        for k in range(3):
            p.produce(value, partition=k)
        assert p.flush(timeout=60) == 0
        base = p.metrics()["messages_sent"]
        acked = 0
        i = 0
        while i < cap:
            p.produce(value, partition_key=keys[i % 1000] if keyed else None)
            i += 1
            if i % 10_000 == 0:
                acked = p.metrics()["messages_sent"] - base
                if acked >= goal:
                    break
        assert p.flush(timeout=60) == 0
        total = p.metrics()["messages_sent"] - base
    assert total == i
    assert acked >= goal, f"only {acked} of {i} acknowledged while produce() ran back to back"


def test_delivery_reports_and_their_bound(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    p = client.topics[topic].get_producer(
        delivery_reports=True, max_queued_messages=20, block_on_queue_full=False
    )
    try:
        futures = [p.produce(b"r%d" % i) for i in range(20)]
        assert p.flush(timeout=60) == 0
        assert all(f.done() for f in futures)
        # 20 reports not read yet: the producer is full although all was acknowledged.
        assert p.metrics()["queued_messages"] == 20
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"no room")
        reports = [p.get_delivery_report(timeout=5) for _ in range(5)]
        assert all(err is None for _, err in reports)
        assert {id(f) for f, _ in reports} <= {id(f) for f in futures}
        more = [p.produce(b"s%d" % i) for i in range(5)]
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"full again")
        assert p.flush(timeout=60) == 0
        rest: list[tuple[DeliveryFuture, Any]] = []
        deadline = time.monotonic() + 30
        while len(rest) < 20 and time.monotonic() < deadline:
            rest.append(p.get_delivery_report(timeout=5))
        assert len(rest) == 20 and all(err is None for _, err in rest)
        seen = {id(f) for f, _ in reports + rest}
        assert seen == {id(f) for f in futures + more} and len(seen) == 25
        assert p.metrics()["queued_messages"] == 0
    finally:
        p.close(timeout=10)
    reads = consume(kafka_cluster, topic, 3, 25)
    assert sorted(r.value or b"" for r in reads) == sorted(
        [b"r%d" % i for i in range(20)] + [b"s%d" % i for i in range(5)]
    )


def test_undrained_reports_block_produce_until_read(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    p = client.topics[topic].get_producer(
        delivery_reports=True, max_queued_messages=10, queue_full_timeout_ms=20_000
    )
    try:
        for i in range(10):
            p.produce(b"%d" % i)
        assert p.flush(timeout=60) == 0
        unblocked = threading.Event()

        def blocked_produce() -> None:
            p.produce(b"eleventh")
            unblocked.set()

        t = threading.Thread(target=blocked_produce, daemon=True)
        t.start()
        assert not unblocked.wait(0.5)  # memory stays bounded: it waits
        _, err = p.get_delivery_report(timeout=5)
        assert err is None
        assert unblocked.wait(10)
        t.join(10)
    finally:
        p.close(timeout=10)


def test_a_lone_message_waits_out_linger_ms_and_no_longer(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    """linger_ms as Java's: a batch nothing fills leaves once its first record
    has waited linger_ms, never before (the sender's waits end on time to the
    microsecond, not rounded to whole milliseconds either way), and soon after."""
    linger_s = 0.1
    with client.topics[topic].get_producer(linger_ms=int(linger_s * 1000)) as p:
        p.produce(b"warm-up").result(timeout=10)  # connected, metadata known
        waits = []
        for i in range(3):  # one batch each, in turn
            acked = threading.Event()
            started = time.perf_counter()
            p.produce(b"lone-%d" % i, callback=lambda _f, e=acked: e.set())
            assert acked.wait(10)
            waits.append(time.perf_counter() - started)
    assert min(waits) >= linger_s, waits
    assert max(waits) < linger_s + 1.0, waits


def test_garbage_collected_producer_warns_and_still_delivers(
    kafka_cluster: Any, client: KafkaClient, topic: str
) -> None:
    p = client.topics[topic].get_producer(linger_ms=50)
    futures = [p.produce(b"gc-%d" % i) for i in range(100)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del p
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert all(f.done() for f in futures)
    assert all(f.exception(timeout=0) is None for f in futures)
    reads = consume(kafka_cluster, topic, 3, 100)
    assert sorted(r.value or b"" for r in reads) == sorted(b"gc-%d" % i for i in range(100))


def test_leader_down_stall_queue_full_flush_timeout_delivery_timeout_and_close(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any
) -> None:
    """A 1-partition, 1-replica topic whose only replica is stopped: nothing can
    be delivered. produce() blocks then raises, flush(timeout) reports the count,
    futures fail with DeliveryTimeoutError, close() is bounded."""
    if not hasattr(kafka_cluster, "brokers"):
        pytest.skip("needs the harness's own brokers")
    name = topic_factory(partitions=1, replication_factor=1)
    topic = client.topics[name]
    leader = topic.partitions[0].leader
    assert leader is not None
    victim = kafka_cluster.broker(leader.id)
    all_ids = {b.node_id for b in kafka_cluster.brokers}
    victim.kill()
    try:
        p = BackgroundProducer(
            client.cluster,
            topic,
            max_queued_messages=10,
            queue_full_timeout_ms=500,
            delivery_timeout_ms=4_000,
            retry_backoff_ms=50,
        )
        t0 = time.monotonic()
        futures = [p.produce(b"stalled-%d" % i) for i in range(10)]
        tb = time.monotonic()
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"no room")
        blocked = time.monotonic() - tb
        assert 0.45 <= blocked < 3.0, blocked
        tf = time.monotonic()
        left = p.flush(timeout=0.5)
        assert left == 10
        assert time.monotonic() - tf < 3.0
        for f in futures:
            err = f.exception(timeout=15)
            assert isinstance(err, DeliveryTimeoutError), err
        assert time.monotonic() - t0 < 15
        assert p.flush(timeout=1) == 0
        late = [p.produce(b"late-%d" % i) for i in range(3)]
        tc = time.monotonic()
        p.close(timeout=1.0)
        assert time.monotonic() - tc < 4.0
        assert all(f.done() and f.exception(timeout=0) is not None for f in late)
    finally:
        victim.start(timeout=90.0)
        kafka_cluster.wait_for_brokers(all_ids, timeout=90.0)


def test_close_resolves_requests_in_flight_to_a_silent_broker() -> None:
    """A broker that takes Produce requests and never answers: close(timeout)
    returns in time and no future is left pending (the in-flight ones fail
    with maybe_written=True: they were sent).

    The five messages are one batch by construction (batch_size=5 closes it
    at the fifth, a linger no test outlives keeps it open until then), so
    they leave in one request however busy the machine is. (Left to
    linger_ms=0, a busier machine sent the first alone; the others then waited
    behind it, queued, and failed as not written.)"""
    import importlib.util
    import pathlib

    # The fake broker of test_client.py: answers ApiVersions, silent on Produce.
    spec = importlib.util.spec_from_file_location(
        "_grete_test_client", pathlib.Path(__file__).with_name("test_client.py")
    )
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake_broker: Any = module._FakeBroker

    from grete.cluster import Broker, Cluster, Partition, Topic
    from grete.connection import ConnectionConfig
    from grete.network import Network

    fake = fake_broker(silent=False, metadata_answers=0)
    network = Network(
        [("127.0.0.1", fake.port)], ConnectionConfig(connect_timeout_s=2, request_timeout_s=30)
    )
    try:
        cluster = Cluster(network)
        broker = Broker(1, "127.0.0.1", fake.port)
        cluster.brokers = {1: broker}
        network.set_brokers({1: ("127.0.0.1", fake.port)})
        topic = Topic(cluster, "t")
        part = Partition(topic, 0)
        part.leader = broker
        topic.partitions[0] = part
        cluster._topics["t"] = topic
        p = BackgroundProducer(cluster, topic, required_acks=1, batch_size=5, linger_ms=600_000)
        futures = [p.produce(b"v%d" % i) for i in range(5)]
        deadline = time.monotonic() + 30
        while "Produce" not in fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake.requests.count("Produce") == 1, fake.requests
        assert not any(f.done() for f in futures)
        t0 = time.monotonic()
        p.close(timeout=1.0)
        # Bounded by its timeout (plus joining the sender); the silent broker
        # alone would hold the request for request_timeout_s (30 s).
        assert time.monotonic() - t0 < 6.0
        pending = [f for f in futures if not f.done()]
        assert pending == [], f"{len(pending)} future(s) unresolved after close()"
        assert fake.requests.count("Produce") == 1, fake.requests
        for f in futures:
            assert isinstance(f.exception(timeout=0), KafkaError), f.exception(timeout=0)
            assert f.maybe_written
    finally:
        network.close()
        fake.close()
