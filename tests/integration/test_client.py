"""KafkaClient against the real 3-broker cluster, and against misbehaving fake brokers.

Every test that stops or kills a broker restarts it in a ``finally`` and waits
until the metadata lists all brokers again: the cluster is shared by the session.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.errors import KafkaConnectionError, KafkaTimeoutError, UnknownTopicOrPartition
from grete.producer import Producer
from grete.protocol import messages as m
from grete.protocol.framing import decode_request_frame, encode_response_frame
from grete.testing import KafkaCluster

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``check`` until true; bounded in time (and so in count)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def _restore_cluster(cluster: KafkaCluster) -> None:
    """Start every stopped broker and wait until the metadata lists them all."""
    for broker in cluster.brokers:
        if not broker.is_running:
            broker.start()
    cluster.wait_for_brokers({b.node_id for b in cluster.brokers}, timeout=60)


# ---------------------------------------------------------------- metadata


def test_metadata_shows_brokers_and_topic(kafka_cluster: KafkaCluster, topic: str) -> None:
    with KafkaClient(kafka_cluster.bootstrap_servers, client_id="grete-test") as client:
        assert set(client.brokers) == {b.node_id for b in kafka_cluster.brokers}
        for broker in kafka_cluster.brokers:
            meta = client.brokers[broker.node_id]
            assert (meta.id, meta.host, meta.port) == (
                broker.node_id,
                "127.0.0.1",
                broker.port("PLAINTEXT"),
            )
        t = client.topics[topic]
        assert t.name == topic
        assert sorted(t.partitions) == [0, 1, 2]
        broker_ids = set(client.brokers)

        def isr_full() -> bool:
            client.update_cluster()
            return all(len(p.isr) == 3 for p in t.partitions.values())

        _wait_for("a full ISR", isr_full, 20)
        for pid, p in t.partitions.items():
            assert p.id == pid and p.topic is t
            assert p.leader is not None and p.leader.id in broker_ids
            assert {b.id for b in p.replicas} == broker_ids
            assert {b.id for b in p.isr} == broker_ids
            assert p.leader in p.replicas
            assert p.leader_epoch >= 0
        # Leadership is spread over the brokers for a fresh topic.
        assert len({p.leader.id for p in t.partitions.values() if p.leader}) >= 2


def test_topics_by_str_and_bytes(kafka_cluster: KafkaCluster, topic: str) -> None:
    with KafkaClient(kafka_cluster.bootstrap_servers) as client:
        by_str = client.topics[topic]
        by_bytes = client.topics[topic.encode()]
        assert by_str is by_bytes
        assert topic in client.topics
        assert topic.encode() in client.topics
        assert topic in list(client.topics)
        # A refresh updates the same objects in place.
        client.update_cluster()
        assert client.topics[topic] is by_str
        assert sorted(by_str.partitions) == [0, 1, 2]


def test_unknown_topic_without_auto_create_fails_fast(kafka_cluster: KafkaCluster) -> None:
    name = f"no-such-topic-{time.monotonic_ns()}"
    with KafkaClient(kafka_cluster.bootstrap_servers, allow_auto_create_topics=False) as client:
        t0 = time.monotonic()
        with pytest.raises(UnknownTopicOrPartition, match=name):
            client.topics[name]
        assert time.monotonic() - t0 < 2.0
        assert name not in client.topics


def test_unknown_topic_with_auto_create_on_a_cluster_that_does_not(
    kafka_cluster: KafkaCluster,
) -> None:
    # The test cluster runs with auto.create.topics.enable=false: after a short
    # grace the lookup gives up rather than waiting for topic_wait_s.
    name = f"not-created-{time.monotonic_ns()}"
    with KafkaClient(kafka_cluster.bootstrap_servers, allow_auto_create_topics=True) as client:
        t0 = time.monotonic()
        with pytest.raises(UnknownTopicOrPartition, match="did not auto-create"):
            client.topics[name.encode()]
        assert time.monotonic() - t0 < 5.0


def test_bootstrap_with_first_host_dead(kafka_cluster: KafkaCluster) -> None:
    dead = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with KafkaClient(f"{dead},{kafka_cluster.bootstrap_servers}") as client:
        assert time.monotonic() - t0 < 10
        assert set(client.brokers) == {b.node_id for b in kafka_cluster.brokers}
        client.update_cluster()
        assert len(client.brokers) == len(kafka_cluster.brokers)


def test_bootstrap_all_hosts_dead_is_a_connection_error() -> None:
    hosts = [f"127.0.0.1:{_closed_port()}" for _ in range(3)]
    t0 = time.monotonic()
    with pytest.raises(KafkaConnectionError, match="no broker answered"):
        KafkaClient(hosts, connect_timeout_ms=2000)
    assert time.monotonic() - t0 < 3.0


# ---------------------------------------------------------------- broker failure


def test_broker_killed_and_restarted_while_in_use(kafka_cluster: KafkaCluster, topic: str) -> None:
    all_ids = {b.node_id for b in kafka_cluster.brokers}
    client = KafkaClient(kafka_cluster.bootstrap_servers, socket_timeout_ms=10_000)
    try:
        t = client.topics[topic]
        # The victim leads at least one partition of the topic.
        leaders = {p.leader.id for p in t.partitions.values() if p.leader is not None}
        victim = kafka_cluster.broker(min(leaders))
        producer = Producer(client.cluster, t, required_acks=-1)
        before = producer.produce([b"a", (b"k", b"v"), b"c"])
        assert len(before) == 3 and all(r.offset >= 0 for r in before)

        victim.kill()
        try:
            _wait_for(
                "the killed broker to leave the client's metadata",
                lambda: _gone(client, victim.node_id, topic),
                30,
            )
            assert set(client.brokers) == all_ids - {victim.node_id}
            for p in t.partitions.values():
                assert p.leader is not None and p.leader.id != victim.node_id
                assert victim.node_id not in {b.id for b in p.isr}

            # Two of three replicas with min.insync.replicas=2: acks=all still works,
            # through the same producer and Topic object, with no user action.
            during = producer.produce([f"during-{i}".encode() for i in range(20)])
            assert len(during) == 20 and all(r.offset >= 0 for r in during)
            assert {r.partition for r in during} <= set(t.partitions)
        finally:
            victim.start()

        _wait_for(
            "the restarted broker in the client's metadata",
            lambda: _back(client, victim.node_id),
            60,
        )
        assert set(client.brokers) == all_ids
        after = producer.produce([b"x", (b"k2", b"y"), b"z"])
        assert len(after) == 3 and all(r.offset >= 0 for r in after)
        # Offsets only grow per partition: nothing was rewritten across the failover.
        last: dict[int, int] = {}
        for r in [*before, *during, *after]:
            assert r.offset > last.get(r.partition, -1)
            last[r.partition] = r.offset
        producer.close()
    finally:
        client.close()
        _restore_cluster(kafka_cluster)


def _gone(client: KafkaClient, node_id: int, topic: str) -> bool:
    try:
        client.update_cluster()
    except (KafkaConnectionError, KafkaTimeoutError):
        return False
    t = client.topics[topic]
    return node_id not in client.brokers and all(
        p.leader is not None and p.leader.id != node_id for p in t.partitions.values()
    )


def _back(client: KafkaClient, node_id: int) -> bool:
    try:
        client.update_cluster()
    except (KafkaConnectionError, KafkaTimeoutError):
        return False
    return node_id in client.brokers


# ---------------------------------------------------------------- fake brokers


class _FakeBroker:
    """A TCP server on 127.0.0.1 that misbehaves on purpose.

    ``silent=True``: accepts and reads, never answers anything. Otherwise it
    answers ApiVersions on every connection and the first ``metadata_answers``
    Metadata requests (listing itself as node 1), then goes silent.
    """

    def __init__(self, *, silent: bool, metadata_answers: int = 0) -> None:
        self.silent = silent
        self.metadata_left = metadata_answers
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buf = b""
        deadline = time.monotonic() + 60
        with conn:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                if self.silent:
                    continue
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                    size = int.from_bytes(buf[:4], "big")
                    frame, buf = buf[4 : 4 + size], buf[4 + size :]
                    reply = self._answer(frame)
                    if reply is not None:
                        conn.sendall(reply)

    def _answer(self, frame: bytes) -> bytes | None:
        cid, _, request = decode_request_frame(frame, m.APIS_BY_KEY)
        self.requests.append(request.api.name)
        body: dict[str, Any]
        if request.api is m.API_VERSIONS:
            body = {
                "error_code": 0,
                "api_keys": [
                    {"api_key": a.key, "min_version": a.min_version, "max_version": a.max_version}
                    for a in m.ALL_APIS
                ],
            }
        elif request.api is m.METADATA:
            with self._lock:
                if self.metadata_left <= 0:
                    return None
                self.metadata_left -= 1
            body = {
                "brokers": [{"node_id": 1, "host": "127.0.0.1", "port": self.port}],
                "cluster_id": "fake",
                "controller_id": 1,
                "topics": [],
            }
        else:
            return None
        return encode_response_frame(cid, request.api, request.version, body)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self._listener.close()


@pytest.fixture
def fake_broker_factory() -> Iterator[Callable[..., _FakeBroker]]:
    made: list[_FakeBroker] = []

    def make(**kwargs: Any) -> _FakeBroker:
        broker = _FakeBroker(**kwargs)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def test_broker_that_never_answers_times_out(
    fake_broker_factory: Callable[..., _FakeBroker],
) -> None:
    fake = fake_broker_factory(silent=True)
    t0 = time.monotonic()
    with pytest.raises(KafkaTimeoutError, match="no broker answered"):
        KafkaClient(fake.address, connect_timeout_ms=1000)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3.0, elapsed


def test_request_timeout_on_an_established_connection(
    fake_broker_factory: Callable[..., _FakeBroker],
) -> None:
    fake = fake_broker_factory(silent=False, metadata_answers=1)
    client = KafkaClient(fake.address, socket_timeout_ms=1000, connect_timeout_ms=1000)
    try:
        assert set(client.brokers) == {1}
        assert client.cluster.cluster_id == "fake"
        t0 = time.monotonic()
        with pytest.raises(KafkaTimeoutError):
            client.update_cluster()
        elapsed = time.monotonic() - t0
        # One request timeout per candidate (node 1, then the bootstrap host).
        assert 0.9 <= elapsed < 5.0, elapsed
        assert fake.requests.count("Metadata") >= 2
    finally:
        client.close()


def test_periodic_metadata_refresh_finds_new_partitions(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """metadata_max_age_ms: a producer's driver refreshes on its own and sees
    partitions added to the topic, with no error to prompt it."""
    name = topic_factory(partitions=2)
    with KafkaClient(kafka_cluster.bootstrap_servers, metadata_max_age_ms=300) as client:
        topic = client.topics[name]
        producer = Producer(client.cluster, topic)
        producer.produce([b"before"])
        assert sorted(topic.partitions) == [0, 1]
        _add_partitions(kafka_cluster, name, 4)
        deadline = time.monotonic() + 30
        while len(topic.partitions) < 4 and time.monotonic() < deadline:
            time.sleep(0.4)
            producer.produce([b"tick"])  # each call's driver may refresh
        assert sorted(topic.partitions) == [0, 1, 2, 3]


def _add_partitions(kafka_cluster: Any, name: str, count: int) -> None:
    from confluent_kafka.admin import AdminClient, NewPartitions

    admin = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers})
    futures = admin.create_partitions([NewPartitions(name, count)])
    for future in futures.values():
        future.result(30)
