"""KafkaProducer on brokers that auto-create topics: a topic's first message
asks for it to be created, its messages wait (held, in order) until it exists,
and are then delivered. Starts its own one-node cluster with
``auto.create.topics.enable=true`` (the shared one does not auto-create)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from grete import KafkaClient
from grete.testing.cluster import KafkaCluster

from ._consume import consume

pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def auto_cluster() -> Iterator[KafkaCluster]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("runs its own broker; not with an external cluster")
    with KafkaCluster(1, auto_create_topics=True) as cluster:
        yield cluster


@pytest.mark.timeout(300)
def test_a_new_topic_is_created_and_its_held_messages_delivered_in_order(
    auto_cluster: KafkaCluster,
) -> None:
    name = f"auto-{uuid.uuid4().hex[:10]}"
    values = [b"m%d" % i for i in range(200)]
    with (
        KafkaClient(auto_cluster.bootstrap_servers) as client,
        client.producer(linger_ms=5, unknown_topic_timeout_ms=60_000) as producer,
    ):
        futures = [producer.produce(name, v, key=b"one key") for v in values]
        assert producer.flush(timeout=60) == 0
        results = [f.result(timeout=0) for f in futures]
    assert {r.topic for r in results} == {name}
    # One key, one partition: offsets in produce order.
    assert len({r.partition for r in results}) == 1
    assert [r.offset for r in results] == sorted(r.offset for r in results)
    (partition,) = {r.partition for r in results}
    read = consume(auto_cluster, name, partition + 1, len(values))
    assert [m.value for m in read if m.partition == partition] == values
