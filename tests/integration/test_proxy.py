"""FaultProxy in front of one broker of the shared cluster.

Metadata answers advertise the brokers' own ports, so after bootstrap a client
talks to them directly; these tests pin their requests to the bootstrap node
(node id -1: the proxy) to keep the traffic going through it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.cluster import _metadata_body
from grete.errors import KafkaError
from grete.protocol import messages as m
from grete.testing import FaultProxy, KafkaCluster

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
