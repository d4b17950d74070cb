"""FaultProxy in front of one broker of the shared cluster.

Metadata answers advertise the brokers' own ports, so after bootstrap a client
talks to them directly; these tests pin their requests to the bootstrap node
(node id -1: the proxy) to keep the traffic going through it.

The last test starts its own ``KafkaCluster(1, proxied=True)``, whose broker
advertises its proxy's port: every connection of a client bootstrapped there,
the producer's included, goes through the proxy.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.cluster import _metadata_body
from grete.errors import KafkaError
from grete.protocol import messages as m
from grete.testing import FaultProxy, KafkaCluster

from ._consume import consume

pytestmark = pytest.mark.integration

BOOTSTRAP_NODE = -1  # the first (only) bootstrap address: the proxy


def _metadata(client: KafkaClient) -> dict[str, Any]:
    return client.cluster.network.request(BOOTSTRAP_NODE, m.METADATA, _metadata_body(None, False))


def test_client_through_proxy_sees_latency_and_reconnects_after_reset(
    kafka_cluster: KafkaCluster,
) -> None:
    if not isinstance(kafka_cluster, KafkaCluster):
        pytest.skip("needs the harness's own cluster (broker ports)")
    broker = kafka_cluster.brokers[0]
    if not broker.is_running:
        pytest.skip("broker 0 is down (a fault test left it stopped)")
    all_ids = {b.node_id for b in kafka_cluster.brokers}
    with (
        FaultProxy("127.0.0.1", broker.port("PLAINTEXT"), seed=30) as proxy,
        KafkaClient(proxy.address, socket_timeout_ms=10_000, connect_timeout_ms=5_000) as client,
    ):
        assert proxy.connections >= 1
        assert proxy.bytes_up > 0 and proxy.bytes_down > 0
        body = _metadata(client)
        assert {b["node_id"] for b in body["brokers"]} == all_ids

        # 50 ms each way: a request's round trip takes at least 100 ms.
        proxy.set_latency(50)
        start = time.monotonic()
        _metadata(client)
        assert time.monotonic() - start >= 0.1
        proxy.clear()

        accepted = proxy.connections
        proxy.reset_connections()
        # The client learns of the reset on its next request (which may fail
        # once), then reconnects: bounded in attempts and in time.
        deadline = time.monotonic() + 10
        errors: list[KafkaError] = []
        body = {}
        for _ in range(50):
            try:
                body = _metadata(client)
                break
            except KafkaError as exc:
                assert exc.retriable, exc
                errors.append(exc)
                assert time.monotonic() < deadline, errors
                time.sleep(0.1)
        assert {b["node_id"] for b in body.get("brokers", [])} == all_ids, errors
        assert proxy.connections > accepted


# ---------------------------------------------------------------- proxied cluster

PROXIED_PARTITIONS = 3
BATCH = 1_000
ACK_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def proxied_cluster() -> Iterator[KafkaCluster]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("needs the harness's own (proxied) cluster, not KAFKA_BOOTSTRAP")
    with KafkaCluster(1, proxied=True) as cluster:
        yield cluster


def test_proxied_cluster_producer_goes_through_proxy_and_survives_reset(
    proxied_cluster: KafkaCluster,
) -> None:
    pytest.importorskip("confluent_kafka")
    start = time.monotonic()
    cluster = proxied_cluster
    broker = cluster.brokers[0]
    proxy = broker.proxy
    assert proxy is not None
    assert proxy.port not in broker.ports.values()
    assert cluster.proxied_bootstrap_servers == proxy.address
    topic = cluster.create_topic(f"proxied-{uuid.uuid4().hex[:8]}", PROXIED_PARTITIONS)
    run = uuid.uuid4().hex
    values = [f"{run}-{i:05d}".encode() for i in range(2 * BATCH)]

    client = KafkaClient(
        cluster.proxied_bootstrap_servers, socket_timeout_ms=10_000, connect_timeout_ms=5_000
    )
    producer = None
    try:
        # The metadata answer came through the PROXIED listener: only the proxy's port.
        assert {b.port for b in client.brokers.values()} == {proxy.port}, client.brokers
        assert client.brokers[broker.node_id].port == proxy.port
        producer = client.producer()

        proxy.set_latency(20)
        up_before = proxy.bytes_up
        futures = [producer.produce(topic, v) for v in values[:BATCH]]
        assert producer.flush(timeout=ACK_TIMEOUT_S) == 0
        for f in futures:
            assert f.result(timeout=0).topic == topic
        assert proxy.bytes_up - up_before >= sum(len(v) for v in values[:BATCH])
        proxy.clear()

        accepted = proxy.connections
        proxy.reset_connections()
        futures = [producer.produce(topic, v) for v in values[BATCH:]]
        assert producer.flush(timeout=ACK_TIMEOUT_S) == 0
        for f in futures:
            assert f.result(timeout=0).topic == topic
        assert proxy.connections > accepted, "the producer did not reconnect via the proxy"
        producer.close(timeout=10)
    finally:
        if producer is not None:
            producer.close(timeout=10)
        client.close()

    # Idempotent: the reset cost no message and doubled none.
    reads = consume(cluster, topic, PROXIED_PARTITIONS, 2 * BATCH, timeout_s=20.0)
    got = [r.value for r in reads]
    assert len(got) == 2 * BATCH, len(got)
    assert set(got) == set(values)
    assert time.monotonic() - start < 60
