"""KafkaProducer (one producer, the topic given per message) against a real
3-broker cluster, read back with confluent-kafka (librdkafka).

(1) many topics, one core: one sender thread, one producer id (read from the
    brokers' logs with Kafka's own DumpLogSegments), keys on the Java
    client's partitions, exactly once and in order per partition through a
    leader SIGKILL and restart;
(2) a missing topic fails only its own messages (UnknownTopicOrPartition,
    after unknown_topic_timeout_ms), the others are delivered;
(3) the buffer bound holds across topics: a topic whose messages are held
    takes at most the bound, then a healthy topic is refused until they
    resolve (the topic created, or its messages failed);
(4) close() is bounded with messages for many topics stuck behind a silent
    (SIGSTOPped) broker: every future resolved, the failures with a reason;
and headers, timestamps, explicit partitions, DeliveryResult.topic and
per-topic metrics, through ``client.producer()`` and ``KafkaProducer(client)``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from grete import (
    DeliveryFuture,
    DeliveryResult,
    KafkaClient,
    KafkaError,
    KafkaProducer,
    ProducerQueueFullError,
    UnknownTopicOrPartition,
)
from grete.partitioners import partition_id_for_key

from ._brokers import heal, restart_all
from ._consume import Read, consume_topics

pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration

SENDER = "grete-sender"
PARTITIONS = 3
METRIC_NAMES = ("messages_sent", "bytes_sent", "batches", "retries", "errors")


@pytest.fixture
def client(kafka_cluster: Any) -> Iterator[KafkaClient]:
    c = KafkaClient(kafka_cluster.bootstrap_servers)
    yield c
    c.close()


def _senders() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == SENDER}


def _needs_harness(kafka_cluster: Any) -> None:
    if not hasattr(kafka_cluster, "brokers") or not hasattr(kafka_cluster, "wait_for_brokers"):
        pytest.skip("needs the harness's own brokers")
    assert all(b.is_running for b in kafka_cluster.brokers)


def _assert_metrics_add_up(m: dict[str, Any]) -> None:
    """Per-topic counters sum to the totals."""
    topics = m["topics"]
    for name in METRIC_NAMES:
        assert sum(t[name] for t in topics.values()) == m[name], (name, m)


def _assert_sender_gone(thread: threading.Thread) -> None:
    # close() returns once the thread said it stopped; its last lines may
    # still be running: a bounded join, then it must be gone.
    thread.join(10.0)
    assert not thread.is_alive(), "the sender thread outlived close()"


# -- (1) many topics, one core, through a leader kill --------------------------

NUM_TOPICS = 20
NUM_KEYS = 100
# At least this many messages; more (a trickle) until the kill/restart cycle
# is over, so that the kill lands mid-run; at most MAX_MESSAGES.
MIN_MESSAGES = int(os.environ.get("GRETE_KP_FAULT_MESSAGES", "60000"))
MAX_MESSAGES = 10 * MIN_MESSAGES
PRODUCE_BUDGET_S = 150.0
READ_BUDGET_S = 120.0
DOWN_S = 3.0
TRICKLE = 500  # messages per TRICKLE_PAUSE_S once MIN_MESSAGES were sent
TRICKLE_PAUSE_S = 0.05


def _topic_of(i: int) -> int:
    return i % NUM_TOPICS


def _key(i: int) -> bytes:
    return b"key-%03d" % ((i // NUM_TOPICS) % NUM_KEYS)


def _value(i: int) -> bytes:
    return b"kp-%09d" % i


class _Killer:
    """After ``first_delay_s``, SIGKILLs the broker leading partition 0 of
    ``topic``, waits DOWN_S, restarts it and waits until the metadata lists
    every broker again."""

    def __init__(self, kafka_cluster: Any, topics: list[str], first_delay_s: float = 1.0) -> None:
        self.kafka_cluster = kafka_cluster
        self.topics = topics
        self.first_delay_s = first_delay_s
        self.victim: int | None = None
        self.led: set[tuple[str, int]] = set()
        self.killed_at: float | None = None
        self.restarted_at: float | None = None
        self.error: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        client = KafkaClient(self.kafka_cluster.bootstrap_servers)
        try:
            if self.stop.wait(self.first_delay_s):
                return
            client.update_cluster()
            leader = client.topics[self.topics[0]].partitions[0].leader
            assert leader is not None
            self.victim = leader.id
            for name in self.topics:
                for p, part in client.topics[name].partitions.items():
                    if part.leader is not None and part.leader.id == leader.id:
                        self.led.add((name, p))
            self.kafka_cluster.broker(leader.id).kill()
            self.killed_at = time.monotonic()
            time.sleep(DOWN_S)
            restart_all(self.kafka_cluster)
            self.restarted_at = time.monotonic()
        except BaseException as exc:  # reported by the test
            self.error.append(exc)
        finally:
            client.close()


_DUMPING = re.compile(r"^Dumping (\S+)")
_PRODUCER = re.compile(r"producerId: (-?\d+) producerEpoch: (-?\d+)")


def _producer_ids_on_brokers(
    kafka_cluster: Any, topics: list[str], partitions: int
) -> dict[tuple[str, int], set[tuple[int, int]]]:
    """(producer id, epoch) of every record batch in every replica of each
    partition, as the brokers wrote them: Kafka's own DumpLogSegments over
    the brokers' log dirs (one JVM for all of them). grete's protocol core
    does not speak DescribeProducers."""
    files: dict[str, tuple[str, int]] = {}
    for broker in kafka_cluster.brokers:
        for name in topics:
            for p in range(partitions):
                for seg in sorted(Path(broker.data_dir, f"{name}-{p}").glob("*.log")):
                    files[str(seg)] = (name, p)
    assert files, "no log segments found"
    out = kafka_cluster.run_java_tool(
        "kafka.tools.DumpLogSegments", "--files", ",".join(files), timeout=300.0, heap_mb=512
    ).stdout
    found: dict[tuple[str, int], set[tuple[int, int]]] = defaultdict(set)
    where: tuple[str, int] | None = None
    for line in out.splitlines():
        m = _DUMPING.match(line)
        if m:
            where = files.get(m.group(1))
            assert where is not None, line
            continue
        m = _PRODUCER.search(line)
        if m and where is not None:
            found[where].add((int(m.group(1)), int(m.group(2))))
    return found


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_one_producer_many_topics_one_thread_one_producer_id_through_a_leader_kill(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """One KafkaProducer, keyed messages round-robin over 20 topics of 3
    partitions: one sender thread whatever the number of topics (none left
    after close), one producer id in every partition (as the brokers logged
    it), every key on the Java client's partition, and, through a SIGKILL of
    a leader mid-run and its restart, every message in the log exactly once,
    in produce order per partition, at the offset its future reported."""
    _needs_harness(kafka_cluster)
    topics = [topic_factory(partitions=PARTITIONS, replication_factor=3) for _ in range(NUM_TOPICS)]
    where = [partition_id_for_key(b"key-%03d" % k, PARTITIONS) for k in range(NUM_KEYS)]
    client = KafkaClient(kafka_cluster.bootstrap_servers)
    before = _senders()
    futures: list[DeliveryFuture] = []
    killer = _Killer(kafka_cluster, topics)
    thread = threading.Thread(target=killer.run, name="killer", daemon=True)
    producer: KafkaProducer | None = None
    try:
        producer = KafkaProducer(client, delivery_timeout_ms=240_000)
        started = _senders() - before
        assert len(started) == 1, started  # the constructor started the one thread
        (sender,) = started
        produce = producer.produce
        t0 = time.monotonic()
        thread.start()
        i = 0
        senders_while: set[int] = set()
        while i < MAX_MESSAGES:
            if i % TRICKLE == 0:
                senders_while.add(len(_senders() - before))
                if i >= MIN_MESSAGES and not thread.is_alive():
                    break
                if time.monotonic() - t0 > PRODUCE_BUDGET_S:
                    break
                if i >= MIN_MESSAGES:
                    time.sleep(TRICKLE_PAUSE_S)
            futures.append(produce(topics[i % NUM_TOPICS], _value(i), _key(i)))
            i += 1
        count = i
        end = time.monotonic()
        thread.join(200.0)
        assert not thread.is_alive(), "the killer thread hung"
        assert not killer.error, killer.error
        left = producer.flush(timeout=PRODUCE_BUDGET_S)
        flushed = time.monotonic()
        senders_while.add(len(_senders() - before))
        producer_id = producer._core.engine.producer_id
        metrics = producer.metrics()
        producer.close(timeout=30)
        _assert_sender_gone(sender)
        assert not (_senders() - before), "a sender thread left after close()"
    finally:
        killer.stop.set()
        if thread.is_alive():
            thread.join(200.0)
        if producer is not None:
            producer.close(timeout=30)  # a no-op unless an assertion came first
        client.close()
        heal(kafka_cluster, dict.fromkeys(topics, PARTITIONS))
    print(
        f"\n{count} messages to {NUM_TOPICS} topics: produce() {end - t0:.1f}s, flushed at "
        f"{flushed - t0:.1f}s; broker {killer.victim} killed at "
        f"{(killer.killed_at or t0) - t0:.1f}s (leading {len(killer.led)} partitions), back at "
        f"{(killer.restarted_at or t0) - t0:.1f}s; retries {metrics['retries']}"
    )
    assert senders_while == {1}, senders_while
    assert killer.killed_at is not None and killer.restarted_at is not None
    assert killer.killed_at < end, "the kill came after produce() finished"
    assert killer.led, "the victim led no partition"
    assert left == 0
    assert count >= MIN_MESSAGES

    # Every future: acknowledged, naming its topic and the key's partition.
    want: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    results: list[DeliveryResult] = []
    failed = []
    for i, f in enumerate(futures):
        err = f.exception(timeout=0)
        if err is not None:
            failed.append((i, err))
            continue
        r = f.result(timeout=0)
        name = topics[_topic_of(i)]
        p = where[(i // NUM_TOPICS) % NUM_KEYS]
        assert (r.topic, r.partition) == (name, p), (i, r)
        want[(name, p)].append(_value(i))
        results.append(r)
    assert not failed, failed[:5]

    # Metrics: per topic, what was produced to it; they add up to the totals.
    per_topic = Counter(topics[_topic_of(i)] for i in range(count))
    assert metrics["errors"] == 0 and metrics["messages_sent"] == count
    assert {t: m["messages_sent"] for t, m in metrics["topics"].items()} == per_topic
    _assert_metrics_add_up(metrics)

    # The log: exactly once, in produce order per partition, offsets 0..n-1.
    log = consume_topics(
        kafka_cluster,
        dict.fromkeys(topics, PARTITIONS),
        count,
        settle_s=2.0,
        timeout_s=READ_BUDGET_S,
        group_prefix="grete-kp-faults",
    )
    got: dict[tuple[str, int], list[Read]] = defaultdict(list)
    for name, reads in log.items():
        for read in reads:
            got[(name, read.partition)].append(read)
    total = 0
    for name in topics:
        for p in range(PARTITIONS):
            reads = got.get((name, p), [])
            total += len(reads)
            values = [r.value for r in reads]
            expected = want[(name, p)]
            if values != expected:
                dupes = len(values) - len(set(values))
                missing = len(set(expected) - set(values))
                first_bad = next(
                    (j for j, (a, b) in enumerate(zip(values, expected, strict=False)) if a != b),
                    None,
                )
                pytest.fail(
                    f"{name}/{p}: read {len(values)}, want {len(expected)}; {dupes} "
                    f"duplicate(s), {missing} missing, first difference at {first_bad}"
                )
            assert [r.offset for r in reads] == list(range(len(reads))), (name, p)
            assert all(r.key is not None and where[int(r.key[4:])] == p for r in reads)
    assert total == count
    for i, r in enumerate(results):
        assert got[(r.topic, r.partition)][r.offset].value == _value(i)

    # One producer id for every partition of every topic, as the brokers wrote it.
    ids = _producer_ids_on_brokers(kafka_cluster, topics, PARTITIONS)
    assert set(ids) == {(name, p) for name in topics for p in range(PARTITIONS)}, (
        "partitions with no batch found in the logs"
    )
    pids = {pid for pairs in ids.values() for pid, _epoch in pairs}
    epochs = sorted({epoch for pairs in ids.values() for _pid, epoch in pairs})
    print(f"producer ids in the brokers' logs: {sorted(pids)} (epochs {epochs})")
    assert producer_id >= 0
    assert pids == {producer_id}, {
        k: sorted(v) for k, v in ids.items() if {pid for pid, _ in v} != {producer_id}
    }


# -- (2) a missing topic among good ones ---------------------------------------

UNKNOWN_TOPIC_S = 1.5
# Past unknown_topic_timeout_ms, the failure must come within this (a metadata
# round trip or two; generous for a loaded 2-core machine).
FAIL_SLACK_S = 15.0


def _needs_no_auto_create(kafka_cluster: Any) -> None:
    if getattr(kafka_cluster, "auto_create_topics", True):
        pytest.skip("needs a cluster that does not auto-create topics")


def test_a_missing_topic_fails_only_its_own_messages(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any
) -> None:
    """Messages for a topic the cluster does not list fail with
    UnknownTopicOrPartition no sooner than unknown_topic_timeout_ms after the
    first was produced, and within a bound after it; the other topics'
    messages, produced in between, are all delivered and read back."""
    _needs_no_auto_create(kafka_cluster)
    good = [topic_factory(partitions=PARTITIONS) for _ in range(3)]
    missing = f"kp-missing-{uuid.uuid4().hex}"
    failed_at: dict[int, float] = {}
    lock = threading.Lock()

    def note(f: DeliveryFuture) -> None:
        with lock:
            failed_at[id(f)] = time.monotonic()

    good_futures: list[tuple[str, bytes, DeliveryFuture]] = []
    missing_futures: list[DeliveryFuture] = []
    with client.producer(unknown_topic_timeout_ms=UNKNOWN_TOPIC_S * 1000) as p:
        t0 = time.monotonic()
        for i in range(600):
            name = good[i % len(good)]
            value = b"good-%05d" % i
            good_futures.append((name, value, p.produce(name, value, b"k%d" % (i % 17))))
            if i % 10 == 0:
                missing_futures.append(p.produce(missing, b"lost-%05d" % i, callback=note))
        last_missing = time.monotonic()
        assert p.flush(timeout=60) == 0
        m = p.metrics()
    assert all(f.done() for _, _, f in good_futures) and all(f.done() for f in missing_futures)
    for f in missing_futures:
        err = f.exception(timeout=0)
        assert isinstance(err, UnknownTopicOrPartition), err
        assert missing in str(err)
        assert not f.maybe_written
    first = min(failed_at.values()) - t0
    last = max(failed_at.values()) - last_missing
    assert first >= UNKNOWN_TOPIC_S, f"failed after {first:.3f}s, before unknown_topic_timeout_ms"
    assert last <= UNKNOWN_TOPIC_S + FAIL_SLACK_S, f"failed {last:.1f}s after the last produce"

    for name, value, f in good_futures:
        r = f.result(timeout=0)
        assert r.topic == name and r.offset >= 0, (value, r)
    n_missing = len(missing_futures)
    assert m["errors"] == n_missing and m["messages_sent"] == len(good_futures)
    assert m["topics"][missing]["errors"] == n_missing
    assert m["topics"][missing]["messages_sent"] == 0
    for name in good:
        assert m["topics"][name]["errors"] == 0
        assert m["topics"][name]["messages_sent"] == sum(1 for t, _, _ in good_futures if t == name)
    _assert_metrics_add_up(m)

    log = consume_topics(kafka_cluster, dict.fromkeys(good, PARTITIONS), len(good_futures))
    at = {(name, r.partition, r.offset): r.value for name, reads in log.items() for r in reads}
    assert len(at) == len(good_futures)
    for name, value, f in good_futures:
        r = f.result(timeout=0)
        assert at[(name, r.partition, r.offset)] == value


# -- (3) the buffer bound across topics ----------------------------------------

BOUND_MESSAGES = 50
BOUND_BYTES = 16 * 1024
SLOW_VALUE = b"s" * 1000


class _Sampler:
    """Reads metrics() every few ms on a thread of its own; keeps the highest
    queued_messages and queued_bytes seen."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.max_messages = 0
        self.max_bytes = 0
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="sampler", daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + 180.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            m = self.producer.metrics()
            self.max_messages = max(self.max_messages, m["queued_messages"])
            self.max_bytes = max(self.max_bytes, m["queued_bytes"])
            self.samples += 1
            self.stop.wait(0.002)

    def __enter__(self) -> _Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10.0)
        assert not self.thread.is_alive()


