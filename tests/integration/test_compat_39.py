"""Version negotiation against an Apache Kafka 3.9 broker (the 4.x suite runs
everywhere else). Starts its own one-node 3.9.1 cluster from Maven Central."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from grete import KafkaClient, Message, Producer
from grete.protocol import messages as m
from grete.testing.cluster import KafkaCluster

VERSION = os.environ.get("GRETE_COMPAT_KAFKA_VERSION", "3.9.1")


@pytest.fixture(scope="module")
def old_cluster() -> Iterator[KafkaCluster]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("runs its own 3.9 broker; not with an external cluster")
    with KafkaCluster(1, version=VERSION) as cluster:
        yield cluster


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_negotiates_down_and_produces(old_cluster: KafkaCluster) -> None:
    old_cluster.create_topic("compat", partitions=2, replication_factor=1)
    with KafkaClient(old_cluster.bootstrap_servers) as client:
        node = next(iter(client.brokers))
        conn = client._network.connection(node)
        _, hi = conn.api_versions[m.PRODUCE.key]
        # Kafka 3.9 speaks Produce up to v11 and still accepts v0-v2; grete
        # picks the highest both speak.
        assert hi == 11 and conn.version(m.PRODUCE, 12) == 11
        assert conn.version(m.METADATA) == min(m.METADATA.max_version, conn.api_versions[3][1])
        producer = Producer(client.cluster, client.topics["compat"], required_acks=-1)
        results = producer.produce(
            [Message(b"v%d" % i, key=b"k%d" % i, headers={"n": b"%d" % i}) for i in range(50)]
        )
    assert len(results) == 50 and all(r.offset >= 0 for r in results)
    consumer = Consumer(
        {"bootstrap.servers": old_cluster.bootstrap_servers, "group.id": "compat",
         "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition("compat", p, 0) for p in range(2)])
        got = {}
        for _ in range(200):  # bounded: at most ~200 polls of 0.2 s
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got[msg.key()] = (msg.value(), msg.headers())
            if len(got) == 50:
                break
    finally:
        consumer.close()
    assert got[b"k7"] == (b"v7", [("n", b"7")]) and len(got) == 50