@pytest.mark.parametrize("resolution", ["created", "failed"])
@pytest.mark.parametrize("bound", ["messages", "bytes"])
def test_a_held_topic_takes_at_most_the_bound_and_blocks_only_until_it_resolves(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any, bound: str, resolution: str
) -> None:
    """Messages for a topic the cluster does not list yet are held, counted
    against the one buffer bound: they fill it and no more; then a produce()
    to a healthy topic (block_on_queue_full=False) raises
    ProducerQueueFullError. Once the held messages resolve (the topic is
    created and they are delivered, or unknown_topic_timeout_ms fails them)
    the healthy topic produces again. metrics() never shows more queued than
    the bound."""
    _needs_no_auto_create(kafka_cluster)
    healthy = topic_factory(partitions=PARTITIONS)
    slow = f"kp-held-{uuid.uuid4().hex}"
    options: dict[str, Any] = {
        "block_on_queue_full": False,
        "unknown_topic_timeout_ms": 120_000 if resolution == "created" else 5_000,
    }
    if bound == "messages":
        options["max_queued_messages"] = BOUND_MESSAGES
    else:
        options["max_buffer_bytes"] = BOUND_BYTES
    with client.producer(**options) as p:
        # The healthy topic known and its connections made; nothing queued.
        assert p.produce(healthy, b"warm-up", b"k").result(timeout=60).topic == healthy
        assert p.flush(timeout=60) == 0
        with _Sampler(p) as sampler:
            held: list[DeliveryFuture] = []
            held_at = time.monotonic()
            refused = None
            for _ in range(BOUND_BYTES // 100):
                try:
                    held.append(p.produce(slow, SLOW_VALUE))
                except ProducerQueueFullError as exc:
                    refused = exc
                    break
                m = p.metrics()
                assert m["queued_messages"] <= options.get("max_queued_messages", 100_000), m
                assert m["queued_bytes"] <= options.get("max_buffer_bytes", 64 << 20), m
            assert refused is not None, "the held topic was never refused"
            if bound == "messages":
                assert len(held) == BOUND_MESSAGES
            else:
                assert 0 < len(held) * len(SLOW_VALUE) <= BOUND_BYTES
            # The healthy topic is refused too: the bound is the producer's.
            with pytest.raises(ProducerQueueFullError):
                p.produce(healthy, SLOW_VALUE, b"k")
            with pytest.raises(ProducerQueueFullError):
                p.produce(healthy, SLOW_VALUE, partition=1)
            m = p.metrics()
            assert not any(f.done() for f in held), "held messages resolved already"
            assert time.monotonic() - held_at < options["unknown_topic_timeout_ms"] / 1000
            assert m["queued_messages"] == len(held), m
            if resolution == "created":
                topic_factory(partitions=1, name=slow)
                results = [f.result(timeout=60) for f in held]
                assert all(r.topic == slow and r.partition == 0 for r in results)
                assert [r.offset for r in results] == list(range(len(held)))
            else:
                for f in held:
                    assert isinstance(f.exception(timeout=60), UnknownTopicOrPartition)
            # A future resolves before its queue slot is released: flush()
            # returns once every slot is.
            assert p.flush(timeout=60) == 0
            after = p.produce(healthy, SLOW_VALUE, b"k")
            assert after.result(timeout=60).topic == healthy
            assert p.flush(timeout=60) == 0
        m = p.metrics()
    assert sampler.samples > 0
    if bound == "messages":
        assert sampler.max_messages <= BOUND_MESSAGES
    else:
        assert sampler.max_bytes <= BOUND_BYTES
    assert m["queued_messages"] == 0 and m["queued_bytes"] == 0
    _assert_metrics_add_up(m)
    assert m["topics"][healthy]["messages_sent"] == 2
    if resolution == "created":
        assert m["topics"][slow]["messages_sent"] == len(held)
        log = consume_topics(kafka_cluster, {slow: 1}, len(held))
        assert [r.value for r in log[slow]] == [SLOW_VALUE] * len(held)
    else:
        assert m["topics"][slow]["errors"] == len(held)


# -- (4) close() bounded, many topics stuck --------------------------------------

CLOSE_TIMEOUT_S = 2.0
# close(timeout) promises every message reported within the timeout; its
# shutdown takes up to a second more to let the sender thread go. Honest on a
# loaded 2-core machine.
CLOSE_SLACK_S = 6.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_close_is_bounded_with_many_topics_stuck_behind_a_silent_broker(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """10 topics, one broker SIGSTOPped (its connections stay open, nothing
    comes back) with messages for every topic queued and in flight:
    close(timeout=2) returns within a bound, every future resolved, the
    failed ones with a reason (those the silent broker led among them); no
    sender thread left."""
    _needs_harness(kafka_cluster)
    topics = [topic_factory(partitions=PARTITIONS, replication_factor=3) for _ in range(10)]
    client = KafkaClient(kafka_cluster.bootstrap_servers)
    before = _senders()
    futures: list[tuple[str, int, DeliveryFuture]] = []
    victim_pid: int | None = None
    producer: KafkaProducer | None = None
    try:
        producer = KafkaProducer(client, delivery_timeout_ms=120_000)
        (sender,) = _senders() - before
        # Every topic known, connections to every leader made, before the silence.
        warm = [producer.produce(t, b"warm", partition=p) for t in topics for p in range(3)]
        assert producer.flush(timeout=60) == 0
        assert all(f.exception(timeout=0) is None for f in warm)
        client.update_cluster()
        leader = client.topics[topics[0]].partitions[0].leader
        assert leader is not None
        led = {
            (t, p)
            for t in topics
            for p, part in client.topics[t].partitions.items()
            if part.leader is not None and part.leader.id == leader.id
        }
        victim_pid = kafka_cluster.broker(leader.id).pid
        assert victim_pid is not None
        os.kill(victim_pid, signal.SIGSTOP)
        for i in range(3000):
            t = topics[i % len(topics)]
            key = b"k%d" % (i % 50)
            futures.append(
                (t, partition_id_for_key(key, PARTITIONS), producer.produce(t, b"v%d" % i, key))
            )
        t0 = time.monotonic()
        producer.close(timeout=CLOSE_TIMEOUT_S)
        took = time.monotonic() - t0
        unresolved = sum(1 for _, _, f in futures if not f.done())
        metrics = producer.metrics()
        _assert_sender_gone(sender)
    finally:
        if victim_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim_pid, signal.SIGCONT)
        if producer is not None:
            producer.close(timeout=CLOSE_TIMEOUT_S)  # a no-op unless an assertion came first
        client.close()
        heal(kafka_cluster, dict.fromkeys(topics, PARTITIONS))
    print(f"\nclose({CLOSE_TIMEOUT_S}) took {took:.2f}s; {metrics['errors']} failed")
    assert took <= CLOSE_TIMEOUT_S + CLOSE_SLACK_S, f"close({CLOSE_TIMEOUT_S}) took {took:.1f}s"
    assert unresolved == 0
    failed: list[tuple[str, int, KafkaError]] = []
    for t, p, f in futures:
        err = f.exception(timeout=0)
        if err is None:
            r = f.result(timeout=0)
            assert (r.topic, r.partition) == (t, p) and r.offset >= 0
            continue
        assert isinstance(err, KafkaError) and str(err), repr(err)
        failed.append((t, p, err))
    assert any((t, p) in led for t, p, _ in futures), "none for the silent broker's partitions"
    # Requests in flight to the silent broker cannot be answered before close()
    # gives up on them (a new leader comes only after its session times out).
    assert any((t, p) in led for t, p, _ in failed), "nothing failed"
    assert metrics["errors"] == len(failed)
    _assert_metrics_add_up(metrics)


# -- headers, timestamps, explicit partitions; both ways to make one ------------

MAKERS: dict[str, Callable[..., KafkaProducer]] = {
    "client.producer": lambda client, **kw: client.producer(**kw),
    "KafkaProducer(client)": lambda client, **kw: KafkaProducer(client, **kw),
}


@pytest.mark.parametrize("make", sorted(MAKERS))
def test_headers_timestamps_partitions_and_topics_read_back(
    kafka_cluster: Any, client: KafkaClient, topic_factory: Any, make: str
) -> None:
    """The same messages to two topics, through ``client.producer()`` and
    ``KafkaProducer(client)``: each future's DeliveryResult names its topic,
    the partition asked for or the key's, the timestamp given; confluent-kafka
    reads back the keys, values, headers and timestamps at those offsets;
    callbacks ran once each; per-topic metrics add up to the totals."""
    topics = [topic_factory(partitions=PARTITIONS) for _ in range(2)]
    # An hour ago: a fixed stamp from years back would be past the topic's
    # retention (7 days), and the broker's retention check (every 5 min)
    # deleted the segment between produce and read-back once.
    ts = int(time.time() * 1000) - 3_600_000
    called: list[DeliveryFuture] = []
    lock = threading.Lock()

    def cb(f: DeliveryFuture) -> None:
        with lock:
            called.append(f)

    # (key, value, headers read back, timestamp or None, partition or None)
    cases: list[tuple[Any, Any, Any, tuple[tuple[str, bytes | None], ...], int | None, int | None]]
    cases = [
        (None, b"plain", None, (), None, None),
        ("k-str", "str \u00e9", None, (), None, None),
        (b"hk", b"hv", [("h1", b"v1"), ("h2", None)], (("h1", b"v1"), ("h2", None)), None, None),
        (None, b"dict headers", {"a": "x"}, (("a", b"x"),), None, None),
        (None, b"stamped", None, (), ts, 2),
        (b"tomb", None, None, (), None, 1),
        (b"", b"", None, (), ts + 1, None),
        (b"to-0", b"explicit", [("h", b"")], (("h", b""),), ts + 2, 0),
    ]
    before = _senders()
    sent: list[tuple[str, int, DeliveryFuture]] = []
    with MAKERS[make](client, linger_ms=20) as p:
        assert isinstance(p, KafkaProducer)
        (sender,) = _senders() - before
        before_ms = int(time.time() * 1000)
        for n, t in enumerate(topics):
            for c, (key, value, headers, _, stamp, part) in enumerate(cases):
                f = p.produce(
                    t, value, key, partition=part, timestamp=stamp, headers=headers, callback=cb
                )
                sent.append((t, c, f))
            assert len(_senders() - before) == 1, n
        assert p.flush(timeout=60) == 0
        after_ms = int(time.time() * 1000)
        m = p.metrics()
    _assert_sender_gone(sender)
    assert len(called) == len(sent) and {id(f) for f in called} == {id(f) for _, _, f in sent}
    log = consume_topics(kafka_cluster, dict.fromkeys(topics, PARTITIONS), len(sent))
    at = {(t, r.partition, r.offset): r for t, reads in log.items() for r in reads}
    assert len(at) == len(sent)
    for t, c, f in sent:
        key, value, _, headers_back, stamp, part = cases[c]
        r = f.result(timeout=0)
        key_b = key.encode() if isinstance(key, str) else key
        value_b = value.encode() if isinstance(value, str) else value
        assert r.topic == t
        if part is not None:
            assert r.partition == part
        elif key_b is not None:
            assert r.partition == partition_id_for_key(key_b, PARTITIONS)
        if stamp is not None:
            assert r.timestamp == stamp
        else:
            assert before_ms - 60_000 <= r.timestamp <= after_ms + 60_000
        read = at[(t, r.partition, r.offset)]
        assert (read.key, read.value, read.headers) == (key_b, value_b, headers_back), (c, read)
        assert read.timestamp == r.timestamp
    assert m["messages_sent"] == len(sent) and m["errors"] == 0
    assert {t: v["messages_sent"] for t, v in m["topics"].items()} == dict.fromkeys(
        topics, len(cases)
    )
    _assert_metrics_add_up(m)
